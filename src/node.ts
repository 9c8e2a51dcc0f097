/**
 * A Flotilla node: its stores, its state machine and its HTTP server, with a lifecycle.
 *
 *   DATA/
 *   ├── p2p-key          this node's identity: an Ed25519 key, created once (net/identity.ts)
 *   ├── raft/            the Raft log (cluster/cluster.ts)
 *   ├── blobs/           committed blobs, by digest (storage/blobs/fs-blob-store.ts)
 *   ├── tmp/             blobs being ingested; emptied at start
 *   ├── uploads/         upload sessions' bytes (storage/blobs/fs-upload-store.ts)
 *   └── meta/            the metadata LevelDB (cluster/metadata/keys.ts)
 */
import { SOCKET_IDLE_MS } from './http/long-request.js'
import type { Socket } from 'node:net'
import { mkdir, readdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Logger } from 'pino'
import { FsBlobStore } from '../storage/blobs/fs-blob-store.js'
import { FsUploadStore } from '../storage/blobs/fs-upload-store.js'
import { LevelKV } from '../storage/kv/level-kv.js'
import { Cluster, type JoinFetch } from '../cluster/cluster.js'
import type { RaftApplier } from '../cluster/metadata/raft-applier.js'
import { FlotillaError } from '../storage/errors.js'
import type { Digest } from '../storage/reference.js'
import type { MemberRecord } from '../cluster/metadata/commands.js'
import { loadOrCreateIdentity } from '../net/identity.js'
import { BlobFetcher } from '../cluster/replication/blob-fetcher.js'
import { Replicator, BLOB_TOPIC, placement, type GossipMsg } from '../cluster/replication/replicator.js'
import { fetchThrough } from '../cluster/replication/fetch-through.js'
import { UploadMirror } from '../cluster/replication/upload-mirror.js'
import { MirrorReceiver } from '../cluster/replication/mirror-receiver.js'
import { ReplicationMetrics } from '../cluster/replication/metrics.js'
import type { PrivateKey } from '@libp2p/interface'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { Faults } from '../net/faults.js'
import { Sites } from '../cluster/peering/sites.js'
import { requestActor, shouldAudit } from './auth/context.js'
import { createApp } from './http/app.js'
import { createAuthService } from './auth/setup.js'
import type { RegistryDeps } from './http/deps.js'
import { durationMs, siteAdvertiseAddrs, splitHostPort, toMultiaddr, type Config } from './config.js'
import { Collector, InUse } from '../cluster/gc/collector.js'
import { RetentionRunner } from '../cluster/retention/runner.js'
import { PullRecorder } from '../cluster/retention/pulls.js'
import { DiskWatch } from '../storage/disk-watch.js'
import { HookDeliverer } from '../cluster/hooks/deliverer.js'
import { Gauge } from 'prom-client'
import { signRequest } from '../net/peer-auth.js'
import { listenFailure } from './listen-errors.js'
import { createApiServer, type ApiServer } from './tls/server.js'
import { certificateUser } from './tls/client-cert.js'
import { loadTrust } from './tls/trust.js'
import { trustedFetch } from '../net/trusted-fetch.js'
import { createPeerCredentials } from '../net/peer-https.js'
import { startPeerPort, type PeerPort } from './peer-port.js'
import { BackupSessions } from '../cluster/backup/sessions.js'
import { SearchService } from './http/search.js'
import { ChecksumService, WriteActivity } from '../cluster/checksums/service.js'
import { CachedList } from './http/cached-list.js'
import { propertyChanges } from './http/properties.js'
import { RemoteService } from './http/remote.js'
import { RemoteMetrics } from '../cluster/remote/metrics.js'
import { unhandledCancellations } from './unhandled.js'
import type { IncomingMessage } from 'node:http'

