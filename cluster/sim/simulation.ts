/**
 * Deterministic simulation of a Raft cluster (after FoundationDB's simulator and TigerBeetle's
 * VOPR): N nodes running the real core on one virtual clock, a network that drops, duplicates,
 * delays and reorders, a nemesis that partitions, cuts links one way, pauses and crash-restarts
 * nodes (losing unsynced writes), and clients doing put/get (get through ReadIndex) whose
 * history is checked for linearizability at the end.
 *
 * Everything random comes from the seed, and events run in (time, insertion) order, so one
 * seed is one exact run: a failure replays from its seed.
 *
 * A run is a few rounds of: chaos (faults come and go while clients work), then heal (every
 * fault removed), then a liveness check (a leader within a few election timeouts, and a probe
 * proposal applied on every node). Safety invariants are checked after every event.
 */
import { checkOperations } from '../lincheck/porcupine.js'
import { describeHistory, kvModel, type KvOperation } from '../lincheck/kv-model.js'
import { seedFor } from '../raft/rand.js'
import { EventQueue } from './event-queue.js'
import { InvariantViolation, SafetyChecker } from './invariants.js'
import { SimNetwork, type NetworkConditions } from './network.js'
import { SimRand } from './random.js'
import { SimNode, TICK_MS, type NodeHooks, type NodeTuning, type UnsafeDriver } from './sim-node.js'
import { encodeCommand, type KvCommand } from './kv-state-machine.js'

export interface SimOptions {
  seed: number
  /** Cluster size; default 3 or 5, drawn from the seed. */
  nodes?: number
  /** Chaos → heal → liveness rounds. Default 3. */
  rounds?: number
  /** Length of a chaos phase in virtual ms. Default 1500..3000, drawn from the seed. */
  chaosMs?: number
  clients?: number
  keys?: number
  /** Core and compaction settings; by default each is drawn from the seed (see `tuningFor`). */
  tuning?: Partial<NodeTuning>
  /** Keep the event trace (for --trace and the determinism test). */
  trace?: boolean
  /** Stop after this many events (a guard against runaway runs). Default 2 million. */
  maxEvents?: number
  /**
   * The transport tells the sender about every lost message (reportUnreachable), as a
   * connection-based transport that notices a broken stream would. Default false: losses
   * are silent, which is harder on the core.
   */
  reportLoss?: boolean
  /** Break the driver on purpose (harness self-test): the run should then fail. */
  unsafe?: UnsafeDriver
}

export interface SimStats {
  nodes: number
  events: number
  virtualMs: number
  messages: number
  dropped: number
  elections: number
  crashes: number
  pauses: number
  partitions: number
  /** Nodes replaced by a new one (remove, add learner, promote). */
  replacements: number
  snapshotsInstalled: number
  ops: number
  /** Writes refused as too large (never proposed). */
  opsRefused: number
  /** Writes of the largest accepted size that committed. */
  largestCommitted: number
  opsOk: number
  opsUnknown: number
  reads: number
  lincheckSteps: number
  /** Slowest time from a heal to a stable leader, in virtual ms. */
  maxLeaderAfterHealMs: number
}

export interface SimResult {
  seed: number
  ok: boolean
  /** The violated invariant, e.g. "election safety" or "linearizability". */
  invariant?: string
  detail?: string
  /** Virtual time of the failure. */
  at?: number
  trace: string[]
  stats: SimStats
  tuning: NodeTuning
}

/** Election timeouts are drawn from [10, 20) ticks of TICK_MS: 100..200 virtual ms. */
const ELECTION_TICK = 10
const ELECTION_MS = ELECTION_TICK * TICK_MS * 2
/** After a heal: a stable leader within this long, then the probe applied everywhere. */
const LEADER_WITHIN_MS = 5 * ELECTION_MS
const PROBE_WITHIN_MS = 10 * ELECTION_MS
const CLIENT_TIMEOUT_MS = 300
const CLIENT_ATTEMPTS = 3

interface PendingOp {
  op: KvOperation
  attempt: number
  kind: 'put' | 'get'
  seq: number
}

