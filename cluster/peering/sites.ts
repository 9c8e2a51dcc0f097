/**
 * A node's part in cross-site peering: the site protocols it serves (cluster/peering/source.ts),
 * the receivers it runs while it leads its site (cluster/peering/receiver.ts), the peering
 * handshake (both ends), status and metrics.
 *
 * Peering, from site B (`flotilla site peer ADDRESS --token T --name a` at B):
 *   1. B reads A's site id and members from the token (A's secret signed it; B cannot check it).
 *   2. B presents the token to A (POST ADDRESS/api/v1/sites/handshake), with its own site id,
 *      members and the rules, signed with B's node key (net/peer-auth.ts).
 *   3. A checks the token (signature, expiry, its own site), that the signer is among the
 *      members B names, records the peering through its log (pinning B's members), and answers
 *      its own members. 4. B records the peering through its log, pinning A's members.
 *
 * Who ships: on the receiving site, its Raft leader runs one receiver per peering that
 * receives; when leadership moves, the new leader starts them from the recorded cursors.
 */
import type { Logger } from 'pino'
import type { Readable } from 'node:stream'
import { Counter, Gauge } from 'prom-client'
import { FlotillaError } from '../../storage/errors.js'
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import type { Digest } from '../../storage/reference.js'
import { verifyRequest } from '../../net/peer-auth.js'
import { serveRequests } from '../../net/request-response.js'
import { serveStreamed } from '../../net/streamed-response.js'
import type { Cluster } from '../cluster.js'
import type { CommandSink } from '../metadata/applier.js'
import { checkSiteToken, issueSiteToken, readSiteToken, SiteTokenError } from './token.js'
import { filteredBy, isValidSiteName, membersProblem, receives, rulesProblem, sends, type PeeringRecord, type PeeringRules, type SiteFailure, type SiteMember } from './model.js'
import { dec, enc, SITE_BLOB_PROTOCOL, SITE_PROTOCOL, type PullAnswer, type PullRequest } from './protocol.js'
import { sendRequest } from '../../net/request-response.js'
import { multiaddr } from '@multiformats/multiaddr'
import { SiteSource } from './source.js'
import { SiteReceiver, type ReceiverState } from './receiver.js'
import { SiteOps, SITE_HANDSHAKE_PROTOCOL } from './ops.js'
import { PURGE_BATCH } from './apply.js'
import type { AccessQueries } from '../access/queries.js'
import { randomUUID } from 'node:crypto'
import { untrustedCertificate, type FetchLike } from '../../net/trusted-fetch.js'
import { SITE_SUMMARY_PROTOCOL, SummarySource, type ReconcileState, type RoundReport } from './reconcile.js'

export const HANDSHAKE_PATH = '/api/v1/sites/handshake'
/** How often a member that does not ship sends a probe (members only) to each peered site. */
const PROBE_EVERY_MS = 30_000

/** What site B presents to site A to peer (POST /api/v1/sites/handshake). */
export interface HandshakeRequest {
  token: string
  /** B's site id and members. */
  site: string
  members: SiteMember[]
  rules: PeeringRules
  /** The name A gives the peering (default: B's site id). */
  as?: string
}

export interface HandshakeAnswer { site: string; members: SiteMember[]; name: string }

/** GET /api/v1/sites/NAME. */
export interface SiteStatusDoc {
  name: string
  site: string
  initiator: boolean
  rules: PeeringRules
  members: SiteMember[]
  /** Whether this site receives the other's changes, and sends its own. */
  receiving: boolean
  sending: boolean
  createdAt: string
  /** Receiving: where this site stands (from the replicated state: any member answers it). */
  cursor: { seq: number; originAt: string | null; at: string | null; applied: number } | null
  /** Receiving: the member of this site that ships (its leader), and its live view; null elsewhere. */
  shipper: string | null
  connected: boolean | null
  lastContact: string | null
  lagEntries: number | null
  lagSeconds: number | null
  lastError: { message: string; at: string } | null
  bytesReceived: number | null
  waitingFor: Record<string, number> | null
  /** Sending: when a member of the other site last pulled from this node. */
  lastServed: string | null
  /** Changes the other site sent that could not be applied here (most recent first). */
  failures: SiteFailure[]
  /** Receiving: blob bytes the changes not yet applied here reference (batch under way + the rest); null elsewhere. */
  backlogBytes: number | null
  /** Blob bytes per second over the last 10 s: received (on the shipping node), sent (by the node answering). */
  throughput: { in: number; out: number }
  /** When the rules were last set (`site set`; null: at peering time), and whether the other site confirmed them. */
  rulesAt: string | null
  rulesSynced: boolean
  /** Receiving, on the shipping member: continuous reconciliation (cluster/peering/reconcile.ts). */
  reconciliation: { rounds: number; last: RoundReportDoc | null; lastRepair: RoundReportDoc | null; lastError: { message: string; at: string } | null; repaired: { manifests: number; tags: number; untags: number } } | null
}

export type RoundReportDoc = Omit<RoundReport, 'at'> & { at: string }

