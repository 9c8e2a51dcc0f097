/**
 * One simulated node: the real Raft core (RawNode) on a MemoryLogStorage, driven like the
 * production driver — persist the Ready (and fsync when it must) → send its messages → apply
 * its committed entries → advance — except that the fsync takes virtual time and a crash in
 * the meantime loses every write not yet synced.
 */
import { MemoryLogDisk, MemoryLogStorage } from '../../storage/raftlog/memory-log-storage.js'
import { decodeMessage, encodeMessage } from '../raft/codec.js'
import { isRaftError } from '../raft/errors.js'
import { seedFor } from '../raft/rand.js'
import { RawNode } from '../raft/raw-node.js'
import { ENTRY_NORMAL, type ConfChange, type ConfState, type Message, type Ready, type Role } from '../raft/types.js'
import type { EventQueue } from './event-queue.js'
import { InvariantViolation, type SafetyChecker } from './invariants.js'
import { KvStateMachine, decodeCommand, encodeCommand, type KvCommand } from './kv-state-machine.js'
import { SimRand } from './random.js'

/** Virtual ms per Raft tick. */
export const TICK_MS = 10

export interface NodeHooks {
  q: EventQueue
  checker: SafetyChecker
  seed: number
  /** Core and compaction settings; drawn per seed so runs cover their corners. */
  tuning: NodeTuning
  electionTick: number
  /** How long one fsync takes, in virtual ms. */
  diskLatency: () => number
  /** False when `to` is known to be unreachable (a crashed node refuses connections). */
  send: (from: string, to: string, bytes: Uint8Array, describe: () => string) => boolean
  log: (line: string) => void
  /** A deliberately broken driver, to prove the checks catch what they claim to. */
  unsafe?: UnsafeDriver
}

/**
 * - local-reads: answer reads from the local state machine, skipping ReadIndex (stale reads).
 * - send-before-sync: send a Ready's messages before its fsync (votes and acks lost on crash).
 */
export type UnsafeDriver = 'local-reads' | 'send-before-sync'

export interface NodeTuning {
  /** Snapshot and compact after this many applied entries. */
  snapshotEvery: number
  /** Entries kept behind a snapshot. */
  keepEntries: number
  maxInflightMsgs: number
  maxSizePerMsg: number
  snapshotChunkSize: number
  /** Snapshot bytes in flight before the follower acknowledges. */
  snapshotWindowBytes: number
  /** Largest entry the core accepts for proposal (larger: refused, never in the log). */
  maxEntryBytes: number
  /** Largest frame the network carries; a bigger one is a bug (the real transport resets the stream). */
  maxFrameBytes: number
}

/** dropped: no leader, try again; refused: too large, never proposed. */
export type WriteResult = 'ok' | 'dropped' | 'refused'

const enc = new TextEncoder()
const dec = new TextDecoder()

export function describeMessage (m: Message): string {
  let s = `${m.type} t${m.term}`
  if (m.type === 'App' || m.type === 'AppResp' || m.type === 'Vote' || m.type === 'PreVote') s += ` i${m.index} lt${m.logTerm}`
  if (m.entries.length > 0) s += ` +${m.entries.length}`
  if (m.commit > 0) s += ` c${m.commit}`
  if (m.reject) s += ` reject(hint ${m.rejectHint})`
  if (m.snapshot !== undefined) s += ` snap@${m.snapshot.meta.index} ${m.offset ?? 0}/${m.total ?? 0}${m.done === true ? ' done' : ''}`
  return s
}

export class SimNode {
  readonly disk = new MemoryLogDisk()
  storage: MemoryLogStorage
  private raw: RawNode | null = null
  sm = new KvStateMachine()
  up = true
  paused = false
  incarnation = 0
  role: Role = 'follower'
  lead: string | null = null
  term = 0
  private commit = 0
  private inReady = false
  /** Work that arrived while paused (messages, a finished fsync), run on resume in order. */
  private deferred: Array<() => void> = []
  private readonly writeWaiters = new Map<string, (r: WriteResult) => void>()
  private readonly reads = new Map<string, { key: string, index: number | null, respond: (v: string | null) => void }>()
  private readonly jitter: SimRand
  snapshotsInstalled = 0
  /** Taken out of the cluster: never restarted, and its id is never used again. */
  removed = false

