/**
 * Fault injection for tests, mounted only when the node runs with FLOTILLA_FAULT_INJECTION=1
 * (otherwise these paths answer 404 like any unknown route of the admin API). Admin only.
 *
 *   GET    /api/v1/debug/partition                      {peers}: the peers this node is cut off from
 *   PUT    /api/v1/debug/partition {peers: [PEER-ID]}   cut this node off from exactly these peers
 *   DELETE /api/v1/debug/partition                      heal: cut off from none
 *
 * A cut is one-sided (this node's gater, HTTP checks and outbound requests, net/faults.ts):
 * to partition two nodes, cut each off from the other. The caller is checked against this
 * node's applied state, without a quorum round, so that a cut-off node can still be healed.
 */
import type { Context, Next } from 'koa'
import type { Logger } from 'pino'
import { z } from 'zod'
import type { Faults } from '../../net/faults.js'
import { FlotillaError } from '../../storage/errors.js'
import type { AuthService } from '../auth/service.js'
import { identifyAdmin } from '../auth/cluster-guard.js'
import { readLimited } from './manifests.js'

export const PARTITION_PATH = '/api/v1/debug/partition'

const PartitionRequest = z.object({ peers: z.array(z.string().min(10).max(200)).max(100) }).strict()

export function debugRoutes (opts: { faults: Faults; auth: AuthService; self: string; log: Logger }) {
  const { faults, auth } = opts
  return async function debug (ctx: Context, next: Next): Promise<void> {
    if (ctx.path.replace(/\/+$/, '') !== PARTITION_PATH) return await next()
    // Local: on a node cut off from the leader, a quorum round would never answer, and the heal must get through.
    await identifyAdmin(auth, ctx, { local: true, what: 'fault-injection routes' })
    if (ctx.method === 'PUT') {
      const raw = await readLimited(ctx.req, 64 * 1024)
      let doc: unknown
      try {
        doc = JSON.parse(raw.toString('utf8'))
      } catch {
        throw new FlotillaError('BAD_REQUEST', 'the request body is not valid JSON')
      }
      const r = PartitionRequest.safeParse(doc)
      if (!r.success) throw new FlotillaError('BAD_REQUEST', `invalid request: expected {"peers": [PEER-ID, …]} (${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')})`)
      if (r.data.peers.includes(opts.self)) throw new FlotillaError('BAD_REQUEST', 'a node cannot be cut off from itself')
      faults.set(r.data.peers)
      opts.log.warn({ peers: faults.list() }, 'fault injection: cut off from peers')
    } else if (ctx.method === 'DELETE') {
      faults.heal()
      opts.log.warn('fault injection: partition healed')
    } else if (ctx.method !== 'GET') {
      throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed on ${PARTITION_PATH}`)
    }
    ctx.body = { peers: faults.list() }
  }
}
