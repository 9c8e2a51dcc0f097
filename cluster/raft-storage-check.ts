/**
 * Compile-time check that the log stores in storage/raftlog fit the storage interface the
 * Raft core owns (cluster/raft/storage.ts). Neither side imports the other, so this is the one
 * place that sees both; it emits no code. Run by `tsc --noEmit` like every other file.
 */
import type { RaftStorage, StorageErrorCode } from './raft/storage.js'
import type { LevelLogStorage } from '../storage/raftlog/level-log-storage.js'
import type { LogStorage, LogStorageErrorCode } from '../storage/raftlog/log-storage.js'
import type { MemoryLogStorage } from '../storage/raftlog/memory-log-storage.js'

type Fits<Want, T extends Want> = T

export type StoresFit = [
  Fits<RaftStorage, LogStorage>,
  Fits<RaftStorage, LevelLogStorage>,
  Fits<RaftStorage, MemoryLogStorage>,
  // The core recognizes storage errors by code: both sides must name the same codes.
  Fits<StorageErrorCode, LogStorageErrorCode>,
  Fits<LogStorageErrorCode, StorageErrorCode>
]
