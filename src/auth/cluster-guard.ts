/**
 * Access to the cluster API (/api/v1/cluster, src/http/cluster-api.ts):
 *
 *   POST /api/v1/cluster/join     open: the joining node proves itself with a join token
 *   GET  /api/v1/cluster          administrators: status (members, addresses, roles, indexes),
 *                                 checked against this node's own state, so that it answers on a
 *                                 node cut off from the leader too (where it matters most)
 *   everything else               administrators (join tokens, leave, member removal)
 *
 * Load balancers and orchestrators probe /healthz and /readyz, which are open.
 *
 * Runs before the cluster routes, so they need no checks of their own.
 */
import type { Context, Next } from 'koa'
import { FlotillaError } from '../../storage/errors.js'
import { requestActor } from './context.js'
import type { AuthService } from './service.js'
import type { Identity } from './identity.js'

const PREFIX = '/api/v1/cluster'

export function clusterApiGuard (auth: AuthService) {
  return async function clusterGuard (ctx: Context, next: Next): Promise<void> {
    const path = ctx.path.replace(/\/+$/, '')
    if (path !== PREFIX && !path.startsWith(PREFIX + '/')) return await next()
    if (path === `${PREFIX}/join` && ctx.method === 'POST') return await next()
    const status = path === PREFIX && (ctx.method === 'GET' || ctx.method === 'HEAD')
    const id = await identifyAdmin(auth, ctx, { local: status, what: status ? 'the cluster status' : 'cluster changes' })
    ctx.state.identity = id
    await requestActor.run(auth.actorOf(ctx, id), next)
  }
}

/**
 * The caller, who must be an administrator: 401 with a challenge when anonymous, 403 (audited)
 * otherwise. `local` checks against this node's applied state, without a quorum round, for
 * routes that must answer on a node cut off from the leader.
 */
export async function identifyAdmin (auth: AuthService, ctx: Context, opts: { local?: boolean; what: string }): Promise<Identity> {
  const id = await auth.identify(ctx, undefined, { local: opts.local === true })
  if (id.anonymous) {
    auth.challenge(ctx)
    throw new FlotillaError('UNAUTHORIZED', 'authentication required: sign in with Basic credentials or an access token')
  }
  if (!id.admin) {
    const audit = auth.auditRefusal(auth.actorOf(ctx, id), 'denied', 'denied', 'DENIED', undefined, { need: 'administrator rights' })
    // The audit entry goes through the log: a node cut off from the leader answers without waiting for it.
    if (opts.local === true) void audit.catch(() => {})
    else await audit
    throw new FlotillaError('DENIED', `requested access to the resource is denied: ${opts.what} are for administrators only`)
  }
  return id
}
