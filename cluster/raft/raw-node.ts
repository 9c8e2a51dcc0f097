/**
 * RawNode: the application's handle on the Raft core (after etcd-io/raft rawnode.go).
 * Network and disk I/O are left to the caller; see driver.ts for the loop that does them.
 *
 * One Ready at a time: after `ready()`, persist, send, apply, then `advance(ready)` before
 * asking for the next one. `tick`, `step`, `propose` and friends may be called meanwhile.
 */
import { encodeConfChange, decodeConfChange } from './codec.js'
import { Raft, type RaftConfig, type Status } from './raft.js'
import {
  ENTRY_CONF, ENTRY_NORMAL,
  type ConfChange, type Entry, type HardState, type Message, type NodeId, type Ready, type SoftState
} from './types.js'

export type { RaftConfig, Status } from './raft.js'

const EMPTY = new Uint8Array(0)

function sameHardState (a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit
}

export class RawNode {
  /** The state machine itself, for tests and diagnostics. */
  readonly raft: Raft
  private prevSoftState: SoftState
  private prevHardState: HardState

  constructor (config: RaftConfig) {
    this.raft = new Raft(config)
    this.prevSoftState = this.raft.softState()
    this.prevHardState = this.raft.hardState()
  }

  /**
   * Start a brand-new cluster on an empty log: entries 1..n (term 1) add each voter, already
   * committed, as every founding member writes the same. A node that joins later learns the
   * founders by replaying these entries (or from a snapshot).
   */
  bootstrap (voters: NodeId[]): void {
    const r = this.raft
    if (voters.length === 0) throw new RangeError('bootstrap: no voters')
    if (r.raftLog.lastIndex() !== 0 || r.term !== 0) throw new Error('bootstrap: the log is not empty')
    const sorted = [...new Set(voters)].sort()
    r.becomeFollower(1, null)
    const ents: Entry[] = sorted.map((node, i) => ({
      index: i + 1, term: 1, type: ENTRY_CONF, data: encodeConfChange({ type: 'addVoter', node })
    }))
    r.raftLog.append(ents)
    r.raftLog.committed = ents.length
    for (const node of sorted) r.applyConfChange({ type: 'addVoter', node })
  }

  /** Advance the logical clock by one tick. */
  tick (): void {
    this.raft.tick()
  }

  /** Campaign now (through a pre-vote when enabled). */
  campaign (): void {
    this.raft.hup(false)
  }

  /** Propose one command. Throws ErrProposalDropped when there is no leader to take it. */
  propose (data: Uint8Array): void {
    this.proposeBatch([data])
  }

  /** Propose several commands as one message (one append per follower). */
  proposeBatch (datas: Uint8Array[]): void {
    if (datas.length === 0) return
    const entries = datas.map(data => ({ index: 0, term: 0, type: ENTRY_NORMAL, data }))
    this.raft.stepLocal(this.localMessage('Prop', { entries }))
  }

  /**
   * Propose a membership change. The leader throws ErrConfChangeRejected when another is
   * pending, when it has not committed an entry of its term yet, or when the change is
   * invalid (e.g. re-adding a removed id); a follower forwards it and the leader drops it.
   */
  proposeConfChange (cc: ConfChange): void {
    const entries = [{ index: 0, term: 0, type: ENTRY_CONF, data: encodeConfChange(cc) }]
    this.raft.stepLocal(this.localMessage('Prop', { entries }))
  }

  /** Step a message received from the network. */
  step (m: Message): void {
    this.raft.step(m)
  }

  /**
   * Request a linearizable read. A ReadState with the same context appears in a later Ready
   * once it is safe to read at its index; nothing appears if leadership is lost meanwhile.
   */
  readIndex (ctx: Uint8Array): void {
    this.raft.stepLocal(this.localMessage('ReadIndex', { context: ctx }))
  }

  /** Ask the leader to hand leadership to `to` (an etcd MsgTransferLeader from `to`). */
  transferLeader (to: NodeId): void {
    this.raft.stepLocal({ ...this.localMessage('TransferLeader', {}), from: to })
  }

  reportUnreachable (id: NodeId): void {
    this.raft.reportUnreachable(id)
  }

  reportSnapshot (id: NodeId, ok: boolean): void {
    this.raft.reportSnapshot(id, ok)
  }

  status (): Status {
    return this.raft.status()
  }

  hasReady (): boolean {
    const r = this.raft
    r.flushBcast()
    const ss = r.softState()
    if (ss.leader !== this.prevSoftState.leader || ss.role !== this.prevSoftState.role) return true
    if (!sameHardState(r.hardState(), this.prevHardState)) return true
    if (r.raftLog.hasPendingSnapshot()) return true
    if (r.msgs.length > 0 || r.raftLog.unstable.entries.length > 0 || r.raftLog.hasNextCommittedEnts()) return true
    if (r.readStates.length > 0) return true
    return false
  }

  /** What to persist, send and apply now. Messages and read states are handed over once. */
  ready (): Ready {
    const r = this.raft
    r.flushBcast()
    const rd: Ready = {
      entries: r.raftLog.unstableEntries(),
      committedEntries: r.raftLog.nextCommittedEnts(r.maxCommittedSizePerReady),
      messages: r.msgs,
      readStates: r.readStates,
      mustSync: false
    }
    r.msgs = []
    r.readStates = []
    const snap = r.raftLog.unstable.snapshot
    if (snap !== undefined) rd.snapshot = snap
    const ss = r.softState()
    if (ss.leader !== this.prevSoftState.leader || ss.role !== this.prevSoftState.role) {
      rd.softState = ss
      this.prevSoftState = ss
    }
    const hs = r.hardState()
    if (!sameHardState(hs, this.prevHardState)) {
      rd.hardState = hs
      // Term and vote must be durable before we answer anyone; a commit index alone need not be.
      rd.mustSync = hs.term !== this.prevHardState.term || hs.vote !== this.prevHardState.vote
      this.prevHardState = hs
    }
    if (rd.entries.length > 0 || rd.snapshot !== undefined) rd.mustSync = true
    return rd
  }

  /**
   * The Ready was persisted, sent and applied. Configuration changes in its committed entries
   * take effect now.
   */
  advance (rd: Ready): void {
    const log = this.raft.raftLog
    if (rd.snapshot !== undefined) {
      log.stableSnapTo(rd.snapshot.meta.index)
      if (rd.snapshot.meta.index > log.applied) log.appliedTo(rd.snapshot.meta.index)
    }
    const last = rd.entries[rd.entries.length - 1]
    if (last !== undefined) log.stableTo(last.index, last.term)
    // A snapshot received while this Ready was being handled supersedes its entries.
    const pendingSnap = log.unstable.snapshot?.meta.index ?? 0
    for (const e of rd.committedEntries) {
      if (e.index <= log.applied || e.index <= pendingSnap) continue
      if (e.type === ENTRY_CONF) this.raft.applyConfChange(decodeConfChange(e.data))
      log.appliedTo(e.index)
    }
  }

  private localMessage (type: Message['type'], m: Partial<Message>): Message {
    return {
      type,
      from: this.raft.id,
      to: this.raft.id,
      term: 0,
      logTerm: 0,
      index: 0,
      commit: 0,
      entries: [],
      reject: false,
      rejectHint: 0,
      ...m,
      ...(m.context === undefined && type === 'ReadIndex' ? { context: EMPTY } : {})
    }
  }
}
