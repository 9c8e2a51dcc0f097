/**
 * SHA-1 and MD5 of every blob, computed once per cluster and off the request path.
 *
 * The node that committed a blob (an upload: LinkBlob names it the holder) hashes the file
 * right after the commit, from the page cache, in a worker thread (hasher.ts); results are
 * proposed in one RecordChecksums command per flush (every 250 ms at most), so a burst of
 * pushes adds one log entry per flush, not one per blob. Every other node learns them from the
 * log. A mount or an in-cluster copy (AddHolder) already has them; a blob that arrives here
 * some other way (another site's, fetched by this node) is checked after a delay and hashed if
 * nobody recorded its sums by then. At start, and then every `backfillIntervalMs`, blobs with
 * no sums (older data) are hashed in the background, paced to `backfillBytesPerSecond`: each
 * by its first recorded holder at once, by any other holder of it on the next round.
 *
 * Hashing yields to uploads: while this node receives blob bytes (`WriteActivity`), a queued
 * blob waits, at most `maxYieldMs` (default 5 s), so a burst of pushes keeps the CPU (2 cores
 * here: the hashing of 4 × 128 MiB pushes slowed them to 0.67x) and its sums follow it.
 *
 * Metrics: flotilla_checksum_backlog, flotilla_checksums_computed_total{why},
 * flotilla_checksum_bytes_hashed_total.
 */
import type { Logger } from 'pino'
import { Counter, Gauge } from 'prom-client'
import type { KV } from '../../storage/kv/kv.js'
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import type { Digest } from '../../storage/reference.js'
import type { Command } from '../metadata/commands.js'
import type { CommandSink } from '../metadata/applier.js'
import { blobsWithoutChecksums, checksumsOf, MAX_SUMS_PER_COMMAND } from '../metadata/properties.js'
import { HashError, HashPool, hashStream, type FileSums } from './hasher.js'
import { MetadataQueries } from '../metadata/queries.js'

export interface ChecksumServiceOptions {
  kv: KV
  blobs: BlobStore & { pathOf?: (d: Digest) => string }
  sink: CommandSink
  peerId: string
  log: Logger
  /** Worker threads hashing at once. */
  workers: number
  /** The longest a computed pair waits before it is proposed (ms). */
  flushMs?: number
  /** A blob some other node may hash is looked at after this long (ms). */
  deferMs?: number
  /** Backfill pace (bytes/s of hashing), and how often it looks for blobs with no sums (ms; 0: only at start). */
  backfillBytesPerSecond: number
  backfillIntervalMs?: number
  /** Uploads to yield to, and for how long at most (ms) a queued blob waits for them. */
  activity?: WriteActivity
  maxYieldMs?: number
}

type Why = 'commit' | 'arrival' | 'backfill'

/** Requests writing blob bytes on this node, right now and a moment ago (src/http/app.ts counts them). */
export class WriteActivity {
  private n = 0
  private last = 0
  begin (): void { this.n++ }
  end (): void { this.n = Math.max(0, this.n - 1); this.last = Date.now() }
  /** A write is under way, or one ended within `quietMs` (pushes come in bursts of requests). */
  busy (quietMs = 250): boolean { return this.n > 0 || Date.now() - this.last < quietMs }
}

export class ChecksumService {
  private readonly pool: HashPool
  private readonly queries: MetadataQueries
  /** Digests to hash, with why and since when. */
  private readonly queue = new Map<string, { why: Why; at: number }>()
  private yieldTimer: NodeJS.Timeout | undefined
  private running = 0
  /** Computed and not yet recorded. */
  private readonly results = new Map<string, { sha1: string; md5: string }>()
  private flushTimer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined
  private readonly deferred = new Set<NodeJS.Timeout>()
  private backfillTimer: NodeJS.Timeout | undefined
  private backfilling: Promise<void> | undefined
  /** Blobs a backfill round skipped (another holder goes first): taken on the next round. */
  private readonly skipped = new Set<string>()
  private stopped = false
  private readonly flushMs: number
  private readonly deferMs: number

