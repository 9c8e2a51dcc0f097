/**
 * A node's membership in the cluster: its libp2p host, the Raft driver over a framed
 * libp2p stream per peer, the metadata state machine driven by the log, and who is admitted.
 *
 *   DATA/
 *   ├── p2p-key          Ed25519 identity (net/identity.ts)
 *   └── raft/            the Raft log (storage/raftlog/level-log-storage.ts)
 *
 * Who may connect: members recorded in the state machine, voters and learners of the Raft
 * configuration, and the seeds a joiner was given; never a removed peer, nor one cut off by
 * fault injection (tests). A stranger may connect on probation to join (cluster/probation.ts,
 * cluster/join.ts), and a joiner may dial the member it joins through; neither may use Raft,
 * gossip or the node-to-node routes.
 *
 * Node-to-node HTTP (blob copies, upload mirrors, forwarded requests, membership checks) goes
 * to a member's peer port (net/peer-https.ts) with `peerClient` and `peerTarget()`: mutual
 * TLS, each side's certificate bound to its libp2p identity.
 */
import { randomBytes } from 'node:crypto'
import { FlotillaError } from '../storage/errors.js'
import type { Logger } from 'pino'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { createHost, type Host } from '../net/host.js'
import { sendRequest } from '../net/request-response.js'
import { closeConnection } from '../net/close-connection.js'
import { signRequest, verifyRequest } from '../net/peer-auth.js'
import type { Faults } from '../net/faults.js'
import { PeerClient, createPeerMetrics, type PeerCredentials, type PeerTarget } from '../net/peer-https.js'
import { FrameTransport } from '../net/frame-transport.js'
import { LevelLogStorage } from '../storage/raftlog/level-log-storage.js'
import type { KV } from '../storage/kv/kv.js'
import { RaftDriver } from './raft/driver.js'
import type { Status } from './raft/raft.js'
import { MetadataStateMachine } from './metadata/state-machine.js'
import { MetadataQueries } from './metadata/queries.js'
import { PeeringQueries } from './peering/queries.js'
import { RaftApplier } from './metadata/raft-applier.js'
import { decodeEnvelope, type Command, type CommandResult, type MemberRecord } from './metadata/commands.js'
import { dumpState, restoreState } from './metadata/snapshot.js'
import { Probation } from './probation.js'
import { StallWatch } from './stall-watch.js'
import { Counter, Gauge } from 'prom-client'
import { forceNewCluster, landed, membersWithLeader, readForceRecord, writeForceRecord, type ForceRecord } from './force-new-cluster.js'
import { JOIN_PROTOCOL, parseJoinAddress, serveJoins, type JoinAnswer, type JoinRequest } from './join.js'

export const RAFT_PROTOCOL = '/flotilla/raft/1.0.0'

/**
 * How a joiner sends its request to a member's HTTP URL: fetch() by default; the CLI passes one
 * that trusts its CA and shows its client certificate for an https:// member (src/cli/tls.ts).
 */
export type JoinFetch = (url: URL, init: RequestInit) => Promise<Response>

/**
 * Largest Raft frame, sent or accepted. Entries are refused before they are proposed when a
 * message carrying one could exceed it (64 KiB is left for the message's own fields): a
 * 4 MiB manifest's command is about 9.5 MiB at worst (base64 body, plus its annotations).
 */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024
export const MAX_ENTRY_BYTES = MAX_FRAME_BYTES - 64 * 1024

export interface ClusterOptions {
  dataDir: string
  privateKey: PrivateKey
  peerId: string
  /** libp2p listen multiaddr, e.g. /ip4/127.0.0.1/tcp/7000 */
  p2pListen: string
  /** This node's HTTP base URL, as other nodes reach it (may be set later, see setHttpUrl). */
  httpUrl: string
  /** This node's libp2p TLS certificate, for the peer port (net/peer-https.ts). */
  peerTls: PeerCredentials
  /** This node's peer port URL (https://HOST:PORT), once it listens (see setPeerUrl). */
  peerUrl?: string
  kv: KV
  log: Logger
  /** Found a new cluster with this node as its only voter (fresh data dir, no join). */
  found: boolean
  localReads?: boolean
  /** Test-only fault injection (FLOTILLA_FAULT_INJECTION=1): peers cut off from this node. */
  faults?: Faults
  /** Limits on strangers on probation (cluster/probation.ts); the defaults there otherwise. */
  probation?: { maxPeers?: number; maxPerAddress?: number }
  /** The libp2p addresses other sites dial to reach this node (`sites.advertise`); its own p2p addresses when absent. */
  siteAdvertise?: string[]
  tickMs?: number
  electionTicks?: number
  /**
   * Rewrite the membership to this node alone before starting (cluster/force-new-cluster.ts):
   * after losing a majority for good. Refused while a member of the old cluster has a leader.
   */
  forceNewCluster?: boolean
}

