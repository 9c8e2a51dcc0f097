/**
 * Watches and webhooks: subscriptions to registry events, delivered at least once (once in
 * normal operation), even across leader changes, because the delivery state goes through the
 * log. The state machine turns each applied command into events (eventsOf) and queues one
 * delivery per matching subscription; the leader's deliverer (deliverer.ts) POSTs them and
 * records each outcome with a HookResult command, which either closes the delivery or schedules
 * the next attempt (backoff from the attempt count: deterministic on every node).
 *
 *   hook␀<name>                 → Hook                  {name, url, secret, events, repositories}
 *   hookseq                     → {seq}                 last event number
 *   hookq␀<name>␀<seq16>        → Delivery              queued: next attempt at `nextAt`
 *   hooklog␀<name>␀<seq16>      → DeliveryLog           done or given up (the last LOG_KEEP per hook)
 *
 * A delivery carries a unique id (`Flotilla-Delivery`), so that a receiver drops the duplicate a
 * crash between sending and recording can cause; the body is signed with HMAC-SHA256 of the
 * hook's secret (`Flotilla-Signature: sha256=<hex>`).
 */
import { FlotillaError } from '../../storage/errors.js'
import { isValidName, isValidPattern, matches } from '../access/model.js'
import type { TxLike } from '../access/apply.js'
import type { Command, CommandResult } from '../metadata/commands.js'

export const EVENT_TYPES = ['push', 'delete', 'promote', 'pull', 'immutable', 'quota', 'gc'] as const
export type EventType = typeof EVENT_TYPES[number]

export interface Hook { name: string; url: string; secret: string; events: EventType[]; repositories: string[] }

export interface HookEvent {
  id: string
  type: EventType
  at: number
  repo?: string
  digest?: string
  tags?: string[]
  tag?: string
  actor?: string
  /** For refusals (immutable, quota): what the log said. */
  message?: string
  detail?: Record<string, unknown>
}

export interface Delivery { seq: number; event: HookEvent; attempts: number; nextAt: number; lastError?: string; lastStatus?: number }
export interface DeliveryLog { seq: number; id: string; type: EventType; repo?: string; outcome: 'delivered' | 'failed'; attempts: number; at: number; lastStatus?: number; lastError?: string }

/** Attempts before a delivery is given up (and logged as failed). */
export const MAX_ATTEMPTS = 12
/** Delivery log entries kept per hook. */
const LOG_KEEP = 1000

const SEP = '\u0000'
export const hkey = {
  hook: (name: string): string => `hook${SEP}${name}`,
  hookPrefix: (): string => `hook${SEP}`,
  seq: (): string => 'hookseq',
  queued: (name: string, seq: number): string => `hookq${SEP}${name}${SEP}${String(seq).padStart(16, '0')}`,
  queuedPrefix: (name?: string): string => name === undefined ? `hookq${SEP}` : `hookq${SEP}${name}${SEP}`,
  log: (name: string, seq: number): string => `hooklog${SEP}${name}${SEP}${String(seq).padStart(16, '0')}`,
  logPrefix: (name: string): string => `hooklog${SEP}${name}${SEP}`,
}

/** Wait before attempt n+1 after n failed ones: 1 s, 2 s, 4 s … at most 5 minutes. */
export function backoffMs (attempts: number): number {
  return Math.min(300_000, 1000 * 2 ** Math.max(0, attempts - 1))
}

export function checkHook (h: Hook): void {
  const bad = (why: string): never => { throw new FlotillaError('BAD_REQUEST', `webhook: ${why}`) }
  if (typeof h.name !== 'string' || !isValidName(h.name)) bad('name must be letters, digits, ".", "_" or "-"')
  let url: URL | undefined
  try { url = new URL(h.url) } catch { bad(`url must be an http:// or https:// URL, not ${JSON.stringify(String(h.url).slice(0, 100))}`) }
  if (url!.protocol !== 'http:' && url!.protocol !== 'https:') bad('url must be http:// or https://')
  if (typeof h.secret !== 'string' || h.secret.length < 16 || h.secret.length > 256) bad('secret must be 16 to 256 characters (it signs every delivery)')
  if (!Array.isArray(h.events) || h.events.length === 0 || !h.events.every((e) => (EVENT_TYPES as readonly string[]).includes(e))) bad(`events must be one or more of ${EVENT_TYPES.join(', ')}`)
  if (!Array.isArray(h.repositories) || h.repositories.length === 0 || !h.repositories.every((r) => typeof r === 'string' && isValidPattern(r))) bad('repositories must be one or more repository patterns, e.g. "**"')
  for (const k of Object.keys(h)) if (!['name', 'url', 'secret', 'events', 'repositories'].includes(k)) bad(`unknown field ${JSON.stringify(k.slice(0, 40))}`)
}

type Draft = Omit<HookEvent, 'id' | 'at'>

