/**
 * Authorization of the OCI API (/v2/…), as middleware in front of the dispatcher. Every
 * route needs an action on its repository:
 *
 *   GET/HEAD blobs, manifests; tags/list; referrers           read
 *   POST/PATCH/PUT/GET/DELETE blobs/uploads/…; PUT manifests   write (or annotate: referrers only)
 *   DELETE manifests, blobs                                    delete
 *   GET /v2/                                                   signed in, or an anonymous registry JWT
 *                                                              with anonymous access enabled; never
 *                                                              without credentials (always a challenge)
 *   GET /v2/_catalog                                           signed in, or anonymous access enabled
 *                                                              (the catalog lists only readable repos)
 *
 * Refusals: a caller who could sign in (anonymous, or a registry JWT whose subject has the
 * right but whose scope lacks it) gets 401 with the Docker token-auth challenge naming the
 * scope; a signed-in caller without the right gets 403 DENIED, recorded in the audit log.
 */
import type { Context, Next } from 'koa'
import { FlotillaError } from '../../storage/errors.js'
import { parseRepositoryName } from '../../storage/reference.js'
import type { Action } from '../../cluster/access/model.js'
import { matchRoute } from '../http/routes.js'
import { dockerActionFor, type Identity } from './identity.js'
import { requestActor } from './context.js'
import type { AuthService } from './service.js'

/**
 * The action a /v2/<name>/… request needs, from the path's last segments and the method
 * (the same shapes the dispatcher in src/http/routes.ts matches). Undefined: no rule, which
 * the middleware treats as an error (fail closed).
 */
export function actionFor (method: string, path: string): Action | undefined {
  const m = method === 'HEAD' ? 'GET' : method
  if (/\/blobs\/uploads(\/[^/]*)?$/.test(path)) return ['POST', 'GET', 'PATCH', 'PUT', 'DELETE'].includes(m) ? 'write' : undefined
  if (/\/(blobs|manifests)\/[^/]+$/.test(path)) return m === 'GET' ? 'read' : m === 'DELETE' ? 'delete' : m === 'PUT' && path.includes('/manifests/') ? 'write' : undefined
  if (/\/tags\/list$/.test(path) || /\/referrers\/[^/]+$/.test(path)) return m === 'GET' ? 'read' : undefined
  return undefined
}

export function scopeFor (repo: string, a: Action): string {
  const docker = dockerActionFor(a)
  return `repository:${repo}:${docker === 'push' ? 'pull,push' : docker}`
}

export const CATALOG_SCOPE = 'registry:catalog:*'

/**
 * The scope to challenge with: a cross-repository mount (end-11, POST …/blobs/uploads/?mount=D&from=R)
 * needs pull on R as well, so the first challenge names both scopes, as the CNCF registry's does.
 * A client that follows one challenge only (the OCI conformance suite's reggie) then gets a token
 * good for the mount instead of a second 401 (insufficient_scope) it never answers.
 */
export function challengeScope (ctx: Context, repo: string, scope: string): string {
  if (ctx.method !== 'POST' || !/\/blobs\/uploads\/?$/.test(ctx.path)) return scope
  const mount = ctx.query.mount
  const from = ctx.query.from
  if (typeof mount !== 'string' || typeof from !== 'string' || from === repo) return scope
  try { parseRepositoryName(from) } catch { return scope } // a bad name: the handler answers NAME_INVALID
  return `${scope} repository:${from}:pull`
}

/** Refuse `action` on `repo` (or on the registry when repo is undefined): 401 + challenge, or 403. */
export async function refuse (ctx: Context, auth: AuthService, id: Identity, action: Action | 'signin', repo?: string, scope?: string): Promise<never> {
  const retryable = id.anonymous || (id.via === 'jwt' && repo !== undefined && action !== 'signin' && id.subjectCan(repo, action))
  if (retryable) {
    auth.challenge(ctx, scope, id.anonymous ? undefined : 'insufficient_scope')
    throw new FlotillaError('UNAUTHORIZED', id.anonymous ? 'authentication required: log in first (docker login)' : `the token does not grant ${action} on ${repo!}: ask the token endpoint for scope ${scope ?? ''}`)
  }
  await auth.auditRefusal(auth.actorOf(ctx, id), 'denied', 'denied', 'DENIED', repo, { need: action })
  throw new FlotillaError('DENIED', repo === undefined ? 'requested access to the resource is denied for this account' : `requested access to the resource is denied: ${id.user} may not ${action} ${repo}`)
}

/** Run the rest of the request as `id` (for the audit log) with the identity on ctx.state. */
async function runAs (ctx: Context, auth: AuthService, id: Identity, next: Next): Promise<void> {
  ctx.state.identity = id
  try {
    await requestActor.run(auth.actorOf(ctx, id), next)
  } catch (err) {
    // Refusals decided inside a handler (annotate-only pushes) are audited here.
    if (err instanceof FlotillaError && err.code === 'DENIED') await auth.auditRefusal(auth.actorOf(ctx, id), 'denied', 'denied', 'DENIED', undefined, { path: ctx.path })
    throw err
  }
}

export function authorizeV2 (auth: AuthService) {
  return async function authorizeV2Middleware (ctx: Context, next: Next): Promise<void> {
    const path = ctx.path
    if (path !== '/v2' && !path.startsWith('/v2/')) return await next()
    if (path === '/v2' || path === '/v2/' || path === '/v2/_catalog') {
      const scope = path === '/v2/_catalog' ? CATALOG_SCOPE : undefined
      const id = await auth.identify(ctx, scope)
      // The version check always challenges a caller without credentials, anonymous access or
      // not: clients (docker login, skopeo, podman) take a 200 there to mean "no auth here" and
      // then never send the credentials they have (a wrong password "logs in", a push to a
      // private repository fails). Anonymous pulls go through the token flow, as on Docker Hub.
      const ping = path !== '/v2/_catalog'
      if (id.anonymous && ((ping && id.via === 'anonymous') || !await auth.anonymousEnabled())) return await refuse(ctx, auth, id, 'signin', undefined, scope)
      if (path === '/v2/_catalog') ctx.state.canList = (repo: string): boolean => id.can(repo, 'read')
      return await runAs(ctx, auth, id, next)
    }
    // An unknown path, a bad name or a wrong method: the dispatcher answers it (404, 400, 405).
    const route = matchRoute(ctx.method, path)
    if (route === undefined) return await next()
    const action = actionFor(ctx.method, path)
    if (action === undefined) throw new FlotillaError('INTERNAL', `no access rule for ${ctx.method} ${path}: every route must have one`)
    const scope = challengeScope(ctx, route.name, scopeFor(route.name, action))
    const id = await auth.identify(ctx, scope)
    const allowed = action === 'write' ? id.canPush(route.name) : id.can(route.name, action)
    if (!allowed) return await refuse(ctx, auth, id, action, route.name, scope)
    return await runAs(ctx, auth, id, next)
  }
}
