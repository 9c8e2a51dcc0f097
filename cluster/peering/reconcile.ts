/**
 * Continuous reconciliation (issue 11, delivery): the receiving side of a peering compares what
 * it holds with what the sending site holds, by summary hashes (cluster/peering/summary.ts),
 * and repairs the difference, so that neither a missed event nor a feed trimmed past its
 * cursor leaves the sites apart for good.
 *
 *   /flotilla/site-sum/1.0.0   one request, one answer (net/request-response.ts); pinned members
 *                              of a site this site sends to only
 *     {site, q: 'root'}                      → {site, root, repos}
 *     {site, q: 'buckets'}                   → {site, buckets}           BUCKETS hashes
 *     {site, q: 'repos', buckets: [i…]}      → {site, repos: {repo: hash}}   of those buckets
 *     {site, q: 'views', repos: [r…]}        → {site, views: {repo: RepoView}}
 *     {site, q: 'manifests', repo, digests}  → {site, changes: [put…]}    like shipped puts, without tags
 *
 * A round at the receiver (Reconciler.round): ask the root; equal to its own: done. Otherwise
 * ask the bucket hashes, then the repository hashes of the differing buckets, then the views
 * of the differing repositories (at most MAX_REPOS per round), and diff each (diffRepo). The
 * repairs go the way a shipped change goes: manifests fetched by digest, their blobs made
 * durable on this site's write quorum (SiteReceiver.fetchBlobs), then one SiteRepair command
 * through this site's log, each tag settled by the sender's version.
 *
 * Bounded cost: a difference that is not to be repaired (a local push here, a newer tag here,
 * another site's change) is remembered as settled, as the pair (sender's hash, own hash), per
 * repository, per bucket and for the root. While neither side changes, a round is then one
 * request and one local summary; when one repository changes, only its bucket and itself are
 * looked at again.
 */
import { createHash } from 'node:crypto'
import type { Logger } from 'pino'
import type { Host } from '../../net/host.js'
import type { CommandSink } from '../metadata/applier.js'
import type { MetadataQueries } from '../metadata/queries.js'
import { askSite } from './ask.js'
import { receives, sends, type PeeringRecord, type ShippedChange } from './model.js'
import { dec, enc } from './protocol.js'
import type { PeeringQueries } from './queries.js'
import { BUCKETS, bucketOf, childrenFirst, diffRepo, repairs, type RepoView, type Summary, type SummaryReader } from './summary.js'

export const SITE_SUMMARY_PROTOCOL = '/flotilla/site-sum/1.0.0'

/** Repositories whose views one round asks for, at most (the rest wait for the next round). */
const MAX_REPOS = 200
/** Views per request, and manifests per request and per SiteRepair command. */
const VIEWS_PER_REQUEST = 25
const MANIFESTS_PER_REQUEST = 64
/** Manifest bytes per answer. */
const MAX_BODY_BYTES = 4 * 1024 * 1024
/** How long one request may take (a round that fails is tried again at the next). */
const REQUEST_TIMEOUT_MS = 20_000
/** How long the sender reuses a summary it computed (one round asks several times). */
const SUMMARY_TTL_MS = 2_000

export type SummaryRequest =
  | { site: string; q: 'root' }
  | { site: string; q: 'buckets' }
  | { site: string; q: 'repos'; buckets: number[] }
  | { site: string; q: 'views'; repos: string[] }
  | { site: string; q: 'manifests'; repo: string; digests: string[] }

type Put = Extract<ShippedChange, { op: 'put' }>

/** The sending side: summaries of what a peering lets through, and manifests by digest. */
export class SummarySource {
  private readonly cache = new Map<string, { at: number; s: Summary }>()

  constructor (private readonly d: { pq: PeeringQueries; queries: MetadataQueries; reader: SummaryReader; siteId: () => Promise<string> }) {}

  private async summary (p: PeeringRecord): Promise<Summary> {
    const c = this.cache.get(p.name)
    if (c !== undefined && Date.now() - c.at < SUMMARY_TTL_MS) return c.s
    const s = await this.d.reader.summary(p.rules)
    this.cache.set(p.name, { at: Date.now(), s })
    return s
  }