class SimClient {
  seq = 0
  current: PendingOp | null = null
  guess: string
  constructor (readonly id: string, first: string) { this.guess = first }
}

export class Simulation {
  readonly opts: Required<Omit<SimOptions, 'chaosMs' | 'nodes' | 'unsafe' | 'tuning'>> & { chaosMs: number, nodes: number, tuning: NodeTuning }
  readonly q = new EventQueue()
  readonly checker = new SafetyChecker()
  readonly trace: string[] = []
  readonly nodes = new Map<string, SimNode>()
  /** Nodes that are members or joining (not removed), in the order they were created. */
  readonly ids: string[]
  private readonly hooks: NodeHooks
  private nodeCount: number
  /** A node replacement in progress: remove `victim`, then add `newcomer` as learner, then promote it. */
  private membership: { victim: string, newcomer: string, step: 'remove' | 'add' | 'promote', since: number } | null = null
  private replacements = 0
  private readonly net: SimNetwork
  private readonly nemesisRand: SimRand
  private readonly clientRand: SimRand
  private readonly diskRand: SimRand
  private readonly clients: SimClient[] = []
  private readonly history: KvOperation[] = []
  private stopClients = false
  private events = 0
  private crashes = 0
  private pauses = 0
  private partitions = 0
  private reads = 0
  private probeSeq = 0
  private lincheckSteps = 0
  /** When the last message sent so far will have arrived. */
  private lastArrival = 0
  private maxLeaderAfterHeal = 0
  private refused = 0
  private largestCommitted = 0

  constructor (opts: SimOptions) {
    const seedRand = new SimRand(opts.seed)
    const nodes = opts.nodes ?? (seedRand.chance(0.5) ? 3 : 5)
    this.opts = {
      seed: opts.seed,
      nodes,
      rounds: opts.rounds ?? 3,
      chaosMs: opts.chaosMs ?? seedRand.between(1500, 3000),
      clients: opts.clients ?? 5,
      keys: opts.keys ?? 3,
      tuning: { ...tuningFor(opts.seed), ...opts.tuning },
      trace: opts.trace ?? false,
      reportLoss: opts.reportLoss ?? false,
      maxEvents: opts.maxEvents ?? 2_000_000
    }
    this.net = new SimNetwork(new SimRand(seedFor(opts.seed, 'net')))
    this.nemesisRand = new SimRand(seedFor(opts.seed, 'nemesis'))
    this.clientRand = new SimRand(seedFor(opts.seed, 'clients'))
    this.diskRand = new SimRand(seedFor(opts.seed, 'disk'))
    this.ids = Array.from({ length: nodes }, (_, i) => `n${i + 1}`)
    this.nodeCount = nodes
    const hooks: NodeHooks = {
      q: this.q,
      checker: this.checker,
      seed: opts.seed,
      tuning: this.opts.tuning,
      electionTick: ELECTION_TICK,
      // Now and then an fsync stalls, which widens the window for a crash before it lands.
      diskLatency: () => this.diskRand.chance(0.1) ? this.diskRand.between(10, 60) : this.diskRand.between(1, 4),
      send: (from, to, bytes, describe) => this.send(from, to, bytes, describe),
      log: (line) => this.log(line)
    }
    if (opts.unsafe !== undefined) hooks.unsafe = opts.unsafe
    this.hooks = hooks
    const founders = [...this.ids]
    for (const id of founders) this.nodes.set(id, new SimNode(id, founders, hooks))
    for (let i = 0; i < this.opts.clients; i++) this.clients.push(new SimClient(`c${i + 1}`, this.ids[0]!))
  }

  private log (line: string): void {
    if (this.opts.trace) this.trace.push(`${String(this.q.now).padStart(6)} ${line}`)
  }

  // --- network ---

