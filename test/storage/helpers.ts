/** Byte fixtures and stream helpers shared by the storage conformance suites. */
import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'
import { digestOf, type Digest, type DigestAlgorithm } from '../../storage/reference.js'

/** Deterministic pseudo-random bytes, different for each seed. */
export function bytes (n: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(n)
  let x = (seed * 2654435761) >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0
    out[i] = x & 0xff
  }
  return out
}

export function digestFor (data: Uint8Array, alg: DigestAlgorithm = 'sha256'): Digest {
  return digestOf(alg, createHash(alg).update(data).digest('hex'))
}

/** Yield `data` in pieces of `size` bytes (odd sizes exercise the write buffering). */
export async function * chunked (data: Buffer, size = 65_537): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size)
}

export async function readAll (stream: Readable | AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of stream) parts.push(Buffer.from(c as Uint8Array))
  return Buffer.concat(parts)
}

export async function collect<T> (it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

/**
 * A source that yields `first`, then stalls until released (or forever), like a client that
 * stops sending. `delivered` resolves once `first` has been consumed.
 */
export function stallingSource (first: Uint8Array, rest?: Uint8Array): { source: AsyncGenerator<Uint8Array>; delivered: Promise<void>; release: () => void } {
  let delivered!: () => void
  let release!: () => void
  const deliveredP = new Promise<void>((resolve) => { delivered = resolve })
  const releaseP = new Promise<void>((resolve) => { release = resolve })
  async function * gen (): AsyncGenerator<Uint8Array> {
    yield first
    delivered()
    await releaseP
    if (rest !== undefined) yield rest
  }
  return { source: gen(), delivered: deliveredP, release }
}

export async function * failingSource (first: Uint8Array, err: Error): AsyncGenerator<Uint8Array> {
  yield first
  throw err
}