export interface JoinTarget {
  /** Any member's HTTP URL, or its libp2p multiaddr ending in /p2p/<peer id> (cluster/join.ts). */
  address: string
  token: string
  /** Sends the join to an HTTP(S) address; fetch() when absent (cluster/cluster.ts, JoinFetch). */
  fetch?: JoinFetch
}

export class RegistryNode {
  private server: ApiServer['server'] | undefined
  /** The client-facing server, HTTP or HTTPS (src/tls/server.ts). */
  private api: ApiServer | undefined
  private peerPort: PeerPort | undefined
  private readonly sockets = new Set<Socket>()
  private sweeper: NodeJS.Timeout | undefined
  private ready = false
  private readonly startedAt = Date.now()
  address: { host: string; port: number } | undefined
  replicator: Replicator | undefined
  /** Upload chains: this node's uploads down their chains, and its part in other nodes' (upload-mirror.ts). */
  private mirror: UploadMirror | undefined
  private removedResolve: (why: string) => void = () => {}
  /**
   * Resolves, with the reason, once this node learns it was removed from its cluster (by
   * `flotilla leave` or `remove`, while it ran or while it was down): the process should stop.
   */
  readonly removed: Promise<string> = new Promise((resolve) => { this.removedResolve = resolve })
  private mirrors: MirrorReceiver | undefined
  /** Bytes this node sends to its peers (cluster/replication/metrics.ts). */
  private readonly replicationMetrics = new ReplicationMetrics()
  private gcTimer: NodeJS.Timeout | undefined
  /** Blobs this node should hold and is still copying. */
  private readonly backlogGauge = new Gauge({ name: 'flotilla_replication_backlog', help: 'Blobs this node should hold and is still copying', registers: [], collect: () => { this.backlogGauge.set(this.replicator?.backlog() ?? 0) } })
  /** The data directory's filesystem against the watermarks (storage/disk-watch.ts). */
  disk: DiskWatch | undefined
  /** Online backups this node serves (cluster/backup/sessions.ts). */
  backups: BackupSessions | undefined
  /** SHA-1 and MD5 of the blobs this node commits (cluster/checksums/); undefined when checksums.enabled is false. */
  checksums: ChecksumService | undefined
  /** Uploads under way here: checksum hashing yields to them. */
  readonly writes = new WriteActivity()
  /** Sizes of record-less upload sessions at the last sweep (undefined before the first). */
  private orphans: Map<string, number> | undefined

  private constructor (
    readonly config: Config,
    readonly log: Logger,
    readonly nodeId: string,
    private readonly kv: LevelKV,
    readonly deps: RegistryDeps,
    readonly cluster: Cluster,
    private readonly privateKey: PrivateKey,
    private readonly join: JoinTarget | undefined,
    /** Test-only fault injection (config.faultInjection); undefined in production. */
    readonly faults: Faults | undefined,
  ) {
    // Cross-site peering (cluster/peering/): blobs go through this site's replication once it runs.
    this.sites = new Sites({
      cluster,
      // A peering made or removed through the API is audited like every change a request makes.
      sink: {
        submit: async (c) => {
          const actor = requestActor.getStore()
          return await deps.sink.submit(actor !== undefined && shouldAudit(c.type) ? { type: 'Audited', actor: { ...actor, at: Date.now() }, command: c } : c)
        },
        barrier: async () => await deps.sink.barrier(),
      },
      blobs: deps.blobs,
      log,
      fetchThrough: async (digest) => await deps.replication?.fetchThrough(digest),
      waitForCopies: async (digests) => { await deps.replication?.waitForCopies(digests) },
      hold: (digests) => deps.gc?.inUse.hold(digests) ?? (() => {}),
      access: deps.auth.queries,
      reconcileIntervalMs: durationMs(config.sites.reconcileInterval)!,
      feedRetain: config.sites.feedRetain,
      tombstoneTtlMs: durationMs(config.sites.tombstoneTtl)!,
      fetch: trustedFetch(loadTrust(config.tls.trust ?? [])),
    })
  }

  readonly sites: Sites

