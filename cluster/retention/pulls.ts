/**
 * Last-pull times for "not pulled within D days", recorded cheaply: each node notes pulls in
 * memory and proposes them in one RecordPulls command per minute, and only the pulls of
 * manifests it has not recorded within the last hour (so a hot image costs one entry an hour
 * per node, not one per pull).
 */
import type { Logger } from 'pino'
import type { CommandSink } from '../metadata/applier.js'

const FLUSH_EVERY_MS = 60_000
const RESOLUTION_MS = 3_600_000
const BATCH = 500

export class PullRecorder {
  private readonly seen = new Map<string, { repo: string; digest: string; at: number }>()
  /** When each manifest's pull was last recorded by this node. */
  private readonly recorded = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly sink: CommandSink, private readonly log: Logger, private readonly resolutionMs = RESOLUTION_MS) {}

  record (repo: string, digest: string, at = Date.now()): void {
    const k = `${repo}@${digest}`
    if (at - (this.recorded.get(k) ?? -Infinity) < this.resolutionMs) return
    this.seen.set(k, { repo, digest, at })
  }

  start (): void {
    this.timer = setInterval(() => { this.flush().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'pull times not recorded; retried at the next flush')) }, FLUSH_EVERY_MS)
    this.timer.unref()
  }

  stop (): void { clearInterval(this.timer) }

  async flush (): Promise<number> {
    const pending = [...this.seen.entries()]
    let done = 0
    for (let i = 0; i < pending.length; i += BATCH) {
      const part = pending.slice(i, i + BATCH)
      const r = await this.sink.submit({ type: 'RecordPulls', pulls: part.map(([, p]) => p) })
      if (!r.ok) throw new Error(r.message)
      for (const [k, p] of part) {
        this.recorded.set(k, p.at)
        if (this.seen.get(k) === p) this.seen.delete(k)
      }
      done += part.length
    }
    // Forget what is older than the resolution: it would be recorded again anyway.
    const now = Date.now()
    for (const [k, at] of this.recorded) if (now - at >= this.resolutionMs) this.recorded.delete(k)
    return done
  }
}