export interface SitesDeps {
  cluster: Cluster
  sink: CommandSink
  blobs: BlobStore
  log: Logger
  fetchThrough?: (digest: Digest) => Promise<Readable | undefined>
  waitForCopies: (digests: string[]) => Promise<void>
  /** Keep blobs from garbage collection until the returned function is called (a shipment under way). */
  hold?: (digests: Iterable<string>) => () => void
  /** Users, groups and permission targets, for peerings with access on. */
  access?: AccessQueries
  /** `sites.reconcileInterval` in ms (0: reconcile only behind a trimmed feed); default 5 min. */
  reconcileIntervalMs?: number
  /** `sites.feedRetain`: the most entries the change feed keeps (older ones go even unacknowledged). */
  feedRetain?: number
  /** `sites.tombstoneTtl` in ms: deleted tags' versions older than this are forgotten (0: kept for ever); default 30 days. */
  tombstoneTtlMs?: number
  /** fetch() with the CAs of tls.trust (net/trusted-fetch.ts), for a handshake to an https:// site; the global fetch when absent. */
  fetch?: FetchLike
}

/** How often the leader looks at trimming the feed. */
const TRIM_EVERY_MS = 2_000
/** How often the leader scans for tombstones past sites.tombstoneTtl (sooner when the TTL is shorter), and how many tag versions a scan reads. */
const PURGE_EVERY_MS = 60_000
const PURGE_SCAN = 50_000
const DEFAULT_TOMBSTONE_TTL_MS = 30 * 86_400_000

/** How often a sending member records another site's acknowledgement, at most (Sites.acked). */
const ACK_EVERY_MS = 5_000

const iso = (ms: number): string | null => ms > 0 ? new Date(ms).toISOString() : null

function reconciliationDoc (s: ReconcileState): NonNullable<SiteStatusDoc['reconciliation']> {
  const round = (x: RoundReport | null): RoundReportDoc | null => x === null ? null : { ...x, at: new Date(x.at).toISOString() }
  return { rounds: s.rounds, last: round(s.last), lastRepair: round(s.lastRepair), lastError: s.lastError === null ? null : { message: s.lastError.message, at: new Date(s.lastError.at).toISOString() }, repaired: { ...s.totals } }
}

export class Sites {
  private readonly receivers = new Map<string, SiteReceiver>()
  private readonly served = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined
  private waiters: Array<() => void> = []
  private readonly source: SiteSource
  private membersSubmitted = new Map<string, string>()
  /** Rules, explain, visibility, bandwidth, the libp2p handshake (cluster/peering/ops.ts). */
  readonly ops: SiteOps
  readonly metrics = {
    connected: new Gauge({ name: 'flotilla_site_connected', help: 'Whether this node, shipping for its site, reached the peered site on its last try (1) or not (0)', labelNames: ['site'] as const, registers: [], collect: () => this.collectGauges() }),
    lagEntries: new Gauge({ name: 'flotilla_site_lag_entries', help: 'Feed entries of the peered site not yet applied here (on the shipping node)', labelNames: ['site'] as const, registers: [] }),
    lagSeconds: new Gauge({ name: 'flotilla_site_lag_seconds', help: 'Age of the oldest change of the peered site not yet applied here (on the shipping node)', labelNames: ['site'] as const, registers: [] }),
    bytesReceived: new Counter({ name: 'flotilla_site_bytes_received_total', help: 'Blob bytes received from the peered site', labelNames: ['site'] as const, registers: [] }),
    bytesSent: new Counter({ name: 'flotilla_site_bytes_sent_total', help: 'Blob bytes sent to the peered site', labelNames: ['site'] as const, registers: [] }),
    changesApplied: new Counter({ name: 'flotilla_site_changes_applied_total', help: 'Changes of the peered site applied here', labelNames: ['site'] as const, registers: [] }),
    changesSent: new Counter({ name: 'flotilla_site_changes_sent_total', help: 'Changes sent to the peered site', labelNames: ['site'] as const, registers: [] }),
    skipped: new Counter({ name: 'flotilla_site_changes_skipped_total', help: 'Changes of the peered site applied here without effect: superseded (a newer version of the tag here wins, federated tags) or foreign (made at another site than the peered one: never forwarded)', labelNames: ['site', 'reason'] as const, registers: [] }),
    errors: new Counter({ name: 'flotilla_site_errors_total', help: 'Failed rounds of receiving from the peered site (each is retried with backoff)', labelNames: ['site'] as const, registers: [] }),
    reconcileRounds: new Counter({ name: 'flotilla_site_reconcile_rounds_total', help: 'Reconciliation rounds with the peered site, by outcome: in-sync (the summary hashes agreed, or every difference was known), repaired, differ (differences left alone: local pushes, newer versions here), error', labelNames: ['site', 'outcome'] as const, registers: [] }),
    reconcileDifferences: new Counter({ name: 'flotilla_site_reconcile_differences_total', help: 'Repositories whose summary hashes differed from the peered site\'s and were compared in detail', labelNames: ['site'] as const, registers: [] }),
    reconcileRepairs: new Counter({ name: 'flotilla_site_reconcile_repairs_total', help: 'Repairs reconciliation applied here: manifests fetched, tags moved, tags removed (untag)', labelNames: ['site', 'kind'] as const, registers: [] }),
    tombstonesPurged: new Counter({ name: 'flotilla_site_tombstones_purged_total', help: 'Deleted tags\' versions (tombstones of federated tags) forgotten after sites.tombstoneTtl', registers: [] }),
    feedTrimmed: new Gauge({ name: 'flotilla_site_feed_trimmed_seq', help: 'This site\'s change feed is trimmed through this sequence (entries every receiving peering acknowledged, or past sites.feedRetain)', registers: [] }),
  }

