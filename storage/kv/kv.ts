/**
 * An ordered key-value store: the one thing the metadata state machine needs from storage.
 * Keys are strings compared by their UTF-8 bytes; values are bytes.
 */
export type KVOp = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string }

export interface KVRange {
  /** Inclusive lower bound. */
  gte?: string
  /** Exclusive lower bound. */
  gt?: string
  /** Exclusive upper bound. */
  lt?: string
  /** Inclusive upper bound. */
  lte?: string
  limit?: number
  reverse?: boolean
}

export interface KV {
  open (): Promise<void>
  close (): Promise<void>
  get (key: string): Promise<Uint8Array | undefined>
  /** Apply all ops atomically. With sync, resolve only once they are durable. */
  batch (ops: KVOp[], opts?: { sync?: boolean }): Promise<void>
  /** Entries in key order within the range, from a consistent snapshot. */
  entries (range: KVRange): AsyncIterable<[string, Uint8Array]>
}

/** Range covering every key that starts with `prefix`. */
export function prefixRange (prefix: string): { gte: string; lt: string } {
  return { gte: prefix, lt: prefix + '\uffff' }
}