  static async open (config: Config, log: Logger, joinTarget?: JoinTarget, how: { forceNewCluster?: boolean } = {}): Promise<RegistryNode> {
    const dataDir = resolve(config.data)
    await mkdir(dataDir, { recursive: true })
    const identity = await loadOrCreateIdentity(join(dataDir, 'p2p-key'))
    const nodeId = identity.peerId
    const blobs = new FsBlobStore(dataDir, { directIO: config.storage.directIO })
    await blobs.open()
    const uploads = new FsUploadStore(dataDir, { directIO: config.storage.directIO })
    await uploads.open()
    const kv = new LevelKV(join(dataDir, 'meta'))
    try {
      await kv.open()
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause
      if (cause?.code === 'LEVEL_LOCKED' || /lock/i.test(String((err as Error).message))) {
        throw new Error(`the data directory ${dataDir} is in use by another Flotilla process: stop it, or give this node its own --data DIR`)
      }
      throw err
    }
    const raftUsed = (await readdir(join(dataDir, 'raft')).catch(() => [])).length > 0
    if (joinTarget !== undefined && raftUsed) {
      throw new Error(`${dataDir} already belongs to a cluster: restart it with flotilla serve --data ${dataDir}, or join with a fresh --data DIR`)
    }
    const faults = config.faultInjection ? new Faults() : undefined
    if (faults !== undefined) log.warn('fault injection is on (FLOTILLA_FAULT_INJECTION): for tests only')
    const cluster = new Cluster({
      dataDir,
      privateKey: identity.privateKey,
      peerId: nodeId,
      p2pListen: toMultiaddr(config.p2p),
      httpUrl: config.advertise ?? '',
      // A fresh certificate each start, signed by the identity (the libp2p TLS spec).
      peerTls: await createPeerCredentials(identity.privateKey),
      kv,
      log,
      found: joinTarget === undefined && !raftUsed,
      localReads: config.cluster.reads === 'local',
      ...(faults !== undefined ? { faults } : {}),
      probation: config.cluster.probation,
      ...(how.forceNewCluster === true ? { forceNewCluster: true } : {}),
      ...(siteAdvertiseAddrs(config) !== undefined ? { siteAdvertise: siteAdvertiseAddrs(config)! } : {}),
    })
    const deps: RegistryDeps = {
      nodeId,
      blobs,
      uploads,
      queries: cluster.queries,
      virtuals: new CachedList(async () => await cluster.queries.virtuals()),
      // The HTTP server listens before the cluster starts (a joiner must know its own URL), so
      // requests can come before the applier exists: they get 503 (retry), not a TypeError's 500.
      sink: { submit: async (c) => await applierOf(cluster).submit(c), barrier: async () => await applierOf(cluster).barrier() },
      log,
      limits: { manifestMaxBytes: config.limits.manifestMaxBytes },
      promoteProperties: config.properties.promote,
      deleteEnabled: config.storage.delete,
      now: () => Date.now(),
      auth: createAuthService(config.auth, kv, log, { submit: async (c) => await deps.sink.submit(c), barrier: async () => await deps.sink.barrier() }, undefined, certificateUser(config.tls)),
    }
    let self: RegistryNode | undefined
    deps.retention = { runner: new RetentionRunner({ queries: cluster.queries, sink: deps.sink, immutable: async (repo) => await deps.auth.queries.isImmutable(repo), unshipped: async () => await self?.sites.unshipped() ?? new Map<string, string[]>(), log }), pulls: new PullRecorder(deps.sink, log) }
    deps.search = new SearchService(kv, deps.sink, log)
    deps.hooks = new HookDeliverer({ queries: cluster.queries, sink: deps.sink, isLeader: () => cluster.driver?.isLeader ?? false, log, fetch: trustedFetch(loadTrust(config.tls.trust ?? [])) })
    const inUse = new InUse()
    const call = memberCall(cluster, nodeId, identity.privateKey)
    deps.gc = { collector: gcCollector(cluster, deps, inUse, call, log, async (d) => await self?.extraCopy(d) ?? false), inUse, graceMs: durationMs(config.gc.grace)! }
    const disk = new DiskWatch(dataDir, { highPercent: config.storage.diskHighWatermark, lowPercent: Math.min(config.storage.diskLowWatermark, config.storage.diskHighWatermark) }, log)
    deps.disk = { state: () => disk.state(), roomElsewhere: roomElsewhere(cluster, nodeId, call) }
    // Remote repositories (src/http/remote.ts): a blob is filled from the upstream by one member, the others stream from it.
    deps.remotes = new RemoteService({ deps, metrics: new RemoteMetrics(), members: () => cluster.memberIds(), peerGet: peerGet(cluster, nodeId, identity.privateKey), trust: loadTrust(config.tls.trust ?? []) })
    const node = new RegistryNode(config, log, nodeId, kv, deps, cluster, identity.privateKey, joinTarget, faults)
    node.disk = disk
    self = node
    node.backups = new BackupSessions({ kv, sink: deps.sink, inUse, nodeId, conf: () => cluster.status().conf })
    if (config.checksums.enabled) node.checksums = new ChecksumService({ kv, blobs, sink: deps.sink, peerId: nodeId, log, workers: config.checksums.workers, backfillBytesPerSecond: config.checksums.backfillMiBps * 2 ** 20, activity: node.writes })
    return node
  }

