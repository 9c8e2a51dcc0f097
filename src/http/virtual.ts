/**
 * Requests through a virtual repository name (cluster/metadata/virtual.ts): `dev/app` with
 * virtual `dev/` over members `team-a/`, `hub/` (default `team-a/`).
 *
 *   GET/HEAD manifests, blobs     the first member, in order, whose own GET handler serves it
 *                                 (manifests.get, blobs.get: whatever those do for a repository
 *                                 name, remote repositories' pull-through included, works here)
 *   GET tags/list, referrers      the members' lists merged, without duplicates (readTagPage)
 *   PUT manifests, uploads        the default member (`team-a/app`); Location headers keep the
 *   (POST/PATCH/PUT/GET/DELETE)   virtual name, so clients keep talking to `dev/app`; what a
 *                                 manifest references that only another member has (the client
 *                                 saw it through the virtual name) is linked in (linkFromMembers)
 *   DELETE manifests, blobs       405: deletes name the member itself
 *   GET /v2/_catalog              each virtual name a member repository gives, merged in
 *
 * Permissions: the authorization middleware (src/auth/authorize.ts) has checked the action
 * on the virtual name; here the caller also needs it on the member: read on the member that
 * serves (members the caller may not read are passed over, unlooked at), write on the default
 * member for pushes. A served response names the member in `Flotilla-Resolved-Repository`.
 *
 * Metrics: flotilla_virtual_resolutions_total{virtual,member}, flotilla_virtual_misses_total{virtual}.
 */
import type { Context } from 'koa'
import { Counter, type Metric } from 'prom-client'
import { FlotillaError } from '../../storage/errors.js'
import { parseDigest, type RepositoryName } from '../../storage/reference.js'
import { resolve, virtualOwning, type VirtualRepo } from '../../cluster/metadata/virtual.js'
import type { DescriptorRecord } from '../../cluster/metadata/commands.js'
import type { Identity } from '../auth/identity.js'
import { refuse, scopeFor } from '../auth/authorize.js'
import { MediaType } from '../oci/manifest.js'
import { submit, type RegistryDeps } from './deps.js'
import type { RouteMatch } from './routes.js'
import * as manifests from './manifests.js'
import * as blobs from './blobs.js'
import * as listing from './listing.js'

export class VirtualMetrics {
  readonly resolutions = new Counter({ name: 'flotilla_virtual_resolutions_total', help: 'Pulls through a virtual repository, by the virtual and the member (prefix) that served them', labelNames: ['virtual', 'member'] as const, registers: [] })
  readonly misses = new Counter({ name: 'flotilla_virtual_misses_total', help: 'Pulls through a virtual repository that no member could serve', labelNames: ['virtual'] as const, registers: [] })
  all (): Metric[] { return [this.resolutions, this.misses] }
}

/**
 * The virtual repositories as this node knows them (a new one is seen once applied here):
 * from memory on most requests, read afresh with `fresh` (a miss that has caught up).
 */
export async function virtualsOf (deps: RegistryDeps, opts: { fresh?: boolean } = {}): Promise<VirtualRepo[]> {
  if (opts.fresh === true || deps.virtuals === undefined) return await deps.queries.virtuals()
  return await deps.virtuals.get()
}

/** Misses: the member has no such manifest, blob or repository. Anything else is a failure. */
function isMiss (err: unknown): err is FlotillaError {
  return err instanceof FlotillaError && (err.code === 'MANIFEST_UNKNOWN' || err.code === 'BLOB_UNKNOWN' || err.code === 'NAME_UNKNOWN')
}

/** Run `fn` as the caller acting on `member` through the virtual name (identity.through). */
async function asMember<T> (ctx: Context, alias: string, member: string, fn: () => Promise<T>): Promise<T> {
  const id = ctx.state.identity as Identity | undefined
  if (id === undefined) return await fn()
  ctx.state.identity = id.through(alias, member)
  try {
    return await fn()
  } finally {
    ctx.state.identity = id
  }
}

/** Location headers name the virtual repository, not the member, so clients stay on it. */
function keepVirtualName (ctx: Context, member: string, name: string): void {
  const loc = ctx.response.get('Location')
  const from = `/v2/${member}/`
  if (typeof loc === 'string' && loc.startsWith(from)) ctx.set('Location', `/v2/${name}/${loc.slice(from.length)}`)
}

