/**
 * The simulated network: decides for each message whether it is dropped, duplicated or
 * delayed (random delays also reorder). Links can be cut one way, and node sets partitioned.
 * It only decides; the simulation schedules the deliveries on its clock.
 */
import type { SimRand } from './random.js'

export interface NetworkConditions {
  /** Probability a message is lost. */
  drop: number
  /** Probability a message is delivered twice. */
  duplicate: number
  /** Delay range in virtual ms. */
  minDelay: number
  maxDelay: number
  /** Probability of a long delay (up to `longDelay` ms), which reorders heavily. */
  slow: number
  longDelay: number
}

export const CALM: NetworkConditions = { drop: 0, duplicate: 0, minDelay: 1, maxDelay: 8, slow: 0, longDelay: 0 }

export class SimNetwork {
  conditions: NetworkConditions = { ...CALM }
  /** Cut links, as "from>to". */
  private readonly cut = new Set<string>()
  sent = 0
  dropped = 0

  constructor (private readonly rand: SimRand) {}

  /** Delays at which copies of a message from→to arrive: none (dropped), one, or two. */
  delays (from: string, to: string): number[] {
    this.sent++
    const c = this.conditions
    if (this.blocked(from, to) || this.rand.chance(c.drop)) {
      this.dropped++
      return []
    }
    const one = (): number => this.rand.chance(c.slow)
      ? this.rand.between(c.maxDelay, Math.max(c.maxDelay, c.longDelay))
      : this.rand.between(c.minDelay, c.maxDelay)
    return this.rand.chance(c.duplicate) ? [one(), one()] : [one()]
  }

  blocked (from: string, to: string): boolean {
    return this.cut.has(from + '>' + to)
  }

  cutLink (from: string, to: string): void { this.cut.add(from + '>' + to) }

  /** No messages between the groups, either way; links inside a group are untouched. */
  partition (groups: string[][]): void {
    for (const a of groups) {
      for (const b of groups) {
        if (a === b) continue
        for (const x of a) for (const y of b) this.cut.add(x + '>' + y)
      }
    }
  }

  /** Restore every link and calm conditions. */
  heal (): void {
    this.cut.clear()
    this.conditions = { ...CALM }
  }

  get cutLinks (): number { return this.cut.size }
}
