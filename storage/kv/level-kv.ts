/**
 * KV on LevelDB (classic-level). Keys are stored as UTF-8 strings, which LevelDB orders by
 * bytes, as the KV interface requires; values as raw bytes ('view' encoding: Uint8Array).
 */
import { ClassicLevel } from 'classic-level'
import type { KV, KVOp, KVRange } from './kv.js'

export interface LevelKVOptions {
  /** LevelDB write buffer in bytes (default 4 MiB); larger means fewer, bigger compactions. */
  writeBufferSize?: number
}

export class LevelKV implements KV {
  readonly db: ClassicLevel<string, Uint8Array>

  constructor (location: string, opts: LevelKVOptions = {}) {
    this.db = new ClassicLevel<string, Uint8Array>(location, {
      keyEncoding: 'utf8',
      valueEncoding: 'view',
      ...(opts.writeBufferSize !== undefined ? { writeBufferSize: opts.writeBufferSize } : {}),
    })
  }

  /** Opens (creating if missing). A second process on the same directory fails with cause.code LEVEL_LOCKED. */
  async open (): Promise<void> {
    await this.db.open()
  }

  async close (): Promise<void> {
    await this.db.close()
  }

  async get (key: string): Promise<Uint8Array | undefined> {
    // Synchronous read: metadata values are small and hot, and a trip through the thread pool
    // per get was what bounded the state machine's apply rate (it applies one command at a time).
    return this.db.getSync(key)
  }

  async batch (ops: KVOp[], opts: { sync?: boolean } = {}): Promise<void> {
    if (ops.length === 0) return
    await this.db.batch(ops.map((op) => op.type === 'put'
      ? { type: 'put' as const, key: op.key, value: op.value }
      : { type: 'del' as const, key: op.key }), { sync: opts.sync === true })
  }

  entries (range: KVRange): AsyncIterable<[string, Uint8Array]> {
    // Created now: LevelDB takes the iterator's snapshot at creation, not at the first next().
    const it = this.db.iterator(toIteratorOptions(range))
    return (async function * () {
      try {
        for await (const entry of it) yield entry
      } finally {
        await it.close()
      }
    })()
  }
}

/** Same precedence as MemoryKV: gt over gte, lt over lte; a negative or infinite limit means none. */
function toIteratorOptions (range: KVRange): { gt?: string; gte?: string; lt?: string; lte?: string; limit?: number; reverse: boolean } {
  const o: { gt?: string; gte?: string; lt?: string; lte?: string; limit?: number; reverse: boolean } = { reverse: range.reverse === true }
  if (range.gt !== undefined) o.gt = range.gt
  else if (range.gte !== undefined) o.gte = range.gte
  if (range.lt !== undefined) o.lt = range.lt
  else if (range.lte !== undefined) o.lte = range.lte
  if (range.limit !== undefined && range.limit >= 0 && Number.isFinite(range.limit)) o.limit = range.limit
  return o
}
