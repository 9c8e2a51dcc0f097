/**
 * Shared vocabulary of the Raft core: log records, messages, configuration changes and the
 * Ready batch. The log storage the core reads through and the driver persists into is in
 * storage.ts.
 *
 * The log records (entries, hard state, snapshot) are the core's own. storage/raftlog keeps
 * records of the same shape, defined there, so the core hands its Ready straight to a store
 * without converting anything, and neither side imports the other.
 */

/** Entry type: a normal command. */
export const ENTRY_NORMAL = 0
/** Entry type: a configuration change (data is an encoded ConfChange). */
export const ENTRY_CONF = 1

/** A node's identity (a libp2p peer id later). Never reused: a wiped node rejoins with a new id. */
export type NodeId = string

/** One log entry; `type` is ENTRY_NORMAL (0) or ENTRY_CONF (1, data is an encoded ConfChange). */
export interface Entry {
  index: number
  term: number
  type: number
  data: Uint8Array
}

export interface HardState {
  term: number
  /** Who this node voted for in `term`, or null. */
  vote: NodeId | null
  commit: number
}

/**
 * Voters and learners. `removed` lists ids taken out of the cluster, which are never accepted
 * again; a store that does not keep it loses only that extra protection across snapshots.
 */
export interface ConfState {
  voters: NodeId[]
  learners: NodeId[]
  removed?: NodeId[]
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

/** A seeded source of randomness: an integer in [0, n). */
export interface Rand {
  intn (n: number): number
}
