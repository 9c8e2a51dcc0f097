/**
 * The Raft driver: owns a RawNode, its RaftStorage (storage.ts), a Transport and the state
 * machine's `apply`, and does the I/O the pure core leaves out.
 *
 * Order of work, for every Ready (never reorder: sending before persisting loses votes and
 * entries on a crash; applying before persisting can acknowledge a write a crash then loses):
 *
 *   tick (timer) or step (incoming frame) or propose / read
 *     → persist: snapshot, entries, hard state into the RaftStorage, then ONE sync() for the
 *       whole Ready when it must be durable (group commit: every proposal that arrived since
 *       the previous Ready shares that fsync)
 *     → send the Ready's messages
 *     → apply: install a received snapshot, then apply committed entries in order
 *     → advance(ready); resolve proposals and reads that are now applied
 *
 * One Ready is processed at a time; frames, ticks and proposals that arrive meanwhile are
 * stepped into the core at once and go out with the next Ready.
 *
 * Proposals carry an envelope (a proposal id) so that the node that proposed can match the
 * applied entry to its caller, wherever it was forwarded. A promise that rejects with
 * ErrLeadershipLost or ErrTimeout has an unknown outcome: the entry may still commit. Clients
 * retry with the same (clientId, seq) and the state machine dedups (see session.ts).
 */
import { decodeConfChange, decodeMessage, encodeConfChange, encodeMessage } from './codec.js'
import {
  ErrLeadershipLost, ErrNotLeader, ErrProposalDropped, ErrStopped, ErrTimeout
} from './errors.js'
import { SeededRand } from './rand.js'
import { RawNode, type RaftConfig, type Status } from './raw-node.js'
import { contextKey } from './read-only.js'
import type { Transport } from './transport.js'
import {
  ENTRY_CONF, ENTRY_NORMAL,
  type ConfChange, type ConfState, type Entry, type Message, type NodeId, type Ready, type Snapshot
} from './types.js'
import type { RaftStorage } from './storage.js'
import { randomBytes } from 'node:crypto'

export interface DriverOptions {
  id: NodeId
  storage: RaftStorage
  transport: Transport
  /**
   * Apply one committed command (entry.data is the proposed bytes). Must be deterministic;
   * its result resolves the proposer's promise. A throw rejects that promise and nothing
   * else: the entry counts as applied (every replica throws alike).
   */
  apply: (entry: Entry) => Promise<unknown>
  /** Replace the state machine with a snapshot's data (sent by the leader, or at start). */
  restore?: (snapshot: Snapshot) => Promise<void>
  /** Serialize the state machine as of the last applied entry, for log compaction. */
  takeSnapshot?: () => Promise<Uint8Array>
  /** Snapshot and compact after this many applied entries; 0 never. Default 10 000. */
  snapshotEvery?: number
  /** Entries kept behind a snapshot, so a follower that lags a little needs no snapshot. Default 1000. */
  keepEntries?: number
  /** Founding voters of a new cluster; used only when the store is empty. */
  bootstrap?: NodeId[]
  /** The state machine's applied index on restart, if it persists one. Default: the snapshot's index. */
  applied?: number
  /** Milliseconds per tick. Default 100. */
  tickMs?: number
  /** Default deadline of propose / read / conf change, in ms. Default 10 000. */
  requestTimeoutMs?: number
  /** Seed of the election-timeout randomness. Default: random. */
  seed?: number
  /** Core settings (electionTick, heartbeatTick, preVote, flow control, chunk size...). */
  raft?: Omit<RaftConfig, 'id' | 'storage' | 'rand' | 'applied'>
  /** Called after a configuration change is applied on this node. */
  onConfChange?: (cc: ConfChange, conf: ConfState) => void
  /** Called when the driver stops because of an error (storage failure, apply bug). */
  onError?: (err: unknown) => void
}

export interface RequestOptions {
  timeoutMs?: number
}

interface Waiter<T> {
  resolve: (v: T) => void
  reject: (err: unknown) => void
  timer: NodeJS.Timeout
  term: number
  /** Proposed while this node led: losing the role loses the request. */
  wasLeader: boolean
  /** The leader when asked. One that steps down keeps its term but drops a ReadIndex unanswered. */
  lead: NodeId | null
}

interface ReadWaiter extends Waiter<void> {
  /** Set once the leader answered: resolve when applied reaches it. */
  index?: number
}

const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder()

/** Bytes wrap() adds at most: version, id length, and an id of at most 255 bytes. */
const PROPOSAL_OVERHEAD = 2 + 255