  /** `peers` are the founding voters; a node that joins later starts with none. */
  constructor (readonly id: string, private readonly peers: string[] | null, private readonly h: NodeHooks) {
    this.storage = new MemoryLogStorage(this.disk)
    this.jitter = new SimRand(seedFor(h.seed, `${id}/clock`))
  }

  /** First start: a founding member bootstraps; a joining one waits for the leader. */
  start (): void {
    this.raw = this.makeRaw()
    if (this.peers !== null) this.raw.bootstrap(this.peers)
    this.scheduleTick(this.jitter.between(0, TICK_MS - 1))
    this.pump()
  }

  private makeRaw (): RawNode {
    return new RawNode({
      id: this.id,
      storage: this.storage,
      rand: new SimRand(seedFor(this.h.seed, `${this.id}#${this.incarnation}`)),
      electionTick: this.h.electionTick,
      heartbeatTick: 1,
      applied: this.sm.applied,
      maxSizePerMsg: this.h.tuning.maxSizePerMsg,
      maxInflightMsgs: this.h.tuning.maxInflightMsgs,
      snapshotChunkSize: this.h.tuning.snapshotChunkSize,
      snapshotWindowBytes: this.h.tuning.snapshotWindowBytes,
      maxEntryBytes: this.h.tuning.maxEntryBytes
    })
  }

  private scheduleTick (delay: number): void {
    this.h.q.after(delay, () => `tick ${this.id}`, () => {
      if (this.up && !this.paused) {
        this.raw!.tick()
        this.pump()
      }
      if (this.removed && !this.up) return // retired for good
      // Clocks drift a little, so nodes do not tick in lockstep.
      this.scheduleTick(TICK_MS + this.jitter.between(-1, 1))
    })
  }

  // --- faults ---

  /** Power loss: the process and every unsynced write are gone. */
  crash (): void {
    this.up = false
    this.incarnation++
    this.raw = null
    this.storage.crash()
    this.sm = new KvStateMachine()
    this.inReady = false
    this.deferred = []
    this.writeWaiters.clear()
    this.reads.clear()
    this.role = 'follower'
    this.lead = null
  }

  /** Start again from what the disk holds. */
  restart (): void {
    this.storage = new MemoryLogStorage(this.disk)
    this.sm = new KvStateMachine()
    const snap = this.storage.snapshot()
    if (snap.meta.index > 0) {
      this.sm.restore(snap.data, snap.meta.index)
      this.h.checker.restored(this.id, snap.meta.index, this.sm.hash)
    }
    const { hardState } = this.storage.initialState()
    this.term = hardState.term
    this.commit = hardState.commit
    this.up = true
    this.paused = false
    this.raw = this.makeRaw()
    this.h.log(`${this.id} restarted: term ${this.term} commit ${this.commit} log ${this.storage.firstIndex()}..${this.storage.lastIndex()} snapshot ${snap.meta.index}`)
    this.pump()
  }

  /** A Ready is written but its fsync has not finished. */
  get syncing (): boolean { return this.up && this.inReady }

  pause (): void { this.paused = true }

  resume (): void {
    if (!this.paused) return
    this.paused = false
    const work = this.deferred
    this.deferred = []
    for (const w of work) if (this.up && !this.paused) w()
    this.pump()
  }

  // --- inputs ---

  receive (bytes: Uint8Array): void {
    if (!this.up) return
    if (this.paused) { this.deferred.push(() => this.receive(bytes)); return }
    this.stepSafely(decodeMessage(bytes))
    this.pump()
  }

  private stepSafely (m: Message): void {
    try {
      this.raw!.step(m)
    } catch (err) {
      // A forwarded proposal that found no leader is dropped; the client will retry.
      if (!isRaftError(err, 'RAFT_PROPOSAL_DROPPED')) throw err
    }
  }