  readonly computed = new Counter({ name: 'flotilla_checksums_computed_total', help: 'Blobs whose SHA-1 and MD5 this node computed, by why: commit (an upload committed here), arrival (came from elsewhere, nobody had them), backfill (older data)', labelNames: ['why'] as const, registers: [] })
  readonly bytesHashed = new Counter({ name: 'flotilla_checksum_bytes_hashed_total', help: 'Blob bytes this node read to compute SHA-1 and MD5', registers: [] })
  readonly backlogGauge = new Gauge({ name: 'flotilla_checksum_backlog', help: 'Blobs waiting for this node to hash them or to record their checksums', registers: [], collect: () => { this.backlogGauge.set(this.backlog()) } })

  constructor (private readonly opts: ChecksumServiceOptions) {
    this.pool = new HashPool(opts.workers)
    this.queries = new MetadataQueries(opts.kv)
    this.flushMs = opts.flushMs ?? 250
    this.deferMs = opts.deferMs ?? 10_000
    for (const why of ['commit', 'arrival', 'backfill'] as const) this.computed.inc({ why }, 0)
  }

  metrics (): Array<Counter | Gauge> { return [this.computed, this.bytesHashed, this.backlogGauge] }

  backlog (): number { return this.queue.size + this.running + this.results.size }

  start (): void {
    const every = this.opts.backfillIntervalMs ?? 600_000
    const round = (): void => { this.backfilling ??= this.backfill().then(() => {}, (err: unknown) => this.opts.log.warn({ err: (err as Error).message }, 'checksum backfill stopped; it runs again later')).finally(() => { this.backfilling = undefined }) }
    // The first round a little after start: the node has its log to catch up on first.
    const first = setTimeout(round, Math.min(5_000, this.deferMs))
    first.unref()
    this.deferred.add(first)
    if (every > 0) { this.backfillTimer = setInterval(round, every); this.backfillTimer.unref() }
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearInterval(this.backfillTimer)
    for (const t of this.deferred) clearTimeout(t)
    clearTimeout(this.flushTimer)
    clearTimeout(this.yieldTimer)
    await this.pool.close()
    await this.backfilling?.catch(() => {})
    await this.flush().catch(() => {})
  }

  /** A command this node applied: hash what this node committed, look again later at what arrived. */
  onApplied (c: Command): void {
    if (this.stopped) return
    if (c.type === 'LinkBlob' && c.holder === this.opts.peerId && c.mount !== true) this.enqueue(c.digest, 'commit')
    else if (c.type === 'AddHolder' && c.peerId === this.opts.peerId) {
      const t = setTimeout(() => { this.deferred.delete(t); this.enqueue(c.digest, 'arrival') }, this.deferMs)
      t.unref()
      this.deferred.add(t)
    }
  }

  private enqueue (digest: string, why: Why): void {
    if (this.stopped || this.queue.has(digest) || this.results.has(digest)) return
    this.queue.set(digest, { why, at: Date.now() })
    this.pump()
  }

  private pump (): void {
    while (this.running < this.pool.size && this.queue.size > 0) {
      const [digest, { why, at }] = this.queue.entries().next().value as [string, { why: Why; at: number }]
      if (this.opts.activity?.busy() === true && Date.now() - at < (this.opts.maxYieldMs ?? 5_000)) {
        // Uploads under way: look again shortly (the oldest waits at most maxYieldMs).
        if (this.yieldTimer === undefined && !this.stopped) {
          this.yieldTimer = setTimeout(() => { this.yieldTimer = undefined; this.pump() }, 100)
          this.yieldTimer.unref()
        }
        return
      }
      this.queue.delete(digest)
      this.running++
      this.one(digest, why).catch((err: unknown) => {
        this.opts.log.warn({ digest, err: (err as Error).message }, 'checksums of a blob not computed; the backfill tries again')
      }).finally(() => { this.running--; this.pump() })
    }
  }

