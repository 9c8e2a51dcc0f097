/**
 * The Raft state machine (after etcd-io/raft raft.go): `step(m)` and `tick()`, one step
 * function per role. Pure: no timers, clocks, I/O or randomness of its own. Messages to
 * send, entries to persist and entries to apply are collected for RawNode's Ready.
 *
 * Deviations from etcd worth knowing:
 * - Configuration changes are single-server and take effect when applied (RawNode.advance),
 *   one at a time, and only after the leader has committed an entry of its own term.
 * - A removed node id is remembered and its messages are dropped for good.
 * - Snapshots are sent in chunks; the follower reassembles them. A snapshot that does not
 *   complete within two election timeouts is sent again.
 * - Leader proposals are broadcast lazily (at the next Ready), so proposals made between
 *   two Readies travel in one append per follower.
 */
import { ErrConfChangeRejected, ErrProposalDropped, ErrProposalTooLarge } from './errors.js'
import { decodeConfChange } from './codec.js'
import { Progress, committedIndex, quorum, voteResult, type VoteResult } from './progress.js'
import { RaftLog, entrySize } from './raft-log.js'
import { ReadOnly } from './read-only.js'
import {
  ENTRY_CONF, ENTRY_NORMAL,
  type ConfChange, type ConfState, type Entry, type HardState, type Message, type MessageType,
  type NodeId, type Rand, type ReadState, type Role, type Snapshot, type SoftState
} from './types.js'
import { isStorageError, type RaftLogReader } from './storage.js'

export interface RaftConfig {
  id: NodeId
  storage: RaftLogReader
  /** Seeded randomness for election timeouts: runs replay from their seed. */
  rand: Rand
  /**
   * Ticks a follower waits without hearing from a leader before campaigning; the actual
   * timeout is drawn from [electionTick, 2*electionTick) so that split votes resolve.
   * Must exceed heartbeatTick. Default 10.
   */
  electionTick?: number
  /** Ticks between leader heartbeats. Default 1. */
  heartbeatTick?: number
  /** Last index the application has applied (on restart). Default: the snapshot index. */
  applied?: number
  /** Upper bound on the entry bytes of one append message (at least one entry is sent). Default 1 MiB. */
  maxSizePerMsg?: number
  /** Append messages in flight to one follower in replicate state. Default 256. */
  maxInflightMsgs?: number
  /** Entry bytes in flight to one follower; 0 means no bound. Default 0. */
  maxInflightBytes?: number
  /** Bytes of committed entries in one Ready. Default 64 MiB. */
  maxCommittedSizePerReady?: number
  /** Ask for votes without raising the term first, so a rejoining node cannot disrupt. Default true. */
  preVote?: boolean
  /**
   * The leader steps down when it has not heard from a quorum within an election timeout,
   * and followers ignore votes while they have a leader. Default true.
   */
  checkQuorum?: boolean
  /** Bytes of snapshot data per Snap message. Default 1 MiB. */
  snapshotChunkSize?: number
  /** Snapshot bytes sent ahead of the follower's acknowledgement (at least one chunk). Default 8 MiB. */
  snapshotWindowBytes?: number
  /**
   * Largest entry accepted for proposal. A larger one is refused (ErrProposalTooLarge) before
   * it enters the log: the transport could never deliver it, and a leader that appended it
   * would retry it forever while nothing after it commits. Default: no bound.
   */
  maxEntryBytes?: number
}

export interface ProgressStatus {
  match: number
  next: number
  state: Progress['state']
  paused: boolean
  inflight: number
  inflightBytes: number
  isLearner: boolean
  recentActive: boolean
}

export interface Status {
  id: NodeId
  term: number
  vote: NodeId | null
  commit: number
  applied: number
  lastIndex: number
  firstIndex: number
  leader: NodeId | null
  role: Role
  conf: ConfState
  /** Only on the leader. */
  progress?: Map<NodeId, ProgressStatus>
  leadTransferee: NodeId | null
  /** Proposals this node refused or dropped (no leader, transfer in progress, not a member). */
  droppedProposals: number
}

interface IncomingSnapshot {
  key: string
  snapshot: Snapshot
  total: number
  chunks: Map<number, Uint8Array>
}

type Campaign = 'pre' | 'election' | 'transfer'

const MiB = 1024 * 1024

function voteRespType (t: MessageType): MessageType {
  return t === 'Vote' ? 'VoteResp' : 'PreVoteResp'
}

export class Raft {
  readonly id: NodeId
  term = 0
  vote: NodeId | null = null
  role: Role = 'follower'
  lead: NodeId | null = null
  readonly raftLog: RaftLog

  voters = new Set<NodeId>()
  learners = new Set<NodeId>()
  removed = new Set<NodeId>()
  readonly progress = new Map<NodeId, Progress>()
  private votes = new Map<NodeId, boolean>()

  msgs: Message[] = []
  readStates: ReadState[] = []
  droppedProposals = 0

  leadTransferee: NodeId | null = null
  /** Index of the last conf entry the leader appended; no other until it is applied. */
  pendingConfIndex = 0
  private readonly readOnly = new ReadOnly()
  /** ReadIndex requests that arrived before this leader committed an entry of its term. */
  private pendingReadIndexMessages: Message[] = []
  /** Proposals were appended since the last broadcast (batched until the next Ready). */
  private pendingBcast = false
  private incoming: IncomingSnapshot | undefined

