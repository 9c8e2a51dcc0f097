/**
 * The receiving side of one peering, run by one member of the receiving site (its Raft
 * leader, cluster/peering/sites.ts): ask a member of the other site for the changes after the
 * recorded cursor, fetch the blobs they reference and make them durable on this site's write
 * quorum, then apply the changes and the new cursor in one command through this site's log.
 * A manifest therefore becomes visible here only once its blobs are durable here.
 *
 * The cursor lives in the replicated state, so when the shipping member dies another takes
 * over from it; a batch that was committed but not acknowledged is sent again and skipped
 * (SiteApply is idempotent on origin sequence). Errors back off exponentially, with jitter,
 * and are kept (the last one and its time) for `site status`.
 */
import { multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import type { Host } from '../../net/host.js'
import { requestStreamed } from '../../net/streamed-response.js'
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import { parseDigest, type Digest } from '../../storage/reference.js'
import type { CommandSink } from '../metadata/applier.js'
import type { MetadataQueries } from '../metadata/queries.js'
import type { PeeringQueries } from './queries.js'
import { askSite } from './ask.js'
import { receives, type PeeringRecord, type ShippedChange, type SiteMember } from './model.js'
import { Reconciler, type ReconcilerDeps } from './reconcile.js'
import type { SummaryReader } from './summary.js'
import { dec, enc, SITE_BLOB_PROTOCOL, SITE_PROTOCOL, type BlobHeader, type PullAnswer, type PullRequest } from './protocol.js'

/** How long the source may hold a pull with nothing new (long poll). */
const WAIT_MS = 10_000
const MAX_BACKOFF_MS = 30_000
/**
 * Blobs fetched at once from the other site: large ones, and small ones besides (together
 * under the source's 64 inbound blob streams per connection, with room for reconciliation).
 * Over a 50 ms RTT a small blob takes about 2 round trips: 32 at once bring 1,000 small
 * images (2,000 blobs) in seconds.
 */
const FETCH_CONCURRENCY = 4
const SMALL_FETCH_CONCURRENCY = 32
const LARGE_BLOB = 1 << 20

export interface ReceiverDeps {
  host: () => Host
  selfId: string
  siteId: () => Promise<string>
  members: () => SiteMember[]
  /** Members of this site (for holder counts). */
  memberIds: () => string[]
  queries: MetadataQueries
  pq: PeeringQueries
  sink: CommandSink
  blobs: BlobStore
  /** Resolve once every blob is durable on this site's write quorum. */
  waitForCopies: (digests: string[]) => Promise<void>
  /** Keep blobs from garbage collection until the returned function is called. */
  hold?: (digests: Iterable<string>) => () => void
  log: Logger
  metrics: ReceiverMetrics
  /** Wait as the peering's bandwidth limit says before taking `n` more blob bytes (cluster/peering/ops.ts). */
  throttle?: (p: PeeringRecord, n: number) => Promise<void>
  /** Continuous reconciliation (cluster/peering/reconcile.ts): rounds every intervalMs (0: only behind a trimmed feed). */
  reconcile?: { reader: SummaryReader; intervalMs: number; metrics?: ReconcilerDeps['metrics'] }
}

export interface ReceiverMetrics {
  bytes: (site: string, n: number) => void
  applied: (site: string, n: number) => void
  error: (site: string) => void
  /** Changes passed over: `superseded` (a newer version of the tag here), `foreign` (not made at that site). */
  skipped?: (site: string, reason: 'superseded' | 'foreign', n: number) => void
}

/** What `site status` shows of a receiver (on the member that runs it). */
export interface ReceiverState {
  connected: boolean
  /** The member of the other site last talked to. */
  source: string | null
  lastContact: number
  /** The cursor as this receiver last read or moved it. */
  cursor: number
  head: number
  headAt: number
  pendingAt: number
  lastError: { message: string; at: number } | null
  /** Consecutive failures (the backoff's exponent). */
  failures: number
  bytesReceived: number
  changesApplied: number
  /** Blobs being fetched for the batch under way: digest → bytes left. */
  waitingFor: Record<string, number>
  /** Backlog in blob bytes: what the batch under way still has to fetch, and what the source counted after it. */
  batchBytesLeft: number
  backlogAfter: number
}

export class SiteReceiver {
  readonly state: ReceiverState = { connected: false, source: null, lastContact: 0, cursor: 0, head: 0, headAt: 0, pendingAt: 0, lastError: null, failures: 0, bytesReceived: 0, changesApplied: 0, waitingFor: {}, batchBytesLeft: 0, backlogAfter: 0 }
  private stopped = false
  private readonly abort = new AbortController()
  /** Index of the member of the other site to ask first (the last that answered). */
  private preferred = 0
  readonly done: Promise<void>
  readonly reconciler: Reconciler | undefined

  constructor (readonly name: string, private readonly d: ReceiverDeps) {
    if (d.reconcile !== undefined) {
      this.reconciler = new Reconciler(name, {
        host: d.host,
        siteId: d.siteId,
        pq: d.pq,
        reader: d.reconcile.reader,
        sink: d.sink,
        fetchBlobs: async (p, from, changes) => { await this.fetchBlobs(p, from, changes) },
        ...(d.hold !== undefined ? { hold: d.hold } : {}),
        intervalMs: d.reconcile.intervalMs,
        log: d.log,
        ...(d.reconcile.metrics !== undefined ? { metrics: d.reconcile.metrics } : {}),
      })
      this.reconciler.start()
    }
    this.done = this.run()
  }

  stop (): void {
    this.stopped = true
    this.abort.abort()
    this.reconciler?.stop()
  }

  private async run (): Promise<void> {
    while (!this.stopped) {
      try {
        const more = await this.round()
        if (more === 'gone') { this.reconciler?.stop(); return }
        this.state.failures = 0
      } catch (err) {
        if (this.stopped) return
        const message = (err as Error).message ?? String(err)
        this.state.connected = false
        this.state.failures++
        this.state.lastError = { message, at: Date.now() }
        this.d.metrics.error(this.name)
        this.d.log.warn({ site: this.name, failures: this.state.failures, err: message }, 'peering: receiving failed; retrying')
        // Exponential backoff with jitter: half the delay fixed, half random.
        const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(this.state.failures, 10))
        await this.sleep(delay / 2 + Math.random() * delay / 2)
      }
    }
  }

  private async sleep (ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms)
      this.abort.signal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
    })
  }

  /** One pull and its application. */
  private async round (): Promise<'gone' | 'ok'> {
    const p = await this.d.pq.peering(this.name)
    if (p === undefined || !receives(p)) return 'gone'
    // Read the cursor as committed: a new shipper must not start behind what the last applied.
    await this.d.sink.barrier()
    const cursor = await this.d.pq.cursor(p.site)
    this.state.cursor = cursor.seq
    const req: PullRequest = { site: await this.d.siteId(), after: cursor.seq, waitMs: WAIT_MS, members: this.d.members() }
    const { answer, from } = await this.ask(p, req)
    if (this.stopped) return 'ok'
    this.state.connected = true
    this.state.source = from
    this.state.lastContact = Date.now()
    this.state.head = answer.head
    this.state.headAt = answer.headAt
    this.state.pendingAt = answer.pendingAt
    this.state.backlogAfter = answer.backlogBytes ?? 0
    if (answer.site !== p.site) throw new Error(`member ${from} answered as site ${answer.site}, but the peering is with ${p.site}`)
    if (membersChanged(p.members, answer.members)) {
      const r = await this.d.sink.submit({ type: 'SetSiteMembers', name: p.name, members: answer.members, at: Date.now() })
      if (r.ok) this.d.log.info({ site: p.name, members: answer.members.map((m) => m.peerId) }, 'peering: the other site\'s members changed')
    }
    if (answer.trimmed !== undefined && answer.trimmed > cursor.seq) {
      // The other site trimmed its feed past our cursor (we fell behind its bounded tail): the
      // entries in between are gone, so reconcile instead (summary hashes, repairs), then go
      // on from the trimmed point. What those entries did is in the other site's state now.
      if (this.reconciler === undefined) throw new Error(`site ${p.name} trimmed its feed through ${answer.trimmed}, past this site's cursor ${cursor.seq}, and reconciliation is off here`)
      this.d.log.info({ site: p.name, cursor: cursor.seq, trimmed: answer.trimmed }, 'peering: behind the other site\'s trimmed feed: reconciling, then resuming from the trimmed point')
      await this.reconciler.converge()
      const r = await this.d.sink.submit({ type: 'SiteApply', name: p.name, origin: p.site, changes: [], through: answer.trimmed, originAt: 0, at: Date.now() })
      if (!r.ok) throw new Error(`moving the cursor past the trimmed feed failed: ${r.message}`)
      this.state.cursor = answer.trimmed
      return 'ok'
    }
    if (answer.through <= cursor.seq) return 'ok'
    const t0 = Date.now()
    const bytes0 = this.state.bytesReceived
    // The batch's blobs are recorded held but linked by nothing until it applies: garbage
    // collection (even with --grace 0s) must leave them alone until then.
    const release = this.d.hold?.(answer.changes.flatMap((c) => c.op === 'put' ? c.blobs : []))
    let r: Awaited<ReturnType<CommandSink['submit']>>
    let t1: number
    try {
      await this.fetchBlobs(p, from, answer.changes)
      t1 = Date.now()
      const originAt = answer.changes.reduce((m, c) => Math.max(m, c.at), 0)
      r = await this.d.sink.submit({ type: 'SiteApply', name: p.name, origin: p.site, changes: answer.changes, through: answer.through, originAt, at: Date.now() })
    } finally {
      release?.()
    }
    this.d.log.debug({ site: p.name, from: cursor.seq, through: answer.through, changes: answer.changes.length, blobBytes: this.state.bytesReceived - bytes0, blobsMs: t1 - t0, applyMs: Date.now() - t1 }, 'peering: batch applied')
    if (!r.ok) throw new Error(`applying changes ${cursor.seq + 1}–${answer.through} failed: ${r.message}`)
    const v = r.value as { applied: number; failed: number; superseded?: number; foreign?: number }
    this.state.cursor = answer.through
    this.state.batchBytesLeft = 0
    this.state.changesApplied += v.applied
    this.d.metrics.applied(this.name, v.applied)
    if ((v.superseded ?? 0) > 0) this.d.metrics.skipped?.(this.name, 'superseded', v.superseded!)
    if ((v.foreign ?? 0) > 0) this.d.metrics.skipped?.(this.name, 'foreign', v.foreign!)
    if (v.failed > 0) this.d.log.warn({ site: p.name, failed: v.failed }, 'peering: some changes could not be applied here (see flotilla site status)')
    return 'ok'
  }

  /** Ask the other site's members in turn, starting with the last that answered. */
  private async ask (p: PeeringRecord, req: PullRequest): Promise<{ answer: Extract<PullAnswer, { site: string }>; from: string }> {
    const check = (): void => { if (this.stopped) throw new Error('stopped') }
    const r = await askSite(this.d.host(), p, enc(req), { protocol: SITE_PROTOCOL, timeoutMs: WAIT_MS + 30_000, maxAnswerBytes: 64 * 1024 * 1024, start: this.preferred, check }, (bytes, peerId) => {
      const answer = dec<PullAnswer>(bytes)
      if ('error' in answer) throw new Error(`member ${peerId} refused (${answer.error.status}): ${answer.error.message}`)
      return answer
    })
    this.preferred = r.index
    return r
  }

  /**
   * Make every blob of the batch durable here before its manifest is proposed: a blob this
   * member lacks is streamed from the other site (verified against its digest into this
   * member's store), and recorded held; then wait for this site's write quorum of copies.
   */
  async fetchBlobs (p: PeeringRecord, from: string, changes: ShippedChange[]): Promise<void> {
    const need = new Map<string, { repo: string; size: number }>()
    for (const c of changes) if (c.op === 'put') for (const b of c.blobs) if (!need.has(b)) need.set(b, { repo: c.repo, size: c.sizes[b] ?? 0 })
    if (need.size === 0) return
    this.state.batchBytesLeft = [...need.values()].reduce((n, b) => n + b.size, 0)
    const members = new Set(this.d.memberIds())
    const one = async (digest: string, repo: string, size: number): Promise<void> => {
      const held = (await this.d.queries.holders(digest)).filter((h) => members.has(h))
      const local = await this.d.blobs.stat(parseDigest(digest))
      if (local !== undefined) {
        this.state.batchBytesLeft = Math.max(0, this.state.batchBytesLeft - size)
        if (!held.includes(this.d.selfId)) await this.recordHolder(digest, local.size)
        return
      }
      // Not here: fetch it from the other site even when a member here is recorded as holding it
      // (that may be the previous shipper, dead now), so that this site's copies never wait on
      // a member that cannot serve. The site's replication then copies it from this member.
      this.state.waitingFor[digest] = size
      try {
        const info = await this.download(p, from, repo, digest)
        await this.recordHolder(digest, info.size)
      } finally {
        delete this.state.waitingFor[digest]
      }
    }
    // Large blobs a few at once (bytes bound them); small ones more (round trips and commits
    // bound them: over a 50 ms RTT, 1,000 small images took 112 s four at a time).
    const pool = async (items: Array<[string, { repo: string; size: number }]>, n: number): Promise<void> => {
      await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
        for (let next = items.shift(); next !== undefined; next = items.shift()) await one(next[0], next[1].repo, next[1].size)
      }))
    }
    const all = [...need]
    await Promise.all([
      pool(all.filter(([, b]) => b.size >= LARGE_BLOB), FETCH_CONCURRENCY),
      pool(all.filter(([, b]) => b.size < LARGE_BLOB), SMALL_FETCH_CONCURRENCY),
    ])
    await this.d.waitForCopies([...need.keys()])
  }

  private async recordHolder (digest: string, size: number): Promise<void> {
    const r = await this.d.sink.submit({ type: 'AddHolder', digest, size, peerId: this.d.selfId })
    if (!r.ok) throw new Error(`recording blob ${digest} held here failed: ${r.message}`)
  }

  private async download (p: PeeringRecord, from: string, repo: string, digest: string): Promise<{ size: number }> {
    const order = [...p.members].sort((a, b) => (a.peerId === from ? -1 : b.peerId === from ? 1 : 0))
    let last: Error = new Error(`no member of site ${p.name} could send blob ${digest}`)
    const req = enc({ site: await this.d.siteId(), repo, digest })
    for (const m of order) {
      for (const a of m.addrs) {
        try {
          const answer = await requestStreamed(this.d.host(), multiaddr(`${a}/p2p/${m.peerId}`), SITE_BLOB_PROTOCOL, req, { idleTimeoutMs: 60_000, maxHeaderBytes: 64 * 1024 })
          const head = dec<BlobHeader>(answer.header)
          if ('error' in head) { answer.cancel(); throw new Error(`${head.error.status}: ${head.error.message}`) }
          // Exactly the announced size: the digest check then catches any difference in content.
          const frames = answer.body(head.size)
          const self = this
          const body = async function * (): AsyncGenerator<Uint8Array> {
            for await (const chunk of frames) {
              await self.d.throttle?.(p, chunk.byteLength)
              self.state.bytesReceived += chunk.byteLength
              self.state.batchBytesLeft = Math.max(0, self.state.batchBytesLeft - chunk.byteLength)
              self.d.metrics.bytes(p.name, chunk.byteLength)
              if (self.state.waitingFor[digest] !== undefined) self.state.waitingFor[digest] = Math.max(0, self.state.waitingFor[digest]! - chunk.byteLength)
              yield chunk
            }
          }
          const opts: { expected: Digest; expectedSize?: number } = { expected: parseDigest(digest) }
          if (head.size > 0) opts.expectedSize = head.size
          const info = await this.d.blobs.ingest(body(), opts)
          return { size: info.size }
        } catch (err) {
          last = new Error(`fetching blob ${digest} from ${m.peerId} at ${a}: ${(err as Error).message}`)
        }
      }
    }
    throw last
  }
}

function membersChanged (a: SiteMember[], b: SiteMember[]): boolean {
  if (!Array.isArray(b) || b.length === 0) return false
  const key = (ms: SiteMember[]): string => JSON.stringify([...ms].sort((x, y) => x.peerId.localeCompare(y.peerId)).map((m) => [m.peerId, m.addrs]))
  return key(a) !== key(b)
}