  /**
   * Reconcile upload sessions with their bytes after a crash: a record without bytes, or
   * bytes without a record, are the two halves of an interrupted start; expired ones go too.
   */
  async sweepUploads (): Promise<void> {
    const { queries, uploads, sink } = this.deps
    const cutoff = this.deps.now() - this.config.uploads.expireAfterHours * 3600_000
    const live = new Set<string>()
    for await (const [id, rec] of queries.uploads()) {
      if (rec.owner !== this.nodeId) continue
      const size = await uploads.size(id)
      if (size === undefined || rec.at < cutoff) {
        await sink.submit({ type: 'DeleteUpload', id })
        await uploads.remove(id)
        this.log.info({ upload: id, reason: size === undefined ? 'no data' : 'expired' }, 'upload session removed')
      } else {
        live.add(id)
      }
    }
    // Sessions without a record are replication, fetch-through and mirror copies (or the half of
    // an interrupted start). At start none is in use; later, one is removed only once it has not
    // grown since the previous sweep, so copies under way are left alone.
    const seen = new Map<string, number>()
    for await (const id of uploads.list()) {
      if (live.has(id) || await queries.upload(id) !== undefined) continue
      const size = await uploads.size(id)
      if (size === undefined) continue
      if (this.orphans !== undefined && this.orphans.get(id) !== size) { seen.set(id, size); continue }
      await uploads.remove(id)
      this.log.info({ upload: id }, 'orphan upload data removed')
    }
    this.orphans = seen
    this.mirror?.sweep()
    this.mirrors?.sweep()
  }