  electionElapsed = 0
  heartbeatElapsed = 0
  randomizedElectionTimeout = 0

  readonly electionTimeout: number
  readonly heartbeatTimeout: number
  readonly maxMsgSize: number
  readonly maxInflight: number
  readonly maxInflightBytes: number
  readonly maxCommittedSizePerReady: number
  readonly preVote: boolean
  readonly checkQuorum: boolean
  readonly snapshotChunkSize: number
  readonly maxEntryBytes: number
  readonly snapshotWindowBytes: number
  private readonly rand: Rand

  constructor (c: RaftConfig) {
    this.id = c.id
    this.rand = c.rand
    this.electionTimeout = c.electionTick ?? 10
    this.heartbeatTimeout = c.heartbeatTick ?? 1
    if (this.heartbeatTimeout <= 0) throw new RangeError('heartbeatTick must be greater than 0')
    if (this.electionTimeout <= this.heartbeatTimeout) throw new RangeError('electionTick must be greater than heartbeatTick')
    this.maxMsgSize = c.maxSizePerMsg ?? MiB
    this.maxInflight = c.maxInflightMsgs ?? 256
    if (this.maxInflight <= 0) throw new RangeError('maxInflightMsgs must be greater than 0')
    this.maxInflightBytes = c.maxInflightBytes ?? 0
    this.maxCommittedSizePerReady = c.maxCommittedSizePerReady ?? 64 * MiB
    this.preVote = c.preVote ?? true
    this.checkQuorum = c.checkQuorum ?? true
    this.snapshotChunkSize = c.snapshotChunkSize ?? MiB
    if (this.snapshotChunkSize <= 0) throw new RangeError('snapshotChunkSize must be greater than 0')
    this.maxEntryBytes = c.maxEntryBytes ?? Infinity
    this.snapshotWindowBytes = c.snapshotWindowBytes ?? 8 * MiB
    if (this.snapshotWindowBytes <= 0) throw new RangeError('snapshotWindowBytes must be greater than 0')
    if (this.maxEntryBytes <= 0) throw new RangeError('maxEntryBytes must be greater than 0')

    this.raftLog = new RaftLog(c.storage)
    const { hardState, conf } = c.storage.initialState()
    this.setConf(conf)
    if (hardState.term !== 0 || hardState.commit !== 0 || hardState.vote !== null) this.loadState(hardState)
    if (c.applied !== undefined && c.applied > this.raftLog.committed && c.applied <= this.raftLog.lastIndex()) {
      // Only committed entries are ever applied, so the application's applied index is a lower
      // bound on the commit index, even if the hard state that recorded it was lost in a crash.
      this.raftLog.commitTo(c.applied)
    }
    if (c.applied !== undefined && c.applied > this.raftLog.applied) {
      // The application will not re-apply entries up to `applied`: replay their conf changes
      // on top of the snapshot's configuration ourselves.
      const lo = this.raftLog.applied + 1
      for (const e of this.raftLog.slice(lo, c.applied + 1)) {
        if (e.type === ENTRY_CONF) this.applyConfChange(decodeConfChange(e.data))
      }
      this.raftLog.appliedTo(c.applied)
    }
    this.becomeFollower(this.term, null)
  }

  private loadState (hs: HardState): void {
    if (hs.commit < this.raftLog.committed || hs.commit > this.raftLog.lastIndex()) {
      throw new Error(`raft: ${this.id} state.commit ${hs.commit} is out of range [${this.raftLog.committed}, ${this.raftLog.lastIndex()}]`)
    }
    this.raftLog.committed = hs.commit
    this.term = hs.term
    this.vote = hs.vote
  }

  hardState (): HardState {
    return { term: this.term, vote: this.vote, commit: this.raftLog.committed }
  }

  softState (): SoftState {
    return { leader: this.lead, role: this.role }
  }

  confState (): ConfState {
    const cs: ConfState = { voters: [...this.voters].sort(), learners: [...this.learners].sort() }
    if (this.removed.size > 0) cs.removed = [...this.removed].sort()
    return cs
  }

  /** A voter with no snapshot waiting to be installed may campaign. */
  promotable (): boolean {
    return this.voters.has(this.id) && !this.raftLog.hasPendingSnapshot()
  }

  // --- configuration ---

  private setConf (conf: ConfState): void {
    this.voters = new Set(conf.voters)
    this.learners = new Set(conf.learners)
    for (const id of conf.removed ?? []) this.removed.add(id)
    for (const id of this.progress.keys()) {
      if (!this.voters.has(id) && !this.learners.has(id)) this.progress.delete(id)
    }
    for (const id of [...this.voters, ...this.learners]) this.ensureProgress(id)
    for (const [id, pr] of this.progress) pr.isLearner = this.learners.has(id)
  }

  private ensureProgress (id: NodeId): Progress {
    let pr = this.progress.get(id)
    if (pr === undefined) {
      pr = new Progress(this.raftLog.lastIndex() + 1, this.learners.has(id), this.maxInflight, this.maxInflightBytes)
      // A new peer gets the benefit of the doubt, or CheckQuorum would count it as dead at once.
      pr.recentActive = true
      if (id === this.id) pr.match = this.raftLog.lastIndex()
      this.progress.set(id, pr)
    }
    return pr
  }

