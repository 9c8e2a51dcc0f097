/**
 * Webhook deliveries, sent by the leader only (hooks.ts explains the state). Every second (and
 * at once when a command queued something) it POSTs each delivery that is due, a few at a time
 * per hook and in order within one, then records the outcome through the log (HookResult). A
 * new leader picks up whatever is still queued; one that was in flight when the old leader died
 * is sent again, with the same delivery id.
 *
 *   POST <url>
 *   Content-Type: application/json
 *   Flotilla-Event: push
 *   Flotilla-Delivery: evt-42                   the same on every attempt: receivers drop duplicates
 *   Flotilla-Signature: sha256=<hex HMAC-SHA256 of the body with the hook's secret>
 *   {"id": "evt-42", "type": "push", "at": "…", "repo": "…", "digest": "…", "tags": […], …}
 *
 * A 2xx answer within 10 s is a delivery; anything else is a failed attempt.
 */
import { createHmac } from 'node:crypto'
import type { Logger } from 'pino'
import { Counter, Histogram } from 'prom-client'
import type { CommandSink } from '../metadata/applier.js'
import type { MetadataQueries } from '../metadata/queries.js'
import type { Delivery, Hook } from './hooks.js'
import type { FetchLike } from '../../net/trusted-fetch.js'

const TICK_MS = 1_000
const TIMEOUT_MS = 10_000

export function signature (secret: string, body: string): string {
  return 'sha256=' + createHmac('sha256', secret).update(body).digest('hex')
}

export interface DelivererOptions {
  queries: MetadataQueries
  sink: CommandSink
  isLeader: () => boolean
  log: Logger
  now?: () => number
  /** fetch() with the CAs of tls.trust (net/trusted-fetch.ts); the global fetch when absent. */
  fetch?: FetchLike
}

export class HookDeliverer {
  private timer: NodeJS.Timeout | undefined
  private running = false
  private again = false
  private readonly metrics = {
    attempts: new Counter({ name: 'flotilla_webhook_attempts_total', help: 'Webhook delivery attempts from this node, by outcome', labelNames: ['outcome'] as const, registers: [] }),
    latency: new Histogram({ name: 'flotilla_webhook_delivery_seconds', help: 'Time a webhook receiver took to answer', buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10], registers: [] }),
  }

  constructor (private readonly opts: DelivererOptions) {}

  all (): Array<Counter | Histogram> { return Object.values(this.metrics) }

  start (): void {
    this.timer = setInterval(() => { this.kick() }, TICK_MS)
    this.timer.unref()
  }

  stop (): void { clearInterval(this.timer) }

  /** Something may be due: look now (coalesced with a round under way). */
  kick (): void {
    if (this.running) { this.again = true; return }
    this.running = true
    void this.round().catch((err: unknown) => this.opts.log.warn({ err: (err as Error).message }, 'webhooks: a delivery round failed; the next one retries'))
      .finally(() => {
        this.running = false
        if (this.again) { this.again = false; this.kick() }
      })
  }

  private async round (): Promise<void> {
    if (!this.opts.isLeader()) return
    const now = (this.opts.now ?? Date.now)()
    const hooks = await this.opts.queries.hooks()
    await Promise.all(hooks.map(async (h) => {
      // In order within a hook: one at a time, oldest first, while they succeed.
      for (const d of await this.opts.queries.dueDeliveries(h.name, now, 20)) {
        if (!this.opts.isLeader()) return
        const ok = await this.deliver(h, d)
        if (!ok) return
      }
    }))
  }

  private async deliver (h: Hook, d: Delivery): Promise<boolean> {
    const body = JSON.stringify({ ...d.event, at: new Date(d.event.at).toISOString() })
    const t0 = Date.now()
    let status: number | undefined
    let error: string | undefined
    try {
      const res = await (this.opts.fetch ?? fetch)(h.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'flotilla-event': d.event.type, 'flotilla-delivery': d.event.id, 'flotilla-signature': signature(h.secret, body), 'user-agent': 'flotilla-webhook/1' },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(TIMEOUT_MS),
      })
      status = res.status
      await res.arrayBuffer().catch(() => {})
      if (status < 200 || status >= 300) error = `the receiver answered ${status}`
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause
      error = cause?.code ?? cause?.message ?? (err as Error).message
    }
    this.metrics.latency.observe((Date.now() - t0) / 1000)
    const ok = error === undefined
    this.metrics.attempts.inc({ outcome: ok ? 'delivered' : 'failed' })
    if (!ok) this.opts.log.info({ hook: h.name, delivery: d.event.id, attempt: d.attempts + 1, err: error }, 'webhook delivery failed; retried with backoff')
    const r = await this.opts.sink.submit({ type: 'HookResult', hook: h.name, seq: d.seq, ok, ...(status !== undefined ? { status } : {}), ...(error !== undefined ? { error } : {}), at: Date.now() })
    if (!r.ok) throw new Error(r.message)
    return ok
  }
}