  constructor (private readonly d: SitesDeps) {
    const { cluster } = d
    this.source = new SiteSource({
      queries: cluster.queries,
      pq: cluster.peeringQueries,
      blobs: d.blobs,
      ...(d.fetchThrough !== undefined ? { fetchThrough: d.fetchThrough } : {}),
      ...(d.hold !== undefined ? { hold: d.hold } : {}),
      siteId: async () => await this.siteId(),
      members: () => this.ownMembers(),
      waitForFeed: async (seq, ms) => await this.waitForFeed(seq, ms),
      membersSeen: (p, members) => { this.membersSeen(p, members) },
      ...(d.access !== undefined ? { access: d.access } : {}),
      throttle: async (p, n) => await this.ops.transfer(p, 'out', n),
      backlogBytes: async (p, through, head) => await this.backlogBytes(p, through, head),
      served: (p, _peer, what) => {
        this.served.set(p.name, Date.now())
        if (what.bytes !== undefined) this.metrics.bytesSent.inc({ site: p.name }, what.bytes)
        if (what.changes !== undefined) this.metrics.changesSent.inc({ site: p.name }, what.changes)
      },
      acked: (p, seq) => { this.acked(p, seq) },
      log: d.log,
    })
    this.ops = new SiteOps({
      host: () => cluster.host!,
      queries: cluster.queries,
      pq: cluster.peeringQueries,
      sink: d.sink,
      isSitePeer: (p) => {
        if (cluster.isSitePeer(p)) return true
        cluster.probation.refuse(p, 'opened a site protocol without being a pinned member of a peered site')
        return false
      },
      isLeader: () => cluster.driver?.isLeader === true,
      siteId: async () => await this.siteId(),
      receiver: (name) => this.receivers.get(name)?.state,
      accept: async (req, signer) => {
        const answer = await this.acceptAs(req as HandshakeRequest, async () => signer)
        // Pinned now: its connection stays, no longer on probation.
        cluster.probation.release(signer)
        return answer
      },
      log: d.log,
    })
  }

  /**
   * Blob bytes referenced after `through` under p's rules (distinct blobs, in the next 5000
   * entries at most). Counted at most once a second per peering, so that a receiver catching up
   * in many quick batches does not pay for it on each: meanwhile the last count stands.
   */
  private readonly backlogCache = new Map<string, { through: number; head: number; at: number; bytes: number }>()
  private async backlogBytes (p: PeeringRecord, through: number, head: number): Promise<number> {
    const c = this.backlogCache.get(p.name)
    if (c !== undefined && Date.now() - c.at < 1000) return c.bytes
    const q = this.d.cluster.queries
    const seen = new Set<string>()
    let bytes = 0
    for (const e of await this.d.cluster.peeringQueries.feedAfter(through, 5000)) {
      if (e.op !== 'put' || filteredBy(p.rules, e) !== undefined) continue
      const rec = await q.manifest(e.repo, e.digest)
      for (const b of rec?.blobs ?? []) {
        if (seen.has(b)) continue
        seen.add(b)
        bytes += (await q.linkedBlob(e.repo, b))?.size ?? 0
      }
    }
    this.backlogCache.set(p.name, { through, head, at: Date.now(), bytes })
    return bytes
  }

  /** Acknowledgements recorded (or being recorded) per receiving site: seq and when. */
  private readonly acks = new Map<string, { seq: number; at: number }>()

  /**
   * The other site asked for what follows `seq`: it has everything up to there. Recorded
   * through the log at most every ACK_EVERY_MS per site (it only bounds what retention keeps
   * and what the feed may forget, so a late record costs nothing but a little space).
   */
  private acked (p: PeeringRecord, seq: number): void {
    const last = this.acks.get(p.site)
    if (seq <= 0 || (last !== undefined && (seq <= last.seq || Date.now() - last.at < ACK_EVERY_MS))) return
    this.acks.set(p.site, { seq, at: Date.now() })
    this.d.sink.submit({ type: 'SiteAcked', site: p.site, seq, at: Date.now() }).then((r) => {
      if (!r.ok) this.d.log.debug({ site: p.name, err: r.message }, 'peering: acknowledgement not recorded')
    }, (err: unknown) => {
      this.acks.delete(p.site)
      this.d.log.debug({ site: p.name, err: (err as Error).message }, 'peering: acknowledgement not recorded; retried at the next pull')
    })
  }

  /**
   * Manifests put here that a peered site the rules send them to has not acknowledged yet:
   * `repo@digest` → the peerings' names. Retention leaves these alone (a manifest acknowledged
   * at this site reaches its peers, even when a policy would delete it meanwhile).
   */
  async unshipped (): Promise<Map<string, string[]>> {
    const pq = this.d.cluster.peeringQueries
    const out = new Map<string, string[]>()
    const sending = await Promise.all((await pq.peerings()).filter(sends).map(async (p) => ({ p, seq: await pq.acked(p.site) })))
    if (sending.length === 0) return out
    let from = Math.min(...sending.map((s) => s.seq))
    for (;;) {
      const entries = await pq.feedAfter(from, 2000)
      if (entries.length === 0) break
      for (const e of entries) {
        from = e.seq
        if (e.op !== 'put') continue
        for (const { p, seq } of sending) {
          if (e.seq <= seq || filteredBy(p.rules, e) !== undefined) continue
          const k = `${e.repo}@${e.digest}`
          const names = out.get(k) ?? []
          if (!names.includes(p.name)) names.push(p.name)
          out.set(k, names)
        }
      }
    }
    return out
  }