  /** Is `cc` acceptable on top of the current configuration? */
  validConfChange (cc: ConfChange): boolean {
    switch (cc.type) {
      case 'addVoter':
        return !this.removed.has(cc.node) && !this.voters.has(cc.node)
      case 'addLearner':
        return !this.removed.has(cc.node) && !this.voters.has(cc.node) && !this.learners.has(cc.node)
      case 'promote': {
        if (!this.learners.has(cc.node)) return false
        // Only a learner that has caught up joins the quorum, or commits could stall behind it.
        const pr = this.progress.get(cc.node)
        return this.role !== 'leader' || (pr !== undefined && pr.match >= this.raftLog.committed)
      }
      case 'remove':
        // Removing the last voter would leave no one to commit anything.
        return (this.voters.has(cc.node) && this.voters.size > 1) || this.learners.has(cc.node)
    }
  }

  /**
   * Apply a committed configuration change (called as the entry is applied). A change that
   * became invalid meanwhile (e.g. re-adding a removed id) is a no-op.
   */
  applyConfChange (cc: ConfChange): ConfState {
    const voters = new Set(this.voters)
    const learners = new Set(this.learners)
    switch (cc.type) {
      case 'addVoter':
        if (!this.removed.has(cc.node)) {
          learners.delete(cc.node)
          voters.add(cc.node)
        }
        break
      case 'addLearner':
        if (!this.removed.has(cc.node) && !voters.has(cc.node)) learners.add(cc.node)
        break
      case 'promote':
        if (learners.delete(cc.node)) voters.add(cc.node)
        break
      case 'remove':
        if (voters.size === 1 && voters.has(cc.node)) break
        voters.delete(cc.node)
        learners.delete(cc.node)
        this.removed.add(cc.node)
        break
    }
    this.setConf({ voters: [...voters], learners: [...learners] })
    this.afterConfChange()
    return this.confState()
  }

  private afterConfChange (): void {
    if (this.role !== 'leader') return
    if (this.leadTransferee !== null && !this.voters.has(this.leadTransferee)) this.abortLeaderTransfer()
    if (!this.voters.has(this.id)) {
      // Removed (or demoted) leader: tell everyone the commit index, hand over, step down.
      this.bcastAppend()
      let best: NodeId | null = null
      let bestMatch = -1
      for (const v of [...this.voters].sort()) {
        const m = this.progress.get(v)!.match
        if (m > bestMatch) { best = v; bestMatch = m }
      }
      if (best !== null && bestMatch === this.raftLog.lastIndex()) this.send({ type: 'TimeoutNow', to: best })
      this.becomeFollower(this.term, null)
      return
    }
    // The quorum may have shrunk: entries may now be committed.
    if (this.maybeCommit()) this.bcastAppend()
  }

  // --- sending ---

  private send (m: Partial<Message> & { type: MessageType, to: NodeId }): void {
    const msg: Message = {
      type: m.type,
      // Forwarded messages keep their origin (a proposal's node, a transfer's target).
      from: m.from ?? this.id,
      to: m.to,
      term: m.term ?? 0,
      logTerm: m.logTerm ?? 0,
      index: m.index ?? 0,
      commit: m.commit ?? 0,
      entries: m.entries ?? [],
      reject: m.reject ?? false,
      rejectHint: m.rejectHint ?? 0
    }
    if (m.context !== undefined) msg.context = m.context
    if (m.snapshot !== undefined) msg.snapshot = m.snapshot
    if (m.offset !== undefined) msg.offset = m.offset
    if (m.total !== undefined) msg.total = m.total
    if (m.done !== undefined) msg.done = m.done
    if (m.force !== undefined) msg.force = m.force
    if (m.type === 'Vote' || m.type === 'PreVote' || m.type === 'VoteResp' || m.type === 'PreVoteResp') {
      // Votes carry the term they are for (a PreVote the next term), set by the caller.
      if (m.term === undefined) throw new Error(`raft: term should be set when sending ${m.type}`)
    } else if (m.type !== 'Prop' && m.type !== 'ReadIndex') {
      // Forwarded proposals and reads are treated as local by the leader: they carry no term.
      msg.term = this.term
    }
    this.msgs.push(msg)
  }

  /** Send entries (or a snapshot) to `to` if flow control allows. Returns whether a message went. */
  maybeSendAppend (to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.progress.get(to)
    if (pr === undefined || to === this.id) return false
    if (pr.isPaused()) return false
    const prevIndex = pr.next - 1
    let prevTerm: number
    let ents: Entry[]
    try {
      prevTerm = this.raftLog.term(prevIndex)
      ents = this.raftLog.entries(pr.next, this.maxMsgSize)
    } catch (err) {
      if (isStorageError(err, 'RAFT_LOG_COMPACTED')) return this.sendSnapshot(to, pr)
      throw err
    }
    if (ents.length === 0 && !sendIfEmpty) return false
    let bytes = 0
    for (const e of ents) bytes += entrySize(e)
    this.send({ type: 'App', to, index: prevIndex, logTerm: prevTerm, entries: ents, commit: this.raftLog.committed })
    pr.sentEntries(prevIndex + ents.length, ents.length, bytes)
    return true
  }

  sendAppend (to: NodeId): void {
    this.maybeSendAppend(to, true)
  }

