/**
 * Operating a peering (issue 11): changing its rules after the fact (`site set`), explaining
 * where a tag stands (`site explain`), its visibility (backlog in bytes, throughput, rules in
 * sync) and its bandwidth limit; and the handshake over libp2p (`site peer` given a multiaddr).
 *
 *   /flotilla/site-ops/1.0.0        pinned members of a peered site only; one request, one answer
 *     {kind:'rules', site, rules, rulesAt, by}         the other site set new rules: record them
 *       → {ok, kept, rules, rulesAt, by}                kept: ours are later (the asker adopts them)
 *     {kind:'tag', site, repo, tag, seq?, digest?, blobs?}   where repo:tag stands here
 *       → TagView: this site as the source of the asker, and as its receiver
 *   /flotilla/site-handshake/1.0.0  a stranger on probation (the peering token opened the gate
 *     like a join token): the handshake of sites.ts (HandshakeRequest → HandshakeAnswer), its
 *     signer being the connection's proven libp2p identity.
 *
 * Bandwidth: `--bandwidth MiB/s` is a token bucket per peering and way (bytes sent, bytes
 * received) on each node, on the blob bytes (manifests and the feed are small). The sending
 * node waits before each 64 KiB frame, the receiving node before reading on, so the limit holds
 * at both ends; bursts are at most a quarter of a second's worth.
 */
import { multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { Counter, Gauge } from 'prom-client'
import { FlotillaError } from '../../storage/errors.js'
import { sendRequest, serveRequests } from '../../net/request-response.js'
import type { Host } from '../../net/host.js'
import type { MetadataQueries } from '../metadata/queries.js'
import type { CommandSink } from '../metadata/applier.js'
import type { PeeringQueries } from './queries.js'
import { filteredBy, receives, rulesProblem, sends, type PeeringRecord, type PeeringRules, type SiteCursor, type SiteFailure } from './model.js'
import { laterThan, patchRules, rulesVersion, type RulesPatch } from './rules.js'
import type { ReceiverState } from './receiver.js'
import { dec, enc } from './protocol.js'

export const SITE_OPS_PROTOCOL = '/flotilla/site-ops/1.0.0'
export const SITE_HANDSHAKE_PROTOCOL = '/flotilla/site-handshake/1.0.0'
const MIB = 1024 * 1024
/** How often the leader tells the other site rules it has not confirmed yet. */
const RESYNC_EVERY_MS = 3000
/** Throughput: bytes over the last this many seconds. */
const WINDOW_S = 10

type OpsRequest =
  | { kind: 'rules'; site: string; rules: PeeringRules; rulesAt: number; by: string }
  | { kind: 'tag'; site: string; repo: string; tag: string; seq?: number | null; digest?: string | null; blobs?: string[] }

interface OpsError { error: { status: number; message: string } }
type RulesAnswer = { ok: true; kept: boolean; rules: PeeringRules; rulesAt: number; by: string } | OpsError

/** This site as the source of a tag for the other site. */
export interface SourceView {
  digest: string | null
  /** The feed entry that last put the tag (null: none among the recent entries, or not this site's change). */
  seq: number | null
  at: number | null
  blobs: Array<{ digest: string; size: number }>
  head: number
  /** The tag came here from that peered site (a site does not forward what it received). */
  receivedFrom: string | null
}

/** This site as the receiver of a tag from the other site. */
export interface ReceiverView {
  cursor: SiteCursor
  digest: string | null
  landed: { digest: string; seq: number; originAt: number; at: number } | null
  failure: SiteFailure | null
  /** Which of the blobs asked about some member here holds. */
  held: string[]
  /** The shipping node's live view (only when the node answering ships). */
  live: { connected: boolean; lastError: { message: string; at: number } | null; waitingFor: Record<string, number> } | null
}

export interface TagView { source: SourceView; receiver: ReceiverView }

export type ExplainState = 'replicated' | 'waiting-for-blobs' | 'backlog' | 'filtered' | 'blocked' | 'absent' | 'not-forwarded' | 'diverged' | 'unknown'

export interface Explanation {
  /** in: from the other site to this one; out: from this one to the other. */
  direction: 'in' | 'out'
  state: ExplainState
  /** One sentence for people. */
  summary: string
  sourceDigest: string | null
  targetDigest: string | null
  /** The source's feed sequence of the change, and the receiver's cursor. */
  seq: number | null
  cursor: number | null
  behindEntries: number | null
  lagSeconds: number | null
  pushedAt: string | null
  replicatedAt: string | null
  rule: string | null
  blobs: Array<{ digest: string; size: number; bytesLeft: number }>
  error: { code: string | null; message: string; at: string | null } | null
}

export interface ExplainDoc { name: string; site: string; repo: string; tag: string; rules: PeeringRules; directions: Explanation[] }

export interface OpsDeps {
  host: () => Host
  queries: MetadataQueries
  pq: PeeringQueries
  sink: CommandSink
  isSitePeer: (peerId: string) => boolean
  isLeader: () => boolean
  siteId: () => Promise<string>
  /** The live view of the receiver this node runs for a peering (undefined: it does not ship it). */
  receiver: (name: string) => ReceiverState | undefined
  /** Site A's side of the handshake, the signer proven by the connection (sites.ts). */
  accept: (req: unknown, signer: string) => Promise<unknown>
  log: Logger
}

/** Bytes over a sliding window of whole seconds. */
export class RateMeter {
  private readonly buckets = new Map<number, number>()
  private first = 0
  add (n: number, now = Date.now()): void {
    const s = Math.floor(now / 1000)
    if (this.first === 0) this.first = now
    this.buckets.set(s, (this.buckets.get(s) ?? 0) + n)
    for (const k of this.buckets.keys()) if (k <= s - WINDOW_S) this.buckets.delete(k)
  }

  /** Bytes per second over the last WINDOW_S seconds (or since the first byte, if later). */
  rate (now = Date.now()): number {
    if (this.first === 0) return 0
    const s = Math.floor(now / 1000)
    let sum = 0
    for (const [k, v] of this.buckets) if (k > s - WINDOW_S) sum += v
    const span = Math.min(WINDOW_S, Math.max(1, (now - this.first) / 1000))
    return sum / span
  }
}

/**
 * A token bucket that lets a debt build: take(n) always takes, and waits until the debt is
 * paid back at `rate`; concurrent takers queue behind each other's debt, so the rate holds.
 */
export class TokenBucket {
  private tokens: number
  private last = Date.now()
  constructor (private rate: number, private burst: number) { this.tokens = burst }
  set (rate: number, burst: number): void {
    if (rate === this.rate && burst === this.burst) return
    this.refill()
    this.rate = rate
    this.burst = burst
    this.tokens = Math.min(this.tokens, burst)
  }

  private refill (): void {
    const now = Date.now()
    this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.rate / 1000)
    this.last = now
  }

  /** Take n bytes; resolves after the wait (ms) the limit asks for. */
  async take (n: number): Promise<number> {
    this.refill()
    this.tokens -= n
    if (this.tokens >= 0) return 0
    const ms = -this.tokens * 1000 / this.rate
    await new Promise((resolve) => setTimeout(resolve, ms))
    return ms
  }
}

