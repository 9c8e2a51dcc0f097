/**
 * The data directory's filesystem, watched against two watermarks. Above `highPercent` used,
 * the node is full: it takes no new upload (the cluster sends uploads to nodes with space), no
 * mirror of one, no replication copy; it keeps serving pulls. It is no longer full once back
 * under `lowPercent` (the gap keeps it from flapping at the line).
 */
import { statfs } from 'node:fs/promises'
import type { Logger } from 'pino'
import { Gauge } from 'prom-client'

export interface DiskState {
  totalBytes: number
  freeBytes: number
  usedPercent: number
  full: boolean
  /** When this was measured (ms). */
  at: number
}

export interface Watermarks { highPercent: number; lowPercent: number }

const EVERY_MS = 5_000

export class DiskWatch {
  private current: DiskState = { totalBytes: 0, freeBytes: 0, usedPercent: 0, full: false, at: 0 }
  private timer: NodeJS.Timeout | undefined
  private readonly metrics = {
    total: new Gauge({ name: 'flotilla_disk_total_bytes', help: 'Size of the filesystem holding the data directory', registers: [] }),
    used: new Gauge({ name: 'flotilla_disk_used_bytes', help: 'Bytes used on the filesystem holding the data directory', registers: [] }),
    free: new Gauge({ name: 'flotilla_disk_free_bytes', help: 'Bytes free (to unprivileged users) on the filesystem holding the data directory', registers: [] }),
    full: new Gauge({ name: 'flotilla_disk_full', help: '1 while this node is above its high watermark and takes no uploads', registers: [] }),
  }

  constructor (private readonly dir: string, private readonly marks: Watermarks, private readonly log: Logger) {}

  all (): Gauge[] { return Object.values(this.metrics) }

  state (): DiskState { return this.current }

  async start (): Promise<void> {
    await this.measure()
    this.timer = setInterval(() => { this.measure().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'disk: could not measure the data directory\'s filesystem')) }, EVERY_MS)
    this.timer.unref()
  }

  stop (): void { clearInterval(this.timer) }

  async measure (): Promise<DiskState> {
    const s = await statfs(this.dir)
    const total = s.blocks * s.bsize
    const free = s.bavail * s.bsize
    const usedPercent = total === 0 ? 0 : 100 * (total - free) / total
    const was = this.current.full
    const full = was ? usedPercent > this.marks.lowPercent : usedPercent > this.marks.highPercent
    this.current = { totalBytes: total, freeBytes: free, usedPercent, full, at: Date.now() }
    this.metrics.total.set(total)
    this.metrics.free.set(free)
    this.metrics.used.set(total - free)
    this.metrics.full.set(full ? 1 : 0)
    if (full && !was) this.log.error({ usedPercent: Math.round(usedPercent * 10) / 10, freeBytes: free, highWatermark: this.marks.highPercent }, `disk above the high watermark (${this.marks.highPercent}% used): this node takes no new uploads until it is under ${this.marks.lowPercent}%; free space or raise storage.diskHighWatermark`)
    if (!full && was) this.log.info({ usedPercent: Math.round(usedPercent * 10) / 10 }, 'disk back under the low watermark: this node takes uploads again')
    return this.current
  }
}
