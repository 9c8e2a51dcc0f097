/**
 * KV in memory: a sorted array of immutable entries. For unit tests of the floors above; passes
 * the same suite as LevelKV (test/storage/kv.suite.ts). open() and close() are no-ops: the data
 * lives as long as the object, so "reopening" it keeps everything.
 */
import type { KV, KVOp, KVRange } from './kv.js'

interface Entry { readonly key: string; readonly bytes: Buffer; readonly value: Uint8Array }

export class MemoryKV implements KV {
  // Replaced, never mutated in place, so a snapshot is just the array reference.
  private entries_: readonly Entry[] = []

  async open (): Promise<void> {}
  async close (): Promise<void> {}

  async get (key: string): Promise<Uint8Array | undefined> {
    const e = this.entries_[this.lowerBound(Buffer.from(key))]
    return e !== undefined && e.key === key ? e.value.slice() : undefined
  }

  async batch (ops: KVOp[], _opts?: { sync?: boolean }): Promise<void> {
    // Build the next array off to the side, then swap it in: all ops or none, and a running
    // entries() keeps its own array.
    const next = [...this.entries_]
    for (const op of ops) {
      const bytes = Buffer.from(op.key)
      const i = lowerBound(next, bytes)
      const hit = next[i] !== undefined && next[i].key === op.key
      if (op.type === 'put') {
        // Copy: the caller may reuse its buffer.
        const e: Entry = { key: op.key, bytes, value: op.value.slice() }
        if (hit) next[i] = e
        else next.splice(i, 0, e)
      } else if (hit) {
        next.splice(i, 1)
      }
    }
    this.entries_ = next
  }

  entries (range: KVRange): AsyncIterable<[string, Uint8Array]> {
    // Taken now, not at the first next(): that is the snapshot the interface promises.
    const all = this.entries_
    let lo = 0
    let hi = all.length
    if (range.gt !== undefined) lo = upperBound(all, Buffer.from(range.gt))
    else if (range.gte !== undefined) lo = lowerBound(all, Buffer.from(range.gte))
    if (range.lt !== undefined) hi = lowerBound(all, Buffer.from(range.lt))
    else if (range.lte !== undefined) hi = upperBound(all, Buffer.from(range.lte))
    let picked = hi > lo ? all.slice(lo, hi) : []
    if (range.reverse === true) picked.reverse()
    const limit = range.limit
    if (limit !== undefined && limit >= 0 && Number.isFinite(limit)) picked = picked.slice(0, limit)
    return (async function * () {
      for (const e of picked) yield [e.key, e.value.slice()] as [string, Uint8Array]
    })()
  }

  private lowerBound (bytes: Buffer): number {
    return lowerBound(this.entries_, bytes)
  }
}

/** First index whose key is >= `bytes` (keys compare by UTF-8 bytes, not UTF-16 units). */
function lowerBound (a: readonly Entry[], bytes: Buffer): number {
  let lo = 0
  let hi = a.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (Buffer.compare(a[mid]!.bytes, bytes) < 0) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** First index whose key is > `bytes`. */
function upperBound (a: readonly Entry[], bytes: Buffer): number {
  let lo = 0
  let hi = a.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (Buffer.compare(a[mid]!.bytes, bytes) <= 0) lo = mid + 1
    else hi = mid
  }
  return lo
}
