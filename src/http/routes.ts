/**
 * The /v2/ dispatcher. Repository names contain slashes, so routes are matched from the
 * right: the last path segments say what is addressed and everything before is the name.
 *
 *   /v2/                                    end-1
 *   /v2/_catalog                            catalog
 *   /v2/<name>/blobs/uploads/[<id>]         end-4a/4b/5/6/11/13, cancel
 *   /v2/<name>/blobs/<digest>               end-2, end-10
 *   /v2/<name>/manifests/<reference>        end-3, end-7, end-9
 *   /v2/<name>/tags/list                    end-8a/8b
 *   /v2/<name>/referrers/<digest>           end-12a/12b
 *
 * A name under a virtual repository's prefix goes through virtual.ts (its members) instead.
 */
import type { Context, Next } from 'koa'
import { FlotillaError } from '../../storage/errors.js'
import { parseRepositoryName, type RepositoryName } from '../../storage/reference.js'
import type { RegistryDeps } from './deps.js'
import * as blobs from './blobs.js'
import * as uploads from './uploads.js'
import * as manifests from './manifests.js'
import * as listing from './listing.js'
import { catalogThrough, resolveMountSource, throughVirtual, virtualsOf, VirtualMetrics } from './virtual.js'
import { virtualOwning } from '../../cluster/metadata/virtual.js'

export type Handler = (ctx: Context, deps: RegistryDeps, name: RepositoryName, param: string) => Promise<void>

interface Route {
  re: RegExp
  methods: Partial<Record<string, Handler>>
}

const ROUTES: Route[] = [
  { re: /^\/v2\/(.+)\/blobs\/uploads\/?$/, methods: { POST: uploads.start } },
  { re: /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, methods: { GET: uploads.ownedUpload(uploads.status), PATCH: uploads.ownedUpload(uploads.patch), PUT: uploads.ownedUpload(uploads.finish), DELETE: uploads.ownedUpload(uploads.cancel) } },
  { re: /^\/v2\/(.+)\/blobs\/([^/]+)$/, methods: { GET: blobs.get, HEAD: blobs.get, DELETE: blobs.remove } },
  { re: /^\/v2\/(.+)\/manifests\/([^/]+)$/, methods: { GET: manifests.get, HEAD: manifests.get, PUT: manifests.put, DELETE: manifests.remove } },
  { re: /^\/v2\/(.+)\/tags\/list$/, methods: { GET: listing.tags } },
  { re: /^\/v2\/(.+)\/referrers\/([^/]+)$/, methods: { GET: listing.referrers } },
]

export interface RouteMatch {
  name: RepositoryName
  param: string
  handler: Handler
}

/** decodeURIComponent, or the input unchanged when it is not valid percent-encoding. */
export function safeDecode (s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}

/** Find the route for a /v2/<name>/… path. Throws the spec's error for bad names or methods. */
export function matchRoute (method: string, path: string): RouteMatch | undefined {
  for (const route of ROUTES) {
    const m = route.re.exec(path)
    if (m === null) continue
    // No valid name needs percent-encoding, and decoding one could turn %2F into a path
    // separator: another repository than the path names, past checks made on the raw path.
    if (m[1]!.includes('%')) throw new FlotillaError('NAME_INVALID', 'a repository name is never percent-encoded: write it as is (lowercase letters, digits, separators and /)')
    const rawName = m[1]!
    // A parameter that does not decode is passed on as sent: '%' fits no digest, tag or upload
    // id, so the handler's parser refuses it with the error of that endpoint (DIGEST_INVALID…).
    const param = safeDecode(m[2] ?? '')
    const name = parseRepositoryName(rawName)
    const handler = route.methods[method]
    if (handler === undefined) {
      throw new FlotillaError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path.replace(/^\/v2\/.+?\/(blobs|manifests|tags|referrers)/, '/v2/<name>/$1')}`)
    }
    return { name, param, handler }
  }
  return undefined
}

export function v2Routes (deps: RegistryDeps, virtualMetrics = new VirtualMetrics()) {
  return async function v2 (ctx: Context, next: Next): Promise<void> {
    const path = ctx.path
    if (path === '/v2' || path === '/v2/') {
      if (ctx.method !== 'GET' && ctx.method !== 'HEAD') throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed on /v2/`)
      ctx.status = 200
      ctx.type = 'application/json'
      ctx.body = '{}'
      return
    }
    if (path === '/v2/_catalog') {
      if (ctx.method !== 'GET') throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed on /v2/_catalog`)
      const virtuals = await virtualsOf(deps)
      return virtuals.length === 0 ? await listing.catalog(ctx, deps) : await catalogThrough(ctx, deps, virtuals)
    }
    if (!path.startsWith('/v2/')) return await next()
    const route = matchRoute(ctx.method, path)
    if (route === undefined) throw new FlotillaError('NOT_FOUND', `no such endpoint: ${ctx.method} ${path.slice(0, 200)}`)
    if (ctx.method === 'POST' || ctx.method === 'PUT' || ctx.method === 'PATCH') {
      // A remote repository is a read-only cache of its upstream (remote.ts).
      const r = await deps.remotes?.remoteFor(route.name)
      if (r !== undefined) throw new FlotillaError('DENIED', `${route.name} belongs to remote repository ${r.name}, a read-only cache of ${r.upstream}: pushes are refused; push to a name outside ${r.prefix}`)
    }
    // Virtual repositories are read from this node's state without catching up first (that
    // would cost every request a round); a read that misses has caught up, and looks again below.
    const virtuals = await virtualsOf(deps)
    if (virtuals.length > 0) {
      if (route.handler === uploads.start) await resolveMountSource(ctx, deps, virtuals)
      const v = virtualOwning(virtuals, route.name)
      if (v !== undefined) return await throughVirtual(ctx, deps, virtualMetrics, v, route)
    }
    try {
      await route.handler(ctx, deps, route.name, route.param)
    } catch (err) {
      // A virtual repository created through another node a moment ago: the handler caught up
      // with the log (barrier) before it missed, so this node knows it now.
      const miss = err instanceof FlotillaError && ['MANIFEST_UNKNOWN', 'BLOB_UNKNOWN', 'NAME_UNKNOWN'].includes(err.code)
      const v = miss && (ctx.method === 'GET' || ctx.method === 'HEAD') ? virtualOwning(await virtualsOf(deps, { fresh: true }), route.name) : undefined
      if (v === undefined) throw err
      return await throughVirtual(ctx, deps, virtualMetrics, v, route)
    }
  }
}