  /**
   * Garbage collection (cluster/gc/collector.ts): the bytes forgotten while this node was down
   * go now (in the background: the sweep waits until this node has caught up); the leader
   * collects every gc.interval.
   */
  private startGc (): void {
    const gc = this.deps.gc!
    this.deps.retention?.pulls.start()
    this.deps.hooks?.start()
    gc.collector.sweep().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'gc: the sweep at start failed; the next collection sweeps again'))
    const every = durationMs(this.config.gc.interval)!
    if (every <= 0) return
    this.gcTimer = setInterval(() => {
      if (!this.ready || !(this.cluster.driver?.isLeader ?? false)) return
      // Retention first: what its policies delete is then collected in the same round.
      void (async () => {
        await this.deps.retention?.runner.run().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'retention: the scheduled run failed; it runs again at the next interval'))
        await gc.collector.run({ graceMs: gc.graceMs }).catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'gc: the scheduled collection failed; it runs again at the next interval'))
      })()
    }, every)
    this.gcTimer.unref()
  }

  /**
   * Whether this node's copy of `digest` is an extra one GC may drop (gc.copyIdle): outside
   * the blob's placement, every member of the placement recorded as holding it, and not read
   * here for gc.copyIdle (a copy not read since this process started counts from the start,
   * or from when it was stored if later: a fetch-through copy lands without being read).
   */
  async extraCopy (digest: string): Promise<boolean> {
    const r = this.replicator
    if (r === undefined || r.shouldHold(digest)) return false
    const last = Math.max(this.deps.blobs.lastRead?.(digest as Digest) ?? this.startedAt, await this.deps.blobs.storedAt?.(digest as Digest) ?? 0)
    if (Date.now() - last < durationMs(this.config.gc.copyIdle)!) return false
    const holders = new Set(await this.deps.queries.holders(digest))
    return placement(digest, this.cluster.memberIds(), this.config.cluster.replicas).every((p) => holders.has(p))
  }

  /** Blob copies between members: driven by applied commands, gossip hints and anti-entropy. */
  private startReplication (): void {
    const { cluster, deps, log } = this
    const fetcher = new BlobFetcher({ privateKey: this.privateKey, peerId: this.nodeId, blobs: deps.blobs, uploads: deps.uploads, target: (p) => cluster.peerTarget(p), client: cluster.peerClient })
    const pubsub = cluster.host!.services.pubsub
    const replicator = new Replicator({
      peerId: this.nodeId,
      blobs: deps.blobs,
      queries: deps.queries,
      sink: deps.sink,
      fetcher,
      log,
      members: () => cluster.memberIds(),
      voters: () => cluster.voterIds(),
      ...(this.config.cluster.replicas !== undefined ? { replicas: this.config.cluster.replicas } : {}),
      publish: (msg) => { pubsub.publish(BLOB_TOPIC, new TextEncoder().encode(JSON.stringify(msg))).catch(() => {}) },
      // A blob coming down an upload chain is not copied a second time.
      arriving: async (digest) => await this.mirrors?.arriving(digest) ?? false,
      full: () => this.disk?.state().full === true,
    })
    // Only members' announcements count: one relayed by any other peer (a stranger connected on
    // probation to join) is rejected, one a member relays for a non-member ignored; neither is forwarded.
    pubsub.topicValidators.set(BLOB_TOPIC, (from, msg) => {
      if (!cluster.admits(from.toString())) return TopicValidatorResult.Reject
      return msg.type === 'signed' && cluster.admits(msg.from.toString()) ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    })
    pubsub.subscribe(BLOB_TOPIC)
    pubsub.addEventListener('message', (evt) => {
      if (evt.detail.topic !== BLOB_TOPIC) return
      if (evt.detail.type !== 'signed' || !cluster.admits(evt.detail.from.toString())) return
      try { replicator.onGossip(JSON.parse(new TextDecoder().decode(evt.detail.data)) as GossipMsg) } catch { /* not ours */ }
    })
    cluster.onApplied = (command, result) => {
      const c = command.type === 'Audited' ? command.command : command
      if (!result.ok) return
      this.checksums?.onApplied(c)
      if (c.type === 'LinkBlob' || c.type === 'AddHolder') {
        // The metadata knows the blob now: GC's sweep no longer needs its fresh mark to keep it.
        deps.blobs.settle(c.digest as Digest)
        void replicator.onBlobKnown(c.digest, c.size)
      }
      if (c.type === 'PutRemote' || c.type === 'DeleteRemote') deps.remotes?.invalidate()
      if (c.type === 'PutVirtual' || c.type === 'DeleteVirtual') deps.virtuals?.invalidate()
      // Other sites long-polling this site's change feed hear of a new entry at once.
      this.sites.notify()
      // A webhook delivery may have been queued: the leader sends it now rather than at its next tick.
      deps.hooks?.kick()
    }
    const mirror = this.mirror!
    deps.replication = {
      fetchThrough: async (digest, range) => await fetchThrough({ peerId: this.nodeId, fetcher, replicator, uploads: deps.uploads, blobs: deps.blobs, sink: deps.sink, log, full: () => this.disk?.state().full === true }, digest, range),
      waitForCopies: async (digests) => await replicator.waitForCopies(digests, replicator.writeQuorum()),
      peerTarget: (p) => cluster.peerTarget(p),
      peers: cluster.peerClient,
      mirror,
      forwarding: cluster.forwarding,
    }
    replicator.start()
    this.replicator = replicator
  }

  /**
   * Upload chains (cluster/replication/upload-mirror.ts): made before the HTTP server starts,
   * since this node relays other nodes' uploads as soon as it serves; it owns chains of its own
   * once replication is wired (until then its quorum is 0: nothing to mirror).
   */
  private startMirrors (): MirrorReceiver {
    const { cluster, deps, log } = this
    const mirror = new UploadMirror({
      peerId: this.nodeId,
      privateKey: this.privateKey,
      target: (p) => cluster.peerTarget(p),
      client: cluster.peerClient,
      // Followers need not hold libp2p connections to each other, so liveness is learnt by
      // trying: a peer that fails a mirror is skipped for a while (upload-mirror.ts).
      chain: (key) => this.replicator?.mirrorChain(key) ?? { peers: [], length: 0 },
      quorum: () => this.replicator === undefined ? 0 : this.replicator.writeQuorum() - 1,
      log,
      metrics: this.replicationMetrics,
    })
    this.mirror = mirror
    this.mirrors = new MirrorReceiver({ peerId: this.nodeId, uploads: deps.uploads, blobs: deps.blobs, sink: deps.sink, relay: mirror, log })
    return this.mirrors
  }

  /**
   * Fault injection: a peer cut off loses its libp2p connections to this node at once (the
   * gater, Cluster.admits, refuses new ones; one that was being set up as the cut began is
   * closed when it opens), so Raft messages and gossip stop both ways.
   */
  private cutConnections (faults: Faults): void {
    const host = this.cluster.host!
    const hangUp = (): void => {
      for (const c of host.getConnections()) if (faults.blocks(c.remotePeer.toString())) c.abort(new Error('cut off (fault injection)'))
    }
    faults.onChange(hangUp)
    host.addEventListener('connection:open', hangUp)
  }

  async start (): Promise<void> {
    await this.disk?.start()
    const mirrors = this.startMirrors()
    // HTTP, or HTTPS with tls.certificate/key (read and checked here: a bad file stops the start).
    // Headers up to 64 KiB (Node's default is 16): the first chunk of an upload chain names the
    // rest of the chain, 53 bytes a peer (cluster/replication/upload-mirror.ts, MAX_CHAIN).
    const api = this.api = await createApiServer(this.config.tls, this.log, { requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000, maxHeaderSize: 64 * 1024 })
    const app = createApp({ deps: this.deps, log: this.log, writes: this.writes, ready: () => this.ready && this.cluster.ready(), started: () => this.ready, cluster: this.cluster, sites: this.sites, replicationBacklog: () => this.replicator?.backlog() ?? 0, replicationMetrics: this.replicationMetrics, mirrors, ...(this.faults !== undefined ? { faults: this.faults } : {}), metrics: [...api.metrics, ...(this.disk?.all() ?? []), this.backlogGauge, propertyChanges, unhandledCancellations, ...(this.checksums?.metrics() ?? [])], ...(this.backups !== undefined ? { backups: this.backups } : {}) })
    const handler = app.callback()
    const server = api.server
    server.on('request', handler)
    // Expect: 100-continue. Clients (curl, for a large body) are told to go on at once; a node
    // relaying an upload chain hears it only once the route has checked its signature (src/http/
    // internal.ts): a hop that refuses is skipped before any byte is sent, not cut after.
    server.on('checkContinue', (req, res) => {
      if (req.url?.startsWith('/internal/') !== true) res.writeContinue()
      void handler(req, res)
    })
    // A client that stops sending mid-body must not pin a socket forever.
    server.setTimeout(SOCKET_IDLE_MS, (s: Socket) => s.destroy())
    server.on('connection', (s: Socket) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)) })
    const { host, port } = splitHostPort(this.config.listen)
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(listenFailure(err, { address: this.config.listen, purpose: 'HTTP', setting: '--listen, FLOTILLA_LISTEN' }))
      })
      server.listen(port, host, () => resolve())
    })
    this.server = server
    await api.watch()
    const addr = server.address()
    if (addr !== null && typeof addr === 'object') this.address = { host: addr.address, port: addr.port }
    // The HTTP address is known only now (port 0 picks one); peers reach us there.
    this.cluster.setHttpUrl(this.config.advertise ?? `${api.scheme}://${this.address!.host.includes(':') ? `[${this.address!.host}]` : this.address!.host}:${this.address!.port}`)
    // Node-to-node HTTP has its own port (src/peer-port.ts), up before joining: the join records it.
    this.peerPort = await startPeerPort(this.config, this.cluster.peerTls, this.cluster, handler, this.log)
    this.cluster.setPeerUrl(this.peerPort.url)
    let seeds: MemberRecord[] | undefined
    if (this.join !== undefined) seeds = await this.cluster.requestJoin(this.join)
    this.cluster.onRemoved = (why) => { this.ready = false; this.removedResolve(why) }
    await this.cluster.start(seeds)
    this.cluster.watchMembership()
    if (this.faults !== undefined) this.cutConnections(this.faults)
    if (this.join !== undefined) {
      await this.cluster.waitUntilReady(120_000)
      // The leader recorded our addresses when it admitted us; the ones other sites dial are ours to say.
      void this.cluster.announceSelfWhenAble()
    }
    this.startReplication()
    await this.sites.start()
    // First start: the cluster's JWT signing key and the admin user (src/auth/service.ts).
    await this.deps.auth.bootstrap(resolve(this.config.data))
    await this.sweepUploads()
    this.sweeper = setInterval(() => { this.sweepUploads().catch((err: unknown) => this.log.error({ err }, 'upload sweep failed')) }, 3600_000)
    this.sweeper.unref()
    this.startGc()
    this.checksums?.start()
    this.ready = true
    this.log.info({ listen: this.config.listen, peer: this.peerPort.url, p2p: this.cluster.p2pAddrs(), data: resolve(this.config.data), nodeId: this.nodeId }, 'flotilla node serving')
  }

  async stop (): Promise<void> {
    this.ready = false
    if (this.sweeper !== undefined) clearInterval(this.sweeper)
    if (this.gcTimer !== undefined) clearInterval(this.gcTimer)
    this.disk?.stop()
    this.backups?.stop()
    this.deps.retention?.pulls.stop()
    this.deps.hooks?.stop()
    // Sums computed and not yet recorded are worth a moment; the backfill finds any it loses.
    await Promise.race([this.checksums?.stop(), new Promise((resolve) => setTimeout(resolve, 2000).unref())])
    // Worth a moment, not a hang: without a quorum the pulls are simply not recorded.
    await Promise.race([this.deps.retention?.pulls.flush().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 2000).unref())])
    this.api?.close()
    const server = this.server
    if (server !== undefined) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      // Give in-flight requests a moment, then cut them: their clients will retry.
      const timer = setTimeout(() => { for (const s of this.sockets) s.destroy() }, 5000)
      await closed
      clearTimeout(timer)
    }
    await this.peerPort?.server.close()
    this.replicator?.stop()
    await this.sites.stop()
    await this.cluster.stop()
    await this.kv.close()
    this.log.info('flotilla node stopped')
  }
}

