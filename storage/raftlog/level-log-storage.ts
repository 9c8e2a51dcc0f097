/**
 * LogStorage on classic-level (LevelDB). The uncompacted log is also held in memory so reads
 * are synchronous; writes are buffered as batch operations and `sync()` writes all of them in
 * one `batch(..., { sync: true })` — one fsync for many appends (group commit).
 *
 * Key layout (one LevelDB per node; keys are UTF-8, values bytes):
 *
 *   <location>/
 *   ├── m!hard            JSON {term, vote, commit}
 *   ├── m!start           JSON {index, term}: the compaction point (firstIndex - 1)
 *   ├── m!snap            JSON {index, term, conf, chunks, bytes}: the latest snapshot's meta
 *   ├── e!<index>         one entry: term (u64 BE) | type (u8) | data
 *   │                     <index> is 16 lowercase hex digits, so key order is index order
 *   └── s!<chunk>         the snapshot's data, cut in chunks of `snapshotChunkBytes`
 *                         <chunk> is 8 hex digits; a large snapshot never lands in one value
 */
import { ClassicLevel } from 'classic-level'
import { LogStorageError, type ConfState, type HardState, type LogEntry, type LogStorage, type Snapshot } from './log-storage.js'
import { LogState, LogStateStorage, emptySnapshot, type LogChange } from './log-state.js'

export interface LevelLogStorageOptions {
  /** Snapshot data is stored in values of at most this many bytes. Default 1 MiB. */
  snapshotChunkBytes?: number
}

type Op = { type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }

interface SnapMetaRecord { index: number, term: number, conf: ConfState, chunks: number, bytes: number }

const K_HARD = 'm!hard'
const K_START = 'm!start'
const K_SNAP = 'm!snap'
const entryKey = (i: number): string => 'e!' + i.toString(16).padStart(16, '0')
const chunkKey = (c: number): string => 's!' + c.toString(16).padStart(8, '0')

const enc = new TextEncoder()
const dec = new TextDecoder()
const json = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v))
const parse = <T>(b: Uint8Array): T => JSON.parse(dec.decode(b)) as T

export function encodeEntry (e: LogEntry): Uint8Array {
  const out = new Uint8Array(9 + e.data.byteLength)
  const dv = new DataView(out.buffer)
  dv.setUint32(0, Math.floor(e.term / 0x1_0000_0000))
  dv.setUint32(4, e.term >>> 0)
  out[8] = e.type
  out.set(e.data, 9)
  return out
}

export function decodeEntry (index: number, b: Uint8Array): LogEntry {
  if (b.byteLength < 9) throw new LogStorageError('RAFT_LOG_CORRUPT', `entry ${index} is ${b.byteLength} bytes`)
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const term = dv.getUint32(0) * 0x1_0000_0000 + dv.getUint32(4)
  return { index, term, type: b[8]!, data: b.slice(9) }
}

export class LevelLogStorage extends LogStateStorage implements LogStorage {
  readonly location: string
  private readonly chunkBytes: number
  private db: ClassicLevel<string, Uint8Array> | null = null
  private state = new LogState()
  /** Buffered writes, last write per key wins. */
  private pending = new Map<string, Op>()
  /** Chunk count of the snapshot as it will be once pending writes land. */
  private snapChunks = 0
  /** The flush every sync() waits on; a flush not yet started takes all writes made before it. */
  private tail: Promise<void> = Promise.resolve()
  private queued: Promise<void> | null = null
  private broken: unknown = null

  constructor (location: string, opts: LevelLogStorageOptions = {}) {
    super()
    this.location = location
    this.chunkBytes = opts.snapshotChunkBytes ?? 1 << 20
  }

