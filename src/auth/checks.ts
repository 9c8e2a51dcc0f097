/**
 * Access checks that need what only a handler knows (the parsed manifest, the mount source).
 * Handlers call them with the identity the authorization middleware put on ctx.state.
 */
import type { Context } from 'koa'
import { FlotillaError } from '../../storage/errors.js'
import type { Identity } from './identity.js'
import type { MetadataQueries } from '../../cluster/metadata/queries.js'

/**
 * Mount source check (uploads.start): the blob must be linked in a repository the caller may
 * read: `from` when given, else any (searched in catalog order, so a blind mount cannot tell
 * whether a blob exists somewhere the caller has no access to).
 */
export async function mayMountFrom (ctx: Context, queries: MetadataQueries, digest: string, from: string | undefined, auth: { challenge: (ctx: Context, scope?: string, error?: string) => void }, target: string): Promise<boolean> {
  const id = ctx.state.identity as Identity | undefined
  if (id === undefined) return true
  if (from !== undefined) {
    if (id.can(from, 'read')) return true
    // A registry JWT scoped to the target only: as the CNCF registry does, ask the client for a
    // token that covers `from` too, so token clients mount instead of uploading again. A caller
    // who may not read `from` at all gets an upload session, as before (202).
    if (id.via === 'jwt' && id.couldGet(from, 'read')) {
      auth.challenge(ctx, `repository:${target}:pull,push repository:${from}:pull`, 'insufficient_scope')
      throw new FlotillaError('UNAUTHORIZED', `the token does not grant pull on ${from}, the mount's source: ask the token endpoint for both scopes`)
    }
    return false
  }
  // Automatic discovery: in a repository the caller could read (a JWT names only the target).
  let last: string | undefined
  for (;;) {
    const page = await queries.repositories(last === undefined ? { n: 1000 } : { n: 1000, last })
    for (const repo of page.items) {
      if (id.couldGet(repo, 'read') && await queries.linkedBlob(repo, digest) !== undefined) return true
    }
    if (!page.more || page.items.length === 0) return false
    last = page.items[page.items.length - 1]
  }
}

/**
 * Manifest PUT check (manifests.put, once the body is parsed): a caller with only `annotate`
 * may push referrers (a manifest with a subject) and the fallback tags `sha256-<hex>[.x]`.
 */
export function mayPutManifest (ctx: Context, repo: string, m: { subject?: string; tags: string[] }): void {
  const id = ctx.state.identity as Identity | undefined
  if (id === undefined || id.can(repo, 'write')) return
  const onlyFallbackTags = m.tags.every((t) => /^sha256-[a-f0-9]{64}(\.[a-z0-9._-]+)?$/.test(t))
  if (m.subject !== undefined && onlyFallbackTags) return
  if (m.subject === undefined && m.tags.length > 0 && onlyFallbackTags) return
  throw new FlotillaError('DENIED', `${id.user} may only annotate ${repo}: push manifests with a subject (signatures, SBOMs)`)
}