type MemberCall = (peerId: string, method: 'GET' | 'POST', path: string, timeoutMs?: number) => Promise<unknown>

/** A signed internal call to another member, answered with its JSON (or an error naming why not). */
function memberCall (cluster: Cluster, nodeId: string, privateKey: PrivateKey): MemberCall {
  return async (peerId, method, path, timeoutMs = 10_000) => {
    const target = cluster.peerTarget(peerId)
    if (target === undefined) throw new Error(`no address known for member ${peerId}`)
    // Over its peer port (net/peer-https.ts): mutual TLS with the members' libp2p certificates.
    const res = await cluster.peerClient.call(target, { method, path, headers: { authorization: await signRequest(privateKey, nodeId, method, path) }, timeoutMs })
    const text = res.body.toString('utf8')
    if (res.status < 200 || res.status >= 300) throw new Error(`${method} ${path} answered ${res.status}: ${text.slice(0, 200)}`)
    return JSON.parse(text) as unknown
  }
}

/** A signed GET to another member's internal route, over its peer port; the body streams. */
function peerGet (cluster: Cluster, nodeId: string, privateKey: PrivateKey): (peer: string, path: string) => Promise<IncomingMessage> {
  return async (peer, path) => {
    const target = cluster.peerTarget(peer)
    if (target === undefined) throw new Error(`no address known for member ${peer}`)
    const headers = { authorization: await signRequest(privateKey, nodeId, 'GET', path) }
    return await new Promise<IncomingMessage>((resolve, reject) => {
      const req = cluster.peerClient.request(target, { path, method: 'GET', headers, timeout: 60_000 }, resolve)
      req.on('timeout', () => req.destroy(new Error(`member ${peer} stopped answering`)))
      req.on('error', reject)
      req.end()
    })
  }
}