/** The members (repository names) the caller may read, in order, with their member prefixes. */
function readable (ctx: Context, v: VirtualRepo, name: string): { all: string[]; ok: Array<{ repo: RepositoryName; prefix: string }> } {
  const id = ctx.state.identity as Identity | undefined
  const all = resolve(v, name).members
  const ok = all.flatMap((repo, i) => id === undefined || id.couldGet(repo, 'read') ? [{ repo: repo as RepositoryName, prefix: v.members[i]! }] : [])
  return { all, ok }
}

/**
 * Refuse a caller the members: anonymous gets the usual 401 challenge (signing in may help);
 * anyone else 403 DENIED (a new token for the virtual name would not change the answer),
 * audited by the authorization middleware's runAs like every refusal made in a handler.
 */
async function refuseMember (ctx: Context, deps: RegistryDeps, name: string, action: 'read' | 'write', why: string): Promise<never> {
  const id = ctx.state.identity as Identity
  if (id.anonymous) return await refuse(ctx, deps.auth, id, action, name, scopeFor(name, action))
  throw new FlotillaError('DENIED', `requested access to the resource is denied: ${why}`)
}

async function refuseMembers (ctx: Context, deps: RegistryDeps, v: VirtualRepo, name: string, all: string[]): Promise<never> {
  const id = ctx.state.identity as Identity
  return await refuseMember(ctx, deps, name, 'read', `${id.user} may read ${name} but none of the repositories virtual ${v.name} resolves it to (${all.join(', ')}): ask for read on one of them`)
}

/**
 * A GET or HEAD of a manifest or blob through a virtual name: each readable member's own
 * handler in turn, until one serves. Exported for the remote repositories' tests and for
 * anything else that pulls through a virtual name.
 */
export async function pullThrough (ctx: Context, deps: RegistryDeps, metrics: VirtualMetrics, v: VirtualRepo, name: RepositoryName, handler: typeof manifests.get, param: string): Promise<void> {
  const { all, ok } = readable(ctx, v, name)
  if (ok.length === 0) return await refuseMembers(ctx, deps, v, name, all)
  let miss: FlotillaError | undefined
  let failure: unknown
  for (const m of ok) {
    // Set first: a blob served from this node's store writes its headers inside the handler.
    ctx.set('Flotilla-Resolved-Repository', m.repo)
    try {
      await asMember(ctx, name, m.repo, async () => { await handler(ctx, deps, m.repo, param) })
    } catch (err) {
      ctx.remove('Flotilla-Resolved-Repository')
      // Bad input (a malformed digest) is bad in every member: said at once, not a miss.
      if (err instanceof FlotillaError && err.status === 400) throw err
      // A member that failed (a remote's upstream down) does not hide the members after it;
      // if none serves, its error says more than a miss.
      if (isMiss(err)) miss ??= err; else failure ??= err
      continue
    }
    metrics.resolutions.inc({ virtual: v.name, member: m.prefix })
    return
  }
  metrics.misses.inc({ virtual: v.name })
  if (failure !== undefined) throw failure
  const what = handler === blobs.get ? 'blob' : 'manifest'
  const code = miss?.code === 'BLOB_UNKNOWN' || what === 'blob' ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN'
  throw new FlotillaError(code, `${what} ${param.slice(0, 200)} is in none of the members of virtual repository ${v.name} you may read: looked in ${ok.map((m) => m.repo).join(', ')}`, miss?.detail)
}

/** GET tags/list through a virtual name: the readable members' tags, merged and paged. */
async function tagsThrough (ctx: Context, deps: RegistryDeps, v: VirtualRepo, name: RepositoryName): Promise<void> {
  const page = listing.pageParams(ctx)
  const { all, ok } = readable(ctx, v, name)
  if (ok.length === 0) return await refuseMembers(ctx, deps, v, name, all)
  await deps.sink.barrier()
  const merged = new Set<string>()
  let known = false
  for (const m of ok) {
    let last: string | undefined
    for (;;) {
      const p = await listing.readTagPage(deps, m.repo, last === undefined ? { n: 1000 } : { n: 1000, last })
      if (p === undefined) break
      known = true
      for (const t of p.items) merged.add(t)
      if (!p.more || p.items.length === 0) break
      last = p.items[p.items.length - 1]
    }
  }
  if (!known) throw new FlotillaError('NAME_UNKNOWN', `repository ${name} is not known: none of ${ok.map((m) => m.repo).join(', ')} (virtual ${v.name}) exists`, { name })
  const { items, more } = pageOf([...merged].sort(), page)
  if (more) ctx.set('Link', listing.nextLink(`/v2/${name}/tags/list`, page.n!, items[items.length - 1]!))
  ctx.status = 200
  ctx.body = { name, tags: items }
}

