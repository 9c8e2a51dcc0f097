/**
 * A synchronous in-test network of Raft cores (after etcd's `network` in raft_test.go).
 * Each node persists its Ready into a MemoryLogStorage (synced at once), then its messages
 * are delivered, in order, until no node has anything left to say.
 */
import { MemoryLogDisk, MemoryLogStorage } from '../../storage/raftlog/memory-log-storage.js'
import { RawNode, type RaftConfig } from '../../cluster/raft/raw-node.js'
import { SeededRand, seedFor } from '../../cluster/raft/rand.js'
import { ENTRY_NORMAL, type ConfChange, type Entry, type Message, type MessageType, type NodeId, type ReadState } from '../../cluster/raft/types.js'

export type NodeOptions = Partial<Omit<RaftConfig, 'id' | 'storage' | 'rand'>>

export class TestNode {
  rn: RawNode
  storage: MemoryLogStorage
  /** Normal entries with data that this node applied, in order. */
  applied: Entry[] = []
  readStates: ReadState[] = []
  /** Snapshot data installed from the leader (the "state machine restore"). */
  restored: Uint8Array[] = []

  constructor (readonly id: NodeId, readonly disk: MemoryLogDisk, readonly opts: NodeOptions, readonly seed: number) {
    this.storage = new MemoryLogStorage(disk)
    this.rn = this.makeCore()
  }

  private makeCore (): RawNode {
    return new RawNode({
      electionTick: 10,
      heartbeatTick: 1,
      ...this.opts,
      id: this.id,
      storage: this.storage,
      rand: new SeededRand(seedFor(this.seed, this.id))
    })
  }

  get raft () { return this.rn.raft }

  /** Crash: lose unsynced writes (there are none here) and volatile state; restart from disk. */
  restart (): void {
    this.storage.crash()
    this.rn = this.makeCore()
    this.applied = []
  }

  /** Persist, collect messages, apply, advance. Returns the messages to deliver. */
  handleReady (): Message[] {
    const out: Message[] = []
    while (this.rn.hasReady()) {
      const rd = this.rn.ready()
      if (rd.snapshot !== undefined) {
        this.storage.applySnapshot(rd.snapshot)
        this.restored.push(rd.snapshot.data)
      }
      if (rd.entries.length > 0) this.storage.append(rd.entries)
      if (rd.hardState !== undefined) this.storage.setHardState(rd.hardState)
      this.storage.syncNow()
      out.push(...rd.messages)
      for (const e of rd.committedEntries) {
        if (e.type === ENTRY_NORMAL && e.data.byteLength > 0) this.applied.push(e)
      }
      this.readStates.push(...rd.readStates)
      this.rn.advance(rd)
    }
    return out
  }

  /** Take a snapshot at the applied index with `data`, then compact the log up to it. */
  compact (data: Uint8Array, keep = 0): void {
    const st = this.rn.status()
    this.storage.createSnapshot(st.applied, st.conf, data)
    if (st.applied - keep > this.storage.firstIndex() - 1) this.storage.compact(st.applied - keep)
  }
}

export interface NetworkOptions extends NodeOptions {
  seed?: number
  /** Found the cluster with RawNode.bootstrap (conf entries 1..n) instead of a conf-only snapshot. */
  bootstrap?: boolean
}

export class Network {
  readonly nodes = new Map<NodeId, TestNode>()
  /** Links that drop everything: "a->b". */
  readonly cut = new Set<string>()
  /** Message types dropped everywhere. */
  readonly dropTypes = new Set<MessageType>()
  /** Extra filter: return false to drop a message. */
  filter: ((m: Message) => boolean) | undefined
  /** Rewrite a message in flight (after the filter). */
  rewrite: ((m: Message) => Message) | undefined
  /** Every message handed to the network (delivered or not), for assertions. */
  trace: Message[] = []
  readonly seed: number
  readonly opts: NodeOptions