  async start (): Promise<void> {
    const host = this.d.cluster.host!
    // Both protocols answer pinned members of peered sites only; the source checks the pin per request.
    // A stranger let in on probation (a join or peering token is outstanding) that opens one is hung up on.
    const guard = (peer: string): void => {
      if (this.d.cluster.isSitePeer(peer)) return
      this.d.cluster.probation.refuse(peer, 'opened a site protocol without being a pinned member of a peered site')
      throw new Error(`peer ${peer} is not a pinned member of a peered site`)
    }
    await serveRequests(host, SITE_PROTOCOL, async (peer, req) => { guard(peer); return { bytes: await this.source.pull(peer, req) } }, { maxRequestBytes: 256 * 1024, timeoutMs: 60_000, maxInboundStreams: 8 })
    const summaries = new SummarySource({ pq: this.d.cluster.peeringQueries, queries: this.d.cluster.queries, reader: this.d.cluster.peeringQueries.summaries, siteId: async () => await this.siteId() })
    await serveRequests(host, SITE_SUMMARY_PROTOCOL, async (peer, req) => { guard(peer); return { bytes: await summaries.answer(peer, req) } }, { maxRequestBytes: 256 * 1024, timeoutMs: 60_000, maxInboundStreams: 4 })
    await serveStreamed(host, SITE_BLOB_PROTOCOL, (peer, req) => { guard(peer); return this.source.blob(peer, req) }, { maxRequestBytes: 16 * 1024, idleTimeoutMs: 60_000, maxInboundStreams: 64 })
    this.timer = setInterval(() => { void this.reconcile() }, 500)
    this.timer.unref()
    await this.ops.start()
  }

