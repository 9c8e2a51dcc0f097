/**
 * Raft log storage: the entries, hard state and snapshot one Raft node keeps on disk.
 *
 * Who owns what: the Raft core owns the contract, `RaftStorage` in cluster/raft/storage.ts
 * (after etcd-io/raft, whose core owns its Storage interface). storage/ imports nothing above
 * it, so this file does not import that interface: it states the same contract in records of
 * its own (index, term, bytes...), shaped so that a LogStorage fits RaftStorage structurally.
 * The wiring in cluster/ hands a store to the core, and cluster/raft-storage-check.ts checks at
 * compile time that both stores still fit. Change a signature here and there together.
 *
 * The Raft core is pure and synchronous, so the read side is synchronous: implementations
 * keep the uncompacted log in memory and write through. The write side is buffered: every
 * write is visible to reads at once, and becomes durable only when a later `sync()` resolves
 * (one fsync for all earlier writes — group commit).
 *
 * Indexes: `firstIndex() - 1` is the compaction point (the last snapshot's index, or a later
 * `compact()`), whose term is still known. Live entries are `firstIndex() .. lastIndex()`.
 * An empty log has firstIndex 1 and lastIndex 0.
 *
 * Errors (sentinels, compare with `===` or by `code`). The core recognizes them by `code`
 * alone, so the codes are part of the contract and must match cluster/raft's StorageErrorCode:
 * - ErrCompacted: the index is at or below the compaction point (for `term`, below it).
 * - ErrUnavailable: the index is past `lastIndex()`.
 * - ErrSnapOutOfDate: the snapshot is not newer than the one already held.
 * Records handed in and out are treated as immutable; neither side may mutate them.
 */

/** Entry type: a normal command. */
export const ENTRY_NORMAL = 0
/** Entry type: a configuration change. */
export const ENTRY_CONF = 1

export interface LogEntry {
  index: number
  term: number
  /** 0 normal, 1 configuration change. */
  type: number
  data: Uint8Array
}

export interface HardState {
  term: number
  /** Who this node voted for in `term`, or null. */
  vote: string | null
  commit: number
}

/** The core adds `removed` (ids never accepted again); stores keep any extra field as is. */
export interface ConfState {
  voters: string[]
  learners: string[]
}

export interface SnapshotMeta {
  index: number
  term: number
  /** The configuration as of `index`. */
  conf: ConfState
}

export interface Snapshot {
  meta: SnapshotMeta
  data: Uint8Array
}

export interface InitialState {
  hardState: HardState
  /** The configuration of the latest snapshot (empty when there is none). */
  conf: ConfState
}

export interface LogStorage {
  /** Load state from disk. Reads and writes before `open()` throw RAFT_LOG_NOT_OPEN. */
  open (): Promise<void>
  /** Make every buffered write durable, then release the store. */
  close (): Promise<void>

  // --- read side: synchronous ---
  initialState (): InitialState
  /**
   * Entries `lo` (inclusive) to `hi` (exclusive). With `maxBytes`, stops before the entry
   * that would push the sum of data sizes past it, but always returns at least one entry.
   * Throws ErrCompacted when `lo <= firstIndex() - 1`, ErrUnavailable when `hi > lastIndex() + 1`.
   */
  entries (lo: number, hi: number, maxBytes?: number): LogEntry[]
  /**
   * Term of entry `i`; at the compaction point, the snapshot's (or compaction's) term.
   * Throws ErrCompacted below the compaction point, ErrUnavailable past `lastIndex()`.
   */
  term (i: number): number
  firstIndex (): number
  lastIndex (): number
  /** The latest snapshot; index 0 when there is none. */
  snapshot (): Snapshot

  // --- write side: visible at once, durable after the next sync() ---
  /**
   * Append contiguous entries. Any existing suffix from `entries[0].index` on is dropped first
   * (a conflicting follower log). Entries at or below the compaction point are skipped.
   * Throws RAFT_LOG_GAP when `entries[0].index > lastIndex() + 1`.
   */
  append (entries: LogEntry[]): void
  setHardState (hs: HardState): void
  /** Replace the whole log with `snap`. Throws ErrSnapOutOfDate unless it is newer than ours. */
  applySnapshot (snap: Snapshot): void
  /**
   * Drop entries up to and including `index`, keeping its term. Compact only up to the latest
   * snapshot's index, or a follower that lags further cannot be caught up.
   * Throws ErrCompacted when `index <= firstIndex() - 1`, ErrUnavailable past `lastIndex()`.
   */
  compact (index: number): void
  /**
   * Record a snapshot of the state machine as of applied entry `index` (it does not compact).
   * Throws ErrSnapOutOfDate when `index <= snapshot().meta.index`, ErrCompacted when the
   * entry's term is no longer known, ErrUnavailable past `lastIndex()`.
   */
  createSnapshot (index: number, conf: ConfState, data: Uint8Array): Snapshot
  /** Make every earlier write durable with one fsync. Concurrent calls share flushes. */
  sync (): Promise<void>
}

export type LogStorageErrorCode =
  | 'RAFT_LOG_COMPACTED'
  | 'RAFT_LOG_UNAVAILABLE'
  | 'RAFT_LOG_SNAP_OUT_OF_DATE'
  | 'RAFT_LOG_GAP'
  | 'RAFT_LOG_BAD_RANGE'
  | 'RAFT_LOG_NOT_OPEN'
  | 'RAFT_LOG_CORRUPT'

/** Errors of the Raft log store. Codes never change (the core matches them); messages may. */
export class LogStorageError extends Error {
  static override name = 'LogStorageError'
  readonly code: LogStorageErrorCode
  constructor (code: LogStorageErrorCode, message: string) {
    super(message)
    this.name = 'LogStorageError'
    this.code = code
  }
}

export const ErrCompacted = new LogStorageError('RAFT_LOG_COMPACTED', 'requested index is unavailable due to compaction')
export const ErrUnavailable = new LogStorageError('RAFT_LOG_UNAVAILABLE', 'requested entry at index is unavailable')
export const ErrSnapOutOfDate = new LogStorageError('RAFT_LOG_SNAP_OUT_OF_DATE', 'requested index is older than the existing snapshot')

export function isLogStorageError (err: unknown, code?: LogStorageErrorCode): err is LogStorageError {
  return err instanceof LogStorageError && (code === undefined || err.code === code)
}

/** The size `entries(lo, hi, maxBytes)` counts for one entry. */
export function entrySize (e: LogEntry): number {
  return e.data.byteLength
}

export const EMPTY_HARD_STATE: Readonly<HardState> = Object.freeze({ term: 0, vote: null, commit: 0 })