  /**
   * The entries the follower needs are compacted: send the latest snapshot, in chunks, a
   * window at a time. The follower acknowledges the bytes it holds (an AppResp with an
   * offset), and each acknowledgement lets more chunks go: a snapshot larger than what the
   * transport queues for one peer would otherwise lose its tail on every attempt.
   */
  private sendSnapshot (to: NodeId, pr: Progress): boolean {
    if (!pr.recentActive) return false
    const snap = this.raftLog.snapshot()
    if (snap.meta.index === 0) return false
    pr.becomeSnapshot(snap.meta.index)
    this.sendSnapshotChunks(to, pr)
    return true
  }

  private sendSnapshotChunks (to: NodeId, pr: Progress): void {
    const snap = this.raftLog.snapshot()
    // Compacted again meanwhile: that snapshot is gone; probe, which sends the new one.
    if (snap.meta.index !== pr.pendingSnapshot) { pr.becomeProbe(); return }
    const total = snap.data.byteLength
    const size = this.snapshotChunkSize
    const window = this.snapshotWindowBytes
    do {
      const offset = pr.snapshotSent
      const end = Math.min(offset + size, total)
      this.send({
        type: 'Snap',
        to,
        snapshot: { meta: snap.meta, data: snap.data.subarray(offset, end) },
        offset,
        total,
        done: end === total
      })
      pr.snapshotSent = end
    } while (pr.snapshotSent < total && pr.snapshotSent < pr.snapshotAcked + window)
  }

  bcastAppend (): void {
    this.pendingBcast = false
    for (const id of this.progress.keys()) {
      if (id !== this.id) this.sendAppend(id)
    }
  }

  /** Send the appends batched since the last Ready. */
  flushBcast (): void {
    if (!this.pendingBcast) return
    this.pendingBcast = false
    if (this.role !== 'leader') return
    for (const id of this.progress.keys()) {
      if (id !== this.id) this.maybeSendAppend(id, false)
    }
  }

  private bcastHeartbeat (ctx?: Uint8Array): void {
    const context = ctx ?? this.readOnly.lastPendingContext()
    for (const [id, pr] of this.progress) {
      if (id === this.id) continue
      // A follower may not have the entries up to our commit yet: never tell it more than it matches.
      const commit = Math.min(pr.match, this.raftLog.committed)
      this.send(context !== undefined ? { type: 'Heartbeat', to: id, commit, context } : { type: 'Heartbeat', to: id, commit })
    }
  }

  private sendTimeoutNow (to: NodeId): void {
    this.send({ type: 'TimeoutNow', to })
  }

  // --- roles ---

  private reset (term: number): void {
    if (this.term !== term) {
      this.term = term
      this.vote = null
    }
    this.lead = null
    this.electionElapsed = 0
    this.heartbeatElapsed = 0
    this.resetRandomizedElectionTimeout()
    this.abortLeaderTransfer()
    this.votes = new Map()
    for (const [id, pr] of this.progress) {
      const fresh = new Progress(this.raftLog.lastIndex() + 1, pr.isLearner, this.maxInflight, this.maxInflightBytes)
      if (id === this.id) {
        fresh.match = this.raftLog.lastIndex()
        fresh.recentActive = true
      }
      this.progress.set(id, fresh)
    }
    this.pendingConfIndex = 0
    this.pendingBcast = false
    this.readOnly.reset()
    this.pendingReadIndexMessages = []
  }

  private resetRandomizedElectionTimeout (): void {
    this.randomizedElectionTimeout = this.electionTimeout + this.rand.intn(this.electionTimeout)
  }

  becomeFollower (term: number, lead: NodeId | null): void {
    this.reset(term)
    this.lead = lead
    this.role = 'follower'
  }

  becomeCandidate (): void {
    if (this.role === 'leader') throw new Error('raft: invalid transition [leader -> candidate]')
    this.reset(this.term + 1)
    this.vote = this.id
    this.role = 'candidate'
  }

  becomePreCandidate (): void {
    if (this.role === 'leader') throw new Error('raft: invalid transition [leader -> pre-candidate]')
    // A pre-candidate changes neither term nor vote: a lost pre-election leaves no trace.
    this.votes = new Map()
    this.lead = null
    this.role = 'precandidate'
  }

  becomeLeader (): void {
    if (this.role === 'follower') throw new Error('raft: invalid transition [follower -> leader]')
    this.reset(this.term)
    this.lead = this.id
    this.role = 'leader'
    const self = this.progress.get(this.id)
    if (self !== undefined) self.becomeReplicate()
    // Conservatively treat any conf entry in the uncommitted tail as pending.
    this.pendingConfIndex = this.raftLog.lastIndex()
    // §5.4.2 / §8: an empty entry of our term lets us commit everything before it and serve reads.
    this.appendEntry([{ index: 0, term: 0, type: ENTRY_NORMAL, data: new Uint8Array(0) }])
  }

  /** Start an election now if allowed (the local MsgHup of etcd). */
  hup (transfer: boolean): void {
    if (this.role === 'leader') return
    if (!this.promotable()) return
    if (this.hasUnappliedConfChanges()) return
    this.campaign(transfer ? 'transfer' : this.preVote ? 'pre' : 'election')
  }

  private hasUnappliedConfChanges (): boolean {
    if (this.raftLog.applied >= this.raftLog.committed) return false
    const lo = Math.max(this.raftLog.applied + 1, this.raftLog.firstIndex())
    const ents = this.raftLog.slice(lo, this.raftLog.committed + 1)
    return ents.some(e => e.type === ENTRY_CONF)
  }