/** The events a command makes, applied (ok) or refused (result). Pure. */
export function eventsOf (command: Command, result: CommandResult): Draft[] {
  const actor = command.type === 'Audited' ? command.actor.user : undefined
  const c = command.type === 'Audited' ? command.command : command
  const who = actor !== undefined ? { actor } : {}
  if (!result.ok) {
    const repo = (c as { repo?: unknown; to?: unknown }).repo ?? (c as { to?: unknown }).to
    const r = typeof repo === 'string' ? { repo } : {}
    if (result.code === 'TAG_IMMUTABLE') return [{ type: 'immutable', ...r, ...who, message: result.message, detail: { command: c.type } }]
    if (result.code === 'QUOTA_EXCEEDED') return [{ type: 'quota', ...r, ...who, message: result.message, detail: { command: c.type } }]
    return []
  }
  switch (c.type) {
    case 'PutManifest': return [{ type: 'push', repo: c.repo, digest: c.digest, tags: c.tags, ...who }]
    case 'DeleteManifest': return [{ type: 'delete', repo: c.repo, digest: c.digest, ...who }]
    case 'DeleteTag': return [{ type: 'delete', repo: c.repo, tag: c.tag, ...who }]
    case 'Promote': return [{ type: 'promote', repo: c.to, digest: c.digest, tags: c.tags, ...who, detail: { from: c.from, move: c.move } }]
    case 'RecordPulls': return c.pulls.map((p) => ({ type: 'pull' as const, repo: p.repo, digest: p.digest, detail: { lastPulledAt: p.at } }))
    case 'CollectGarbage': {
      const v = result.value as { blobs?: unknown[]; bytes?: number; unlinked?: unknown[] } | undefined
      if (v === undefined || (v.blobs?.length ?? 0) === 0) return []
      return [{ type: 'gc', detail: { blobs: v.blobs?.length ?? 0, bytes: v.bytes ?? 0, unlinked: v.unlinked?.length ?? 0 } }]
    }
    default: return []
  }
}

function wants (h: Hook, e: Draft): boolean {
  if (!h.events.includes(e.type)) return false
  // GC has no repository: it goes to every hook that asked for it.
  return e.repo === undefined || h.repositories.some((p) => matches(p, e.repo!))
}

/** Queue a delivery of each event of this command to each hook that wants it. */
export async function queueEvents (tx: TxLike, command: Command, result: CommandResult, at: number): Promise<void> {
  const drafts = eventsOf(command, result)
  if (drafts.length === 0) return
  const hooks: Hook[] = []
  for (const k of await tx.keys(hkey.hookPrefix())) { const h = await tx.getJSON<Hook>(k); if (h !== undefined) hooks.push(h) }
  if (hooks.length === 0) return
  let seq = (await tx.getJSON<{ seq: number }>(hkey.seq()))?.seq ?? 0
  for (const d of drafts) {
    const targets = hooks.filter((h) => wants(h, d))
    if (targets.length === 0) continue
    seq++
    const event: HookEvent = { id: `evt-${seq}`, at, ...d }
    for (const h of targets) tx.putJSON(hkey.queued(h.name, seq), { seq, event, attempts: 0, nextAt: at } satisfies Delivery)
  }
  tx.putJSON(hkey.seq(), { seq })
}

/** Record an attempt's outcome: delivered, or the next attempt scheduled, or given up. */
export async function recordResult (tx: TxLike, r: { hook: string; seq: number; ok: boolean; status?: number; error?: string; at: number }): Promise<void> {
  const k = hkey.queued(r.hook, r.seq)
  const d = await tx.getJSON<Delivery>(k)
  // Already closed (a duplicate result after a leader change): nothing to do.
  if (d === undefined) return
  const attempts = d.attempts + 1
  const status = r.status !== undefined ? { lastStatus: r.status } : {}
  if (r.ok || attempts >= MAX_ATTEMPTS) {
    tx.del(k)
    const log: DeliveryLog = { seq: d.seq, id: d.event.id, type: d.event.type, ...(d.event.repo !== undefined ? { repo: d.event.repo } : {}), outcome: r.ok ? 'delivered' : 'failed', attempts, at: r.at, ...status, ...(r.error !== undefined ? { lastError: r.error.slice(0, 300) } : {}) }
    tx.putJSON(hkey.log(r.hook, d.seq), log)
    const logs = await tx.keys(hkey.logPrefix(r.hook))
    for (const old of logs.slice(0, Math.max(0, logs.length - LOG_KEEP))) tx.del(old)
    return
  }
  tx.putJSON(k, { ...d, attempts, nextAt: r.at + backoffMs(attempts), ...status, ...(r.error !== undefined ? { lastError: r.error.slice(0, 300) } : {}) } satisfies Delivery)
}

export async function putHook (tx: TxLike, h: Hook): Promise<void> {
  checkHook(h)
  tx.putJSON(hkey.hook(h.name), h)
}

export async function deleteHook (tx: TxLike, name: string): Promise<void> {
  if (await tx.get(hkey.hook(name)) === undefined) throw new FlotillaError('NOT_FOUND', `no webhook named ${name}`)
  tx.del(hkey.hook(name))
  for (const k of await tx.keys(hkey.queuedPrefix(name))) tx.del(k)
  for (const k of await tx.keys(hkey.logPrefix(name))) tx.del(k)
}