/**
 * A member with room for an upload this node is too full to take (its peer id): the one with
 * the most free space among those under their high watermark. Asked at most every 5 s.
 */
function roomElsewhere (cluster: Cluster, nodeId: string, call: MemberCall): () => Promise<string | undefined> {
  let cached: { at: number; best: string | undefined } | undefined
  return async () => {
    if (cached !== undefined && Date.now() - cached.at < 5_000) return cached.best
    const answers = await Promise.all(cluster.memberIds().filter((p) => p !== nodeId).map(async (p) => {
      try { return { p, s: await call(p, 'GET', '/internal/v1/disk', 3_000) as { full?: boolean; freeBytes?: number } } } catch { return undefined }
    }))
    const ok = answers.filter((a) => a !== undefined && a.s.full === false).sort((a, b) => (b!.s.freeBytes ?? 0) - (a!.s.freeBytes ?? 0))
    const best = ok[0]?.p
    cached = { at: Date.now(), best }
    return best
  }
}

/** The collector, talking to the other members over signed internal HTTP. */
function gcCollector (cluster: Cluster, deps: RegistryDeps, inUse: InUse, call: MemberCall, log: Logger, extraCopy: (digest: string) => Promise<boolean>): Collector {
  return new Collector({
    extraCopy,
    peerId: deps.nodeId,
    blobs: deps.blobs,
    queries: deps.queries,
    sink: deps.sink,
    preview: async (command) => await cluster.sm.preview(command),
    inUse,
    members: {
      others: () => cluster.memberIds().filter((p) => p !== deps.nodeId),
      // A sweep waits for the member to catch up and walks its whole store: minutes, not seconds.
      call: async (peerId, method, path) => await call(peerId, method, path, method === 'POST' ? 600_000 : 10_000),
    },
    log,
  })
}

/** The cluster's command sink, once Cluster.start() has made it; until then UNAVAILABLE (503). */
function applierOf (cluster: Cluster): RaftApplier {
  const applier = cluster.applier as RaftApplier | undefined
  if (applier === undefined) throw new FlotillaError('UNAVAILABLE', 'this node is still starting: retry in a moment')
  return applier
}