  /** Returns false when `to` is known to be down (the transport's send would throw). */
  private send (from: string, to: string, bytes: Uint8Array, describe: () => string): boolean {
    if (bytes.byteLength > this.opts.tuning.maxFrameBytes) {
      throw new InvariantViolation('frame size', `${from}→${to} ${describe()}: a ${bytes.byteLength}-byte frame, over the transport's ${this.opts.tuning.maxFrameBytes}: it would never arrive`)
    }
    const target = this.nodes.get(to)
    if (target === undefined || !target.up) return false
    const delays = this.net.delays(from, to)
    if (delays.length === 0) this.lost(from, to)
    for (const d of delays) {
      this.lastArrival = Math.max(this.lastArrival, this.q.now + d)
      this.q.after(d, () => `deliver ${from}→${to} ${describe()}`, () => {
        // A link cut while the message was in flight loses it too.
        if (this.net.blocked(from, to) || !target.up) { this.lost(from, to); return }
        target.receive(bytes)
      })
    }
    return true
  }

  private lost (from: string, to: string): void {
    if (!this.opts.reportLoss) return
    this.q.after(1, () => `unreachable ${from}→${to}`, () => this.nodes.get(from)!.reportUnreachable(to))
  }

  // --- the run ---

  run (): SimResult {
    try {
      for (const n of this.nodes.values()) n.start()
      for (const c of this.clients) this.scheduleNextOp(c, this.clientRand.between(0, 50))
      for (let round = 0; round < this.opts.rounds; round++) {
        if (round === 0) this.log(`=== ${this.opts.nodes} nodes, ${JSON.stringify(this.opts.tuning)}`)
        this.log(`=== round ${round + 1}: chaos for ${this.opts.chaosMs} ms`)
        const chaosEnd = this.q.now + this.opts.chaosMs
        this.scheduleNemesis(chaosEnd)
        this.runUntil(chaosEnd)
        this.heal()
        this.checkLiveness()
      }
      // Let every client operation finish (or time out), then check the history.
      this.stopClients = true
      this.runUntil(this.q.now + CLIENT_TIMEOUT_MS * (CLIENT_ATTEMPTS + 1), () => this.clients.every(c => c.current === null))
      for (const c of this.clients) if (c.current !== null) this.finish(c, 'unknown')
      const report = checkOperations(kvModel, this.history)
      this.lincheckSteps = report.steps
      if (report.result !== 'ok') {
        const part = report.failedPartition ?? []
        throw new InvariantViolation('linearizability', `${report.result} history for key ${part[0]?.input.key ?? '?'}:\n${describeHistory(part.slice(0, 80))}`)
      }
      return this.result(true)
    } catch (err) {
      if (err instanceof InvariantViolation) return this.result(false, err.invariant, err.message)
      const e = err as Error
      return this.result(false, 'exception', `${e.name}: ${e.message}\n${e.stack ?? ''}`)
    }
  }

  private result (ok: boolean, invariant?: string, detail?: string): SimResult {
    const r: SimResult = {
      seed: this.opts.seed,
      ok,
      trace: this.trace,
      tuning: this.opts.tuning,
      stats: {
        nodes: this.opts.nodes,
        events: this.events,
        virtualMs: this.q.now,
        messages: this.net.sent,
        dropped: this.net.dropped,
        elections: this.checker.elections,
        crashes: this.crashes,
        pauses: this.pauses,
        partitions: this.partitions,
        replacements: this.replacements,
        snapshotsInstalled: [...this.nodes.values()].reduce((s, n) => s + n.snapshotsInstalled, 0),
        ops: this.history.length,
        opsRefused: this.refused,
        largestCommitted: this.largestCommitted,
        opsOk: this.history.filter(o => o.return !== Infinity).length,
        opsUnknown: this.history.filter(o => o.return === Infinity).length,
        reads: this.reads,
        lincheckSteps: this.lincheckSteps,
        maxLeaderAfterHealMs: this.maxLeaderAfterHeal
      }
    }
    if (invariant !== undefined) {
      r.invariant = invariant
      r.detail = detail
      r.at = this.q.now
      this.log(`!!! ${detail ?? invariant}`)
    }
    return r
  }

