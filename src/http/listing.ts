/**
 * Listings: end-8a/8b (tags), the catalog, and end-12a/12b (referrers).
 */
import type { Context } from 'koa'
import { FlotillaError } from '../../storage/errors.js'
import { parseDigest, type RepositoryName } from '../../storage/reference.js'
import { MediaType } from '../oci/manifest.js'
import type { RegistryDeps } from './deps.js'

const MAX_PAGE = 10_000

export function pageParams (ctx: Context): { n?: number; last?: string } {
  const out: { n?: number; last?: string } = {}
  const n = ctx.query.n
  if (n !== undefined) {
    if (Array.isArray(n) || !/^\d{1,9}$/.test(n)) throw new FlotillaError('PAGINATION_INVALID', `n must be a non-negative integer, got ${JSON.stringify(n)}`)
    out.n = Math.min(Number(n), MAX_PAGE)
  }
  const last = ctx.query.last
  if (last !== undefined) {
    if (Array.isArray(last)) throw new FlotillaError('PAGINATION_INVALID', 'last given more than once')
    out.last = last
  }
  return out
}

export function nextLink (path: string, n: number, last: string): string {
  return `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`
}

/**
 * A page of one repository's tags, or undefined when the registry does not know the
 * repository: the per-repository read behind a tag list (a virtual repository calls it for
 * each member, src/http/virtual.ts). A name under a remote's prefix lists the upstream's tags
 * (the cached ones when the upstream does not answer). The caller has caught up (barrier).
 */
export async function readTagPage (deps: RegistryDeps, name: RepositoryName, page: { n?: number; last?: string }): Promise<{ items: string[]; more: boolean } | undefined> {
  const remote = await deps.remotes?.remoteFor(name)
  if (remote !== undefined) return await deps.remotes!.tagPage(remote, name, page)
  return await readLocalTagPage(deps, name, page)
}

/** This registry's own tags of a repository (a remote's cached ones included). */
export async function readLocalTagPage (deps: RegistryDeps, name: RepositoryName, page: { n?: number; last?: string }): Promise<{ items: string[]; more: boolean } | undefined> {
  if (!await deps.queries.repoExists(name)) return undefined
  return page.n === 0 ? { items: [], more: false } : await deps.queries.tags(name, page)
}

/** end-8a/8b; a repository under a remote's prefix lists the upstream's tags (remote.ts). */
export async function tags (ctx: Context, deps: RegistryDeps, name: RepositoryName): Promise<void> {
  const remote = await deps.remotes?.remoteFor(name)
  if (remote !== undefined) return await deps.remotes!.tags(ctx, remote, name)
  await tagsLocal(ctx, deps, name)
}

/** end-8a/8b from this registry's own tags only. */
export async function tagsLocal (ctx: Context, deps: RegistryDeps, name: RepositoryName): Promise<void> {
  const page = pageParams(ctx)
  await deps.sink.barrier()
  const result = await readLocalTagPage(deps, name, page)
  if (result === undefined) throw new FlotillaError('NAME_UNKNOWN', `repository ${name} is not known to this registry`, { name })
  if (result.more) ctx.set('Link', nextLink(`/v2/${name}/tags/list`, page.n!, result.items[result.items.length - 1]!))
  ctx.status = 200
  ctx.body = { name, tags: result.items }
}

/** A catalog page of only the repositories `canList` accepts, read in batches. */
async function visibleRepositories (deps: RegistryDeps, page: { n?: number; last?: string }, canList: (repo: string) => boolean): Promise<{ items: string[]; more: boolean }> {
  const items: string[] = []
  let last = page.last
  for (;;) {
    const batch = await deps.queries.repositories(last === undefined ? { n: 1000 } : { n: 1000, last })
    for (const r of batch.items) {
      if (!canList(r)) continue
      if (page.n !== undefined && items.length === page.n) return { items, more: true }
      items.push(r)
    }
    if (!batch.more || batch.items.length === 0) return { items, more: false }
    last = batch.items[batch.items.length - 1]
  }
}

export async function catalog (ctx: Context, deps: RegistryDeps): Promise<void> {
  const page = pageParams(ctx)
  await deps.sink.barrier()
  // Access control (src/auth/authorize.ts) may hide repositories the caller cannot read.
  const canList = ctx.state.canList as ((repo: string) => boolean) | undefined
  const result = page.n === 0 ? { items: [], more: false } : canList === undefined ? await deps.queries.repositories(page) : await visibleRepositories(deps, page, canList)
  if (result.more) ctx.set('Link', nextLink('/v2/_catalog', page.n!, result.items[result.items.length - 1]!))
  ctx.status = 200
  ctx.body = { repositories: result.items }
}

export async function referrers (ctx: Context, deps: RegistryDeps, name: RepositoryName, param: string): Promise<void> {
  const subject = parseDigest(param)
  const at = ctx.query.artifactType
  if (Array.isArray(at)) throw new FlotillaError('BAD_REQUEST', 'artifactType given more than once')
  await deps.sink.barrier()
  const list = await deps.queries.referrers(name, subject, at)
  if (at !== undefined) ctx.set('OCI-Filters-Applied', 'artifactType')
  ctx.status = 200
  ctx.type = MediaType.OciIndex
  ctx.body = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: list })
}