/** Proposal envelope: u8 version (1) · u8 id length · id (ASCII) · payload. */
function wrap (id: string, payload: Uint8Array): Uint8Array {
  const idBytes = utf8.encode(id)
  const out = new Uint8Array(2 + idBytes.byteLength + payload.byteLength)
  out[0] = 1
  out[1] = idBytes.byteLength
  out.set(idBytes, 2)
  out.set(payload, 2 + idBytes.byteLength)
  return out
}

function unwrap (data: Uint8Array): { id: string, payload: Uint8Array } | undefined {
  if (data.byteLength < 2 || data[0] !== 1) return undefined
  const n = data[1]!
  if (data.byteLength < 2 + n) return undefined
  return { id: fromUtf8.decode(data.subarray(2, 2 + n)), payload: data.subarray(2 + n) }
}

export class RaftDriver {
  readonly id: NodeId
  readonly rn: RawNode
  private readonly storage: RaftStorage
  private readonly transport: Transport
  private readonly opts: DriverOptions
  private readonly tickMs: number
  private readonly timeoutMs: number
  /** Distinguishes this incarnation's proposal ids from those of earlier runs in the log. */
  private readonly incarnation = randomBytes(6).toString('hex')
  private counter = 0
  private readonly proposals = new Map<string, Waiter<unknown>>()
  private readonly confChanges = new Map<string, Waiter<ConfState>>()
  private readonly reads = new Map<string, ReadWaiter>()
  private timer: NodeJS.Timeout | undefined
  private busy: Promise<void> | undefined
  private stopped = false
  private started = false
  /** Frames that did not decode. */
  badFrames = 0
  /** Readies processed and syncs issued (for group-commit checks). */
  readies = 0
  syncs = 0

  constructor (opts: DriverOptions) {
    this.opts = opts
    this.id = opts.id
    this.storage = opts.storage
    this.transport = opts.transport
    this.tickMs = opts.tickMs ?? 100
    this.timeoutMs = opts.requestTimeoutMs ?? 10_000
    const config: RaftConfig = {
      ...opts.raft,
      id: opts.id,
      storage: opts.storage,
      rand: new SeededRand(opts.seed ?? randomBytes(4).readUInt32BE(0))
    }
    if (opts.applied !== undefined) config.applied = opts.applied
    this.rn = new RawNode(config)
    const fresh = opts.storage.lastIndex() === 0 && opts.storage.initialState().hardState.term === 0
    if (fresh && opts.bootstrap !== undefined && opts.bootstrap.length > 0) this.rn.bootstrap(opts.bootstrap)
  }