/** A page of a sorted list: after `last`, at most `n`. */
function pageOf (sorted: string[], page: { n?: number; last?: string }): { items: string[]; more: boolean } {
  const from = page.last === undefined ? 0 : sorted.findIndex((s) => s > page.last!)
  const rest = from < 0 ? [] : sorted.slice(from)
  if (page.n === 0) return { items: [], more: false }
  if (page.n === undefined || rest.length <= page.n) return { items: rest, more: false }
  return { items: rest.slice(0, page.n), more: true }
}

/** GET referrers through a virtual name: the readable members' referrers, one per digest. */
async function referrersThrough (ctx: Context, deps: RegistryDeps, v: VirtualRepo, name: RepositoryName, param: string): Promise<void> {
  const subject = parseDigest(param)
  const at = ctx.query.artifactType
  if (Array.isArray(at)) throw new FlotillaError('BAD_REQUEST', 'artifactType given more than once')
  const { all, ok } = readable(ctx, v, name)
  if (ok.length === 0) return await refuseMembers(ctx, deps, v, name, all)
  await deps.sink.barrier()
  const seen = new Map<string, DescriptorRecord>()
  for (const m of ok) for (const d of await deps.queries.referrers(m.repo, subject, at)) if (!seen.has(d.digest)) seen.set(d.digest, d)
  if (at !== undefined) ctx.set('OCI-Filters-Applied', 'artifactType')
  ctx.status = 200
  ctx.type = MediaType.OciIndex
  ctx.body = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [...seen.values()] })
}

/**
 * What a manifest pushed through a virtual name references that the default member lacks: the
 * client saw it through the virtual name (a HEAD answered by another member) and sent nothing.
 * Each such blob, and child manifest of an index, is linked into the default member from the
 * first other member the caller may read that has it, as a cross-repository mount would;
 * anything no member has is left for the state machine to refuse (MANIFEST_BLOB_UNKNOWN).
 */
export function linkFromMembers (deps: RegistryDeps, target: RepositoryName, sources: RepositoryName[]): (refs: { blobs: string[]; manifests: string[] }) => Promise<void> {
  const linkBlobs = async (digests: string[]): Promise<void> => {
    for (const d of digests) {
      if (await deps.queries.linkedBlob(target, d) !== undefined) continue
      for (const s of sources) {
        const l = await deps.queries.linkedBlob(s, d)
        if (l === undefined) continue
        await submit(deps, { type: 'LinkBlob', repo: target, digest: d, size: l.size, mount: true, at: deps.now() })
        break
      }
    }
  }
  return async (refs) => {
    await deps.sink.barrier()
    await linkBlobs(refs.blobs)
    for (const d of refs.manifests) {
      if (await deps.queries.manifest(target, d) !== undefined) continue
      for (const s of sources) {
        const rec = await deps.queries.manifest(s, d)
        const body = rec === undefined ? undefined : await deps.queries.manifestBody(s, d)
        if (rec === undefined || body === undefined) continue
        // A child of an index is an image: its own blobs first (children of children are not followed).
        await linkBlobs(rec.blobs)
        await submit(deps, { type: 'PutManifest', repo: target, digest: d, body: Buffer.from(body).toString('base64'), mediaType: rec.mediaType, tags: [], blobs: rec.blobs, manifests: rec.manifests, at: deps.now(), ...(rec.subject !== undefined ? { subject: rec.subject } : {}), ...(rec.artifactType !== undefined ? { artifactType: rec.artifactType } : {}), ...(rec.annotations !== undefined ? { annotations: rec.annotations } : {}) })
        break
      }
    }
  }
}