const iso = (ms: number | null | undefined): string | null => ms === null || ms === undefined || ms <= 0 ? null : new Date(ms).toISOString()

export class SiteOps {
  private readonly buckets = new Map<string, TokenBucket>()
  readonly meters = new Map<string, RateMeter>()
  private timer: NodeJS.Timeout | undefined
  private resyncing = false
  readonly metrics = {
    backlogBytes: new Gauge({ name: 'flotilla_site_backlog_bytes', help: 'Blob bytes the peered site\'s changes not yet applied here reference (on the shipping node)', labelNames: ['site'] as const, registers: [], collect: async () => { await this.refresh() } }),
    throughput: new Gauge({ name: 'flotilla_site_throughput_bytes_per_second', help: `Blob bytes per second with the peered site over the last ${WINDOW_S} s, by direction (in: received here, out: sent from this node)`, labelNames: ['site', 'direction'] as const, registers: [], collect: async () => { await this.refresh() } }),
    lastError: new Gauge({ name: 'flotilla_site_last_error_timestamp_seconds', help: 'When receiving from the peered site last failed (unix seconds; on the shipping node)', labelNames: ['site'] as const, registers: [], collect: async () => { await this.refresh() } }),
    bandwidthLimit: new Gauge({ name: 'flotilla_site_bandwidth_limit_bytes_per_second', help: 'The peering\'s bandwidth limit (--bandwidth), each way; absent: none', labelNames: ['site'] as const, registers: [], collect: async () => { await this.refresh() } }),
    throttled: new Counter({ name: 'flotilla_site_throttled_seconds_total', help: 'Time blob transfers of the peering waited for its bandwidth limit, by direction', labelNames: ['site', 'direction'] as const, registers: [] }),
    rulesSynced: new Gauge({ name: 'flotilla_site_rules_synced', help: 'Whether the peered site confirmed the rules last set here (1) or not yet (0)', labelNames: ['site'] as const, registers: [], collect: async () => { await this.refresh() } }),
    rulesChanges: new Counter({ name: 'flotilla_site_rules_changes_total', help: 'Rule changes of the peering recorded here, by where they were made (here, there)', labelNames: ['site', 'from'] as const, registers: [] }),
    explains: new Counter({ name: 'flotilla_site_explains_total', help: 'site explain answers, by the state found', labelNames: ['state'] as const, registers: [] }),
  }