  async answer (peer: string, bytes: Uint8Array): Promise<Uint8Array> {
    let req: SummaryRequest
    try { req = dec<SummaryRequest>(bytes) } catch { return enc({ error: { status: 400, message: 'the request is not JSON' } }) }
    if (typeof req?.site !== 'string') return enc({ error: { status: 400, message: 'the request names no site' } })
    const p = (await this.d.pq.peerings()).find((x) => x.site === req.site && x.members.some((m) => m.peerId === peer))
    if (p === undefined) return enc({ error: { status: 403, message: `peer ${peer} is not a pinned member of a site peered with this one` } })
    if (!sends(p)) return enc({ error: { status: 403, message: `the peering ${p.name} does not send this site's images to yours` } })
    const site = await this.d.siteId()
    switch (req.q) {
      case 'root': {
        const s = await this.summary(p)
        return enc({ site, root: s.root, repos: s.repos.size })
      }
      case 'buckets':
        return enc({ site, buckets: (await this.summary(p)).buckets })
      case 'repos': {
        if (!Array.isArray(req.buckets) || req.buckets.length > BUCKETS || !req.buckets.every((b) => Number.isInteger(b) && b >= 0 && b < BUCKETS)) return enc({ error: { status: 400, message: `buckets must be a list of integers from 0 to ${BUCKETS - 1}` } })
        const want = new Set(req.buckets)
        const repos: Record<string, string> = {}
        for (const [r, h] of (await this.summary(p)).repos) if (want.has(bucketOf(r))) repos[r] = h
        return enc({ site, repos })
      }
      case 'views': {
        if (!Array.isArray(req.repos) || req.repos.length > VIEWS_PER_REQUEST || !req.repos.every((r) => typeof r === 'string' && r.length < 256)) return enc({ error: { status: 400, message: `repos must be a list of at most ${VIEWS_PER_REQUEST} repository names` } })
        const allowed = new Set(await this.d.reader.repos(p.rules))
        const views: Record<string, RepoView> = {}
        // A repository the rules do not let through (or that is not here) looks empty.
        for (const r of req.repos) views[r] = allowed.has(r) ? await this.d.reader.view(r, p.rules) : { tags: {}, tombstones: {}, manifests: [] }
        return enc({ site, views })
      }
      case 'manifests': {
        if (typeof req.repo !== 'string' || !Array.isArray(req.digests) || req.digests.length > MANIFESTS_PER_REQUEST) return enc({ error: { status: 400, message: `give a repo and at most ${MANIFESTS_PER_REQUEST} digests` } })
        if (!(await this.d.reader.repos(p.rules)).includes(req.repo)) return enc({ error: { status: 404, message: `repository ${req.repo} is not one this peering ships` } })
        const changes: Put[] = []
        let body = 0
        for (const digest of req.digests) {
          if (body >= MAX_BODY_BYTES) break
          if (typeof digest !== 'string') continue
          const rec = await this.d.queries.manifest(req.repo, digest)
          const raw = rec === undefined ? undefined : await this.d.queries.manifestBody(req.repo, digest)
          if (rec === undefined || raw === undefined) continue
          const sizes: Record<string, number> = {}
          for (const b of rec.blobs) sizes[b] = (await this.d.queries.linkedBlob(req.repo, b))?.size ?? 0
          const c: Put = { seq: 0, at: rec.at, op: 'put', repo: req.repo, digest, tags: [], body: Buffer.from(raw).toString('base64'), mediaType: rec.mediaType, blobs: rec.blobs, sizes, manifests: rec.manifests, origin: site }
          if (rec.subject !== undefined) c.subject = rec.subject
          if (rec.artifactType !== undefined) c.artifactType = rec.artifactType
          if (rec.annotations !== undefined) c.annotations = rec.annotations
          changes.push(c)
          body += raw.byteLength
        }
        return enc({ site, changes })
      }
      default:
        return enc({ error: { status: 400, message: 'q must be root, buckets, repos, views or manifests' } })
    }
  }
}

const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/
const DIGEST_RE = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/
const strings = (x: unknown, re?: RegExp): boolean => Array.isArray(x) && x.every((y) => typeof y === 'string' && (re === undefined || re.test(y)))

