/**
 * Online garbage collection, cluster-wide. The metadata decides, through the log, what is
 * garbage (cluster/metadata/refs.ts); every node then deletes the bytes the metadata no longer
 * knows. One run:
 *
 *   1. the reference counts exist (RebuildRefs once, on a store that predates them);
 *   2. every reachable member says what it is using now (keep): blobs placed and not yet
 *      recorded (an upload, a mirror, a copy: BlobStore.fresh) and blobs held by a request
 *      under way (a manifest PUT, a mount: InUse);
 *   3. CollectGarbage commits: links unreferenced for longer than the grace are removed, and
 *      blobs no repository links are forgotten (holders included);
 *   4. every member sweeps: once its state has caught up (barrier), each blob in its store that
 *      the metadata does not know is collected, unless it is fresh (BlobStore.collect).
 *
 * A member that is down sweeps when it comes back (at start, after catching up). A manifest PUT
 * that races the collection either commits first (its blobs are referenced, so kept) or is
 * refused with MANIFEST_BLOB_UNKNOWN by the state machine; it never points at a lost blob.
 */
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import type { Digest } from '../../storage/reference.js'
import { FlotillaError } from '../../storage/errors.js'
import type { CommandSink } from '../metadata/applier.js'
import type { Command, CommandResult } from '../metadata/commands.js'
import type { MetadataQueries } from '../metadata/queries.js'
import type { CollectResult } from '../metadata/refs.js'

/** Links and blobs one CollectGarbage command handles at most. */
export const COLLECT_BATCH = 500
/**
 * After each batch the collector rests REST_FACTOR times as long as the batch took, and the
 * sweep after each SWEEP_SLICE files: GC takes at most about a third of the state machine's
 * time (and of a core), so pushes keep going at 0.8x or more of their speed while it runs
 * (bench:gc; resting only as long as the work, pushes ran at 0.74x).
 */
const SWEEP_SLICE = 200
const REST_FACTOR = 2

/** Digests held by requests under way on this node (a manifest PUT's blobs, a mount). */
export class InUse {
  private readonly held = new Map<string, number>()

  /** Hold `digests` until the returned function is called. */
  hold (digests: Iterable<string>): () => void {
    const ds = [...new Set(digests)]
    for (const d of ds) this.held.set(d, (this.held.get(d) ?? 0) + 1)
    let done = false
    return () => {
      if (done) return
      done = true
      for (const d of ds) {
        const n = (this.held.get(d) ?? 1) - 1
        if (n <= 0) this.held.delete(d); else this.held.set(d, n)
      }
    }
  }

  list (): string[] { return [...this.held.keys()] }
}

export interface SweepResult {
  deleted: number
  bytes: number
  /** Of those, copies kept outside their blob's placement (still held by its placement). */
  copies?: number
}

export interface NodeSweep extends SweepResult { peerId: string; ok: boolean; error?: string }

export interface GcReport {
  dryRun: boolean
  graceMs: number
  /** Unreferenced since before this time (ms) counts as garbage. */
  before: number
  /** Links removed (or that would be). */
  unlinked: number
  /** Blobs forgotten (or that would be), with their bytes: each is freed on every node holding it. */
  blobs: Array<{ digest: string; size: number }>
  bytes: number
  /** Digests left alone because something was using them (an upload, a mirror, a request)… */
  kept: number
  /** … the first 1,000 of them. */
  keptDigests: string[]
  /** What each member deleted from its disk (not in a dry run). */
  nodes: NodeSweep[]
  /** Members that did not answer: they sweep when they come back. */
  pending: string[]
  /** How long the collection's commands took (ms, rests included), and then the sweeps on every node. */
  collectMs?: number
  sweepMs?: number
}

export interface MemberLink {
  /** Members other than this node. */
  others (): string[]
  /** A member's answer to a signed internal call (JSON), or an error. */
  call (peerId: string, method: 'GET' | 'POST', path: string): Promise<unknown>
}

export interface CollectorOptions {
  peerId: string
  blobs: BlobStore
  queries: MetadataQueries
  sink: CommandSink
  /** A command's effect on the current state, written nowhere (MetadataStateMachine.preview). */
  preview: (command: Command) => Promise<CommandResult>
  inUse: InUse
  members: MemberLink
  log: Logger
  now?: () => number
  /**
   * Whether this node's copy of a recorded blob is an extra one it may drop: kept outside the
   * blob's placement (a fetch-through copy), every member of the placement holds the blob, and
   * nobody has read the copy here for a while. Without it, no copy is dropped.
   */
  extraCopy?: (digest: string) => Promise<boolean>
}