  /** Bandwidth limits by peering name, refreshed with the records. */
  private limits = new Map<string, number>()

  constructor (private readonly d: OpsDeps) {}

  async start (): Promise<void> {
    const host = this.d.host()
    await serveRequests(host, SITE_OPS_PROTOCOL, async (peer, req) => {
      if (!this.d.isSitePeer(peer)) throw new Error(`peer ${peer} is not a pinned member of a peered site`)
      return { bytes: enc(await this.serve(peer, req)) }
    }, { maxRequestBytes: 256 * 1024, timeoutMs: 30_000, maxInboundStreams: 4 })
    // Strangers reach this one on probation only (a peering or join token outstanding): it checks the token itself.
    await serveRequests(host, SITE_HANDSHAKE_PROTOCOL, async (peer, req) => {
      try {
        return { bytes: enc(await this.d.accept(dec(req), peer)) }
      } catch (err) {
        const e = err instanceof FlotillaError ? err : undefined
        return { bytes: enc({ error: { status: e === undefined ? 400 : e.code === 'DENIED' ? 403 : e.code === 'ALREADY_EXISTS' ? 409 : e.code === 'UNAVAILABLE' ? 503 : 400, code: e?.code ?? 'BAD_REQUEST', message: (err as Error).message } }) }
      }
    }, { maxRequestBytes: 256 * 1024, timeoutMs: 30_000, maxInboundStreams: 2 })
    this.timer = setInterval(() => { void this.resync() }, RESYNC_EVERY_MS)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer !== undefined) clearInterval(this.timer)
  }

  meter (name: string, direction: 'in' | 'out'): RateMeter {
    const k = `${name}\u0000${direction}`
    let m = this.meters.get(k)
    if (m === undefined) { m = new RateMeter(); this.meters.set(k, m) }
    return m
  }

  /** Count `n` blob bytes of a peering (in: received, out: sent) and wait as its limit says. */
  async transfer (p: PeeringRecord, direction: 'in' | 'out', n: number): Promise<void> {
    const mib = p.rules.bandwidth
    this.limits.set(p.name, mib ?? 0)
    if (mib !== undefined) {
      const k = `${p.name}\u0000${direction}`
      const rate = mib * MIB
      const burst = Math.max(64 * 1024, rate / 4)
      let b = this.buckets.get(k)
      if (b === undefined) { b = new TokenBucket(rate, burst); this.buckets.set(k, b) } else b.set(rate, burst)
      const ms = await b.take(n)
      if (ms > 0) this.metrics.throttled.inc({ site: p.name, direction }, ms / 1000)
    }
    this.meter(p.name, direction).add(n)
  }

  /** One refresh of the gauges per scrape: each gauge's collect awaits the same one (a scrape collects them at once). */
  private refreshing: Promise<void> | undefined
  private async refresh (): Promise<void> {
    this.refreshing ??= this.collect().finally(() => { this.refreshing = undefined })
    await this.refreshing
  }

  private async collect (): Promise<void> {
    this.records = await this.d.pq.peerings()
    this.metrics.backlogBytes.reset()
    this.metrics.throughput.reset()
    this.metrics.lastError.reset()
    this.metrics.bandwidthLimit.reset()
    this.metrics.rulesSynced.reset()
    for (const [k, m] of this.meters) {
      const [site, direction] = k.split('\u0000') as [string, string]
      this.metrics.throughput.set({ site, direction }, m.rate())
    }
    for (const p of this.records) {
      const s = this.d.receiver(p.name)
      if (s !== undefined) {
        this.metrics.backlogBytes.set({ site: p.name }, s.batchBytesLeft + s.backlogAfter)
        if (s.lastError !== null) this.metrics.lastError.set({ site: p.name }, s.lastError.at / 1000)
      }
      if (p.rules.bandwidth !== undefined) this.metrics.bandwidthLimit.set({ site: p.name }, p.rules.bandwidth * MIB)
      this.metrics.rulesSynced.set({ site: p.name }, p.rulesSynced === false ? 0 : 1)
    }
  }

  /** The peering records as last read (refreshed every few seconds and by every call that reads them). */
  private records: PeeringRecord[] = []

  /** The leader tells the other site rules it has not confirmed yet. */
  private async resync (): Promise<void> {
    if (this.resyncing) return
    this.resyncing = true
    try {
      this.records = await this.d.pq.peerings()
      if (!this.d.isLeader()) return
      for (const p of this.records) {
        if (p.rulesSynced !== false) continue
        const told = await this.tell(p)
        if (!told.ok) this.d.log.debug({ site: p.name, err: told.message }, 'peering: the other site has not confirmed the new rules yet; will tell it again')
      }
    } catch (err) {
      this.d.log.warn({ err: (err as Error).message }, 'peering: could not resend rules')
    } finally {
      this.resyncing = false
    }
  }

  /** Ask the other site's members in turn (the first that answers). */
  private async ask<T> (p: PeeringRecord, req: OpsRequest, timeoutMs = 10_000): Promise<T> {
    let last: Error = new Error(`site ${p.name} has no member with an address`)
    for (const m of p.members) {
      for (const a of m.addrs) {
        try {
          const answer = dec<T | OpsError>(await sendRequest(this.d.host(), multiaddr(`${a}/p2p/${m.peerId}`), SITE_OPS_PROTOCOL, enc(req), { timeoutMs, maxAnswerBytes: 4 * MIB }))
          if (typeof answer === 'object' && answer !== null && 'error' in answer) throw new FlotillaError('BAD_REQUEST', `the other site refused (${answer.error.status}): ${answer.error.message}`)
          return answer as T
        } catch (err) {
          if (err instanceof FlotillaError) throw err
          last = new Error(`cannot reach ${m.peerId} at ${a}: ${err instanceof Error ? err.message : 'the connection was closed'}`)
        }
      }
    }
    throw last
  }

  /** Tell the other site this site's rules; adopt theirs when they are later. */
  async tell (p: PeeringRecord): Promise<{ ok: boolean; message: string }> {
    const [rulesAt, by] = rulesVersion(p)
    let answer: RulesAnswer
    try {
      answer = await this.ask<RulesAnswer>(p, { kind: 'rules', site: await this.d.siteId(), rules: p.rules, rulesAt, by })
    } catch (err) {
      return { ok: false, message: (err as Error).message }
    }
    if ('error' in answer) return { ok: false, message: answer.error.message }
    if (!answer.kept) {
      await this.d.sink.submit({ type: 'SiteRulesSynced', name: p.name, rulesAt, at: Date.now() })
      return { ok: true, message: 'the other site recorded the same rules' }
    }
    // The other site holds a later version (set there meanwhile): both keep that one.
    if (laterThan([answer.rulesAt, answer.by], [rulesAt, by]) && rulesProblem(answer.rules) === undefined) {
      await this.d.sink.submit({ type: 'SetSiteRules', name: p.name, rules: answer.rules, rulesAt: answer.rulesAt, by: answer.by, synced: true, at: Date.now() })
      this.metrics.rulesChanges.inc({ site: p.name, from: 'there' })
      return { ok: true, message: 'the other site had set later rules meanwhile: both keep those' }
    }
    await this.d.sink.submit({ type: 'SiteRulesSynced', name: p.name, rulesAt, at: Date.now() })
    return { ok: true, message: 'the other site holds the same rules' }
  }

  /** `flotilla site set NAME …`: record the new rules here, then tell the other site. */
  async set (name: string, patch: RulesPatch): Promise<{ peering: PeeringRecord; told: boolean; message: string }> {
    const p = await this.d.pq.peering(name)
    if (p === undefined) throw new FlotillaError('NOT_FOUND', `no peering named ${name}: see flotilla site list`)
    const rules = patchRules(p, patch)
    const why = rulesProblem(rules)
    if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why)
    const rulesAt = Math.max(Date.now(), rulesVersion(p)[0] + 1)
    const r = await this.d.sink.submit({ type: 'SetSiteRules', name, rules, rulesAt, by: await this.d.siteId(), synced: false, at: Date.now() })
    if (!r.ok) throw new FlotillaError(r.code, r.message)
    this.metrics.rulesChanges.inc({ site: name, from: 'here' })
    const now = (await this.d.pq.peering(name))!
    const told = await this.tell(now)
    if (!told.ok) this.d.log.warn({ site: name, err: told.message }, 'peering: new rules recorded here; the other site will be told when it can be reached')
    return { peering: (await this.d.pq.peering(name)) ?? now, told: told.ok, message: told.ok ? told.message : `recorded here; the other site could not be told yet (${told.message}): this site's leader tells it again every ${RESYNC_EVERY_MS / 1000} s` }
  }

  /** Answer a pinned member of a peered site. */
  private async serve (peer: string, bytes: Uint8Array): Promise<unknown> {
    let req: OpsRequest
    try { req = dec<OpsRequest>(bytes) } catch { return { error: { status: 400, message: 'the request is not JSON' } } }
    if (typeof req !== 'object' || req === null || typeof req.site !== 'string') return { error: { status: 400, message: 'the request names no site' } }
    const p = (await this.d.pq.peerings()).find((x) => x.site === req.site && x.members.some((m) => m.peerId === peer))
    if (p === undefined) return { error: { status: 403, message: `peer ${peer} is not a pinned member of a site peered with this one` } }
    if (req.kind === 'rules') {
      const why = rulesProblem(req.rules)
      if (why !== undefined) return { error: { status: 400, message: why } }
      if (typeof req.rulesAt !== 'number' || req.by !== req.site) return { error: { status: 400, message: 'rules need their version (rulesAt) and the site that set them (by: the asking site)' } }
      // A version far ahead of this site's clock would outrank every later change made here.
      if (req.rulesAt > Date.now() + 3600_000) return { error: { status: 400, message: `the rules' time ${new Date(req.rulesAt).toISOString()} is more than an hour ahead of this site's clock: check both sites' clocks (NTP)` } }
      const r = await this.d.sink.submit({ type: 'SetSiteRules', name: p.name, rules: req.rules, rulesAt: req.rulesAt, by: req.by, synced: true, at: Date.now() })
      if (!r.ok) return { error: { status: 400, message: r.message } }
      const v = r.value as { kept: boolean; rules: PeeringRules; rulesAt: number; by: string }
      if (!v.kept) {
        this.metrics.rulesChanges.inc({ site: p.name, from: 'there' })
        this.d.log.info({ site: p.name, rules: req.rules }, 'peering: the other site changed the rules')
      }
      return { ok: true, ...v } satisfies RulesAnswer
    }
    if (req.kind === 'tag') {
      if (typeof req.repo !== 'string' || typeof req.tag !== 'string' || req.repo.length > 256 || req.tag.length > 128) return { error: { status: 400, message: 'repo and tag are needed' } }
      const blobs = Array.isArray(req.blobs) ? req.blobs.filter((b): b is string => typeof b === 'string').slice(0, 1000) : []
      const source = await this.sourceView(req.repo, req.tag)
      const receiver = await this.receiverView(p, req.repo, req.tag, { seq: typeof req.seq === 'number' ? req.seq : null, digest: typeof req.digest === 'string' ? req.digest : null, blobs })
      return { source, receiver } satisfies TagView
    }
    return { error: { status: 400, message: 'unknown request kind' } }
  }

  /** This site as the source of repo:tag. */
  private async sourceView (repo: string, tag: string): Promise<SourceView> {
    const head = await this.d.pq.head()
    const digest = (await this.d.pq.tagRecord(repo, tag))?.digest ?? null
    if (digest === null) return { digest: null, seq: null, at: null, blobs: [], head, receivedFrom: null }
    const put = await this.d.pq.lastTagPut(repo, tag)
    const rec = await this.d.queries.manifest(repo, digest)
    const blobs: SourceView['blobs'] = []
    for (const b of rec?.blobs ?? []) blobs.push({ digest: b, size: (await this.d.queries.linkedBlob(repo, b))?.size ?? 0 })
    let receivedFrom: string | null = null
    if (put === undefined || put.digest !== digest) {
      for (const p of await this.d.pq.peerings()) {
        if ((await this.d.pq.landed(p.site, repo, tag))?.digest === digest) { receivedFrom = p.site; break }
      }
    }
    const mine = put !== undefined && put.digest === digest
    return { digest, seq: mine ? put.seq : null, at: mine ? put.at : null, blobs, head, receivedFrom }
  }

  /** This site as the receiver of repo:tag from peering p's site. */
  private async receiverView (p: PeeringRecord, repo: string, tag: string, about: { seq: number | null; digest: string | null; blobs: string[] }): Promise<ReceiverView> {
    const cursor = await this.d.pq.cursor(p.site)
    let failure: SiteFailure | null = null
    for (const f of await this.d.pq.failures(p.site, 1000)) {
      if ((about.seq !== null && f.seq === about.seq) || (f.repo === repo && (f.ref === tag || (about.digest !== null && f.ref === about.digest)))) { failure = f; break }
    }
    const held: string[] = []
    for (const b of about.blobs) if ((await this.d.queries.holders(b)).length > 0) held.push(b)
    const s = this.d.receiver(p.name)
    return {
      cursor,
      digest: (await this.d.pq.tagRecord(repo, tag))?.digest ?? null,
      landed: await this.d.pq.landed(p.site, repo, tag) ?? null,
      failure,
      held,
      live: s === undefined ? null : { connected: s.connected, lastError: s.lastError, waitingFor: { ...s.waitingFor } },
    }
  }

  /** `flotilla site explain NAME REPO:TAG`: where that tag stands, each way the peering ships. */
  async explain (name: string, repo: string, tag: string): Promise<ExplainDoc> {
    const p = await this.d.pq.peering(name)
    if (p === undefined) throw new FlotillaError('NOT_FOUND', `no peering named ${name}: see flotilla site list`)
    const directions: Explanation[] = []
    const mine = await this.d.siteId()
    if (receives(p)) {
      let src: SourceView | undefined
      let err: string | undefined
      const rule = filteredBy(p.rules, { op: 'put', repo, digest: '', tags: [tag] })
      if (rule === undefined) {
        try { src = (await this.ask<TagView>(p, { kind: 'tag', site: mine, repo, tag })).source } catch (e) { err = (e as Error).message }
      }
      const rcv = await this.receiverView(p, repo, tag, { seq: src?.seq ?? null, digest: src?.digest ?? null, blobs: src?.blobs.map((b) => b.digest) ?? [] })
      directions.push(classify('in', p, rule, src, rcv, err))
    }
    if (sends(p)) {
      const rule = filteredBy(p.rules, { op: 'put', repo, digest: '', tags: [tag] })
      const src = await this.sourceView(repo, tag)
      let rcv: ReceiverView | undefined
      let err: string | undefined
      if (rule === undefined) {
        try { rcv = (await this.ask<TagView>(p, { kind: 'tag', site: mine, repo, tag, seq: src.seq, digest: src.digest, blobs: src.blobs.map((b) => b.digest) })).receiver } catch (e) { err = (e as Error).message }
      }
      directions.push(classify('out', p, rule, src, rcv, err))
    }
    for (const e of directions) this.metrics.explains.inc({ state: e.state })
    return { name, site: p.site, repo, tag, rules: p.rules, directions }
  }
}