  /** Run events up to `until` (virtual ms), or until `done()` holds after an event. */
  private runUntil (until: number, done?: () => boolean): boolean {
    while (this.q.peekTime() <= until) {
      const e = this.q.pop()!
      if (++this.events > this.opts.maxEvents) throw new InvariantViolation('runaway', `more than ${this.opts.maxEvents} events`)
      if (this.opts.trace) this.log(e.describe())
      e.run()
      if (done?.() === true) return true
    }
    this.q.now = Math.max(this.q.now, until)
    return done?.() === true
  }

  // --- nemesis ---

  private scheduleNemesis (end: number): void {
    const r = this.nemesisRand
    let t = this.q.now
    for (;;) {
      t += r.between(50, 400)
      if (t >= end) break
      this.q.at(t, () => 'nemesis', () => this.fault())
    }
  }

  private members (): SimNode[] {
    return this.ids.map(id => this.nodes.get(id)!)
  }

  private leaderId (): string | undefined {
    for (const n of this.members()) if (n.up && n.role === 'leader') return n.id
    return undefined
  }

  /** Nodes the leader's configuration includes (voters and learners); all members when leaderless. */
  private inConf (): SimNode[] {
    const lead = this.leaderId()
    const conf = lead !== undefined ? this.nodes.get(lead)!.confState() : null
    if (conf === null) return this.members()
    return this.members().filter(n => conf.voters.includes(n.id) || conf.learners.includes(n.id))
  }

  private fault (): void {
    const r = this.nemesisRand
    // Faults aimed at the leader find more bugs than faults at random nodes.
    const target = (): SimNode => {
      const lead = this.leaderId()
      return this.nodes.get(lead !== undefined && r.chance(0.5) ? lead : r.pick(this.ids))!
    }
    const kind = r.intn(11)
    switch (kind) {
      case 0: case 1: { // partition into two sides
        const shuffled = r.shuffle(this.ids)
        const k = r.between(1, this.ids.length - 1)
        const groups = [shuffled.slice(0, k), shuffled.slice(k)]
        this.net.partition(groups)
        this.partitions++
        this.log(`nemesis: partition ${groups.map(g => g.join(',')).join(' | ')}`)
        break
      }
      case 2: { // isolate one node (often the leader)
        const n = target()
        this.net.partition([[n.id], this.ids.filter(x => x !== n.id)])
        this.partitions++
        this.log(`nemesis: isolate ${n.id}`)
        break
      }
      case 3: { // one-way cut
        const a = r.pick(this.ids)
        const b = r.pick(this.ids.filter(x => x !== a))
        this.net.cutLink(a, b)
        this.log(`nemesis: cut ${a}→${b}`)
        break
      }
      case 4: case 9: { // crash (kind 9: one caught mid-fsync, if any), restart later
        const syncing = this.ids.map(id => this.nodes.get(id)!).filter(n => n.syncing)
        const n = kind === 9 && syncing.length > 0 ? r.pick(syncing) : target()
        if (!n.up) break
        n.crash()
        this.crashes++
        const down = r.between(20, 600)
        this.log(`nemesis: crash ${n.id} for ${down} ms`)
        this.q.after(down, () => `restart ${n.id}`, () => { if (!n.up && !n.removed) n.restart() })
        break
      }
      case 5: { // pause (SIGSTOP), resume later
        const n = target()
        if (!n.up || n.paused) break
        n.pause()
        this.pauses++
        const ms = r.between(50, 800)
        this.log(`nemesis: pause ${n.id} for ${ms} ms`)
        this.q.after(ms, () => `resume ${n.id}`, () => n.resume())
        break
      }
      case 6: { // bad network
        const c: NetworkConditions = {
          drop: r.pick([0, 0.05, 0.2, 0.4]),
          duplicate: r.pick([0, 0.05, 0.2]),
          minDelay: 1,
          maxDelay: r.pick([5, 20, 60]),
          slow: r.pick([0, 0.02, 0.1]),
          longDelay: r.pick([100, 300, 1000])
        }
        this.net.conditions = c
        this.log(`nemesis: network ${JSON.stringify(c)}`)
        break
      }
      case 7: { // partial heal
        this.net.heal()
        this.log('nemesis: links restored')
        break
      }
      case 8: { // leadership transfer
        const lead = this.leaderId()
        if (lead === undefined) break
        const to = r.pick(this.ids.filter(x => x !== lead))
        this.log(`nemesis: transfer leadership ${lead}→${to}`)
        this.nodes.get(lead)!.transferLeader(to)
        break
      }
      case 10: { // replace a node (often the leader) by a new one with a new id
        if (this.membership !== null) break
        const victim = target().id
        const newcomer = `n${++this.nodeCount}`
        this.membership = { victim, newcomer, step: 'remove', since: this.q.now }
        this.log(`nemesis: replace ${victim} by ${newcomer}`)
        this.driveMembership()
        break
      }
    }
  }

