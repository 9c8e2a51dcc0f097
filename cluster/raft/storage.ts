/**
 * The log storage the Raft core needs (after etcd-io/raft's `Storage`): the entries, hard
 * state and snapshot one node keeps on disk. The core owns this interface; persistence
 * implements it. Nothing here imports from storage/: storage/raftlog's LevelLogStorage and
 * MemoryLogStorage fit it structurally, with records of their own, and the wiring above both
 * (cluster/cluster.ts, cluster/sim, the tests) hands them in. cluster/raft-storage-check.ts
 * checks at compile time that they still fit.
 *
 * The core is pure and synchronous, so the read side is synchronous: implementations keep
 * the uncompacted log in memory and write through. The write side is buffered: every write
 * is visible to reads at once, and becomes durable only when a later `sync()` resolves (one
 * fsync for all earlier writes — group commit).
 *
 * Indexes: `firstIndex() - 1` is the compaction point (the last snapshot's index, or a later
 * `compact()`), whose term is still known. Live entries are `firstIndex() .. lastIndex()`.
 * An empty log has firstIndex 1 and lastIndex 0.
 *
 * Errors are recognized by their `code` (a StorageErrorCode), never by class or identity:
 * a store throws error objects of its own that carry these codes.
 * - RAFT_LOG_COMPACTED (ErrCompacted): the index is at or below the compaction point (for
 *   `term`, below it).
 * - RAFT_LOG_UNAVAILABLE (ErrUnavailable): the index is past `lastIndex()`.
 * - RAFT_LOG_SNAP_OUT_OF_DATE (ErrSnapOutOfDate): the snapshot is not newer than the one
 *   already held.
 * Records handed in and out are treated as immutable; neither side may mutate them.
 */
import type { ConfState, Entry, HardState, Snapshot } from './types.js'

export interface InitialState {
  hardState: HardState
  /** The configuration of the latest snapshot (empty when there is none). */
  conf: ConfState
}

/** The read side: all the core itself touches (RaftLog reads through it). */
export interface RaftLogReader {
  initialState (): InitialState
  /**
   * Entries `lo` (inclusive) to `hi` (exclusive). With `maxBytes`, stops before the entry
   * that would push the sum of data sizes past it, but always returns at least one entry.
   * Throws RAFT_LOG_COMPACTED when `lo <= firstIndex() - 1`, RAFT_LOG_UNAVAILABLE when
   * `hi > lastIndex() + 1`.
   */
  entries (lo: number, hi: number, maxBytes?: number): Entry[]
  /**
   * Term of entry `i`; at the compaction point, the snapshot's (or compaction's) term.
   * Throws RAFT_LOG_COMPACTED below the compaction point, RAFT_LOG_UNAVAILABLE past `lastIndex()`.
   */
  term (i: number): number
  firstIndex (): number
  lastIndex (): number
  /** The latest snapshot; index 0 when there is none. */
  snapshot (): Snapshot
}

/** The whole store: the read side plus what the driver does to persist a Ready. */
export interface RaftStorage extends RaftLogReader {
  /** Load state from disk. Reads and writes before `open()` throw RAFT_LOG_NOT_OPEN. */
  open (): Promise<void>
  /** Make every buffered write durable, then release the store. */
  close (): Promise<void>

  // --- write side: visible at once, durable after the next sync() ---
  /**
   * Append contiguous entries. Any existing suffix from `entries[0].index` on is dropped first
   * (a conflicting follower log). Entries at or below the compaction point are skipped.
   * Throws RAFT_LOG_GAP when `entries[0].index > lastIndex() + 1`.
   */
  append (entries: Entry[]): void
  setHardState (hs: HardState): void
  /** Replace the whole log with `snap`. Throws RAFT_LOG_SNAP_OUT_OF_DATE unless it is newer than ours. */
  applySnapshot (snap: Snapshot): void
  /**
   * Drop entries up to and including `index`, keeping its term. Compact only up to the latest
   * snapshot's index, or a follower that lags further cannot be caught up.
   * Throws RAFT_LOG_COMPACTED when `index <= firstIndex() - 1`, RAFT_LOG_UNAVAILABLE past `lastIndex()`.
   */
  compact (index: number): void
  /**
   * Record a snapshot of the state machine as of applied entry `index` (it does not compact).
   * Keeps every field of `conf`, including `removed`. Throws RAFT_LOG_SNAP_OUT_OF_DATE when
   * `index <= snapshot().meta.index`, RAFT_LOG_COMPACTED when the entry's term is no longer
   * known, RAFT_LOG_UNAVAILABLE past `lastIndex()`.
   */
  createSnapshot (index: number, conf: ConfState, data: Uint8Array): Snapshot
  /** Make every earlier write durable with one fsync. Concurrent calls share flushes. */
  sync (): Promise<void>
}

/** The codes a RaftStorage's errors carry. They never change; messages may. */
export const STORAGE_ERROR_CODES = [
  'RAFT_LOG_COMPACTED',
  'RAFT_LOG_UNAVAILABLE',
  'RAFT_LOG_SNAP_OUT_OF_DATE',
  'RAFT_LOG_GAP',
  'RAFT_LOG_BAD_RANGE',
  'RAFT_LOG_NOT_OPEN',
  'RAFT_LOG_CORRUPT'
] as const

export type StorageErrorCode = typeof STORAGE_ERROR_CODES[number]

const codes: ReadonlySet<string> = new Set(STORAGE_ERROR_CODES)

/** An error from a RaftStorage, or the core's own for the same condition (raft-log.ts). */
export interface StorageErrorLike {
  readonly code: StorageErrorCode
  readonly message: string
}

/** The core's own storage errors: RaftLog throws them when its unstable tail answers instead of the store. */
export class StorageError extends Error implements StorageErrorLike {
  static override name = 'StorageError'
  readonly code: StorageErrorCode
  constructor (code: StorageErrorCode, message: string) {
    super(message)
    this.name = 'StorageError'
    this.code = code
  }
}

export const ErrCompacted = new StorageError('RAFT_LOG_COMPACTED', 'requested index is unavailable due to compaction')
export const ErrUnavailable = new StorageError('RAFT_LOG_UNAVAILABLE', 'requested entry at index is unavailable')
export const ErrSnapOutOfDate = new StorageError('RAFT_LOG_SNAP_OUT_OF_DATE', 'requested index is older than the existing snapshot')

/**
 * Is `err` a storage error (with `code`, when given)? Decided by the `code` property alone, so
 * errors a store defines for itself count as well as the core's sentinels.
 */
export function isStorageError (err: unknown, code?: StorageErrorCode): err is StorageErrorLike {
  if (typeof err !== 'object' || err === null) return false
  const c = (err as { code?: unknown }).code
  return typeof c === 'string' && codes.has(c) && (code === undefined || c === code)
}
