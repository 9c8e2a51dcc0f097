/**
 * An ordered key-value store: the one thing the metadata state machine needs from storage.
 * Keys are strings compared by their UTF-8 bytes; values are bytes.
 */
export type KVOp = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string }

export interface KVRange {
  /** Inclusive lower bound. */
  gte?: string
  /** Exclusive lower bound; wins over gte when both are given. */
  gt?: string
  /** Exclusive upper bound; wins over lte when both are given. */
  lt?: string
  /** Inclusive upper bound. */
  lte?: string
  /** At most this many entries; absent, negative or Infinity means no limit. */
  limit?: number
  /** Largest key first; limit then counts from the top. */
  reverse?: boolean
}

export interface KV {
  open (): Promise<void>
  close (): Promise<void>
  get (key: string): Promise<Uint8Array | undefined>
  /** Apply all ops atomically. With sync, resolve only once they are durable. */
  batch (ops: KVOp[], opts?: { sync?: boolean }): Promise<void>
  /**
   * Entries in key order within the range, from a snapshot taken when entries() is called
   * (not at the first next()): writes made after the call are not seen.
   */
  entries (range: KVRange): AsyncIterable<[string, Uint8Array]>
}

/**
 * Range covering every key that starts with `prefix`. The upper bound is the prefix with its last
 * code point incremented: code point order is UTF-8 byte order, so this is exact, where
 * `prefix + '\uffff'` would miss keys continuing with a character beyond U+FFFF (4-byte UTF-8).
 */
export function prefixRange (prefix: string): { gte: string; lt: string } {
  const cps = [...prefix]
  while (cps.length > 0) {
    const last = cps.pop()!.codePointAt(0)!
    if (last < 0x10ffff) {
      // Skip the surrogate block: those are not characters and have no UTF-8 form.
      const next = last + 1 === 0xd800 ? 0xe000 : last + 1
      return { gte: prefix, lt: cps.join('') + String.fromCodePoint(next) }
    }
  }
  // Only the empty prefix (or one made of U+10FFFF) gets here: bound by the largest code point.
  return { gte: prefix, lt: '\u{10ffff}'.repeat(prefix.length + 1) }
}