/** A manifest from the sender that can be proposed: the fields a put needs, and a body that hashes to its digest. */
export function wellFormedPut (c: Put): boolean {
  if (typeof c.digest !== 'string' || !DIGEST_RE.test(c.digest) || typeof c.body !== 'string' || typeof c.mediaType !== 'string') return false
  if (!strings(c.blobs, DIGEST_RE) || !strings(c.manifests, DIGEST_RE) || typeof c.sizes !== 'object' || c.sizes === null) return false
  if (c.subject !== undefined && typeof c.subject !== 'string') return false
  const alg = c.digest.slice(0, 6)
  return `${alg}:${createHash(alg).update(Buffer.from(c.body, 'base64')).digest('hex')}` === c.digest
}

/** What one round found and did (shown in `site status`). */
export interface RoundReport {
  at: number
  ms: number
  /** The root hashes agreed (nothing to do), or every difference was known already (settled). */
  inSync: boolean
  /** Requests made to the sender, and what they covered. */
  requests: number
  /** Repositories the sender holds under the rules. */
  repos: number
  bucketsDiffering: number
  reposCompared: number
  repaired: { manifests: number; tags: number; untags: number }
  /** Differences left alone: local manifests and tags, newer versions here, other sites' changes. */
  kept: { localManifests: number; localTags: number; newerHere: number; foreign: number }
  failed: number
  /** Whether repositories were left for the next round (MAX_REPOS). */
  more: boolean
}

export interface ReconcileState {
  rounds: number
  last: RoundReport | null
  /** The last round that repaired something. */
  lastRepair: RoundReport | null
  lastError: { message: string; at: number } | null
  totals: { manifests: number; tags: number; untags: number }
}

export interface ReconcilerDeps {
  host: () => Host
  siteId: () => Promise<string>
  pq: PeeringQueries
  reader: SummaryReader
  sink: CommandSink
  /** Make the puts' blobs durable here (SiteReceiver.fetchBlobs). */
  fetchBlobs: (p: PeeringRecord, from: string, changes: ShippedChange[]) => Promise<void>
  hold?: (digests: Iterable<string>) => () => void
  intervalMs: number
  log: Logger
  metrics?: {
    round: (site: string, outcome: 'in-sync' | 'repaired' | 'differ' | 'error') => void
    differences: (site: string, n: number) => void
    repaired: (site: string, kind: 'manifest' | 'tag' | 'untag', n: number) => void
  }
}

export class Reconciler {
  readonly state: ReconcileState = { rounds: 0, last: null, lastRepair: null, lastError: null, totals: { manifests: 0, tags: 0, untags: 0 } }
  /** Differences known not to need repair: level key → "sender hash:own hash". */
  private readonly settled = new Map<string, string>()
  private chain: Promise<unknown> = Promise.resolve()
  private stopped = false
  private timer: NodeJS.Timeout | undefined
  private preferred = 0

  constructor (readonly name: string, private readonly d: ReconcilerDeps) {}

  /** Rounds every intervalMs (0: only when asked, e.g. behind a trimmed feed). */
  start (): void {
    if (this.d.intervalMs <= 0) return
    const next = (): void => {
      if (this.stopped) return
      this.timer = setTimeout(() => { void this.run().catch(() => {}).finally(next) }, this.d.intervalMs)
      this.timer.unref()
    }
    next()
  }

  stop (): void {
    this.stopped = true
    if (this.timer !== undefined) clearTimeout(this.timer)
  }

  /** One round, after any under way (rounds never overlap). */
  async run (): Promise<RoundReport> {
    const r = this.chain.then(async () => await this.guarded())
    this.chain = r.catch(() => {})
    return await r
  }

  /** Rounds until one finds nothing left to repair (a receiver behind a trimmed feed, before it skips ahead). */
  async converge (maxRounds = 100): Promise<void> {
    for (let i = 0; i < maxRounds && !this.stopped; i++) {
      const r = await this.run()
      // Repairs refused here (an immutable tag, say) are counted and retried at later rounds; they do not hold the feed up.
      if (r.repaired.manifests + r.repaired.tags + r.repaired.untags === 0 && !r.more) return
    }
    throw new Error(`reconciliation with ${this.name} did not converge in ${maxRounds} rounds`)
  }

