/**
 * A small seeded PRNG (mulberry32): the core draws its election timeouts from it, so a run
 * replays exactly from its seed.
 */
import type { Rand } from './types.js'

export class SeededRand implements Rand {
  private state: number

  constructor (seed: number) {
    this.state = seed >>> 0
  }

  /** Next 32-bit unsigned value. */
  next (): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }

  /** Uniform integer in [0, n); n must be a positive integer below 2^32. */
  intn (n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new RangeError(`intn: bad bound ${n}`)
    return Math.floor((this.next() / 0x100000000) * n)
  }
}

/** Derive a seed for node `id` from a cluster seed, so each node draws its own sequence. */
export function seedFor (seed: number, id: string): number {
  let h = (seed ^ 0x9e3779b9) >>> 0
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193) >>> 0
  return h
}