  async stop (): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.ops.stop()
    const all = [...this.receivers.values()]
    this.receivers.clear()
    for (const r of all) r.stop()
    this.notify()
    await Promise.all(all.map(async (r) => await r.done.catch(() => {})))
  }

  /** Call after every applied command: long polls waiting for this site's feed wake up. */
  notify (): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  private async waitForFeed (seq: number, ms: number): Promise<void> {
    const end = Date.now() + ms
    while (Date.now() < end && await this.d.cluster.peeringQueries.head() <= seq) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, end - Date.now()))
        this.waiters.push(() => { clearTimeout(t); resolve() })
      })
    }
  }

  /**
   * A member that does not ship tells the other site of this site's members now and then (a
   * probe pull: no changes), so that a member that joined here is pinned there even when it
   * becomes the shipper before any pull named it. Best effort: the shipper's pulls do it too.
   */
  private lastProbe = Date.now()
  private async probe (p: PeeringRecord): Promise<void> {
    const req: PullRequest = { site: await this.siteId(), after: 0, waitMs: 0, members: this.ownMembers(), probe: true }
    for (const m of p.members) {
      for (const a of m.addrs) {
        try {
          const answer = dec<PullAnswer>(await sendRequest(this.d.cluster.host!, multiaddr(`${a}/p2p/${m.peerId}`), SITE_PROTOCOL, enc(req), { timeoutMs: 10_000, maxAnswerBytes: 1024 * 1024 }))
          if (!('error' in answer) && answer.site === p.site) this.membersSeen(p, answer.members)
          return
        } catch { /* the next address */ }
      }
    }
  }

  /** Start a receiver per receiving peering while this node leads its site; stop them otherwise. */
  private reconciling = false
  private async reconcile (): Promise<void> {
    if (this.reconciling) return
    this.reconciling = true
    try {
      const lead = this.d.cluster.driver?.isLeader === true
      const want = lead ? (await this.d.cluster.peeringQueries.peerings()).filter(receives).map((p) => p.name) : []
      for (const [name, r] of this.receivers) {
        if (!want.includes(name)) { r.stop(); this.receivers.delete(name) }
      }
      if (lead && Date.now() - this.lastTrim > TRIM_EVERY_MS) {
        this.lastTrim = Date.now()
        await this.trimFeed()
      }
      const ttl = this.d.tombstoneTtlMs ?? DEFAULT_TOMBSTONE_TTL_MS
      if (lead && ttl > 0 && Date.now() - this.lastPurge > Math.min(PURGE_EVERY_MS, Math.max(1000, ttl / 4))) {
        this.lastPurge = Date.now()
        await this.purgeTombstones(ttl)
      }
      if (!lead && Date.now() - this.lastProbe > PROBE_EVERY_MS) {
        this.lastProbe = Date.now()
        for (const p of await this.d.cluster.peeringQueries.peerings()) void this.probe(p).catch(() => {})
      }
      for (const name of want) {
        const r = this.receivers.get(name)
        if (r !== undefined) continue
        this.d.log.info({ site: name }, 'peering: this node ships for its site (it leads): receiving from the recorded cursor')
        this.receivers.set(name, this.newReceiver(name))
      }
    } catch (err) {
      this.d.log.warn({ err: (err as Error).message }, 'peering: could not reconcile receivers')
    } finally {
      this.reconciling = false
    }
  }

  private lastTrim = 0
  /**
   * Trim this site's feed (the leader, through the log): the entries every peering that
   * receives them acknowledged (SiteAcked), and those beyond the bounded tail of
   * `sites.feedRetain` entries even if some peering has not acknowledged them (it is told, and
   * reconciles). With no receiving peering only the bound applies, so that a site peered later
   * still streams the recent history.
   */
  private async trimFeed (): Promise<void> {
    const pq = this.d.cluster.peeringQueries
    const [head, trimmed] = [await pq.head(), await pq.trimmed()]
    this.metrics.feedTrimmed.set(trimmed)
    const sending = (await pq.peerings()).filter(sends)
    const acked = sending.length === 0 ? 0 : Math.min(...await Promise.all(sending.map(async (p) => await pq.acked(p.site))))
    const through = Math.min(head, Math.max(acked, head - (this.d.feedRetain ?? 100_000)))
    if (through <= trimmed) return
    const r = await this.d.sink.submit({ type: 'SiteTrimFeed', through, at: Date.now() })
    if (!r.ok) { this.d.log.warn({ err: r.message }, 'peering: could not trim the change feed'); return }
    const now = (r.value as { trimmed: number }).trimmed
    this.metrics.feedTrimmed.set(now)
    this.d.log.debug({ from: trimmed, through: now, head, acked }, 'peering: change feed trimmed')
  }

  private lastPurge = 0
  /** Where the next tombstone scan starts (a tag version key); undefined: from the first. */
  private purgeFrom: string | undefined
  /**
   * Forget tombstones older than the TTL (the leader, through the log), PURGE_SCAN tag versions
   * a round, resuming where the last round stopped. A tombstone keeps an older update of the
   * tag from another site from bringing it back, and lets reconciliation repair a missed
   * delete; past the TTL (30 days by default) a site that was away that long may do either.
   * Without it every tag ever deleted would keep a record for ever, peered or not.
   */
  private async purgeTombstones (ttlMs: number): Promise<void> {
    const pq = this.d.cluster.peeringQueries
    const { found, next } = await pq.tombstonesBefore(Date.now() - ttlMs, this.purgeFrom, PURGE_SCAN)
    this.purgeFrom = next
    for (let i = 0; i < found.length; i += PURGE_BATCH) {
      const tags = found.slice(i, i + PURGE_BATCH).map((t) => ({ repo: t.repo, tag: t.tag, v: { l: t.v.l, c: t.v.c, s: t.v.s } }))
      const r = await this.d.sink.submit({ type: 'SitePurgeTombstones', tags, at: Date.now() })
      if (!r.ok) { this.d.log.warn({ err: r.message }, 'peering: could not purge old tombstones'); return }
      const purged = (r.value as { purged: number }).purged
      this.metrics.tombstonesPurged.inc(purged)
      this.d.log.debug({ purged, found: tags.length }, 'peering: old tombstones purged')
    }
  }

  private newReceiver (name: string): SiteReceiver {
    const { cluster } = this.d
    const r = new SiteReceiver(name, {
      host: () => cluster.host!,
      selfId: cluster.peerId,
      siteId: async () => await this.siteId(),
      members: () => this.ownMembers(),
      memberIds: () => cluster.memberIds(),
      queries: cluster.queries,
      pq: cluster.peeringQueries,
      sink: this.d.sink,
      blobs: this.d.blobs,
      waitForCopies: this.d.waitForCopies,
      ...(this.d.hold !== undefined ? { hold: this.d.hold } : {}),
      log: this.d.log,
      throttle: async (p, n) => await this.ops.transfer(p, 'in', n),
      reconcile: {
        reader: cluster.peeringQueries.summaries,
        intervalMs: this.d.reconcileIntervalMs ?? 5 * 60_000,
        metrics: {
          round: (site, outcome) => this.metrics.reconcileRounds.inc({ site, outcome }),
          differences: (site, n) => this.metrics.reconcileDifferences.inc({ site }, n),
          repaired: (site, kind, n) => this.metrics.reconcileRepairs.inc({ site, kind }, n),
        },
      },
      metrics: {
        bytes: (site, n) => this.metrics.bytesReceived.inc({ site }, n),
        applied: (site, n) => this.metrics.changesApplied.inc({ site }, n),
        error: (site) => this.metrics.errors.inc({ site }),
        skipped: (site, reason, n) => this.metrics.skipped.inc({ site, reason }, n),
      },
    })
    // A receiver ends by itself when its peering is removed; forget it then.
    void r.done.finally(() => { if (this.receivers.get(name) === r) this.receivers.delete(name) })
    return r
  }

  private collectGauges (): void {
    this.metrics.connected.reset()
    this.metrics.lagEntries.reset()
    this.metrics.lagSeconds.reset()
    for (const [name, r] of this.receivers) {
      const lag = this.lagOf(r.state)
      this.metrics.connected.set({ site: name }, r.state.connected ? 1 : 0)
      if (lag.entries !== null) this.metrics.lagEntries.set({ site: name }, lag.entries)
      if (lag.seconds !== null) this.metrics.lagSeconds.set({ site: name }, lag.seconds)
    }
  }

  /** Entries of the other site's feed not applied here, and the age of the oldest (from the last answer). */
  private lagOf (s: ReceiverState): { entries: number | null; seconds: number | null } {
    if (s.lastContact === 0) return { entries: null, seconds: null }
    const entries = Math.max(0, s.head - s.cursor)
    return { entries, seconds: entries > 0 && s.pendingAt > 0 ? Math.max(0, (Date.now() - s.pendingAt) / 1000) : 0 }
  }

  async siteId (): Promise<string> {
    const id = await this.d.cluster.peeringQueries.siteId()
    if (id === undefined) throw new FlotillaError('UNAVAILABLE', 'this site has no id yet (the cluster is still being founded): retry in a moment')
    return id
  }

  /** The last sequence of this site's change feed. */
  async head (): Promise<number> {
    return await this.d.cluster.peeringQueries.head()
  }

  /** This site's members as other sites pin them: identity and the addresses to dial. */
  ownMembers (): SiteMember[] {
    const ids = new Set(this.d.cluster.memberIds())
    return this.d.cluster.memberList()
      .filter((m) => ids.has(m.peerId))
      .map((m) => ({ peerId: m.peerId, addrs: (m.site ?? m.p2p).map((a) => a.replace(/\/p2p\/[^/]+$/, '')) }))
      .sort((a, b) => a.peerId.localeCompare(b.peerId))
  }

  /** The other site told us of its members over the link (a pinned member said so): record them once. */
  private membersSeen (p: PeeringRecord, members: SiteMember[]): void {
    if (membersProblem(members) !== undefined) return
    const key = JSON.stringify([...members].sort((a, b) => a.peerId.localeCompare(b.peerId)))
    const now = JSON.stringify([...p.members].sort((a, b) => a.peerId.localeCompare(b.peerId)))
    if (key === now) { this.membersSubmitted.delete(p.name); return }
    if (this.membersSubmitted.get(p.name) === key) return
    this.membersSubmitted.set(p.name, key)
    void this.d.sink.submit({ type: 'SetSiteMembers', name: p.name, members, at: Date.now() }).then((r) => {
      if (r.ok) this.d.log.info({ site: p.name, members: members.map((m) => m.peerId) }, 'peering: the other site\'s members changed')
    }, () => { this.membersSubmitted.delete(p.name) })
  }

  /** `flotilla site token`: a peering token naming this site and its members. */
  async token (ttlSeconds: number): Promise<{ token: string; expiresAt: string; site: string }> {
    const info = await this.d.cluster.queries.clusterInfo()
    if (info === undefined) throw new FlotillaError('UNAVAILABLE', 'this site has no id yet: retry in a moment')
    const issued = await issueSiteToken(info, this.ownMembers(), ttlSeconds)
    // Recorded like a join token, so that until it expires every member lets a stranger connect
    // on probation: the other site may present it over libp2p (a multiaddr ADDRESS, ops.ts).
    const r = await this.d.sink.submit({ type: 'IssueJoinToken', id: `site-${randomUUID()}`, expiresAt: Date.parse(issued.expiresAt), at: Date.now() })
    if (!r.ok) throw new FlotillaError(r.code, r.message)
    return { ...issued, site: info.clusterId }
  }

  /** Site A's side of the handshake: check the token and the signer, record the peering, answer our members. */
  async accept (req: HandshakeRequest, signature: string | undefined): Promise<HandshakeAnswer> {
    return await this.acceptAs(req, async () => await verifyRequest(signature, 'POST', HANDSHAKE_PATH))
  }

  /** The handshake, its signer given by the caller: a signed HTTP request, or a libp2p connection's proven identity. */
  async acceptAs (req: HandshakeRequest, signedBy: () => Promise<string | undefined>): Promise<HandshakeAnswer> {
    if (typeof req !== 'object' || req === null || typeof req.token !== 'string' || req.token.length > 16 * 1024 || typeof req.site !== 'string' || (req.as !== undefined && typeof req.as !== 'string')) throw new FlotillaError('BAD_REQUEST', 'a handshake needs token, site, members and rules')
    const info = await this.d.cluster.queries.clusterInfo()
    if (info === undefined) throw new FlotillaError('UNAVAILABLE', 'this site has no id yet: retry in a moment')
    try {
      await checkSiteToken(info, req.token)
    } catch (err) {
      if (err instanceof SiteTokenError) throw new FlotillaError('DENIED', `peering refused: ${err.message}. Ask an administrator of this site for a new one (flotilla site token)`)
      throw err
    }
    if (req.site === info.clusterId) throw new FlotillaError('BAD_REQUEST', 'a site cannot peer with itself: give the address of a member of the other site')
    const why = membersProblem(req.members) ?? rulesProblem(req.rules)
    if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why)
    const signer = await signedBy()
    if (signer === undefined || !req.members.some((m) => m.peerId === signer)) {
      throw new FlotillaError('DENIED', 'peering refused: the request is not signed by a member of the site it names')
    }
    const name = req.as ?? req.site
    if (!isValidSiteName(name)) throw new FlotillaError('BAD_REQUEST', `invalid name ${JSON.stringify(name.slice(0, 80))} for the peering: use 1-64 of [a-z0-9._-]`)
    const now = Date.now()
    const rec: PeeringRecord = { name, site: req.site, members: req.members, rules: req.rules, initiator: false, createdAt: now, updatedAt: now }
    const r = await this.d.sink.submit({ type: 'PutSitePeering', peering: rec })
    if (!r.ok) throw new FlotillaError(r.code, r.message)
    this.d.log.info({ site: name, remote: req.site, members: req.members.map((m) => m.peerId) }, 'peering: another site peered with this one')
    return { site: info.clusterId, members: this.ownMembers(), name }
  }

  /** Site B's side: `flotilla site peer ADDRESS --token T --name NAME [rules]`. */
  async peer (opts: { address: string; token: string; name: string; rules: PeeringRules; as?: string }): Promise<PeeringRecord> {
    if (!isValidSiteName(opts.name)) throw new FlotillaError('BAD_REQUEST', `invalid peering name ${JSON.stringify(opts.name.slice(0, 80))}: use 1-64 of [a-z0-9._-], starting with a letter or digit`)
    const ruleProblem = rulesProblem(opts.rules)
    if (ruleProblem !== undefined) throw new FlotillaError('BAD_REQUEST', ruleProblem)
    let claims
    try {
      claims = readSiteToken(opts.token)
    } catch (err) {
      throw new FlotillaError('BAD_REQUEST', (err as Error).message)
    }
    if (claims.expiresAt <= Date.now()) throw new FlotillaError('BAD_REQUEST', `the peering token expired at ${new Date(claims.expiresAt).toISOString()}: ask the other site for a new one (flotilla site token)`)
    const mine = await this.siteId()
    if (claims.site === mine) throw new FlotillaError('BAD_REQUEST', 'this token is this site\'s own: run flotilla site peer at the other site, or use a token from the other site')
    const overP2p = opts.address.startsWith('/')
    let url: URL | undefined
    if (!overP2p) {
      try {
        if (!/^https?:\/\//i.test(opts.address)) throw new Error('not http')
        url = new URL(HANDSHAKE_PATH, opts.address)
      } catch {
        throw new FlotillaError('BAD_REQUEST', `${JSON.stringify(opts.address.slice(0, 200))} is neither a member's HTTP URL nor a libp2p multiaddr: give http://HOST:PORT or /ip4/HOST/tcp/PORT[/p2p/ID] of any member of the other site`)
      }
    }
    // Refuse here what our own log would refuse afterwards, so the other site is not left peered alone.
    const existing = await this.d.cluster.peeringQueries.peerings()
    if (existing.some((p) => p.name === opts.name)) throw new FlotillaError('ALREADY_EXISTS', `a peering named ${opts.name} exists already: remove it first (flotilla site remove ${opts.name}) or choose another --name`)
    const same = existing.find((p) => p.site === claims.site)
    if (same !== undefined) throw new FlotillaError('ALREADY_EXISTS', `site ${claims.site} is peered already, as ${same.name}`)
    const req: HandshakeRequest = { token: opts.token, site: mine, members: this.ownMembers(), rules: opts.rules, ...(opts.as !== undefined ? { as: opts.as } : {}) }
    const doc = overP2p ? await this.handshakeOverP2p(opts.address, claims.members, req) : await this.handshakeOverHttp(url!, opts.address, req)
    if (doc.site !== claims.site) throw new FlotillaError('DENIED', `the site at ${opts.address} is ${String(doc.site)}, but the token is for site ${claims.site}: is the address that of the site that made the token?`)
    const why = membersProblem(doc.members)
    if (why !== undefined) throw new FlotillaError('BAD_REQUEST', `the other site answered no valid members: ${why}`)
    const now = Date.now()
    const rec: PeeringRecord = { name: opts.name, site: claims.site, members: doc.members!, rules: opts.rules, initiator: true, createdAt: now, updatedAt: now }
    const r = await this.d.sink.submit({ type: 'PutSitePeering', peering: rec })
    if (!r.ok) throw new FlotillaError(r.code, r.message)
    this.d.log.info({ site: opts.name, remote: claims.site, members: rec.members.map((m) => m.peerId) }, 'peering: this site peered with another')
    return rec
  }

  /**
   * The handshake over libp2p, to a member's multiaddr (with or without /p2p/ID: without, the
   * token's members are tried). Our gater lets us dial it for the handshake; its gater lets us
   * in on probation while the token is outstanding.
   */
  private async handshakeOverP2p (address: string, members: SiteMember[], req: HandshakeRequest): Promise<Partial<HandshakeAnswer>> {
    let addr
    try {
      addr = multiaddr(address)
    } catch {
      throw new FlotillaError('BAD_REQUEST', `${JSON.stringify(address.slice(0, 200))} is not a valid multiaddr: give /ip4/HOST/tcp/PORT/p2p/ID (flotilla status lists each member's), or an HTTP URL`)
    }
    const named = addr.getComponents().find((c) => c.name === 'p2p')?.value
    const base = named === undefined ? address : address.slice(0, address.lastIndexOf('/p2p/'))
    const ids = named !== undefined ? [named] : members.filter((m) => m.addrs.includes(base)).map((m) => m.peerId)
    if (named === undefined && ids.length === 0) ids.push(...members.map((m) => m.peerId))
    if (named !== undefined && !members.some((m) => m.peerId === named)) throw new FlotillaError('BAD_REQUEST', `${named} is not a member of the site that made this token: give the multiaddr of one of its members (${members.map((m) => m.peerId).join(', ')})`)
    let last = 'no member to try'
    for (const id of ids) {
      let bytes: Uint8Array
      try {
        bytes = await this.d.cluster.dialingSite(id, async () => await sendRequest(this.d.cluster.host!, multiaddr(`${base}/p2p/${id}`), SITE_HANDSHAKE_PROTOCOL, enc(req), { timeoutMs: 30_000, maxAnswerBytes: 1024 * 1024 }))
      } catch (err) {
        last = typeof Event !== 'undefined' && err instanceof Event ? 'the member closed the connection' : (err as Error).message
        continue
      }
      const doc = dec<Partial<HandshakeAnswer> & { error?: { status: number; code?: string; message: string } }>(bytes)
      if (doc.error !== undefined) {
        const e = doc.error
        throw new FlotillaError(e.status === 403 ? 'DENIED' : e.status === 409 ? 'ALREADY_EXISTS' : 'BAD_REQUEST', `the site at ${address} refused the peering (${e.status}): ${e.message}`)
      }
      return doc
    }
    throw new FlotillaError('BAD_REQUEST', `cannot reach the other site at ${address}: ${last}. Check the multiaddr and that the token has not expired (a member lets an unknown site connect only while one of its peering tokens is valid)`)
  }

  private async handshakeOverHttp (url: URL, address: string, req: HandshakeRequest): Promise<Partial<HandshakeAnswer>> {
    const opts = { address }
    let res: Response
    try {
      res = await (this.d.fetch ?? fetch)(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: await this.d.cluster.forwarding.mark('POST', HANDSHAKE_PATH) }, body: JSON.stringify(req), signal: AbortSignal.timeout(30_000) })
    } catch (err) {
      const cause = (err as { cause?: { message?: string; code?: string } }).cause
      // A certificate this node cannot verify: most often a private CA, which tls.trust adds.
      const untrusted = untrustedCertificate(cause)
      throw new FlotillaError('BAD_REQUEST', `cannot reach the other site at ${opts.address}: ${cause?.message ?? cause?.code ?? (err as Error).message}. ${untrusted ? 'If its certificate comes from a private CA, give this site\'s nodes that CA with tls.trust (--tls-trust FILE, FLOTILLA_TLS_TRUST)' : 'Check the address (any member\'s HTTP URL)'}`)
    }
    const text = await res.text()
    let doc: Partial<HandshakeAnswer> & { errors?: Array<{ code?: string; message?: string }> }
    try { doc = JSON.parse(text) } catch { doc = {} }
    if (!res.ok) {
      const e = doc.errors?.[0]
      throw new FlotillaError(res.status === 403 || res.status === 401 ? 'DENIED' : res.status === 409 ? 'ALREADY_EXISTS' : 'BAD_REQUEST', `the site at ${opts.address} refused the peering (${res.status}): ${e?.message ?? text.slice(0, 200)}`)
    }
    return doc
  }

  async remove (name: string): Promise<void> {
    const r = await this.d.sink.submit({ type: 'RemoveSitePeering', name, at: Date.now() })
    if (!r.ok) throw new FlotillaError(r.code, r.message)
  }

  async list (): Promise<SiteStatusDoc[]> {
    const out: SiteStatusDoc[] = []
    for (const p of await this.d.cluster.peeringQueries.peerings()) out.push(await this.statusOf(p))
    return out
  }

  async status (name: string): Promise<SiteStatusDoc> {
    const p = await this.d.cluster.peeringQueries.peering(name)
    if (p === undefined) throw new FlotillaError('NOT_FOUND', `no peering named ${name}: see flotilla site list`)
    return await this.statusOf(p)
  }

  /** Whether this node runs the receivers (it leads its site). */
  ships (): boolean {
    return this.d.cluster.driver?.isLeader === true
  }

  private async statusOf (p: PeeringRecord): Promise<SiteStatusDoc> {
    const pq = this.d.cluster.peeringQueries
    const receiving = receives(p)
    const cursor = receiving ? await pq.cursor(p.site) : undefined
    const r = this.receivers.get(p.name)
    const s = r?.state
    const lag = s === undefined ? { entries: null, seconds: null } : this.lagOf(s)
    return {
      name: p.name,
      site: p.site,
      initiator: p.initiator,
      rules: p.rules,
      members: p.members,
      receiving,
      sending: sends(p),
      createdAt: new Date(p.createdAt).toISOString(),
      cursor: cursor === undefined ? null : { seq: cursor.seq, originAt: iso(cursor.originAt), at: iso(cursor.at), applied: cursor.applied },
      shipper: receiving ? this.d.cluster.driver?.leader ?? null : null,
      connected: s === undefined ? null : s.connected,
      lastContact: s === undefined ? null : iso(s.lastContact),
      lagEntries: lag.entries,
      lagSeconds: lag.seconds,
      lastError: s?.lastError === null || s?.lastError === undefined ? null : { message: s.lastError.message, at: new Date(s.lastError.at).toISOString() },
      bytesReceived: s === undefined ? null : s.bytesReceived,
      waitingFor: s === undefined ? null : { ...s.waitingFor },
      lastServed: iso(this.served.get(p.name) ?? 0),
      failures: receiving ? await pq.failures(p.site, 10) : [],
      backlogBytes: s === undefined ? null : s.batchBytesLeft + s.backlogAfter,
      throughput: { in: this.ops.meter(p.name, 'in').rate(), out: this.ops.meter(p.name, 'out').rate() },
      rulesAt: iso(p.rulesAt ?? 0),
      rulesSynced: p.rulesSynced !== false,
      reconciliation: r?.reconciler === undefined ? null : reconciliationDoc(r.reconciler.state),
    }
  }
}