  private async guarded (): Promise<RoundReport> {
    try {
      const r = await this.round()
      this.state.rounds++
      this.state.last = r
      this.state.lastError = null
      const n = r.repaired.manifests + r.repaired.tags + r.repaired.untags
      if (n > 0) {
        this.state.lastRepair = r
        this.d.log.info({ site: this.name, repaired: r.repaired, reposCompared: r.reposCompared, requests: r.requests }, 'peering: reconciliation repaired differences')
      }
      this.d.metrics?.round(this.name, r.inSync ? 'in-sync' : n > 0 ? 'repaired' : 'differ')
      return r
    } catch (err) {
      const message = (err as Error).message ?? String(err)
      this.state.lastError = { message, at: Date.now() }
      this.d.metrics?.round(this.name, 'error')
      this.d.log.warn({ site: this.name, err: message }, 'peering: reconciliation failed; retried at the next round')
      throw err
    }
  }

  private async ask<T> (p: PeeringRecord, req: Record<string, unknown>): Promise<{ answer: T; from: string }> {
    const body = enc({ ...req, site: await this.d.siteId() })
    const r = await askSite(this.d.host(), p, body, { protocol: SITE_SUMMARY_PROTOCOL, timeoutMs: REQUEST_TIMEOUT_MS, maxAnswerBytes: 64 * 1024 * 1024, start: this.preferred }, (bytes, peerId) => {
      const answer = dec<T & { site?: string; error?: { status: number; message: string } }>(bytes)
      if (answer.error !== undefined) throw new Error(`member ${peerId} refused (${answer.error.status}): ${answer.error.message}`)
      if (answer.site !== p.site) throw new Error(`member ${peerId} answered as site ${String(answer.site)}, but the peering is with ${p.site}`)
      return answer
    })
    this.preferred = r.index
    return r
  }

  private async round (): Promise<RoundReport> {
    const t0 = Date.now()
    const p = await this.d.pq.peering(this.name)
    if (p === undefined || !receives(p)) throw new Error(`the peering ${this.name} does not receive (any more)`)
    const report: RoundReport = { at: t0, ms: 0, inSync: false, requests: 0, repos: 0, bucketsDiffering: 0, reposCompared: 0, repaired: { manifests: 0, tags: 0, untags: 0 }, kept: { localManifests: 0, localTags: 0, newerHere: 0, foreign: 0 }, failed: 0, more: false }
    const done = (): RoundReport => { report.ms = Date.now() - t0; return report }
    const root = await this.ask<{ root: string; repos: number }>(p, { q: 'root' })
    report.requests++
    report.repos = root.answer.repos
    const mine = await this.d.reader.summary(p.rules)
    const rootPair = `${root.answer.root}:${mine.root}`
    if (root.answer.root === mine.root || this.settled.get('') === rootPair) { report.inSync = true; return done() }
    const { answer: { buckets } } = await this.ask<{ buckets: string[] }>(p, { q: 'buckets' })
    report.requests++
    const pairOf = (i: number): string => `${buckets[i] ?? ''}:${mine.buckets[i]!}`
    const differing = [...Array(BUCKETS).keys()].filter((i) => buckets[i] !== mine.buckets[i] && this.settled.get(`b${i}`) !== pairOf(i))
    report.bucketsDiffering = differing.length
    const theirs = differing.length === 0 ? {} : (await this.ask<{ repos: Record<string, string> }>(p, { q: 'repos', buckets: differing })).answer.repos
    if (differing.length > 0) report.requests++
    // Repositories whose hashes differ (either side may lack one), not known settled.
    const inBuckets = new Set(differing)
    const names = new Set<string>([...Object.keys(theirs), ...[...mine.repos.keys()].filter((r) => inBuckets.has(bucketOf(r)))])
    const candidates = [...names].sort().filter((r) => (theirs[r] ?? '') !== (mine.repos.get(r) ?? '') && this.settled.get(`r${r}`) !== `${theirs[r] ?? ''}:${mine.repos.get(r) ?? ''}`)
    const look = candidates.slice(0, MAX_REPOS)
    report.more = candidates.length > look.length
    report.reposCompared = look.length
    this.d.metrics?.differences(this.name, look.length)
    const unsettled = new Set<number>()
    for (const r of candidates.slice(MAX_REPOS)) unsettled.add(bucketOf(r))
    for (let i = 0; i < look.length; i += VIEWS_PER_REQUEST) {
      const batch = look.slice(i, i + VIEWS_PER_REQUEST)
      const { answer: { views }, from } = await this.ask<{ views: Record<string, RepoView> }>(p, { q: 'views', repos: batch })
      report.requests++
      for (const repo of batch) {
        const there = views[repo] ?? { tags: {}, tombstones: {}, manifests: [] }
        const here = await this.d.reader.view(repo, p.rules)
        const diff = diffRepo(p.site, here, there, p.rules.deletes)
        for (const k of Object.keys(report.kept) as Array<keyof RoundReport['kept']>) report.kept[k] += diff.kept[k]
        if (repairs(diff) === 0) {
          this.settled.set(`r${repo}`, `${theirs[repo] ?? ''}:${mine.repos.get(repo) ?? ''}`)
          continue
        }
        unsettled.add(bucketOf(repo))
        await this.repair(p, from, repo, diff, report)
      }
    }
    for (const i of differing) if (!unsettled.has(i)) this.settled.set(`b${i}`, pairOf(i))
    if (unsettled.size === 0) this.settled.set('', rootPair)
    return done()
  }