  private campaign (kind: Campaign): void {
    let voteMsg: MessageType
    let term: number
    if (kind === 'pre') {
      this.becomePreCandidate()
      voteMsg = 'PreVote'
      // The term we would campaign in; ours does not move until the pre-vote is won.
      term = this.term + 1
    } else {
      this.becomeCandidate()
      voteMsg = 'Vote'
      term = this.term
    }
    if (this.poll(this.id, true) === 'won') {
      // Single voter: won at once.
      if (kind === 'pre') this.campaign('election')
      else this.becomeLeader()
      return
    }
    for (const id of [...this.voters].sort()) {
      if (id === this.id) continue
      this.send({
        type: voteMsg,
        to: id,
        term,
        index: this.raftLog.lastIndex(),
        logTerm: this.raftLog.lastTerm(),
        ...(kind === 'transfer' ? { force: true } : {})
      })
    }
  }

  private poll (id: NodeId, granted: boolean): VoteResult {
    if (!this.votes.has(id)) this.votes.set(id, granted)
    return voteResult(this.voters, this.votes)
  }

  // --- tick ---

  tick (): void {
    if (this.role === 'leader') this.tickHeartbeat()
    else this.tickElection()
  }

  private tickElection (): void {
    this.electionElapsed++
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0
      this.hup(false)
    }
  }

  private tickHeartbeat (): void {
    this.heartbeatElapsed++
    this.electionElapsed++
    if (this.electionElapsed >= this.electionTimeout) {
      this.electionElapsed = 0
      if (this.checkQuorum) {
        if (!this.quorumActive()) {
          this.becomeFollower(this.term, null)
          return
        }
      }
      // A transfer that did not finish within an election timeout is abandoned.
      if (this.role === 'leader' && this.leadTransferee !== null) this.abortLeaderTransfer()
    }
    if (this.role !== 'leader') return
    for (const pr of this.progress.values()) {
      if (pr.state !== 'snapshot') continue
      // Chunks may have been lost: after two election timeouts, probe (and resend) again.
      if (++pr.snapshotTicks >= 2 * this.electionTimeout) pr.becomeProbe()
    }
    if (this.heartbeatElapsed >= this.heartbeatTimeout) {
      this.heartbeatElapsed = 0
      this.bcastHeartbeat()
    }
  }

  /** CheckQuorum: did a quorum of voters talk to us since the last check? Resets the marks. */
  private quorumActive (): boolean {
    let active = 0
    for (const v of this.voters) {
      const pr = this.progress.get(v)
      if (v === this.id || pr?.recentActive === true) active++
    }
    for (const [id, pr] of this.progress) pr.recentActive = id === this.id
    return active >= quorum(this.voters.size)
  }

  // --- step ---

  /** The message being stepped came from this node's application, not the network. */
  private local = false

  /**
   * Process a message made by this node's application (Prop, ReadIndex, TransferLeader).
   * A proposal that cannot be handled throws ErrProposalDropped (or ErrConfChangeRejected).
   */
  stepLocal (m: Message): void {
    this.local = true
    try {
      this.step(m)
    } finally {
      this.local = false
    }
  }

  /** Process one message from the network. Nothing here throws for a refused proposal. */
  step (m: Message): void {
    if (this.removed.has(m.from)) return
    if (m.type === 'Prop' && m.entries.some((e) => e.data.byteLength > this.maxEntryBytes)) {
      // Wherever it comes from (local or forwarded), never into the log.
      this.droppedProposals++
      if (this.local) throw ErrProposalTooLarge
      return
    }
    // Handle the message term, which may result in our stepping down to a follower.
    if (m.term === 0) {
      // Local message, or a forwarded Prop / ReadIndex.
    } else if (m.term > this.term) {
      if (m.type === 'Vote' || m.type === 'PreVote') {
        const inLease = this.checkQuorum && this.lead !== null && this.electionElapsed < this.electionTimeout
        // Within the lease of a leader we hear from, ignore votes: the candidate is disruptive.
        if (m.force !== true && inLease) return
      }
      if (m.type === 'PreVote') {
        // A pre-vote never changes our term.
      } else if (m.type === 'PreVoteResp' && !m.reject) {
        // We bump our term when we win the pre-vote, not on each grant.
      } else if (m.type === 'App' || m.type === 'Heartbeat' || m.type === 'Snap') {
        this.becomeFollower(m.term, m.from)
      } else {
        this.becomeFollower(m.term, null)
      }
    } else if (m.term < this.term) {
      if ((this.checkQuorum || this.preVote) && (m.type === 'Heartbeat' || m.type === 'App')) {
        // A stale leader (e.g. back from a partition) learns our term and steps down; without
        // this, with CheckQuorum or PreVote, it would never be told.
        this.send({ type: 'AppResp', to: m.from })
      } else if (m.type === 'PreVote') {
        this.send({ type: 'PreVoteResp', to: m.from, term: this.term, reject: true })
      }
      return
    }

    switch (m.type) {
      case 'Vote':
      case 'PreVote': {
        // We can vote for whom we voted before, for anyone when we have no vote and no leader,
        // and in a pre-vote for a future term.
        const canVote = this.vote === m.from ||
          (this.vote === null && this.lead === null) ||
          (m.type === 'PreVote' && m.term > this.term)
        // A node that knows no configuration at all (a wiped disk: no memory of its votes)
        // must not vote, or it could vote twice in a term. Learners do vote, as in etcd: one
        // may have been promoted without knowing it yet, and the others count on its vote.
        const knowsConf = this.voters.size > 0 || this.learners.size > 0
        if (canVote && knowsConf && this.raftLog.isUpToDate(m.index, m.logTerm)) {
          // Answer with the message's term: for a pre-vote it is a future term we keep out of our state.
          this.send({ type: voteRespType(m.type), to: m.from, term: m.term })
          if (m.type === 'Vote') {
            this.electionElapsed = 0
            this.vote = m.from
          }
        } else {
          this.send({ type: voteRespType(m.type), to: m.from, term: this.term, reject: true })
        }
        return
      }
      default:
        switch (this.role) {
          case 'leader': this.stepLeader(m); return
          case 'candidate':
          case 'precandidate': this.stepCandidate(m); return
          case 'follower': this.stepFollower(m)
        }
    }
  }

  /** Proposal entries, validated for the leader: refused conf changes become empty entries. */
  private admitConfChanges (m: Message): void {
    const local = this.local
    // Committed to this.pendingConfIndex only if the whole proposal is accepted.
    let pending = this.pendingConfIndex
    for (let i = 0; i < m.entries.length; i++) {
      const e = m.entries[i]!
      if (e.type !== ENTRY_CONF) continue
      let ok = false
      try {
        const cc = decodeConfChange(e.data)
        ok = pending <= this.raftLog.applied &&
          this.raftLog.termOrZero(this.raftLog.committed) === this.term &&
          this.validConfChange(cc)
      } catch {
        ok = false
      }
      if (!ok) {
        if (local) throw ErrConfChangeRejected
        m.entries[i] = { index: 0, term: 0, type: ENTRY_NORMAL, data: new Uint8Array(0) }
      } else {
        pending = this.raftLog.lastIndex() + i + 1
      }
    }
    this.pendingConfIndex = pending
  }

  private dropProposal (): void {
    this.droppedProposals++
    if (this.local) throw ErrProposalDropped
  }

  private stepLeader (m: Message): void {
    switch (m.type) {
      case 'Prop': {
        if (m.entries.length === 0) return
        if (!this.progress.has(this.id) || this.leadTransferee !== null) return this.dropProposal()
        // Copy: the entries get their index and term from us.
        const prop: Message = { ...m, entries: m.entries.slice() }
        this.admitConfChanges(prop)
        this.appendEntry(prop.entries)
        this.pendingBcast = true
        return
      }
      case 'ReadIndex':
        if (this.voters.size === 1 && this.voters.has(this.id)) {
          this.respondReadIndex(m, this.raftLog.committed)
          return
        }
        // A new leader does not know the commit index until an entry of its term commits.
        if (this.raftLog.termOrZero(this.raftLog.committed) !== this.term) {
          this.pendingReadIndexMessages.push(m)
          return
        }
        this.sendReadIndexHeartbeats(m)
        return
      default:
        break
    }

    const pr = this.progress.get(m.from)
    if (pr === undefined) return
    switch (m.type) {
      case 'AppResp': {
        pr.recentActive = true
        if (m.offset !== undefined) {
          // A snapshot chunk acknowledged: the follower holds m.offset bytes of snapshot m.index.
          if (pr.state !== 'snapshot' || m.index !== pr.pendingSnapshot || m.offset <= pr.snapshotAcked) return
          pr.snapshotAcked = m.offset
          pr.snapshotTicks = 0
          if (pr.snapshotSent < (m.total ?? 0)) this.sendSnapshotChunks(m.from, pr)
          return
        }
        if (m.reject) {
          let nextProbe = m.rejectHint
          if (m.logTerm > 0) nextProbe = this.raftLog.findConflictByTerm(m.rejectHint, m.logTerm).index
          if (pr.maybeDecrTo(m.index, nextProbe)) {
            if (pr.state === 'replicate') pr.becomeProbe()
            this.sendAppend(m.from)
          }
          return
        }
        // An ack of exactly what we know matches still ends probing (e.g. a lost answer resent).
        if (pr.maybeUpdate(m.index) || (pr.match === m.index && pr.state === 'probe')) {
          if (pr.state === 'probe') {
            pr.becomeReplicate()
          } else if (pr.state === 'snapshot' && pr.match + 1 >= this.raftLog.firstIndex()) {
            // The snapshot (or entries since) got there: resume replication.
            pr.becomeProbe()
            pr.becomeReplicate()
          } else if (pr.state === 'replicate') {
            pr.inflights.freeLE(m.index)
          }
          if (this.maybeCommit()) {
            this.releasePendingReadIndexMessages()
            this.bcastAppend()
          }
          // Keep the pipe full: send while flow control allows.
          while (this.maybeSendAppend(m.from, false)) { /* loop */ }
          if (m.from === this.leadTransferee && pr.match === this.raftLog.lastIndex()) this.sendTimeoutNow(m.from)
        }
        return
      }
      case 'HeartbeatResp': {
        pr.recentActive = true
        pr.msgAppFlowPaused = false
        // The follower is alive but its acks may be lost: let one more append through.
        if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirst()
        if (pr.match < this.raftLog.lastIndex() || pr.state === 'probe') this.sendAppend(m.from)
        if (m.context === undefined || m.context.byteLength === 0) return
        const acks = this.readOnly.recvAck(m.from, m.context)
        if (acks === undefined) return
        let granted = 0
        for (const v of this.voters) if (acks.has(v)) granted++
        if (granted < quorum(this.voters.size)) return
        for (const rs of this.readOnly.advance(m.context)) this.respondReadIndex(rs.req, rs.index)
        return
      }
      case 'TransferLeader': {
        if (pr.isLearner) return
        const to = m.from
        if (this.leadTransferee !== null) {
          if (this.leadTransferee === to) return
          this.abortLeaderTransfer()
        }
        if (to === this.id) return
        // The transfer must finish within an election timeout; count from now.
        this.electionElapsed = 0
        this.leadTransferee = to
        if (pr.match === this.raftLog.lastIndex()) this.sendTimeoutNow(to)
        else this.sendAppend(to)
        return
      }
      default:
    }
  }

  private sendReadIndexHeartbeats (m: Message): void {
    this.readOnly.addRequest(this.raftLog.committed, m)
    this.readOnly.recvAck(this.id, m.context)
    this.bcastHeartbeat(m.context)
  }

  private releasePendingReadIndexMessages (): void {
    if (this.pendingReadIndexMessages.length === 0) return
    if (this.raftLog.termOrZero(this.raftLog.committed) !== this.term) return
    const msgs = this.pendingReadIndexMessages
    this.pendingReadIndexMessages = []
    for (const m of msgs) this.sendReadIndexHeartbeats(m)
  }

  private respondReadIndex (req: Message, index: number): void {
    const context = req.context ?? new Uint8Array(0)
    if (req.from === this.id) this.readStates.push({ index, context })
    else this.send({ type: 'ReadIndexResp', to: req.from, index, context })
  }

  private stepCandidate (m: Message): void {
    const myVoteResp: MessageType = this.role === 'precandidate' ? 'PreVoteResp' : 'VoteResp'
    switch (m.type) {
      case 'Prop':
        return this.dropProposal()
      case 'App':
        this.becomeFollower(m.term, m.from)
        this.handleAppendEntries(m)
        return
      case 'Heartbeat':
        this.becomeFollower(m.term, m.from)
        this.handleHeartbeat(m)
        return
      case 'Snap':
        this.becomeFollower(m.term, m.from)
        this.handleSnapshot(m)
        return
      case 'VoteResp':
      case 'PreVoteResp': {
        if (m.type !== myVoteResp) return
        const res = this.poll(m.from, !m.reject)
        if (res === 'won') {
          if (this.role === 'precandidate') this.campaign('election')
          else {
            this.becomeLeader()
            this.bcastAppend()
          }
        } else if (res === 'lost') {
          // PreVoteResp carries a future term; stay in ours.
          this.becomeFollower(this.term, null)
        }
        return
      }
      default:
    }
  }

  private stepFollower (m: Message): void {
    switch (m.type) {
      case 'Prop':
        if (this.lead === null) return this.dropProposal()
        this.send({ ...m, to: this.lead, term: 0 })
        return
      case 'App':
        this.electionElapsed = 0
        this.lead = m.from
        this.handleAppendEntries(m)
        return
      case 'Heartbeat':
        this.electionElapsed = 0
        this.lead = m.from
        this.handleHeartbeat(m)
        return
      case 'Snap':
        this.electionElapsed = 0
        this.lead = m.from
        this.handleSnapshot(m)
        return
      case 'TransferLeader':
        if (this.lead === null) return
        // `from` is the transfer's target; keep it.
        this.send({ type: 'TransferLeader', to: this.lead, from: m.from })
        return
      case 'TimeoutNow':
        // The leader handed over: campaign now, skipping the pre-vote and the lease check.
        this.hup(true)
        return
      case 'ReadIndex':
        if (this.lead === null) return
        // Keep `from`: the leader answers the node that asked.
        this.send({ type: 'ReadIndex', to: this.lead, from: m.from, context: m.context ?? new Uint8Array(0) })
        return
      case 'ReadIndexResp':
        this.readStates.push({ index: m.index, context: m.context ?? new Uint8Array(0) })
        return
      default:
    }
  }

  private handleAppendEntries (m: Message): void {
    if (m.index < this.raftLog.committed) {
      this.send({ type: 'AppResp', to: m.from, index: this.raftLog.committed })
      return
    }
    const lastNew = this.raftLog.maybeAppend(m.index, m.logTerm, m.commit, m.entries)
    if (lastNew !== undefined) {
      this.send({ type: 'AppResp', to: m.from, index: lastNew })
      return
    }
    // §5.3 with fast backtracking: point the leader at the last index whose term is not
    // above the term of its probe, skipping whole terms of conflicting entries.
    const hintIndex = Math.min(m.index, this.raftLog.lastIndex())
    const hint = this.raftLog.findConflictByTerm(hintIndex, m.logTerm)
    this.send({ type: 'AppResp', to: m.from, index: m.index, reject: true, rejectHint: hint.index, logTerm: hint.term })
  }

  private handleHeartbeat (m: Message): void {
    this.raftLog.commitTo(Math.min(m.commit, this.raftLog.lastIndex()))
    this.send(m.context !== undefined ? { type: 'HeartbeatResp', to: m.from, context: m.context } : { type: 'HeartbeatResp', to: m.from })
  }

  /** Collect one snapshot chunk; install the snapshot when every byte has arrived. */
  private handleSnapshot (m: Message): void {
    const part = m.snapshot
    if (part === undefined) return
    const total = m.total ?? part.data.byteLength
    const offset = m.offset ?? 0
    if (part.meta.index <= this.raftLog.committed) {
      // We already have it (a retry, or entries got here first): answer once, on the last chunk.
      if (m.done === true || offset === 0) this.send({ type: 'AppResp', to: m.from, index: this.raftLog.committed })
      return
    }
    const key = `${m.from}/${m.term}/${part.meta.index}/${part.meta.term}/${total}`
    if (this.incoming?.key !== key) this.incoming = { key, snapshot: part, total, chunks: new Map() }
    const inc = this.incoming
    inc.chunks.set(offset, part.data)
    const data = assemble(inc.chunks, total)
    if (data === undefined) {
      // Tell the leader how much we hold from the start, so it sends the next chunks.
      this.send({ type: 'AppResp', to: m.from, index: part.meta.index, offset: contiguous(inc.chunks), total })
      return
    }
    this.incoming = undefined
    const snap: Snapshot = { meta: part.meta, data }
    if (this.restore(snap)) {
      this.send({ type: 'AppResp', to: m.from, index: this.raftLog.lastIndex() })
    } else {
      this.send({ type: 'AppResp', to: m.from, index: this.raftLog.committed })
    }
  }

  /** Install `s` unless we already have what it covers. Returns whether it was installed. */
  restore (s: Snapshot): boolean {
    if (s.meta.index <= this.raftLog.committed) return false
    if (this.role !== 'follower') {
      // Only a leader of this term sends snapshots, so we should already follow it.
      this.becomeFollower(this.term + 1, null)
      return false
    }
    // We may not be in the snapshot's configuration: a node added after it was taken learns
    // of its own addition from the entries that follow.
    const conf = s.meta.conf as ConfState
    if (this.raftLog.matchTerm(s.meta.index, s.meta.term)) {
      // We have the entries: just fast-forward the commit index.
      this.raftLog.commitTo(s.meta.index)
      return false
    }
    this.raftLog.restore(s)
    this.progress.clear()
    this.setConf(conf)
    return true
  }

  /** Leader: give entries our term and next indexes, append them, count our own copy. */
  appendEntry (es: Entry[]): void {
    let li = this.raftLog.lastIndex()
    const ents = es.map(e => ({ index: ++li, term: this.term, type: e.type, data: e.data }))
    li = this.raftLog.append(ents)
    this.progress.get(this.id)?.maybeUpdate(li)
    this.maybeCommit()
  }

  /** Advance the commit index to what a quorum of voters has (§5.4.2: only our term counts). */
  maybeCommit (): boolean {
    const mci = committedIndex(this.voters, id => this.progress.get(id)?.match ?? 0)
    if (mci === Number.MAX_SAFE_INTEGER) return false
    return this.raftLog.maybeCommit(mci, this.term)
  }

  private abortLeaderTransfer (): void {
    this.leadTransferee = null
  }

  // --- local hooks for RawNode ---

  reportUnreachable (id: NodeId): void {
    const pr = this.progress.get(id)
    if (this.role !== 'leader' || pr === undefined) return
    // Messages may be lost while unreachable: stop streaming and probe.
    if (pr.state === 'replicate') pr.becomeProbe()
  }

  reportSnapshot (id: NodeId, ok: boolean): void {
    const pr = this.progress.get(id)
    if (this.role !== 'leader' || pr === undefined || pr.state !== 'snapshot') return
    if (!ok) pr.pendingSnapshot = 0
    // Wait for the follower's answer (or the next heartbeat) before probing again.
    pr.becomeProbe()
    pr.msgAppFlowPaused = true
  }

  status (): Status {
    const st: Status = {
      id: this.id,
      term: this.term,
      vote: this.vote,
      commit: this.raftLog.committed,
      applied: this.raftLog.applied,
      lastIndex: this.raftLog.lastIndex(),
      firstIndex: this.raftLog.firstIndex(),
      leader: this.lead,
      role: this.role,
      conf: this.confState(),
      leadTransferee: this.leadTransferee,
      droppedProposals: this.droppedProposals
    }
    if (this.role === 'leader') {
      st.progress = new Map()
      for (const [id, pr] of this.progress) {
        st.progress.set(id, {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          paused: pr.isPaused(),
          inflight: pr.inflights.count(),
          inflightBytes: pr.inflights.bytes(),
          isLearner: pr.isLearner,
          recentActive: pr.recentActive
        })
      }
    }
    return st
  }
}

/** Bytes held from offset 0 without a gap. */
function contiguous (chunks: Map<number, Uint8Array>): number {
  let pos = 0
  for (const off of [...chunks.keys()].sort((a, b) => a - b)) {
    if (off > pos) break
    pos = Math.max(pos, off + chunks.get(off)!.byteLength)
  }
  return pos
}

/** The chunks joined, if together they cover [0, total) exactly. */
function assemble (chunks: Map<number, Uint8Array>, total: number): Uint8Array | undefined {
  const offsets = [...chunks.keys()].sort((a, b) => a - b)
  let pos = 0
  for (const off of offsets) {
    if (off !== pos) return undefined
    pos += chunks.get(off)!.byteLength
  }
  if (pos !== total) return undefined
  const out = new Uint8Array(total)
  for (const off of offsets) out.set(chunks.get(off)!, off)
  return out
}
