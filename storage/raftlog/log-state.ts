/**
 * The in-memory view of a Raft log that both stores keep: the uncompacted entries, the hard
 * state and the latest snapshot. It applies the rules of the LogStorage interface and reports
 * what changed, so each store only decides how to make the change durable.
 */
import {
  ErrCompacted, ErrSnapOutOfDate, ErrUnavailable, LogStorageError, entrySize, EMPTY_HARD_STATE,
  type ConfState, type HardState, type InitialState, type LogEntry, type Snapshot
} from './log-storage.js'

const EMPTY = new Uint8Array(0)

export function emptySnapshot (): Snapshot {
  return { meta: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: EMPTY }
}

/** A copy that keeps fields callers add to ConfState (the core adds `removed`). */
function copyConf (conf: ConfState): ConfState {
  return structuredClone(conf)
}

/** What one write changed, for the store to persist. */
export type LogChange =
  | { kind: 'append', entries: LogEntry[], /** old entries with index >= this are gone */ removeFrom: number, oldLast: number }
  | { kind: 'hardState', hardState: HardState }
  | { kind: 'snapshot', snapshot: Snapshot, /** the log was replaced: entries up to oldLast are gone */ oldFirst: number, oldLast: number }
  | { kind: 'compact', index: number, term: number, oldFirst: number }
  | { kind: 'createSnapshot', snapshot: Snapshot }

export class LogState {
  hardState: HardState = { ...EMPTY_HARD_STATE }
  snap: Snapshot = emptySnapshot()
  /** ents[0] is a placeholder at the compaction point that carries its term (as in etcd). */
  ents: LogEntry[] = [{ index: 0, term: 0, type: 0, data: EMPTY }]

  static restore (hardState: HardState, snap: Snapshot, start: { index: number, term: number }, live: LogEntry[]): LogState {
    const s = new LogState()
    s.hardState = hardState
    s.snap = snap
    s.ents = [{ index: start.index, term: start.term, type: 0, data: EMPTY }, ...live]
    return s
  }

  get offset (): number { return this.ents[0]!.index }

  initialState (): InitialState {
    return { hardState: { ...this.hardState }, conf: this.snap.meta.conf }
  }

  firstIndex (): number { return this.offset + 1 }
  lastIndex (): number { return this.offset + this.ents.length - 1 }

  term (i: number): number {
    const off = this.offset
    if (i < off) throw ErrCompacted
    if (i - off >= this.ents.length) throw ErrUnavailable
    return this.ents[i - off]!.term
  }

  entries (lo: number, hi: number, maxBytes?: number): LogEntry[] {
    const off = this.offset
    if (lo > hi) throw new LogStorageError('RAFT_LOG_BAD_RANGE', `invalid range [${lo}, ${hi})`)
    if (lo <= off) throw ErrCompacted
    if (hi > this.lastIndex() + 1) throw ErrUnavailable
    const out = this.ents.slice(lo - off, hi - off)
    if (maxBytes === undefined || out.length === 0) return out
    let size = entrySize(out[0]!)
    let n = 1
    for (; n < out.length; n++) {
      size += entrySize(out[n]!)
      if (size > maxBytes) break
    }
    return n === out.length ? out : out.slice(0, n)
  }

  append (entries: LogEntry[]): LogChange | null {
    if (entries.length === 0) return null
    for (let k = 1; k < entries.length; k++) {
      if (entries[k]!.index !== entries[k - 1]!.index + 1) {
        throw new LogStorageError('RAFT_LOG_GAP', `entries not contiguous at ${entries[k]!.index}`)
      }
    }
    const first = this.firstIndex()
    const last = entries[entries.length - 1]!.index
    if (last < first) return null // all below the compaction point: already covered by the snapshot
    if (entries[0]!.index < first) entries = entries.slice(first - entries[0]!.index)
    const from = entries[0]!.index
    const oldLast = this.lastIndex()
    if (from > oldLast + 1) {
      throw new LogStorageError('RAFT_LOG_GAP', `missing log entries: last index ${oldLast}, appending at ${from}`)
    }
    this.ents.length = from - this.offset // drop the conflicting suffix, if any
    for (const e of entries) this.ents.push(e)
    return { kind: 'append', entries, removeFrom: from, oldLast }
  }

  setHardState (hs: HardState): LogChange {
    this.hardState = { term: hs.term, vote: hs.vote, commit: hs.commit }
    return { kind: 'hardState', hardState: this.hardState }
  }

  applySnapshot (snap: Snapshot): LogChange {
    if (snap.meta.index <= this.snap.meta.index) throw ErrSnapOutOfDate
    const oldFirst = this.firstIndex()
    const oldLast = this.lastIndex()
    this.snap = snap
    this.ents = [{ index: snap.meta.index, term: snap.meta.term, type: 0, data: EMPTY }]
    return { kind: 'snapshot', snapshot: snap, oldFirst, oldLast }
  }

  compact (index: number): LogChange {
    const off = this.offset
    if (index <= off) throw ErrCompacted
    if (index > this.lastIndex()) throw ErrUnavailable
    const term = this.ents[index - off]!.term
    this.ents = [{ index, term, type: 0, data: EMPTY }, ...this.ents.slice(index - off + 1)]
    return { kind: 'compact', index, term, oldFirst: off + 1 }
  }

  createSnapshot (index: number, conf: ConfState, data: Uint8Array): { snapshot: Snapshot, change: LogChange } {
    if (index <= this.snap.meta.index) throw ErrSnapOutOfDate
    const term = this.term(index)
    const snapshot: Snapshot = {
      meta: { index, term, conf: copyConf(conf) },
      data
    }
    this.snap = snapshot
    return { snapshot, change: { kind: 'createSnapshot', snapshot } }
  }
}

/**
 * The read and write side every LogStorage shares: reads come from the in-memory LogState;
 * writes change it and hand the change to the implementation to make durable.
 */
export abstract class LogStateStorage {
  /** The state, or a throw when the store is not open (or broken). */
  protected abstract check (): LogState
  /** Remember a change for the next sync(). */
  protected abstract record (c: LogChange | null): void

  initialState (): InitialState { return this.check().initialState() }
  entries (lo: number, hi: number, maxBytes?: number): LogEntry[] { return this.check().entries(lo, hi, maxBytes) }
  term (i: number): number { return this.check().term(i) }
  firstIndex (): number { return this.check().firstIndex() }
  lastIndex (): number { return this.check().lastIndex() }
  snapshot (): Snapshot { return this.check().snap }

  append (entries: LogEntry[]): void { this.record(this.check().append(entries)) }
  setHardState (hs: HardState): void { this.record(this.check().setHardState(hs)) }
  applySnapshot (snap: Snapshot): void { this.record(this.check().applySnapshot(snap)) }
  compact (index: number): void { this.record(this.check().compact(index)) }
  createSnapshot (index: number, conf: ConfState, data: Uint8Array): Snapshot {
    const { snapshot, change } = this.check().createSnapshot(index, conf, data)
    this.record(change)
    return snapshot
  }
}