  /** Fetch what one repository lacks, make its blobs durable here, and apply it through the log. */
  private async repair (p: PeeringRecord, from: string, repo: string, diff: ReturnType<typeof diffRepo>, report: RoundReport): Promise<void> {
    const puts: Put[] = []
    for (let i = 0; i < diff.fetch.length; i += MANIFESTS_PER_REQUEST) {
      const { answer } = await this.ask<{ changes: Put[] }>(p, { q: 'manifests', repo, digests: diff.fetch.slice(i, i + MANIFESTS_PER_REQUEST) })
      report.requests++
      // Only what was asked for, well formed, and whose body is the digest's: the rest waits for a later round.
      const asked = new Set(diff.fetch.slice(i, i + MANIFESTS_PER_REQUEST))
      puts.push(...(Array.isArray(answer.changes) ? answer.changes : []).filter((c) => c?.repo === repo && asked.has(c.digest) && wellFormedPut(c)))
    }
    diff.tags = diff.tags.filter((x) => TAG_RE.test(x.tag) && DIGEST_RE.test(x.digest))
    diff.untags = diff.untags.filter((x) => TAG_RE.test(x.tag))
    const ordered = childrenFirst(puts)
    const release = this.d.hold?.(ordered.flatMap((c) => c.blobs))
    try {
      // Batches of manifests; the tag moves and deletes ride with the last one (their manifests are there by then).
      for (let i = 0; i === 0 || i < ordered.length; i += MANIFESTS_PER_REQUEST) {
        const batch = ordered.slice(i, i + MANIFESTS_PER_REQUEST)
        const last = i + MANIFESTS_PER_REQUEST >= ordered.length
        await this.d.fetchBlobs(p, from, batch)
        const r = await this.d.sink.submit({
          type: 'SiteRepair',
          name: p.name,
          origin: p.site,
          manifests: batch,
          tags: last ? diff.tags.map((t) => ({ repo, ...t })) : [],
          untags: last ? diff.untags.map((u) => ({ repo, ...u })) : [],
          at: Date.now(),
        })
        if (!r.ok) throw new Error(`applying repairs of ${repo} failed: ${r.message}`)
        const v = r.value as { manifests: number; tags: number; untags: number; failed: number; errors: string[] }
        report.repaired.manifests += v.manifests
        report.repaired.tags += v.tags
        report.repaired.untags += v.untags
        report.failed += v.failed
        this.state.totals.manifests += v.manifests
        this.state.totals.tags += v.tags
        this.state.totals.untags += v.untags
        if (v.manifests > 0) this.d.metrics?.repaired(this.name, 'manifest', v.manifests)
        if (v.tags > 0) this.d.metrics?.repaired(this.name, 'tag', v.tags)
        if (v.untags > 0) this.d.metrics?.repaired(this.name, 'untag', v.untags)
        if (v.failed > 0) this.d.log.warn({ site: p.name, repo, errors: v.errors }, 'peering: some repairs could not be applied here')
      }
    } finally {
      release?.()
    }
  }
}
