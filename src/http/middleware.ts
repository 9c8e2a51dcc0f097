/**
 * Cross-cutting middleware: one log line per request, error rendering through the one
 * error table (OCI codes on /v2, the table's own codes elsewhere), and the headers every
 * registry response carries.
 */
import type { Context, Next } from 'koa'
import type { Logger } from 'pino'
import { randomUUID } from 'node:crypto'
import { ERRORS, FlotillaError, type ErrorCode } from '../../storage/errors.js'

/** One JSON line per request, written when the response has finished (or the client went away). */
export function requestLog (log: Logger) {
  return async function requestLogMiddleware (ctx: Context, next: Next): Promise<void> {
    const started = process.hrtime.bigint()
    const id = ctx.get('x-request-id') !== '' ? ctx.get('x-request-id').slice(0, 128) : randomUUID()
    ctx.state.requestId = id
    ctx.set('X-Request-Id', id)
    // Read now: a TLS socket forgets its peer's address once it has closed, before the line is written.
    const remote = ctx.ip
    let logged = false
    const done = (event: string): void => {
      if (logged) return
      logged = true
      const ms = Number(process.hrtime.bigint() - started) / 1e6
      const entry = {
        req: { id, method: ctx.method, url: ctx.originalUrl, remote, ua: ctx.get('user-agent') || undefined },
        res: { status: ctx.status, bytes: ctx.response.length },
        ms: Math.round(ms * 1000) / 1000,
        err: ctx.state.errorCode as string | undefined,
        event,
      }
      // A 503 is a state the node says it is in (not ready yet, no leader, upstream down), not a fault of its own.
      if (ctx.status === 503) log.warn(entry, 'request')
      else if (ctx.status >= 500) log.error(entry, 'request')
      else log.info(entry, 'request')
    }
    ctx.res.once('finish', () => done('finish'))
    ctx.res.once('close', () => done(ctx.res.writableFinished ? 'finish' : 'aborted'))
    await next()
  }
}

/** A path of the OCI Distribution API. */
function isV2 (path: string): boolean {
  return path === '/v2' || path.startsWith('/v2/')
}

export function renderError (ctx: Context, err: FlotillaError): void {
  ctx.status = err.status
  ctx.state.errorCode = err.code
  ctx.set('Content-Type', 'application/json')
  if (err.code === 'RANGE_NOT_SATISFIABLE' && typeof (err.detail as { size?: number } | undefined)?.size === 'number') {
    ctx.set('Content-Range', `bytes */${(err.detail as { size: number }).size}`)
  }
  // The OCI spec lists error codes for /v2 only: there, clients get those; every other route
  // (the admin and cluster APIs, /token, node to node) answers the error's own code, which says more.
  const entry: Record<string, unknown> = { code: isV2(ctx.path) ? err.ociCode : err.code, message: err.message }
  if (err.detail !== undefined) entry.detail = err.detail
  ctx.body = { errors: [entry] }
}

/**
 * Render every thrown error as `{"errors":[…]}`. Unknown errors are logged and become 500.
 * `challenge` sets the default WWW-Authenticate on a 401 whose thrower set none (a failed
 * login at the token endpoint, a refused join token): a 401 must always carry one (RFC 9110 §15.5.2).
 */
export function errors (log: Logger, challenge?: (ctx: Context) => void) {
  return async function errorMiddleware (ctx: Context, next: Next): Promise<void> {
    try {
      await next()
    } catch (err) {
      if (err instanceof FlotillaError) {
        if (err.status === 401 && !ctx.res.hasHeader('WWW-Authenticate')) challenge?.(ctx)
        return renderError(ctx, err)
      }
      const e = err as { status?: number; expose?: boolean; message?: string; code?: string }
      if (e.code === 'ECONNRESET' || e.code === 'ERR_STREAM_PREMATURE_CLOSE' || e.message === 'aborted') {
        // The client went away mid-request: nothing to answer.
        ctx.state.errorCode = 'CLIENT_ABORTED'
        ctx.status = 400
        return
      }
      if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
        const code: ErrorCode = e.status === 413 ? 'BODY_TOO_LARGE' : e.status === 404 ? 'NOT_FOUND' : 'BAD_REQUEST'
        renderError(ctx, new FlotillaError(code, e.expose === true && e.message !== undefined ? e.message : ERRORS[code].message))
        ctx.status = e.status
        return
      }
      log.error({ err, req: { id: ctx.state.requestId, method: ctx.method, url: ctx.originalUrl } }, 'unhandled error')
      renderError(ctx, new FlotillaError('INTERNAL', 'internal error: see the node log for request ' + String(ctx.state.requestId)))
    }
  }
}

export async function registryHeaders (ctx: Context, next: Next): Promise<void> {
  ctx.set('Docker-Distribution-API-Version', 'registry/2.0')
  await next()
}

/**
 * A request with two Host headers is refused (400): Node keeps the first and drops the other,
 * while a proxy in front may have routed by the second. Request smuggling starts there.
 */
export async function singleHost (ctx: Context, next: Next): Promise<void> {
  const raw = ctx.req.rawHeaders
  let hosts = 0
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') hosts++
  if (hosts > 1) throw new FlotillaError('BAD_REQUEST', 'the request has more than one Host header')
  await next()
}