/** Where a tag stands one way, from the source's view and the receiver's (either may be unknown). */
export function classify (direction: 'in' | 'out', p: PeeringRecord, rule: string | undefined, src: SourceView | undefined, rcv: ReceiverView | undefined, err: string | undefined, now = Date.now()): Explanation {
  const there = direction === 'in' ? `site ${p.name}` : 'this site'
  const here = direction === 'in' ? 'this site' : `site ${p.name}`
  const e: Explanation = {
    direction, state: 'unknown', summary: '',
    sourceDigest: src?.digest ?? null,
    targetDigest: rcv?.digest ?? null,
    seq: src?.seq ?? null,
    cursor: rcv?.cursor.seq ?? null,
    behindEntries: null,
    lagSeconds: null,
    pushedAt: iso(src?.at),
    replicatedAt: null,
    rule: rule ?? null,
    blobs: [],
    error: null,
  }
  if (rule !== undefined) {
    e.state = 'filtered'
    e.summary = `filtered out by the rule ${rule}: ${there} does not ship it to ${here}`
    return e
  }
  if (src === undefined || rcv === undefined) {
    e.summary = `cannot tell: the other site could not be asked (${err ?? 'no answer'})`
    if (rcv?.digest !== undefined && rcv.digest !== null && rcv.landed?.digest === rcv.digest) {
      e.state = 'replicated'
      e.replicatedAt = iso(rcv.landed.at)
      e.summary = `replicated at ${e.replicatedAt ?? '?'} (the other site could not be asked whether it moved since: ${err ?? 'no answer'})`
    }
    if (err !== undefined) e.error = { code: null, message: err, at: iso(now) }
    return e
  }
  if (rcv.failure !== null && (src.seq === null || rcv.failure.seq === src.seq || rcv.failure.ref === src.digest)) {
    e.state = 'blocked'
    e.error = { code: rcv.failure.code, message: rcv.failure.message, at: iso(rcv.failure.at) }
    e.summary = `blocked: ${here} could not apply it (${rcv.failure.code}: ${rcv.failure.message}) at ${e.error.at ?? '?'}`
    return e
  }
  if (src.digest === null) {
    e.state = 'absent'
    e.summary = rcv.digest === null ? `no such tag at ${there}: nothing to replicate` : `no such tag at ${there} (deleted there${p.rules.deletes ? '' : '; deletes do not replicate on this peering'}); ${here} has it on ${rcv.digest}`
    return e
  }
  if (src.seq === null && src.receivedFrom !== null) {
    e.state = 'not-forwarded'
    e.summary = `${there} received this tag from site ${src.receivedFrom} and does not forward it (sites ship only their own changes): peer with that site to get it`
    return e
  }
  const applied = src.seq === null ? rcv.digest === src.digest : rcv.cursor.seq >= src.seq
  if (applied && rcv.digest === src.digest) {
    e.state = 'replicated'
    e.replicatedAt = rcv.landed?.digest === src.digest ? iso(rcv.landed.at) : null
    e.summary = `replicated: ${here} has it on ${src.digest}${e.replicatedAt !== null ? ` since ${e.replicatedAt}` : ''}`
    return e
  }
  const left = (b: { digest: string; size: number }): number => rcv.live?.waitingFor[b.digest] ?? (rcv.held.includes(b.digest) ? 0 : b.size)
  e.blobs = src.blobs.filter((b) => !rcv.held.includes(b.digest)).map((b) => ({ ...b, bytesLeft: left(b) }))
  if (src.seq !== null && !applied) {
    e.behindEntries = src.seq - rcv.cursor.seq
    e.lagSeconds = src.at !== null ? Math.max(0, (now - src.at) / 1000) : null
    if (rcv.live !== null && !rcv.live.connected && rcv.live.lastError !== null) {
      e.state = 'blocked'
      e.error = { code: null, message: rcv.live.lastError.message, at: iso(rcv.live.lastError.at) }
      e.summary = `blocked: the link is down (${rcv.live.lastError.message}, at ${e.error.at ?? '?'}); ${e.behindEntries} entries behind`
      return e
    }
    const fetching = rcv.live !== null && src.blobs.some((b) => rcv.live!.waitingFor[b.digest] !== undefined)
    if (fetching) {
      e.state = 'waiting-for-blobs'
      e.summary = `waiting for blobs: ${e.blobs.length} to come, ${e.blobs.reduce((n, b) => n + b.bytesLeft, 0)} bytes left`
      return e
    }
    e.state = 'backlog'
    e.summary = `in the backlog: change ${src.seq} of ${there}, ${e.behindEntries} entries after ${here}'s cursor ${rcv.cursor.seq}${e.lagSeconds !== null ? `, pushed ${e.lagSeconds.toFixed(1)} s ago` : ''}`
    return e
  }
  e.state = 'diverged'
  e.summary = `diverged: ${there} has it on ${src.digest}, ${here} on ${rcv.digest ?? 'nothing'} (changed at ${here} since, or deleted there)`
  return e
}