/** Yield REST_FACTOR times `ms`, the time the work just done took (at most 2 s). */
async function rest (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(ms * REST_FACTOR, 1), 2000)))
}

export class Collector {
  private readonly now: () => number
  private running: Promise<GcReport> | undefined
  private sweeping: Promise<SweepResult> | undefined
  private readonly metrics

  constructor (private readonly opts: CollectorOptions) {
    this.now = opts.now ?? Date.now
    const registers: Registry[] = []
    this.metrics = {
      runs: new Counter({ name: 'flotilla_gc_runs_total', help: 'Garbage collections run from this node, by outcome', labelNames: ['outcome'] as const, registers }),
      blobs: new Counter({ name: 'flotilla_gc_blobs_forgotten_total', help: 'Blobs the metadata forgot in collections run from this node', registers }),
      deleted: new Counter({ name: 'flotilla_gc_blobs_deleted_total', help: 'Blob files this node deleted in sweeps', registers }),
      freed: new Counter({ name: 'flotilla_gc_bytes_freed_total', help: 'Bytes this node freed in sweeps', registers }),
      copies: new Counter({ name: 'flotilla_gc_copies_dropped_total', help: 'Copies kept outside their blob\'s placement (fetch-through) this node dropped in sweeps', registers }),
      last: new Gauge({ name: 'flotilla_gc_last_sweep_timestamp_seconds', help: 'When this node last finished a sweep', registers }),
    }
  }

  /** Every metric here, to register with the node's registry. */
  all (): Array<Counter | Gauge> { return Object.values(this.metrics) }

  /** What this node is using now: the collection leaves these digests alone. */
  inUse (): string[] {
    return [...new Set([...this.opts.blobs.fresh(), ...this.opts.inUse.list()])]
  }

  /** One collection (runs one at a time: a second caller shares the run under way). */
  async run (opts: { graceMs: number; dryRun?: boolean }): Promise<GcReport> {
    if (this.running !== undefined) return await this.running
    this.running = this.collect(opts)
    try {
      const report = await this.running
      this.metrics.runs.inc({ outcome: opts.dryRun === true ? 'dry-run' : 'ok' })
      return report
    } catch (err) {
      this.metrics.runs.inc({ outcome: 'failed' })
      throw err
    } finally {
      this.running = undefined
    }
  }

  private async collect ({ graceMs, dryRun = false }: { graceMs: number; dryRun?: boolean }): Promise<GcReport> {
    const { sink, queries, members, log } = this.opts
    await sink.barrier()
    if (!await queries.refsReady()) {
      log.info('building garbage collection reference counts (once)')
      const r = await sink.submit({ type: 'RebuildRefs', at: this.now() })
      if (!r.ok) throw new FlotillaError(r.code, r.message)
    }
    const keep = new Set(this.inUse())
    const pending: string[] = []
    await Promise.all(members.others().map(async (p) => {
      try {
        const ans = await members.call(p, 'GET', '/internal/v1/gc/in-use') as { digests?: unknown }
        if (!Array.isArray(ans.digests)) throw new Error('malformed answer')
        for (const d of ans.digests) if (typeof d === 'string') keep.add(d)
      } catch (err) {
        // Its uploads under way cannot be known: they are protected anyway by the state
        // machine (a manifest refused, not dangling) and by its own fresh marks at its sweep.
        log.warn({ peer: p, err: (err as Error).message }, 'gc: a member did not say what it is using')
        pending.push(p)
      }
    }))
    const at = this.now()
    const before = at - graceMs
    const report: GcReport = { dryRun, graceMs, before, unlinked: 0, blobs: [], bytes: 0, kept: keep.size, keptDigests: [...keep].sort().slice(0, 1000), nodes: [], pending }
    if (dryRun) {
      const res = await this.opts.preview({ type: 'CollectGarbage', before, keep: [...keep].sort(), at })
      if (!res.ok) throw new FlotillaError(res.code, res.message)
      const value = res.value as CollectResult
      return { ...report, unlinked: value.unlinked.length, blobs: value.blobs, bytes: value.bytes }
    }
    // In batches, so that pushes keep committing between them.
    const collectStart = Date.now()
    for (;;) {
      const t0 = Date.now()
      const res = await sink.submit({ type: 'CollectGarbage', before, keep: [...keep].sort(), limit: COLLECT_BATCH, at })
      if (!res.ok) throw new FlotillaError(res.code, res.message)
      const value = res.value as CollectResult
      report.unlinked += value.unlinked.length
      report.blobs.push(...value.blobs)
      report.bytes += value.bytes
      if (!value.more) break
      await rest(Date.now() - t0)
    }
    const value = report
    report.collectMs = Date.now() - collectStart
    this.metrics.blobs.inc(value.blobs.length)
    log.info({ unlinked: report.unlinked, blobs: value.blobs.length, bytes: value.bytes, graceMs, ms: report.collectMs }, 'gc: collection committed')
    const sweepStart = Date.now()
    const sweeps = await Promise.all([
      this.sweep().then((r): NodeSweep => ({ peerId: this.opts.peerId, ok: true, ...r })),
      ...members.others().filter((p) => !pending.includes(p)).map(async (p): Promise<NodeSweep> => {
        try {
          const ans = await members.call(p, 'POST', '/internal/v1/gc/sweep') as Partial<SweepResult>
          return { peerId: p, ok: true, deleted: Number(ans.deleted ?? 0), bytes: Number(ans.bytes ?? 0), copies: Number(ans.copies ?? 0) }
        } catch (err) {
          return { peerId: p, ok: false, deleted: 0, bytes: 0, error: (err as Error).message }
        }
      }),
    ])
    report.nodes = sweeps
    report.sweepMs = Date.now() - sweepStart
    for (const s of sweeps) if (!s.ok) report.pending.push(s.peerId)
    return report
  }