/** A push (manifest PUT, upload routes) through a virtual name: the default member's handler. */
async function pushThrough (ctx: Context, deps: RegistryDeps, v: VirtualRepo, name: RepositoryName, route: RouteMatch): Promise<void> {
  const member = resolve(v, name).push as RepositoryName
  const id = ctx.state.identity as Identity | undefined
  if (id !== undefined && !id.through(name, member).canPush(member)) {
    return await refuseMember(ctx, deps, name, 'write', `pushes to ${name} go to ${member} (the default member of virtual ${v.name}), where ${id.user} may not write: ask for write there`)
  }
  if (route.handler === manifests.put) {
    const sources = readable(ctx, v, name).ok.map((m) => m.repo).filter((r) => r !== member)
    ctx.state.linkMissing = linkFromMembers(deps, member, sources)
  }
  await asMember(ctx, name, member, async () => { await route.handler(ctx, deps, member, route.param) })
  keepVirtualName(ctx, member, name)
  ctx.set('Flotilla-Resolved-Repository', member)
}

/** Dispatch a /v2/<name>/… request whose name lies under virtual `v`. */
export async function throughVirtual (ctx: Context, deps: RegistryDeps, metrics: VirtualMetrics, v: VirtualRepo, route: RouteMatch): Promise<void> {
  const { name, handler, param } = route
  if (handler === manifests.get || handler === blobs.get) return await pullThrough(ctx, deps, metrics, v, name, handler, param)
  if (handler === listing.tags) return await tagsThrough(ctx, deps, v, name)
  if (handler === listing.referrers) return await referrersThrough(ctx, deps, v, name, param)
  if (handler === manifests.remove || handler === blobs.remove) {
    throw new FlotillaError('METHOD_NOT_ALLOWED', `${name} is virtual (${v.name}): delete in the member repository itself (one of ${resolve(v, name).members.join(', ')})`)
  }
  return await pushThrough(ctx, deps, v, name, route)
}

/**
 * A mount whose source (`from`) is a virtual name: the first member the caller may read that
 * links the blob, so the mount finds it (uploads.start checks read on that member, as usual).
 */
export async function resolveMountSource (ctx: Context, deps: RegistryDeps, list: VirtualRepo[]): Promise<void> {
  const from = ctx.query.from
  const digest = ctx.query.mount
  if (typeof from !== 'string' || typeof digest !== 'string') return
  const v = virtualOwning(list, from)
  if (v === undefined) return
  const id = ctx.state.identity as Identity | undefined
  if (id !== undefined && !id.can(from, 'read')) return
  for (const member of resolve(v, from).members) {
    if (id !== undefined && !id.couldGet(member, 'read')) continue
    if (await deps.queries.linkedBlob(member, digest) === undefined) continue
    const q = new URLSearchParams(ctx.querystring)
    q.set('from', member)
    ctx.querystring = q.toString()
    // The credential names the virtual source (a JWT's scope): read there and on the member suffice.
    if (id !== undefined) ctx.state.identity = id.through(from, member)
    return
  }
}

/**
 * GET /v2/_catalog with virtual repositories: the stored repositories, plus `dev/x` for each
 * member repository `team-a/x` (when the caller may read both), without duplicates, paged.
 */
export async function catalogThrough (ctx: Context, deps: RegistryDeps, list: VirtualRepo[]): Promise<void> {
  const page = listing.pageParams(ctx)
  await deps.sink.barrier()
  const canList = (ctx.state.canList as ((repo: string) => boolean) | undefined) ?? (() => true)
  const names = new Set<string>()
  let last: string | undefined
  for (;;) {
    const batch = await deps.queries.repositories(last === undefined ? { n: 1000 } : { n: 1000, last })
    for (const r of batch.items) {
      if (!canList(r)) continue
      names.add(r)
      for (const v of list) {
        for (const m of v.members) {
          if (!r.startsWith(m)) continue
          const alias = v.prefix + r.slice(m.length)
          if (canList(alias)) names.add(alias)
        }
      }
    }
    if (!batch.more || batch.items.length === 0) break
    last = batch.items[batch.items.length - 1]
  }
  const { items, more } = page.n === 0 ? { items: [], more: false } : pageOf([...names].sort(), page)
  if (more) ctx.set('Link', listing.nextLink('/v2/_catalog', page.n!, items[items.length - 1]!))
  ctx.status = 200
  ctx.body = { repositories: items }
}