  /** Hash one blob unless its sums are known or it is not here; answers the bytes read. */
  private async one (digest: string, why: Why): Promise<number> {
    if (await checksumsOf(this.opts.kv, digest) !== undefined) return 0
    const sums = await this.hash(digest as Digest)
    if (sums === undefined) return 0
    this.computed.inc({ why })
    this.bytesHashed.inc(sums.size)
    this.results.set(digest, { sha1: sums.sha1, md5: sums.md5 })
    if (this.flushTimer === undefined) {
      this.flushTimer = setTimeout(() => { this.flushTimer = undefined; void this.flushSoon() }, this.flushMs)
      this.flushTimer.unref()
    }
    return sums.size
  }

  private async hash (digest: Digest): Promise<FileSums | undefined> {
    try {
      if (this.opts.blobs.pathOf !== undefined) return await this.pool.hashFile(this.opts.blobs.pathOf(digest))
      if (await this.opts.blobs.stat(digest) === undefined) return undefined
      return await hashStream(await this.opts.blobs.read(digest))
    } catch (err) {
      // Not here (collected, or never copied to this node): some holder of it does it.
      if (err instanceof HashError && err.code === 'ENOENT') return undefined
      throw err
    }
  }

  private async flushSoon (): Promise<void> {
    try {
      await this.flush()
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message, pending: this.results.size }, 'checksums not recorded yet; retrying')
      if (!this.stopped) { this.flushTimer ??= setTimeout(() => { this.flushTimer = undefined; void this.flushSoon() }, 1_000); this.flushTimer.unref() }
    }
  }

  /** Propose what is computed, in batches. */
  async flush (): Promise<void> {
    while (this.flushing !== undefined) await this.flushing
    if (this.results.size === 0) return
    this.flushing = (async () => {
      const all = [...this.results.entries()]
      for (let i = 0; i < all.length; i += MAX_SUMS_PER_COMMAND) {
        const part = all.slice(i, i + MAX_SUMS_PER_COMMAND)
        const r = await this.opts.sink.submit({ type: 'RecordChecksums', sums: part.map(([digest, s]) => ({ digest, sha1: s.sha1, md5: s.md5 })) })
        if (!r.ok) throw new Error(r.message)
        for (const [d] of part) this.results.delete(d)
      }
    })()
    try { await this.flushing } finally { this.flushing = undefined }
  }

  /** One pass over the blobs with no sums: hash those held here, paced. */
  async backfill (): Promise<number> {
    let n = 0
    const seen = new Set<string>()
    for await (const { digest } of blobsWithoutChecksums(this.opts.kv)) {
      if (this.stopped) break
      seen.add(digest)
      const holders = (await this.queries.holders(digest)).sort()
      if (!holders.includes(this.opts.peerId)) continue
      // The first holder goes first; the others only if it has not done it by the next round.
      if (holders[0] !== this.opts.peerId && !this.skipped.has(digest)) { this.skipped.add(digest); continue }
      this.skipped.delete(digest)
      if (this.queue.has(digest) || this.results.has(digest)) continue
      this.running++
      let bytes = 0
      try {
        bytes = await this.one(digest, 'backfill')
        if (bytes > 0) n++
      } finally { this.running-- }
      if (bytes > 0 && this.opts.backfillBytesPerSecond > 0) await sleep(bytes / this.opts.backfillBytesPerSecond * 1000)
    }
    for (const d of this.skipped) if (!seen.has(d)) this.skipped.delete(d)
    if (n > 0) this.opts.log.info({ blobs: n }, 'checksums backfilled')
    return n
  }
}

async function sleep (ms: number): Promise<void> {
  await new Promise<void>((resolve) => { const t = setTimeout(resolve, ms); t.unref() })
}