export class Cluster {
  readonly peerId: string
  readonly queries: MetadataQueries
  readonly peeringQueries: PeeringQueries
  readonly sm: MetadataStateMachine
  host: Host | undefined
  transport!: FrameTransport
  driver!: RaftDriver
  applier!: RaftApplier
  private storage!: LevelLogStorage
  /** Told of every command applied here (after it is applied). */
  onApplied: ((command: Command, result: CommandResult) => void) | undefined
  /**
   * Told once, when this node learns it was removed from the cluster (by the log, or by a
   * member it asks): it must stop serving. Until a handler is set, the news waits for it.
   */
  set onRemoved (handler: ((why: string) => void) | undefined) {
    this.removedHandler = handler
    if (handler !== undefined && this.removedWhy !== undefined) handler(this.removedWhy)
  }

  private removedHandler: ((why: string) => void) | undefined
  private removedWhy: string | undefined
  private membershipTimer: NodeJS.Timeout | undefined
  private members = new Map<string, MemberRecord>()
  /** Members of peered sites (cluster/peering/): let connect, for the site protocols only. */
  private sitePeers = new Set<string>()
  private removed = new Set<string>()
  private seeds = new Map<string, MemberRecord>()
  /** The member a joiner dials to join through its multiaddr (our gater lets us connect to it). */
  private joinVia = new Set<string>()
  /** A member of a site this node is peering with, dialed for the handshake (cluster/peering/sites.ts). */
  private siteVia = new Set<string>()
  /** Latest expiry (ms) of the join tokens handed out: strangers may connect on probation until then. */
  private joinTokensOpenUntil = 0
  readonly probation: Probation
  /** Node-to-node HTTP, over the members' peer ports. */
  readonly peerClient: PeerClient
  /** The peer port's counters (net/peer-https.ts), shared by its server and this client. */
  readonly peerMetrics = createPeerMetrics()

  constructor (private readonly opts: ClusterOptions) {
    this.peerId = opts.peerId
    this.peerClient = new PeerClient(opts.peerTls, this.peerMetrics)
    this.sm = new MetadataStateMachine(opts.kv, { sync: false })
    this.queries = new MetadataQueries(opts.kv)
    this.peeringQueries = new PeeringQueries(opts.kv)
    this.probation = new Probation({
      // Only a running member takes joiners; a joiner knows no tokens anyway.
      open: () => this.driver !== undefined && Date.now() < this.joinTokensOpenUntil,
      isMember: (p) => this.admits(p),
      disconnect: (p, reason) => this.disconnect(p, reason),
      ...opts.probation,
    })
  }

  /** This node's peer-port certificate (net/peer-https.ts). */
  get peerTls (): PeerCredentials {
    return this.opts.peerTls
  }

  setHttpUrl (url: string): void {
    this.opts.httpUrl = url
  }

  /** This node's peer port, once it listens: recorded in its member record (join, AddPeer at start). */
  setPeerUrl (url: string): void {
    this.opts.peerUrl = url
  }

  /** Whether this node serves a peer port (node-to-node routes are then refused on its client port). */
  hasPeerPort (): boolean {
    return this.opts.peerUrl !== undefined
  }

  private peerField (): { peer?: string } {
    return this.opts.peerUrl !== undefined ? { peer: this.opts.peerUrl } : {}
  }

  /**
   * Ask a member to admit this node, through its HTTP URL or its libp2p multiaddr (ending in
   * /p2p/<peer id>); this node must already listen (see startHost). Returns the members to
   * dial. The member checks the token and has us added as a learner (cluster/join.ts).
   */
  async requestJoin (target: { address: string; token: string; fetch?: JoinFetch }): Promise<MemberRecord[]> {
    const where = parseJoinAddress(target.address)
    if (where.kind === 'p2p' && where.peerId === this.peerId) {
      throw new Error(`${target.address} is this node's own identity: a node cannot join itself; give the multiaddr of a member of the cluster to join`)
    }
    if (where.kind === 'p2p') this.joinVia.add(where.peerId)
    try {
      await this.startHost()
      const req: JoinRequest = { token: target.token, peerId: this.peerId, p2p: this.p2pAddrs(), http: this.opts.httpUrl, ...this.peerField() }
      const members = where.kind === 'http' ? await this.joinOverHttp(where.url, req, target.fetch ?? fetch) : await this.joinOverP2p(target.address, where.addr, req)
      for (const m of members) this.seeds.set(m.peerId, m)
      return members
    } finally {
      this.joinVia.clear()
    }
  }