  /**
   * Drop this node's copy of a recorded blob when it is an extra one (extraCopy): first the
   * holder record, through the log (so no member sends readers here any more; refused if it
   * were the last holder), then the file. A reader already streaming from the file keeps its
   * open handle; one that comes after is served through a holder.
   */
  private async dropCopy (digest: string, held: Set<string>): Promise<boolean> {
    if (this.opts.extraCopy === undefined || held.has(digest)) return false
    if (!await this.opts.extraCopy(digest)) return false
    // Not recorded as a holder (dropped by an earlier sweep that could not delete the file)
    // goes on to the delete too: a copy on its way into the metadata is fresh, and stays.
    const r = await this.opts.sink.submit({ type: 'DropHolder', digest, peerId: this.opts.peerId })
    if (!r.ok) return false
    if (!await this.opts.blobs.collect(digest as Digest)) return false
    this.opts.log.debug({ digest }, 'gc: copy kept outside the placement dropped')
    return true
  }

  /**
   * Delete this node's blob files the metadata no longer knows (unless fresh). Waits until
   * this node's state reflects every command committed before the call. One at a time.
   */
  async sweep (): Promise<SweepResult> {
    if (this.sweeping !== undefined) return await this.sweeping
    this.sweeping = (async () => {
      await this.opts.sink.barrier()
      // Without the counts no collection has run: nothing was forgotten, nothing to delete.
      if (!await this.opts.queries.refsReady()) return { deleted: 0, bytes: 0 }
      let deleted = 0
      let bytes = 0
      let copies = 0
      const held = new Set(this.opts.inUse.list())
      // A slice at a time: one metadata read for the slice, its deletes side by side, then a
      // rest (a get and an unlink per file, one after another, ran at ~130 files/s on a
      // loaded machine: longer than the pushes that made the garbage).
      const slice = async (infos: Array<{ digest: Digest; size: number }>): Promise<void> => {
        const started = Date.now()
        const recorded = await this.opts.queries.blobsRecorded(infos.map((i) => i.digest))
        await Promise.all(infos.filter((i) => !recorded.has(i.digest)).map(async (info) => {
          if (await this.opts.blobs.collect(info.digest)) {
            deleted++
            bytes += info.size
            this.opts.log.debug({ digest: info.digest, size: info.size }, 'gc: blob deleted')
          }
        }))
        // Copies outside the placement go one by one: each is a command through the log.
        for (const info of infos) {
          if (!recorded.has(info.digest) || !await this.dropCopy(info.digest, held)) continue
          deleted++
          copies++
          bytes += info.size
        }
        await rest(Date.now() - started)
      }
      let infos: Array<{ digest: Digest; size: number }> = []
      for await (const info of this.opts.blobs.list()) {
        infos.push(info)
        if (infos.length >= SWEEP_SLICE) { await slice(infos); infos = [] }
      }
      await slice(infos)
      this.metrics.deleted.inc(deleted)
      this.metrics.freed.inc(bytes)
      this.metrics.copies.inc(copies)
      this.metrics.last.set(this.now() / 1000)
      if (deleted > 0) this.opts.log.info({ deleted, bytes, copies }, 'gc: swept blobs the metadata no longer knows, and copies kept outside their placement')
      return { deleted, bytes, copies }
    })()
    try {
      return await this.sweeping
    } finally {
      this.sweeping = undefined
    }
  }
}