  /** A client's write. `respond` is called when this node applies it, or at once if dropped. */
  proposeWrite (cmd: KvCommand, respond: (r: WriteResult) => void): void {
    if (!this.up || this.paused) return
    try {
      this.raw!.propose(encodeCommand(cmd))
    } catch (err) {
      if (isRaftError(err, 'RAFT_PROPOSAL_TOO_LARGE')) { respond('refused'); return }
      if (!isRaftError(err, 'RAFT_PROPOSAL_DROPPED')) throw err
      respond('dropped')
      return
    }
    this.writeWaiters.set(`${cmd.c}:${cmd.s}`, respond)
    this.pump()
  }

  /** A client's linearizable read through ReadIndex; answered once applied up to the read index. */
  linearizableRead (key: string, ctx: string, respond: (v: string | null) => void): void {
    if (!this.up || this.paused) return
    if (this.h.unsafe === 'local-reads') { respond(this.sm.kv.get(key) ?? null); return }
    this.reads.set(ctx, { key, index: null, respond })
    this.raw!.readIndex(enc.encode(ctx))
    this.pump()
  }

  /** Propose a membership change at this node (the leader); false when it was refused. */
  proposeConfChange (cc: ConfChange): boolean {
    if (!this.up || this.paused) return false
    try {
      this.raw!.proposeConfChange(cc)
    } catch (err) {
      if (isRaftError(err, 'RAFT_CONF_CHANGE_REJECTED') || isRaftError(err, 'RAFT_PROPOSAL_DROPPED')) return false
      throw err
    }
    this.pump()
    return true
  }

  /** The configuration this node has applied (null when down). */
  confState (): ConfState | null {
    return this.raw === null ? null : this.raw.raft.confState()
  }

  /** On the leader: how far `id` has replicated, and the commit index. */
  replication (id: string): { match: number, commit: number } | null {
    if (this.raw === null || this.role !== 'leader') return null
    const st = this.raw.status()
    const pr = st.progress?.get(id)
    return pr === undefined ? null : { match: pr.match, commit: st.commit }
  }

  reportUnreachable (to: string): void {
    if (!this.up || this.paused) return
    this.raw!.reportUnreachable(to)
    this.pump()
  }

  transferLeader (to: string): void {
    if (!this.up || this.paused) return
    this.raw!.transferLeader(to)
    this.pump()
  }

  /** The leader's view of its followers, for failure reports. */
  describeProgress (): string {
    if (this.raw === null || this.role !== 'leader') return ''
    const st = this.raw.status()
    return [...(st.progress ?? new Map())].map(([id, p]) =>
      `${id}: ${p.state} match ${p.match} next ${p.next}${p.paused ? ' paused' : ''} inflight ${p.inflight}`).join(', ') +
      ` (log ${st.firstIndex}..${st.lastIndex}, commit ${st.commit})`
  }

  // --- the driver loop ---

  /** Take the next Ready, if any, and persist it; the rest happens once it is durable. */
  private pump (): void {
    if (!this.up || this.paused || this.inReady) return
    const raw = this.raw!
    if (!raw.hasReady()) return
    const rd = raw.ready()
    const c = this.h.checker
    if (rd.hardState !== undefined) {
      if (rd.hardState.commit < this.commit) {
        throw new InvariantViolation('commit never goes back', `${this.id} commit ${this.commit} → ${rd.hardState.commit}`)
      }
      if (rd.hardState.term < this.term) throw new InvariantViolation('term never goes back', `${this.id} term ${this.term} → ${rd.hardState.term}`)
      this.commit = rd.hardState.commit
      this.term = rd.hardState.term
      c.commitSeen(this.term, this.commit)
    }
    if (rd.softState !== undefined) {
      this.role = rd.softState.role
      this.lead = rd.softState.leader
      if (this.role === 'leader') {
        this.h.log(`${this.id} became leader in term ${raw.raft.term}`)
        c.leader(this.id, raw.raft.term)
        const log = raw.raft.raftLog
        c.newLeaderLog(this.id, raw.raft.term, i => log.termOrZero(i) || undefined, log.firstIndex())
      }
    }
    // Persist: snapshot, entries (truncating any conflicting suffix), hard state.
    if (rd.snapshot !== undefined) this.storage.applySnapshot(rd.snapshot)
    this.storage.append(rd.entries)
    if (rd.hardState !== undefined) this.storage.setHardState(rd.hardState)
    this.inReady = true
    const inc = this.incarnation
    if (this.h.unsafe === 'send-before-sync') this.sendAll(rd)
    if (rd.mustSync) {
      this.h.q.after(this.h.diskLatency(), () => `fsync ${this.id} (${rd.entries.length} entries)`, () => this.persisted(rd, inc))
    } else {
      this.persisted(rd, inc)
    }
  }

