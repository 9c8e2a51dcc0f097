/**
 * Forwarding a request to another node and relaying its answer: upload sessions live on
 * the node that opened them, so a PATCH or PUT that a load balancer sent elsewhere is
 * passed to the owner, over its peer port (net/peer-https.ts).
 */
import type { Context } from 'koa'
import type { IncomingMessage } from 'node:http'
import { pipeline } from 'node:stream/promises'
import type { PeerClient, PeerTarget } from '../../net/peer-https.js'
import { FlotillaError } from '../../storage/errors.js'
import { FORWARDED, type Forwarding } from './forwarded.js'

const PASS_HEADERS = ['content-type', 'content-length', 'content-range', 'authorization', 'transfer-encoding', 'range', 'accept', 'user-agent']
const SKIP_RESPONSE = new Set(['connection', 'keep-alive', 'transfer-encoding'])

export async function proxyTo (ctx: Context, to: PeerTarget, forwarding: Forwarding, client: PeerClient): Promise<void> {
  if (await forwarding.marked(ctx.get(FORWARDED), ctx.method, ctx.path)) throw new FlotillaError('UNAVAILABLE', 'the request was already forwarded once: the cluster view is changing, retry')
  const target = new URL(ctx.originalUrl, to.url)
  const headers: Record<string, string> = { [FORWARDED]: await forwarding.mark(ctx.method, target.pathname) }
  for (const h of PASS_HEADERS) if (ctx.get(h) !== '') headers[h] = ctx.get(h)
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = client.request(to, { path: target.pathname + target.search, method: ctx.method, headers }, resolve)
    req.on('error', (err) => reject(new FlotillaError('UNAVAILABLE', `the node that owns this upload (${to.peerId} at ${to.url}) is unreachable: ${err.message}`)))
    pipeline(ctx.req, req).catch(reject)
  })
  ctx.status = res.statusCode ?? 502
  for (const [k, v] of Object.entries(res.headers)) {
    if (v === undefined || SKIP_RESPONSE.has(k)) continue
    const value = Array.isArray(v) ? v.join(', ') : v
    // The owner's challenge names its token endpoint at the address we reached it on (its peer
    // port, members only): point the client at ours instead.
    ctx.set(k, k === 'www-authenticate' ? value.split(target.origin).join(`${ctx.protocol}://${ctx.host}`) : value)
  }
  ctx.body = res
}