  /**
   * One step of a node replacement, retried until done: single-server changes, one at a
   * time, each proposed at the current leader (which refuses while another is pending).
   */
  private driveMembership (): void {
    const m = this.membership
    if (m === null) return
    const lead = this.leaderId()
    const leader = lead !== undefined ? this.nodes.get(lead)! : undefined
    const conf = leader?.confState() ?? null
    if (leader !== undefined && conf !== null) {
      const has = (id: string): boolean => conf.voters.includes(id) || conf.learners.includes(id)
      if (m.step === 'remove') {
        if (!has(m.victim)) {
          this.retire(m.victim)
          m.step = 'add'
          const n = new SimNode(m.newcomer, null, this.hooks)
          this.nodes.set(m.newcomer, n)
          this.ids.push(m.newcomer)
          n.start()
          this.log(`membership: ${m.victim} removed; ${m.newcomer} starts empty`)
        } else {
          leader.proposeConfChange({ type: 'remove', node: m.victim })
        }
      }
      if (m.step === 'add') {
        if (has(m.newcomer)) m.step = 'promote'
        else leader.proposeConfChange({ type: 'addLearner', node: m.newcomer })
      }
      if (m.step === 'promote') {
        if (conf.voters.includes(m.newcomer)) {
          this.log(`membership: ${m.newcomer} is a voter`)
          this.membership = null
          this.replacements++
          return
        }
        const repl = leader.replication(m.newcomer)
        // Promote only a learner that has caught up, so the quorum does not wait on it.
        if (repl !== null && repl.match >= repl.commit) leader.proposeConfChange({ type: 'promote', node: m.newcomer })
      }
    }
    this.q.after(50, () => 'membership step', () => this.driveMembership())
  }

  /** A removed node keeps running a little (it must not disrupt anyone), then stops for good. */
  private retire (id: string): void {
    const n = this.nodes.get(id)!
    n.removed = true
    this.ids.splice(this.ids.indexOf(id), 1)
    this.q.after(this.nemesisRand.between(0, 500), () => `retire ${id}`, () => { if (n.up) n.crash() })
  }

  private heal (): void {
    this.net.heal()
    for (const n of this.members()) {
      if (!n.up) n.restart()
      if (n.paused) n.resume()
    }
    this.log('=== heal: all links up, all nodes running')
  }