  /** The Ready is durable (or needed no fsync): send, apply, advance. */
  private persisted (rd: Ready, inc: number): void {
    if (inc !== this.incarnation) return // crashed before the fsync finished: nothing was sent
    if (this.paused) { this.deferred.push(() => this.persisted(rd, inc)); return }
    const c = this.h.checker
    if (rd.mustSync) {
      this.storage.syncNow()
      c.synced(this.id, this.disk.hardState)
      const s = this.storage
      c.persisted(this.id, rd.entries, i => { try { return s.term(i) } catch { return undefined } })
    }
    if (this.h.unsafe !== 'send-before-sync') this.sendAll(rd)
    if (rd.snapshot !== undefined && rd.snapshot.meta.index > this.sm.applied) {
      this.sm.restore(rd.snapshot.data, rd.snapshot.meta.index)
      c.restored(this.id, rd.snapshot.meta.index, this.sm.hash)
      this.snapshotsInstalled++
      this.h.log(`${this.id} installed snapshot at ${rd.snapshot.meta.index}`)
    }
    for (const e of rd.committedEntries) {
      if (e.index <= this.sm.applied) continue // covered by a snapshot
      this.sm.apply(e)
      c.apply(this.id, e, this.sm.hash)
      if (e.type === ENTRY_NORMAL && e.data.length > 0) {
        const cmd = decodeCommand(e.data)
        const key = `${cmd.c}:${cmd.s}`
        const w = this.writeWaiters.get(key)
        if (w !== undefined) { this.writeWaiters.delete(key); w('ok') }
      }
    }
    for (const rs of rd.readStates) {
      const r = this.reads.get(dec.decode(rs.context))
      if (r !== undefined) r.index = rs.index
    }
    this.raw!.advance(rd)
    this.inReady = false
    this.serveReads()
    this.maybeSnapshot()
    this.pump()
  }

  /** As the driver does: a send that fails at once is reported to the core. */
  private sendAll (rd: Ready): void {
    for (const m of rd.messages) {
      if (this.h.send(this.id, m.to, encodeMessage(m), () => describeMessage(m))) continue
      this.raw!.reportUnreachable(m.to)
      if (m.type === 'Snap') this.raw!.reportSnapshot(m.to, false)
    }
  }

  private serveReads (): void {
    for (const [ctx, r] of this.reads) {
      if (r.index === null || r.index > this.sm.applied) continue
      this.reads.delete(ctx)
      r.respond(this.sm.kv.get(r.key) ?? null)
    }
  }

  /** Snapshot the state machine and compact the log behind it, as a real node would. */
  private maybeSnapshot (): void {
    const s = this.storage
    const applied = this.sm.applied
    if (applied - s.snapshot().meta.index < this.h.tuning.snapshotEvery) return
    s.createSnapshot(applied, this.raw!.raft.confState(), this.sm.snapshot())
    // Keeping a few entries lets a follower just behind catch up without a snapshot.
    const upTo = applied - this.h.tuning.keepEntries
    if (upTo > s.firstIndex() - 1) s.compact(upTo)
    this.h.log(`${this.id} snapshot at ${applied}, log from ${s.firstIndex()}`)
  }
}