  async open (): Promise<void> {
    if (this.db !== null) return
    const db = new ClassicLevel<string, Uint8Array>(this.location, { keyEncoding: 'utf8', valueEncoding: 'view' })
    await db.open()
    try {
      const [hardB, startB, snapB] = await db.getMany([K_HARD, K_START, K_SNAP])
      const hard: HardState = hardB !== undefined ? parse<HardState>(hardB) : { term: 0, vote: null, commit: 0 }
      const start = startB !== undefined ? parse<{ index: number, term: number }>(startB) : { index: 0, term: 0 }
      let snap = emptySnapshot()
      this.snapChunks = 0
      if (snapB !== undefined) {
        const m = parse<SnapMetaRecord>(snapB)
        const data = new Uint8Array(m.bytes)
        let at = 0
        for (let c = 0; c < m.chunks; c++) {
          const part = await db.get(chunkKey(c))
          if (part === undefined) throw new LogStorageError('RAFT_LOG_CORRUPT', `snapshot chunk ${c} missing`)
          data.set(part, at)
          at += part.byteLength
        }
        if (at !== m.bytes) throw new LogStorageError('RAFT_LOG_CORRUPT', `snapshot is ${at} bytes, meta says ${m.bytes}`)
        snap = { meta: { index: m.index, term: m.term, conf: m.conf }, data }
        this.snapChunks = m.chunks
      }
      const live: LogEntry[] = []
      for await (const [key, value] of db.iterator({ gt: entryKey(start.index), lt: 'e!~' })) {
        const index = parseInt(key.slice(2), 16)
        const want = start.index + 1 + live.length
        if (index !== want) throw new LogStorageError('RAFT_LOG_CORRUPT', `log has a gap: expected ${want}, found ${index}`)
        live.push(decodeEntry(index, value))
      }
      this.state = LogState.restore(hard, snap, start, live)
    } catch (err) {
      await db.close()
      throw err
    }
    this.pending.clear()
    this.queued = null
    this.broken = null
    this.tail = Promise.resolve()
    this.db = db
  }

  async close (): Promise<void> {
    if (this.db === null) return
    try {
      await this.sync()
    } finally {
      const db = this.db
      this.db = null
      await db.close()
    }
  }

  protected check (): LogState {
    if (this.db === null) throw new LogStorageError('RAFT_LOG_NOT_OPEN', 'log storage is not open')
    return this.state
  }

  private put (key: string, value: Uint8Array): void { this.pending.set(key, { type: 'put', key, value }) }
  private del (key: string): void { this.pending.set(key, { type: 'del', key }) }

  private writeSnapshot (snap: Snapshot): void {
    const data = snap.data
    const chunks = Math.ceil(data.byteLength / this.chunkBytes)
    for (let c = 0; c < chunks; c++) this.put(chunkKey(c), data.subarray(c * this.chunkBytes, (c + 1) * this.chunkBytes))
    for (let c = chunks; c < this.snapChunks; c++) this.del(chunkKey(c))
    this.snapChunks = chunks
    const m: SnapMetaRecord = { index: snap.meta.index, term: snap.meta.term, conf: snap.meta.conf, chunks, bytes: data.byteLength }
    this.put(K_SNAP, json(m))
  }

  protected record (c: LogChange | null): void {
    if (c === null) return
    switch (c.kind) {
      case 'append': {
        const newLast = c.entries[c.entries.length - 1]!.index
        for (let i = newLast + 1; i <= c.oldLast; i++) this.del(entryKey(i))
        for (const e of c.entries) this.put(entryKey(e.index), encodeEntry(e))
        break
      }
      case 'hardState':
        this.put(K_HARD, json(c.hardState))
        break
      case 'snapshot':
        for (let i = c.oldFirst; i <= c.oldLast; i++) this.del(entryKey(i))
        this.put(K_START, json({ index: c.snapshot.meta.index, term: c.snapshot.meta.term }))
        this.writeSnapshot(c.snapshot)
        break
      case 'compact':
        for (let i = c.oldFirst; i <= c.index; i++) this.del(entryKey(i))
        this.put(K_START, json({ index: c.index, term: c.term }))
        break
      case 'createSnapshot':
        this.writeSnapshot(c.snapshot)
        break
    }
  }


  sync (): Promise<void> {
    const db = this.db
    if (db === null) return Promise.reject(new LogStorageError('RAFT_LOG_NOT_OPEN', 'log storage is not open'))
    if (this.broken !== null) return Promise.reject(this.broken)
    if (this.pending.size === 0) {
      // Nothing new, but an earlier write may still be in flight: wait for it.
      return this.tail.then(() => { if (this.broken !== null) throw this.broken })
    }
    if (this.queued === null) {
      // One flush at a time, in order; writes made while one is in flight share the next one.
      const flush = this.tail.then(async () => {
        this.queued = null
        if (this.broken !== null) throw this.broken
        const ops = [...this.pending.values()]
        this.pending.clear()
        if (ops.length > 0) await db.batch(ops, { sync: true })
      })
      this.queued = flush
      // A failed batch leaves memory ahead of disk; refuse further syncs rather than lie.
      this.tail = flush.catch((err: unknown) => { this.broken ??= err })
    }
    return this.queued
  }
}