  /**
   * After a heal: one leader all nodes follow, soon; then a probe proposal applied everywhere.
   * The clock starts once messages sent before the heal have arrived: a stale append from a
   * deposed leader, delayed a second, legitimately holds off a pre-vote.
   */
  private checkLiveness (): void {
    this.runUntil(Math.max(this.q.now, this.lastArrival))
    const healedAt = this.q.now
    const stable = (): boolean => {
      const lead = this.leaderId()
      return lead !== undefined && this.inConf().every(n => n.lead === lead)
    }
    if (!this.runUntil(healedAt + LEADER_WITHIN_MS, stable)) {
      throw new InvariantViolation('liveness', `no stable leader ${LEADER_WITHIN_MS} ms after heal (${this.describeNodes()})`)
    }
    this.log(`liveness: leader ${this.leaderId()!} after ${this.q.now - healedAt} ms`)
    this.maxLeaderAfterHeal = Math.max(this.maxLeaderAfterHeal, this.q.now - healedAt)
    const seq = ++this.probeSeq
    const deadline = this.q.now + PROBE_WITHIN_MS
    const applied = (): boolean => this.inConf().every(n => n.up && (n.sm.lastSeq.get('probe') ?? 0) >= seq)
    // The probe is as large as an entry may be: the largest accepted proposal must commit, and
    // one byte more must be refused before it is proposed (so it can never wedge the log).
    const max = this.opts.tuning.maxEntryBytes
    let answer: string | undefined
    this.nodes.get(this.leaderId()!)!.proposeWrite(commandOfSize('probe-over', seq, '__probe_over', max + 1), (res) => { answer = res })
    if (answer !== 'refused') throw new InvariantViolation('proposal size', `a ${max + 1}-byte proposal was not refused (${answer ?? 'accepted'}) by a core whose limit is ${max}`)
    const propose = (): void => {
      if (applied() || this.q.now >= deadline) return
      const lead = this.leaderId()
      if (lead !== undefined) this.nodes.get(lead)!.proposeWrite(commandOfSize('probe', seq, '__probe', max), () => {})
      this.q.after(ELECTION_MS, () => 'probe retry', propose)
    }
    propose()
    if (!this.runUntil(deadline, applied)) {
      throw new InvariantViolation('liveness', `probe ${seq} not applied on every node ${PROBE_WITHIN_MS} ms after a leader was elected (${this.describeNodes()})`)
    }
    this.log(`liveness: probe ${seq} (${max} bytes) applied everywhere after ${this.q.now - healedAt} ms`)
    this.largestCommitted++
    // A membership change under way completes too.
    if (!this.runUntil(this.q.now + PROBE_WITHIN_MS, () => this.membership === null)) {
      const m = this.membership!
      throw new InvariantViolation('liveness', `replacing ${m.victim} by ${m.newcomer} stuck at step ${m.step} since ${m.since} ms (${this.describeNodes()})`)
    }
  }

  private describeNodes (): string {
    const lead = this.leaderId()
    return this.members().map(n => `${n.id}: ${n.up ? n.role : 'down'} term ${n.term} lead ${n.lead ?? '-'} applied ${n.sm.applied}`).join('; ') +
      (lead !== undefined ? `; leader progress: ${this.nodes.get(lead)!.describeProgress()}` : '')
  }

  // --- clients ---

  private scheduleNextOp (c: SimClient, delay: number): void {
    this.q.after(delay, () => `client ${c.id} next op`, () => {
      if (this.stopClients || c.current !== null) return
      const r = this.clientRand
      const key = `k${r.intn(this.opts.keys)}`
      const seq = ++c.seq
      const kind = r.chance(0.55) ? 'put' : 'get'
      // One put in ten is large, up to a fifth over the largest entry accepted (refused, then).
      const big = kind === 'put' && r.chance(0.1)
      const value = big ? commandOfSize(c.id, seq, key, r.between(this.opts.tuning.maxEntryBytes >> 1, Math.floor(this.opts.tuning.maxEntryBytes * 1.2))).v + `${c.id}.${seq}` : `${c.id}.${seq}`
      const op: KvOperation = kind === 'put'
        ? { clientId: c.id, input: { op: 'put', key, value }, output: undefined, call: this.q.now, return: Infinity }
        : { clientId: c.id, input: { op: 'get', key }, output: undefined, call: this.q.now, return: Infinity }
      c.current = { op, attempt: 0, kind, seq }
      this.attempt(c)
    })
  }

