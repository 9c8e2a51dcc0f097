/**
 * Shared vocabulary of the Raft core: log records, messages, configuration changes, the
 * Ready batch, and the read side of the log storage the core reads through.
 *
 * The log records (entries, hard state, snapshot) are the ones storage/raftlog defines, so
 * the core hands its Ready straight to a LogStorage without converting anything.
 */
import type {
  LogEntry, HardState as StoredHardState, ConfState as StoredConfState, Snapshot as StoredSnapshot
} from '../../storage/raftlog/log-storage.js'
import { ENTRY_CONF, ENTRY_NORMAL } from '../../storage/raftlog/log-storage.js'

export { ENTRY_CONF, ENTRY_NORMAL }

/** A node's identity (a libp2p peer id later). Never reused: a wiped node rejoins with a new id. */
export type NodeId = string

/** One log entry; `type` is ENTRY_NORMAL (0) or ENTRY_CONF (1, data is an encoded ConfChange). */
export type Entry = LogEntry
export type HardState = StoredHardState
/**
 * Voters and learners. `removed` lists ids taken out of the cluster, which are never accepted
 * again; a store that does not keep it loses only that extra protection across snapshots.
 */
export type ConfState = StoredConfState & { removed?: NodeId[] }
export type Snapshot = StoredSnapshot

export type ConfChangeType = 'addVoter' | 'addLearner' | 'promote' | 'remove'

/** A single-server membership change. `id` lets a driver match the applied change to its caller. */
export interface ConfChange {
  type: ConfChangeType
  node: NodeId
  id?: string
}

export type MessageType =
  | 'Vote' | 'VoteResp' | 'PreVote' | 'PreVoteResp'
  | 'App' | 'AppResp' | 'Heartbeat' | 'HeartbeatResp'
  | 'Snap' | 'TimeoutNow' | 'ReadIndex' | 'ReadIndexResp'
  | 'Prop' | 'TransferLeader'

/**
 * One Raft message. Like etcd's pb.Message, one flat record whose fields mean different
 * things per type:
 * - App: `index`/`logTerm` name the entry before `entries`; `commit` is the leader's commit.
 * - AppResp: `index` is the last matching index, or on reject the rejected probe index, with
 *   `rejectHint`/`logTerm` naming where the follower's log may match (fast backtracking).
 *   With `offset` it acknowledges snapshot chunks instead: the follower holds `offset` bytes
 *   (of `total`) of the snapshot at `index`, from byte 0 without a gap.
 * - Vote/PreVote: `index`/`logTerm` are the candidate's last entry; `force` is a transfer.
 * - Heartbeat/HeartbeatResp, ReadIndex/ReadIndexResp: `context` carries the read request id.
 * - Snap: `snapshot.data` is one chunk at byte `offset` of `total`; `done` on the last one.
 * - Prop: `entries` are proposals forwarded from a follower.
 */
export interface Message {
  type: MessageType
  from: NodeId
  to: NodeId
  term: number
  logTerm: number
  index: number
  commit: number
  entries: Entry[]
  reject: boolean
  rejectHint: number
  context?: Uint8Array
  snapshot?: Snapshot
  offset?: number
  total?: number
  done?: boolean
  force?: boolean
}

export type Role = 'follower' | 'candidate' | 'precandidate' | 'leader'

/** Volatile state: who leads and what this node is. Not persisted. */
export interface SoftState {
  leader: NodeId | null
  role: Role
}

/** A linearizable read: once this node has applied `index`, a read for `context` is safe. */
export interface ReadState {
  index: number
  context: Uint8Array
}

/**
 * What the application must do next, in order: persist `entries`, `hardState` and `snapshot`
 * (one sync when `mustSync`), then send `messages`, then apply `committedEntries`, then call
 * `advance(ready)`.
 */
export interface Ready {
  softState?: SoftState
  hardState?: HardState
  entries: Entry[]
  snapshot?: Snapshot
  messages: Message[]
  committedEntries: Entry[]
  readStates: ReadState[]
  mustSync: boolean
}

/**
 * The read side of the log storage (structurally the read half of storage/raftlog's
 * LogStorage). Synchronous: implementations keep the uncompacted log in memory.
 * `entries` and `term` throw ErrCompacted / ErrUnavailable.
 */
export interface RaftLogReader {
  initialState (): { hardState: HardState, conf: ConfState }
  entries (lo: number, hi: number, maxBytes?: number): Entry[]
  term (i: number): number
  firstIndex (): number
  lastIndex (): number
  snapshot (): Snapshot
}

/** A seeded source of randomness: an integer in [0, n). */
export interface Rand {
  intn (n: number): number
}