  private async joinOverHttp (url: string, req: JoinRequest, post: JoinFetch): Promise<MemberRecord[]> {
    let res: Response
    try {
      res = await post(new URL('/api/v1/cluster/join', url), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(req),
        signal: AbortSignal.timeout(60_000),
      })
    } catch (err) {
      // fetch() says only "fetch failed": its cause names the socket's or the TLS error.
      const cause = (err as { cause?: { message?: string; code?: string } }).cause
      throw new Error(`cannot reach ${url} to join: ${cause?.message ?? cause?.code ?? (err as Error).message}. Check the address of the member you are joining through.`)
    }
    const body = await res.json().catch(() => ({})) as { members?: MemberRecord[]; errors?: Array<{ message: string }> }
    if (!res.ok || body.members === undefined) {
      throw new Error(`the cluster refused the join (${res.status}): ${body.errors?.[0]?.message ?? 'no reason given'}`)
    }
    return body.members
  }

  private async joinOverP2p (address: string, addr: Parameters<typeof sendRequest>[1], req: JoinRequest): Promise<MemberRecord[]> {
    let bytes: Uint8Array
    try {
      bytes = await sendRequest(this.host!, addr, JOIN_PROTOCOL, new TextEncoder().encode(JSON.stringify(req)), { timeoutMs: 60_000, maxAnswerBytes: 4 * 1024 * 1024 })
    } catch (err) {
      // A refusal by the member's gater shows as the connection closing (an Event, not an Error).
      const why = typeof Event !== 'undefined' && err instanceof Event ? 'the member closed the connection' : (err as Error).message
      throw new Error(`cannot join through ${address}: ${why}. Check the multiaddr (flotilla status lists each member's), that its --p2p port is reachable, and that the join token has not expired: a member lets a new node connect only while a join token is valid`)
    }
    let answer: JoinAnswer
    try {
      answer = JSON.parse(new TextDecoder().decode(bytes)) as JoinAnswer
    } catch {
      throw new Error(`the member at ${address} answered the join with something that is not JSON`)
    }
    if ('error' in answer) throw new Error(`the cluster refused the join (${answer.error.status}): ${answer.error.message}`)
    if (!Array.isArray(answer.members)) throw new Error(`the member at ${address} answered the join without a member list`)
    return answer.members
  }

  /** Wait until this node has caught up and is a member of the configuration. */
  async waitUntilReady (timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs
    while (!this.ready()) {
      if (Date.now() > end) throw new Error('timed out catching up with the cluster: is the member reachable over libp2p (check --p2p on both sides)?')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }

  private async startHost (): Promise<Host> {
    this.host ??= await createHost({
      privateKey: this.opts.privateKey,
      listen: [this.opts.p2pListen],
      admit: (p, direction, address) => this.gate(p, direction, address),
      // Gossipsub sees members only: a stranger on probation gets no subscriptions, no
      // announcements (they name digests), and cannot send any (net/gossip-gate.ts).
      gossip: (p) => this.admits(p),
    })
    return this.host
  }

  /**
   * The connection gater: members, the member a joiner dials to join, and (inbound) strangers
   * on probation while a join token is outstanding. Never a removed or cut-off peer.
   */
  private gate (peerId: string, direction: 'inbound' | 'outbound', address: string | undefined): boolean {
    if (this.removed.has(peerId) || this.opts.faults?.blocks(peerId) === true) return false
    if (this.admits(peerId)) return true
    // A pinned member of a peered site: admitted to the connection, but not a member (no Raft,
    // no gossip, no node-to-node routes); the site protocols check the pin again (cluster/peering/).
    if (this.sitePeers.has(peerId)) return true
    if (direction === 'outbound') return this.joinVia.has(peerId) || this.siteVia.has(peerId)
    const ok = this.probation.admit(peerId, address)
    if (ok) this.opts.log.info({ peer: peerId, address, pending: this.probation.pending() }, 'unknown peer connected on probation, to join')
    return ok
  }

  private disconnect (peerId: string, reason: string): void {
    this.opts.log.info({ peer: peerId, reason }, 'disconnecting a peer that is not a member')
    const err = new Error(`not a member: ${reason}`)
    for (const c of this.host?.getConnections(peerIdFromString(peerId)) ?? []) c.abort(err)
  }

  /** Forwarding marks (src/http/forwarded.ts): signed with this node's key, accepted from members. */
  readonly forwarding = {
    mark: async (method: string, path: string): Promise<string> => await signRequest(this.opts.privateKey, this.peerId, method, path),
    marked: async (header: string | undefined, method: string, path: string): Promise<boolean> => {
      if (header === undefined || header === '') return false
      const peer = await verifyRequest(header, method, path)
      return peer !== undefined && this.admits(peer)
    },
  }

  /** Whether a peer is a member (or a seed of ours): may use Raft, gossip and the node-to-node routes. */
  admits (peerId: string): boolean {
    if (this.removed.has(peerId) || this.opts.faults?.blocks(peerId) === true) return false
    if (this.members.has(peerId) || this.seeds.has(peerId)) return true
    if (this.driver === undefined) return false
    const conf = this.driver.status().conf
    return conf.voters.includes(peerId) || conf.learners.includes(peerId)
  }

  async start (seeds: MemberRecord[] = []): Promise<void> {
    const { opts } = this
    for (const s of seeds) this.seeds.set(s.peerId, s)
    this.storage = new LevelLogStorage(`${opts.dataDir}/raft`)
    await this.storage.open()
    // A restart (not a founding or a join): refuse to be a second process with this identity.
    if (seeds.length === 0 && !(this.storage.lastIndex() === 0 && this.storage.initialState().hardState.term === 0)) {
      const holder = await this.identityInUseAt()
      if (holder !== undefined) {
        await this.storage.close()
        throw new Error(`another process is running this node's identity (${this.peerId}) right now: member ${holder} is connected to it. Is this a copy of a live node's data dir? Stop the other process, or start the copy on a fresh data dir and join with a token`)
      }
    }
    if (opts.forceNewCluster === true) await this.force()
    const host = await this.startHost()
    this.transport = new FrameTransport({
      host,
      protocol: RAFT_PROTOCOL,
      accept: (p) => this.admits(p),
      maxFrameBytes: MAX_FRAME_BYTES,
      onError: (peer, err) => {
        opts.log.debug({ peer, err: (err as Error).message }, 'raft frame not delivered')
        this.metrics.framesLost.inc({ peer })
        // What was lost must be sent again: the leader probes the peer instead of streaming blind.
        this.driver?.reportUnreachable(peer)
      },
      // A stranger on probation may only join: one that opens Raft loses its connection.
      onRefused: (p) => this.probation.refuse(p, `opened ${RAFT_PROTOCOL} without being a member`),
    })
    await this.transport.start()
    await serveJoins(host, this, this.probation, opts.log)
    await this.refreshMembers()
    for (const s of this.seeds.values()) await this.transport.setAddresses(s.peerId, s.p2p)

    const fresh = this.storage.lastIndex() === 0 && this.storage.initialState().hardState.term === 0
    const applied = await this.sm.appliedIndex()
    this.driver = new RaftDriver({
      id: this.peerId,
      storage: this.storage,
      transport: this.transport,
      apply: async (entry) => await this.applyEntry(entry.data, entry.index),
      restore: async (snap) => {
        await restoreState(opts.kv, snap.data, { sync: true })
        await this.refreshMembers()
      },
      takeSnapshot: async () => await dumpState(opts.kv),
      ...(opts.found && fresh ? { bootstrap: [this.peerId] } : {}),
      ...(applied > 0 ? { applied } : {}),
      // A heartbeat every 50 ms and an election timeout randomized in [0.5 s, 1 s): a dead
      // leader is replaced within about a second. A slow node that misses heartbeats only
      // costs a PreVote round: CheckQuorum and PreVote keep it from deposing a live leader.
      tickMs: opts.tickMs ?? 50,
      raft: { electionTick: opts.electionTicks ?? 10, heartbeatTick: 1, maxEntryBytes: MAX_ENTRY_BYTES },
      onError: (err) => opts.log.fatal({ err }, 'raft driver stopped'),
      onConfChange: (cc) => {
        if (cc.type === 'remove' && cc.node === this.peerId) this.markRemoved('the configuration change that removes it was applied')
      },
    })
    this.applier = new RaftApplier(this.driver, { localReads: opts.localReads ?? false })
    const conf = this.storage.initialState().conf
    const outOfConf = !fresh && conf.voters.length > 0 && !conf.voters.includes(this.peerId) && !conf.learners.includes(this.peerId)
    // Out of the configuration yet holding its own member record: removed, not a joiner catching up.
    if (this.removed.has(this.peerId) || (outOfConf && this.members.has(this.peerId))) {
      throw new Error(`this node (${this.peerId}) was removed from its cluster and cannot serve again: start it on a fresh data dir and join with a new token`)
    }
    await this.driver.start()
    this.watchLeadership()
    const forced = await readForceRecord(opts.dataDir)
    if (forced !== undefined && !forced.recorded) await this.recordForce(forced)

    if (opts.found && fresh) {
      const init = await this.applier.submit({ type: 'InitCluster', clusterId: randomBytes(8).toString('hex'), secret: randomBytes(32).toString('base64url'), at: Date.now() })
      if (!init.ok) throw new Error(`could not found the cluster: ${init.message}`)
      await this.announceSelf()
    } else if (!fresh) {
      // Addresses may have changed since the last run (port 0); tell the others, in the background.
      void this.announceSelfWhenAble()
    }
  }

  /** --force-new-cluster: refused while the old cluster has a leader; else this node alone (cluster/force-new-cluster.ts). */
  private async force (): Promise<void> {
    const { log, dataDir } = this.opts
    const fail = async (msg: string): Promise<never> => { await this.storage.close(); throw new Error(msg) }
    if (this.storage.lastIndex() === 0 && this.storage.initialState().hardState.term === 0) {
      await fail(`--force-new-cluster needs the data dir of a node that was a member of a cluster, and ${dataDir} holds no Raft log: give the survivor's --data DIR`)
    }
    log.warn({ dataDir }, '!!! --force-new-cluster: checking that the old cluster has no reachable leader (at most 10 s) before making this node a cluster of its own. Writes this node never received are lost for good. !!!')
    const members = await this.queries.members()
    const alive = await membersWithLeader(members, this.peerId, 8000)
    if (alive.length > 0) {
      await fail(`refusing --force-new-cluster: the old cluster still has a leader, seen by ${alive.join(', ')}. Forcing now would split it in two. Restart this node without the flag: it rejoins that cluster`)
    }
    let result: Awaited<ReturnType<typeof forceNewCluster>>
    try {
      result = await forceNewCluster(this.storage, this.peerId, async (plan) => {
        await writeForceRecord(dataDir, { at: new Date().toISOString(), ...plan, recorded: false })
      })
    } catch (err) {
      return await fail((err as Error).message)
    }
    if (result.removed.length === 0) {
      log.warn({ peer: this.peerId }, '--force-new-cluster: this node is already the only member of its cluster; nothing to change (remove the flag)')
      return
    }
    log.warn({ peer: this.peerId, removed: result.removed, index: result.index, term: result.term },
      `!!! FORCED A NEW CLUSTER: this node is now the only member; ${result.removed.length} member(s) removed for good (${result.removed.join(', ')}). Remove --force-new-cluster from its command line, then add nodes with flotilla token and flotilla join !!!`)
  }

  /** After a force: the removed members' records go through the log (RemovePeer), once this node leads. */
  private async recordForce (rec: ForceRecord): Promise<void> {
    if (!landed(this.storage, rec)) {
      // The process stopped between the marker and the log write: nothing was forced.
      this.opts.log.warn({ marker: rec }, 'a --force-new-cluster was interrupted before it changed the log: nothing was forced; the marker is dropped')
      await writeForceRecord(this.opts.dataDir, { ...rec, index: 0, removed: [], recorded: true })
      return
    }
    // The forced entries are applied before this node can commit anything (it leads alone only then).
    for (const peerId of rec.removed) {
      const res = await this.applier.submit({ type: 'RemovePeer', peerId, at: Date.now() })
      if (!res.ok) throw new Error(`could not record the removal of ${peerId} after --force-new-cluster: ${res.message}`)
    }
    await writeForceRecord(this.opts.dataDir, { ...rec, recorded: true })
    this.opts.log.info({ removed: rec.removed }, 'the members removed by --force-new-cluster are forgotten: they are never admitted again')
  }

  async announceSelfWhenAble (): Promise<void> {
    const mine = this.members.get(this.peerId)
    const addrs = this.p2pAddrs()
    if (mine !== undefined && mine.http === this.opts.httpUrl && mine.peer === this.opts.peerUrl && mine.p2p.join() === addrs.join() && (mine.site ?? []).join() === this.siteAddrs().join()) return
    try {
      await this.announceSelf()
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'could not record this node\'s new addresses yet')
    }
  }

  private leadershipTimer: NodeJS.Timeout | undefined
  /** Followers whose match index stopped advancing (on the leader). */
  readonly stalls = new StallWatch()
  readonly metrics = {
    stalls: new Counter({ name: 'flotilla_raft_replication_stalls_total', help: 'Times a follower\'s match index stopped advancing for 5 s while the leader had entries for it', labelNames: ['peer'] as const, registers: [] }),
    framesLost: new Counter({ name: 'flotilla_raft_frames_lost_total', help: 'Raft frames to a peer lost by the transport (dial failed, stream broke, queue full); Raft resends them', labelNames: ['peer'] as const, registers: [] }),
    peerTlsHandshakeFailures: this.peerMetrics.handshakeFailures,
    peerTlsConnections: this.peerMetrics.connections,
    peerRequests: this.peerMetrics.requests,
    peerReplaysRefused: this.peerMetrics.replaysRefused,
    peerInternalOnClientPort: this.peerMetrics.internalOnClientPort,
    peerGetFailures: this.peerMetrics.getFailures,
    // Where this node's Raft stands, read at each scrape.
    term: new Gauge({ name: 'flotilla_raft_term', help: 'Current Raft term', registers: [], collect: () => { this.metrics.term.set(this.driver?.status().term ?? 0) } }),
    commit: new Gauge({ name: 'flotilla_raft_commit_index', help: 'Highest log index known committed', registers: [], collect: () => { this.metrics.commit.set(this.driver?.status().commit ?? 0) } }),
    applied: new Gauge({ name: 'flotilla_raft_applied_index', help: 'Highest log index applied to this node\'s state machine', registers: [], collect: () => { this.metrics.applied.set(this.driver?.status().applied ?? 0) } }),
    applyLag: new Gauge({ name: 'flotilla_raft_apply_lag', help: 'Entries committed and not yet applied here', registers: [], collect: () => { const st = this.driver?.status(); this.metrics.applyLag.set(st === undefined ? 0 : Math.max(0, st.commit - st.applied)) } }),
    leader: new Gauge({ name: 'flotilla_raft_is_leader', help: '1 on the leader', registers: [], collect: () => { this.metrics.leader.set(this.driver?.isLeader === true ? 1 : 0) } }),
    members: new Gauge({ name: 'flotilla_cluster_members', help: 'Voters and learners of the current configuration', registers: [], collect: () => { this.metrics.members.set(this.memberIds().length) } }),
    stalled: new Gauge({
      name: 'flotilla_raft_followers_stalled',
      help: 'Followers whose replication is stalled right now (leader only)',
      registers: [],
      collect: () => { this.metrics.stalled.set(this.stalls.current().length) },
    }),
  }


  /**
   * Log every change of leader or term (elections are otherwise invisible in the logs), and,
   * on the leader, every follower whose replication stalls or recovers (cluster/stall-watch.ts).
   */
  private watchLeadership (): void {
    let last = { leader: null as string | null, term: 0 }
    this.leadershipTimer = setInterval(() => {
      const st = this.driver.status()
      if (st.leader !== last.leader || st.term !== last.term) {
        this.opts.log.info({ leader: st.leader, term: st.term, role: st.role, commit: st.commit }, st.leader === null ? 'no leader' : 'leader elected')
        last = { leader: st.leader, term: st.term }
      }
      for (const e of this.stalls.observe(st, Date.now(), (p) => this.transport.lastError(p))) {
        const { peer, match, lastIndex, since, cause } = e.stall
        if (e.type === 'stalled') {
          this.metrics.stalls.inc({ peer })
          this.opts.log.warn({ peer, match, lastIndex, stalledMs: Date.now() - since, cause }, `replication to ${peer} is stalled at index ${match} (the leader is at ${lastIndex}): ${cause}`)
        } else {
          this.opts.log.info({ peer, match: e.match, stalledMs: Date.now() - since }, `replication to ${peer} moves again`)
        }
      }
    }, 200)
    this.leadershipTimer.unref()
  }

  /** Record (or refresh) this node's addresses in the membership table. */
  async announceSelf (): Promise<void> {
    const res = await this.applier.submit({ type: 'AddPeer', peerId: this.peerId, p2p: this.p2pAddrs(), http: this.opts.httpUrl, site: this.siteAddrs(), ...this.peerField(), at: Date.now() })
    if (!res.ok) throw new Error(res.message)
  }

  p2pAddrs (): string[] {
    return this.host?.getMultiaddrs().map((m) => m.toString()) ?? []
  }

  /** The addresses other sites dial to reach this node: `sites.advertise`, else its own p2p addresses. */
  siteAddrs (): string[] {
    return this.opts.siteAdvertise ?? this.p2pAddrs().map((a) => a.replace(/\/p2p\/[^/]+$/, ''))
  }

  private async applyEntry (data: Uint8Array, index: number): Promise<CommandResult> {
    const env = decodeEnvelope(data)
    const result = await this.sm.apply(env, index)
    const t = env.command.type
    const inner = env.command.type === 'Audited' ? env.command.command.type : t
    if (t === 'AddPeer' || t === 'RemovePeer' || inner === 'IssueJoinToken' || inner === 'PutSitePeering' || inner === 'RemoveSitePeering' || inner === 'SetSiteMembers') await this.refreshMembers()
    if (t === 'RemovePeer' && result.ok) {
      this.transport.forget(env.command.peerId)
      this.peerClient.forget(env.command.peerId)
      // Not `void c.close()`: its rejection (a stream still sending to the removed node after
      // libp2p's 1 s close timeout, or the node exiting meanwhile) went unhandled and ended this process.
      const gone = env.command.peerId
      for (const c of this.host?.getConnections() ?? []) {
        if (c.remotePeer.toString() !== gone) continue
        void closeConnection(c, 2000).then((how) => { if (how === 'aborted') this.opts.log.debug({ peer: gone }, 'the removed peer\'s connection did not close in 2 s: aborted') })
      }
    }
    if (t === 'RemovePeer' && result.ok && env.command.peerId === this.peerId) this.markRemoved('its removal was applied')
    this.onApplied?.(env.command, result)
    return result
  }

  private async refreshMembers (): Promise<void> {
    const list = await this.queries.members()
    this.members = new Map(list.map((m) => [m.peerId, m]))
    for (const m of list) {
      this.seeds.delete(m.peerId)
      if (m.peerId !== this.peerId && this.transport !== undefined) await this.transport.setAddresses(m.peerId, m.p2p)
    }
    const removed: string[] = []
    for await (const [k] of this.opts.kv.entries({ gte: 'removed\u0000', lt: 'removed\u0001' })) removed.push(k.slice('removed\u0000'.length))
    this.removed = new Set(removed)
    this.joinTokensOpenUntil = await this.queries.joinTokensOpenUntil()
    const pinned = new Set((await this.peeringQueries.peerings()).flatMap((p) => p.members.map((m) => m.peerId)))
    // A member of a site no longer peered loses its connections at once.
    for (const id of this.sitePeers) if (!pinned.has(id) && !this.admits(id)) this.disconnect(id, 'its site is no longer peered')
    this.sitePeers = pinned
  }

  /** Let this node dial `peerId`, a member of a site it is peering with, while `fn` runs (the handshake over libp2p). */
  async dialingSite<T> (peerId: string, fn: () => Promise<T>): Promise<T> {
    this.siteVia.add(peerId)
    try {
      return await fn()
    } finally {
      this.siteVia.delete(peerId)
    }
  }

  /** Whether a peer is a pinned member of a peered site (it may use the site protocols). */
  isSitePeer (peerId: string): boolean {
    return this.sitePeers.has(peerId) && !this.removed.has(peerId) && this.opts.faults?.blocks(peerId) !== true
  }

  /** Add a peer as a learner; the leader promotes it to voter in the background once it has caught up. */
  async addLearner (peerId: string): Promise<void> {
    const conf = this.driver.status().conf
    if (conf.voters.includes(peerId)) return
    if (!conf.learners.includes(peerId)) await this.driver.proposeConfChange({ type: 'addLearner', node: peerId }, { timeoutMs: 15_000 })
    void this.driver.addMember(peerId, { timeoutMs: 10 * 60_000 }).then(
      () => this.opts.log.info({ peer: peerId }, 'learner promoted to voter'),
      (err: unknown) => this.opts.log.warn({ peer: peerId, err: (err as Error).message }, 'learner not promoted'))
  }

  /**
   * Hand leadership to the most caught-up other voter and wait for it to take over, so this
   * node can be removed by someone else. Resolves false when there is no other voter.
   */
  async stepDown (timeoutMs = 5000): Promise<boolean> {
    const st = this.driver.status()
    const others = st.conf.voters.filter((v) => v !== this.peerId)
    if (others.length === 0) return false
    others.sort((a, b) => (st.progress?.get(b)?.match ?? 0) - (st.progress?.get(a)?.match ?? 0))
    this.driver.transferLeader(others[0]!)
    const end = Date.now() + timeoutMs
    while (this.driver.isLeader || this.driver.leader === null) {
      if (Date.now() > end) return false
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    return true
  }

  /**
   * Remove a member from the configuration, then forget its identity for good. Call on the
   * leader, for another node: the configuration change goes first, while the member is
   * still admitted, so it learns of its removal.
   */
  async removePeer (peerId: string): Promise<void> {
    const conf = this.driver.status().conf
    if (conf.voters.includes(peerId) || conf.learners.includes(peerId)) {
      await this.driver.removeMember(peerId, { timeoutMs: 15_000 })
    }
    const res = await this.applier.submit({ type: 'RemovePeer', peerId, at: Date.now() })
    if (!res.ok) throw new FlotillaError(res.code, res.message)
  }

  /** HTTP base URL of a member; undefined when unknown or cut off (fault injection). */
  httpOf (peerId: string): string | undefined {
    if (this.opts.faults?.blocks(peerId) === true) return undefined
    const http = this.members.get(peerId)?.http ?? this.seeds.get(peerId)?.http
    return http === undefined || http === '' ? undefined : http
  }

  /**
   * Where node-to-node HTTP reaches a member: its peer port, or its client API when its record
   * has no peer port (written by an older version); undefined when unknown or cut off.
   */
  peerTarget (peerId: string): PeerTarget | undefined {
    if (this.opts.faults?.blocks(peerId) === true) return undefined
    const m = this.members.get(peerId) ?? this.seeds.get(peerId)
    const url = m?.peer ?? m?.http
    return url === undefined || url === '' ? undefined : { peerId, url }
  }

  /** Voters and learners of the current configuration. */
  memberIds (): string[] {
    if (this.driver === undefined) return [this.peerId]
    const conf = this.driver.status().conf
    return [...conf.voters, ...conf.learners]
  }

  voterIds (): string[] {
    return this.driver === undefined ? [this.peerId] : this.driver.status().conf.voters
  }

  memberList (): MemberRecord[] {
    return [...this.members.values()]
  }

  status (): Status {
    return this.driver.status()
  }

  /** Ready to serve: a leader is known and every entry this node knows committed is applied. */
  ready (): boolean {
    if (this.driver === undefined) return false
    const st = this.driver.status()
    return st.leader !== null && st.applied >= st.commit && (st.conf.voters.includes(this.peerId) || st.conf.learners.includes(this.peerId))
  }

  private markRemoved (why: string): void {
    if (this.removedWhy !== undefined) return
    this.removedWhy = why
    this.opts.log.error({ peer: this.peerId, why }, `this node was removed from the cluster (${why}): it stops serving; to bring the machine back, start it on a fresh data dir and join again`)
    this.removedHandler?.(why)
  }

  /**
   * Ask the members (signed HTTP, before this node's own libp2p host exists) whether a live
   * process holds this identity: a member connected to it that answers identify. Never a lock
   * file or a marker, which a kill -9 leaves behind: a killed process's connections close with
   * it, so a restart after a crash always starts. Unreachable members cannot tell: no answer.
   */
  private async identityInUseAt (): Promise<string | undefined> {
    const path = '/internal/v1/membership'
    const others = (await this.queries.members()).filter((m) => m.peerId !== this.peerId && (m.peer ?? m.http) !== '').slice(0, 5)
    const answers = await Promise.all(others.map(async (m) => {
      try {
        const res = await this.peerClient.call({ peerId: m.peerId, url: m.peer ?? m.http }, { method: 'GET', path, headers: { authorization: await signRequest(this.opts.privateKey, this.peerId, 'GET', path) }, timeoutMs: 4000 })
        const body = parseJson(res.body) as { connected?: boolean }
        return body.connected === true ? m.peerId : undefined
      } catch { return undefined }
    }))
    return answers.find((a) => a !== undefined)
  }

  /** Whether a process holding `peerId` is connected to this node and alive (it answers identify within 2 s). */
  async liveConnection (peerId: string): Promise<boolean> {
    const host = this.host
    if (host === undefined) return false
    for (const c of host.getConnections(peerIdFromString(peerId))) {
      if (c.status !== 'open') continue
      try {
        await host.services.identify.identify(c, { signal: AbortSignal.timeout(2000) })
        return true
      } catch { /* a dead or paused peer: try the next */ }
    }
    return false
  }

  /** Whether a peer was removed from the cluster for good. */
  wasRemoved (peerId: string): boolean {
    return this.removed.has(peerId)
  }

  /**
   * A node that was removed while it was down (or missed the entry) never hears of it from the
   * log: the members' gaters refuse it. While it has no leader, ask the members over HTTP,
   * signed with its key: one that answers "removed" settles it (src/http/internal.ts).
   */
  watchMembership (everyMs = 3000): void {
    let leaderless = 0
    this.membershipTimer = setInterval(() => {
      if (this.removedWhy !== undefined || this.driver === undefined) return
      leaderless = this.driver.leader === null ? leaderless + 1 : 0
      if (leaderless < 2) return
      void this.askMembers().catch(() => {})
    }, everyMs)
    this.membershipTimer.unref()
  }

  private async askMembers (): Promise<void> {
    const path = '/internal/v1/membership'
    for (const m of this.members.values()) {
      const url = m.peer ?? m.http
      if (m.peerId === this.peerId || url === '') continue
      const target = { peerId: m.peerId, url }
      try {
        const res = await this.peerClient.call(target, { method: 'GET', path, headers: { authorization: await signRequest(this.opts.privateKey, this.peerId, 'GET', path) }, timeoutMs: 3000 })
        const body = parseJson(res.body) as { errors?: Array<{ detail?: { removed?: boolean } }> }
        if (res.status === 403 && body.errors?.[0]?.detail?.removed === true) {
          this.markRemoved(`member ${m.peerId} says so`)
          return
        }
      } catch { /* unreachable: ask the next */ }
    }
  }

  async stop (): Promise<void> {
    if (this.membershipTimer !== undefined) clearInterval(this.membershipTimer)
    if (this.leadershipTimer !== undefined) clearInterval(this.leadershipTimer)
    this.probation.stop()
    this.peerClient.close()
    await this.driver?.stop()
    await this.transport?.stop().catch(() => {})
    await this.host?.stop()
    await this.storage?.close()
  }
}

function parseJson (bytes: Buffer): unknown {
  try { return JSON.parse(bytes.toString('utf8')) } catch { return {} }
}