  private attempt (c: SimClient): void {
    const p = c.current!
    const attempt = ++p.attempt
    const r = this.clientRand
    const nodeId = attempt === 1 && r.chance(0.8) ? c.guess : r.pick(this.ids)
    const node = this.nodes.get(nodeId)!
    const still = (): boolean => c.current === p && p.attempt === attempt
    this.log(`client ${c.id} ${kvModel.describeOperation!(p.op.input, undefined)} attempt ${attempt} → ${nodeId}`)
    if (p.kind === 'put') {
      const input = p.op.input as { key: string, value: string }
      node.proposeWrite({ c: c.id, s: p.seq, k: input.key, v: input.value }, (res) => {
        if (c.current !== p) return // a late answer to an attempt we gave up on: the op stays unknown
        if (res === 'ok') {
          c.guess = nodeId
          p.op.output = { op: 'put' }
          this.finish(c, 'ok')
        } else if (res === 'refused') {
          // Refused before it was proposed: it never happens, so it constrains nothing.
          if (!still()) return
          if (encodeCommand({ c: c.id, s: p.seq, k: input.key, v: input.value }).byteLength <= this.opts.tuning.maxEntryBytes) {
            throw new InvariantViolation('proposal size', `a ${input.value.length}-byte put within the limit was refused`)
          }
          this.refused++
          c.current = null
          this.scheduleNextOp(c, this.clientRand.between(0, 20))
        } else if (still()) {
          if (node.lead !== null) c.guess = node.lead
          this.retry(c)
        }
      })
    } else {
      node.linearizableRead(p.op.input.key, `${c.id}:${p.seq}:${attempt}`, (value) => {
        if (!still()) return
        c.guess = nodeId
        p.op.output = { op: 'get', value }
        this.reads++
        this.finish(c, 'ok')
      })
    }
    this.q.after(CLIENT_TIMEOUT_MS, () => `client ${c.id} timeout`, () => { if (still()) this.retry(c) })
  }

  private retry (c: SimClient): void {
    const p = c.current!
    if (p.attempt >= CLIENT_ATTEMPTS) {
      this.finish(c, 'unknown')
      return
    }
    this.q.after(this.clientRand.between(5, 30), () => `client ${c.id} retry`, () => { if (c.current === p) this.attempt(c) })
  }

  private finish (c: SimClient, how: 'ok' | 'unknown'): void {
    const p = c.current!
    if (how === 'ok') {
      p.op.return = this.q.now
      this.history.push(p.op)
    } else if (p.kind === 'put') {
      // It may still commit later: the checker may linearize it anywhere after its call.
      p.op.output = undefined
      this.history.push(p.op)
    } // an unanswered read constrains nothing: leave it out
    this.log(`client ${c.id} ${how}: ${kvModel.describeOperation!(p.op.input, how === 'ok' ? p.op.output : undefined)}`)
    c.current = null
    this.scheduleNextOp(c, this.clientRand.between(0, 20))
  }
}

/**
 * Each seed draws its own core settings, so runs reach the corners: one entry per append,
 * an inflight window of one, snapshots every few entries with nothing kept behind, tiny chunks.
 */
export function tuningFor (seed: number): NodeTuning {
  const r = new SimRand(seedFor(seed, 'tuning'))
  const maxSizePerMsg = r.pick([1, 256, 1024, 1 << 20])
  const snapshotChunkSize = r.pick([16, 64, 1 << 20])
  const maxEntryBytes = r.pick([256, 1024, 4096])
  return {
    snapshotEvery: r.pick([5, 25, 100]),
    keepEntries: r.pick([0, 3, 20]),
    maxInflightMsgs: r.pick([1, 2, 16, 256]),
    maxSizePerMsg,
    snapshotChunkSize,
    snapshotWindowBytes: r.pick([1024, 65_536, 1 << 22]),
    maxEntryBytes,
    // As in the cluster (cluster/cluster.ts): room for the largest entry, an append's batch
    // or a snapshot chunk, with each entry's own fields, and the message's.
    maxFrameBytes: 2 * Math.max(maxEntryBytes, maxSizePerMsg, snapshotChunkSize) + 1024
  }
}

/** A command whose encoding is exactly `bytes` long (a value padded to fit), for size-edge writes. */
export function commandOfSize (c: string, s: number, k: string, bytes: number): KvCommand {
  const base = encodeCommand({ c, s, k, v: '' }).byteLength
  return { c, s, k, v: 'x'.repeat(Math.max(0, bytes - base)) }
}

export function runSeed (opts: SimOptions): SimResult {
  return new Simulation(opts).run()
}
