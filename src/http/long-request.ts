/**
 * Requests that work for minutes before the first byte of their answer (a garbage collection of
 * a large store, a retention run, a member's sweep). The servers destroy a socket idle for
 * SOCKET_IDLE_MS (a client that stops sending mid-body must not pin one forever); such a request
 * is not idle, so its socket waits as long as it works, and idles out as usual afterwards.
 */
import type { Context } from 'koa'

export const SOCKET_IDLE_MS = 120_000

export function longRequest (ctx: Pick<Context, 'req' | 'res'>): void {
  const s = ctx.req.socket
  s.setTimeout(0)
  ctx.res.once('close', () => { if (!s.destroyed) s.setTimeout(SOCKET_IDLE_MS) })
}