  /** Restore the state machine from the stored snapshot, listen, and start ticking. */
  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    const snap = this.storage.snapshot()
    if (this.opts.applied === undefined && snap.meta.index > 0 && this.opts.restore !== undefined) {
      await this.opts.restore(snap)
    }
    this.transport.onMessage((from, bytes) => this.receive(from, bytes))
    // Not unref'd: a running node keeps the process alive until stop().
    this.timer = setInterval(() => this.tick(), this.tickMs)
    this.kick()
  }

  /** Stop ticking and processing; pending requests reject with ErrStopped. */
  async stop (): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    this.stopped = true
    this.failAll(ErrStopped)
    await this.busy
  }

  /** One logical tick (the timer calls this; tests may too). */
  tick (): void {
    if (this.stopped) return
    this.rn.tick()
    this.kick()
  }

  status (): Status {
    return this.rn.status()
  }

  get leader (): NodeId | null {
    return this.rn.raft.lead
  }

  get isLeader (): boolean {
    return this.rn.raft.role === 'leader'
  }

  /**
   * Replicate `data`; resolves with the state machine's result once it is applied here.
   * Rejects with ErrProposalDropped (no leader: nothing was proposed), or ErrLeadershipLost /
   * ErrTimeout (outcome unknown).
   */
  propose (data: Uint8Array, opts: RequestOptions = {}): Promise<unknown> {
    if (this.stopped) return Promise.reject(ErrStopped)
    const id = this.nextId()
    const p = this.wait(this.proposals, id, opts)
    try {
      this.rn.propose(wrap(id, data))
    } catch (err) {
      this.settle(this.proposals, id, undefined, err)
    }
    this.kick()
    return p
  }

  /** Propose a membership change; resolves with the configuration once it is applied here. */
  proposeConfChange (cc: ConfChange, opts: RequestOptions = {}): Promise<ConfState> {
    if (this.stopped) return Promise.reject(ErrStopped)
    const id = this.nextId()
    const p = this.wait(this.confChanges, id, opts)
    try {
      this.rn.proposeConfChange({ ...cc, id })
    } catch (err) {
      this.settle(this.confChanges, id, undefined, err)
    }
    this.kick()
    return p
  }

  /**
   * Add a node safely: as a learner first, then, once it has caught up with the commit index,
   * promote it to voter. Call on the leader.
   */
  async addMember (node: NodeId, opts: RequestOptions = {}): Promise<ConfState> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.timeoutMs)
    if (!this.isLeader) throw ErrNotLeader
    const conf = this.rn.raft.confState()
    if (!conf.learners.includes(node)) await this.proposeConfChange({ type: 'addLearner', node }, opts)
    for (;;) {
      if (this.stopped) throw ErrStopped
      const st = this.rn.status()
      if (st.role !== 'leader') throw ErrLeadershipLost
      const pr = st.progress?.get(node)
      if (pr !== undefined && pr.match >= st.commit) break
      if (Date.now() > deadline) throw ErrTimeout
      await new Promise(resolve => setTimeout(resolve, this.tickMs))
    }
    return await this.proposeConfChange({ type: 'promote', node }, { timeoutMs: Math.max(1, deadline - Date.now()) })
  }

  /** Remove a node (its id is never accepted again). */
  removeMember (node: NodeId, opts: RequestOptions = {}): Promise<ConfState> {
    return this.proposeConfChange({ type: 'remove', node }, opts)
  }

  /**
   * The transport lost frames to `peer` (dial failed, stream broke, queue full): the leader
   * stops streaming to it and probes, so what was lost is sent again (etcd's ReportUnreachable).
   */
  reportUnreachable (peer: NodeId): void {
    if (this.stopped) return
    this.rn.reportUnreachable(peer)
    this.kick()
  }

  /** Largest proposal accepted (bytes of the command); larger ones reject with ErrProposalTooLarge. */
  get maxProposalBytes (): number {
    return this.rn.raft.maxEntryBytes - PROPOSAL_OVERHEAD
  }

  /** Ask the leader to hand leadership to `to`. */
  transferLeader (to: NodeId): void {
    this.rn.transferLeader(to)
    this.kick()
  }

  /**
   * Resolve once this node's state machine reflects every write committed before the call
   * (ReadIndex: the leader confirms its leadership with a quorum, then we wait to apply).
   */
  linearizableRead (opts: RequestOptions = {}): Promise<void> {
    if (this.stopped) return Promise.reject(ErrStopped)
    if (this.rn.raft.lead === null) return Promise.reject(ErrProposalDropped)
    const ctx = utf8.encode(this.nextId())
    const key = contextKey(ctx)
    const p = this.wait(this.reads as Map<string, Waiter<void>>, key, opts)
    this.rn.readIndex(ctx)
    this.kick()
    return p
  }

  private nextId (): string {
    return `${this.incarnation}:${++this.counter}`
  }

  private wait<T> (map: Map<string, Waiter<T>>, id: string, opts: RequestOptions): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(map, id, undefined, ErrTimeout), opts.timeoutMs ?? this.timeoutMs)
      timer.unref()
      map.set(id, { resolve, reject, timer, term: this.rn.raft.term, wasLeader: this.isLeader, lead: this.rn.raft.lead })
    })
  }

  private settle<T> (map: Map<string, Waiter<T>>, id: string, value: T | undefined, err?: unknown): void {
    const w = map.get(id)
    if (w === undefined) return
    map.delete(id)
    clearTimeout(w.timer)
    if (err !== undefined) w.reject(err)
    else w.resolve(value as T)
  }

  private failAll (err: unknown): void {
    for (const map of [this.proposals, this.confChanges, this.reads] as Array<Map<string, Waiter<unknown>>>) {
      for (const id of [...map.keys()]) this.settle(map, id, undefined, err)
    }
  }

  private receive (from: NodeId, bytes: Uint8Array): void {
    if (this.stopped) return
    let m: Message
    try {
      m = decodeMessage(bytes)
    } catch {
      this.badFrames++
      return
    }
    void from
    this.rn.step(m)
    this.kick()
  }

  /** Process Readies until there are none; one loop at a time. */
  private kick (): void {
    if (this.stopped || this.busy !== undefined) return
    this.busy = this.loop().catch(err => {
      this.stopped = true
      if (this.timer !== undefined) clearInterval(this.timer)
      this.failAll(err)
      this.opts.onError?.(err)
    }).finally(() => {
      this.busy = undefined
      // Work that arrived while the last Ready was finishing.
      if (!this.stopped && this.rn.hasReady()) this.kick()
    })
  }

  private async loop (): Promise<void> {
    while (!this.stopped && this.rn.hasReady()) await this.handleReady(this.rn.ready())
  }

  private async handleReady (rd: Ready): Promise<void> {
    this.readies++
    const s = this.storage
    // 1. Persist, with one sync for everything in this Ready.
    if (rd.snapshot !== undefined) s.applySnapshot(rd.snapshot)
    if (rd.entries.length > 0) s.append(rd.entries)
    if (rd.hardState !== undefined) s.setHardState(rd.hardState)
    // A Ready that only moves the commit index need not be synced for Raft's sake, but the
    // application is about to apply those entries durably: the commit index must be on disk
    // first, or a restart finds the application ahead of the log's commit.
    if (rd.mustSync || (rd.hardState !== undefined && rd.committedEntries.length > 0)) {
      this.syncs++
      await s.sync()
    }
    // 2. Send.
    for (const m of rd.messages) this.send(m)
    // 3. Apply.
    if (rd.snapshot !== undefined && this.opts.restore !== undefined) await this.opts.restore(rd.snapshot)
    const appliedConf: ConfChange[] = []
    for (const e of rd.committedEntries) {
      if (e.type === ENTRY_CONF) appliedConf.push(decodeConfChange(e.data))
      else await this.applyEntry(e)
    }
    // 4. Advance: conf changes take effect in the core now.
    this.rn.advance(rd)
    for (const cc of appliedConf) {
      const conf = this.rn.raft.confState()
      this.opts.onConfChange?.(cc, conf)
      if (cc.id !== undefined) this.settle(this.confChanges, cc.id, conf)
    }
    for (const rs of rd.readStates) {
      const w = this.reads.get(contextKey(rs.context))
      if (w !== undefined) w.index = rs.index
    }
    this.afterApply()
    await this.maybeCompact()
  }

  private send (m: Message): void {
    try {
      this.transport.send(m.to, encodeMessage(m))
    } catch {
      this.rn.reportUnreachable(m.to)
      if (m.type === 'Snap') this.rn.reportSnapshot(m.to, false)
    }
  }

  private async applyEntry (e: Entry): Promise<void> {
    if (e.type !== ENTRY_NORMAL || e.data.byteLength === 0) return // the leader's empty entry
    const env = unwrap(e.data)
    const entry: Entry = { index: e.index, term: e.term, type: e.type, data: env?.payload ?? e.data }
    const mine = env !== undefined && this.proposals.has(env.id)
    try {
      const result = await this.opts.apply(entry)
      if (mine) this.settle(this.proposals, env.id, result)
    } catch (err) {
      // A deterministic state machine throws alike on every replica: the command is applied
      // (as a no-op with an error result), and only its proposer hears about it.
      if (mine) this.settle(this.proposals, env.id, undefined, err)
    }
  }

  /** Release reads whose index is applied; fail requests whose term has passed. */
  private afterApply (): void {
    const applied = this.rn.raft.raftLog.applied
    const term = this.rn.raft.term
    const leading = this.isLeader
    const lost = (w: { term: number, wasLeader: boolean }): boolean => w.term !== term || (w.wasLeader && !leading)
    const lead = this.rn.raft.lead
    for (const [key, w] of [...this.reads]) {
      if (w.index !== undefined && w.index <= applied) this.settle(this.reads, key, undefined)
      // A leader that stepped down (CheckQuorum) in the same term never answers: retry at once
      // with the next one rather than wait out the timeout.
      else if (w.index === undefined && (lost(w) || w.lead !== lead)) this.settle(this.reads, key, undefined, ErrLeadershipLost)
    }
    for (const map of [this.proposals, this.confChanges] as Array<Map<string, Waiter<unknown>>>) {
      for (const [id, w] of [...map]) {
        if (lost(w)) this.settle(map, id, undefined, ErrLeadershipLost)
      }
    }
  }

  private async maybeCompact (): Promise<void> {
    const every = this.opts.snapshotEvery ?? 10_000
    if (this.opts.takeSnapshot === undefined || every <= 0) return
    const applied = this.rn.raft.raftLog.applied
    if (applied - this.storage.snapshot().meta.index < every) return
    const data = await this.opts.takeSnapshot()
    this.storage.createSnapshot(applied, this.rn.raft.confState(), data)
    const upTo = applied - (this.opts.keepEntries ?? 1000)
    if (upTo > this.storage.firstIndex() - 1) this.storage.compact(upTo)
  }
}