  constructor (ids: NodeId[], opts: NetworkOptions = {}, voters: NodeId[] = ids) {
    const { seed = 1, bootstrap = false, ...rest } = opts
    this.seed = seed
    this.opts = rest
    for (const id of ids) {
      const disk = new MemoryLogDisk()
      if (!bootstrap) disk.snap = { meta: { index: 0, term: 0, conf: { voters: [...voters], learners: [] } }, data: new Uint8Array(0) }
      const n = new TestNode(id, disk, rest, seed)
      if (bootstrap) {
        n.rn.bootstrap(voters)
        n.handleReady() // persist and apply the founding entries
      }
      this.nodes.set(id, n)
    }
  }

  /** Add a node with an empty disk and no configuration (it learns it from the leader). */
  addEmpty (id: NodeId, opts: NodeOptions = this.opts): TestNode {
    const n = new TestNode(id, new MemoryLogDisk(), opts, this.seed)
    this.nodes.set(id, n)
    return n
  }

  node (id: NodeId): TestNode {
    const n = this.nodes.get(id)
    if (n === undefined) throw new Error(`no node ${id}`)
    return n
  }

  isolate (id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue
      this.cut.add(`${id}->${other}`)
      this.cut.add(`${other}->${id}`)
    }
  }

  partition (...groups: NodeId[][]): void {
    for (const g of groups) {
      for (const a of g) {
        for (const b of this.nodes.keys()) if (!g.includes(b)) { this.cut.add(`${a}->${b}`); this.cut.add(`${b}->${a}`) }
      }
    }
  }

  heal (): void {
    this.cut.clear()
    this.dropTypes.clear()
    this.filter = undefined
    this.rewrite = undefined
  }

  private deliverable (m: Message): boolean {
    if (this.cut.has(`${m.from}->${m.to}`)) return false
    if (this.dropTypes.has(m.type)) return false
    if (this.filter !== undefined && !this.filter(m)) return false
    const to = this.nodes.get(m.to)
    return to !== undefined
  }

  /** Deliver messages (and everything they cause) until the network is quiet. */
  send (...msgs: Message[]): void {
    const queue: Message[] = [...msgs]
    for (const n of this.nodes.values()) queue.push(...n.handleReady())
    let steps = 0
    while (queue.length > 0) {
      if (++steps > 1_000_000) throw new Error('network did not settle')
      const m = queue.shift()!
      this.trace.push(m)
      if (!this.deliverable(m)) continue
      const to = this.nodes.get(m.to)!
      to.rn.step(this.rewrite !== undefined ? this.rewrite(m) : m)
      queue.push(...to.handleReady())
    }
  }

  /** Process pending Readies and deliver what they say. */
  settle (): void { this.send() }

  /** Tick every node (or the given ones) once, delivering messages after each round. */
  tick (n = 1, ids?: NodeId[]): void {
    for (let i = 0; i < n; i++) {
      for (const id of ids ?? this.nodes.keys()) this.node(id).rn.tick()
      this.settle()
    }
  }

  campaign (id: NodeId): void {
    this.node(id).rn.campaign()
    this.settle()
  }

  propose (id: NodeId, data: string | Uint8Array): void {
    this.node(id).rn.propose(typeof data === 'string' ? new TextEncoder().encode(data) : data)
    this.settle()
  }

  proposeConfChange (id: NodeId, cc: ConfChange): void {
    this.node(id).rn.proposeConfChange(cc)
    this.settle()
  }

  leaders (): NodeId[] {
    return [...this.nodes.values()].filter(n => n.raft.role === 'leader').map(n => n.id)
  }

  /** Tick until some node leads (or give up after `max` ticks). */
  tickUntilLeader (max = 200, ids?: NodeId[]): NodeId {
    for (let i = 0; i < max; i++) {
      const ls = this.leaders().filter(l => ids === undefined || ids.includes(l))
      if (ls.length === 1) return ls[0]!
      this.tick(1, ids)
    }
    throw new Error('no leader elected')
  }
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b)

/** The data of every applied entry of a node, as strings. */
export function appliedData (n: TestNode): string[] {
  return n.applied.map(e => dec(e.data))
}

/** A bare message for stepping into a core by hand. */
export function msg (m: Partial<Message> & { type: MessageType, from: NodeId, to: NodeId }): Message {
  return { term: 0, logTerm: 0, index: 0, commit: 0, entries: [], reject: false, rejectHint: 0, ...m }
}
