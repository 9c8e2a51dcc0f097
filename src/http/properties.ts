/**
 * Properties of manifests and checksums of blobs in the admin API (mounted by admin.ts, so
 * every route needs a signed-in caller):
 *
 *   GET    /properties?image=REPO:TAG|REPO@DIGEST                   read on REPO
 *   PUT    /properties {image, properties: [{key, value}], replace?} annotate on REPO (write implies it)
 *   DELETE /properties?image=…&property=KEY[=VALUE]…                annotate on REPO
 *   GET    /checksums/:digest                                       anyone signed in: {digest, sha1, md5}
 *
 * A tag stands for the manifest it points at now: properties belong to the manifest, so every
 * tag of it shows them. Read-only properties (annotations, config labels) come with the image
 * and cannot be removed (403). Changes go through the state machine, audited like every
 * request's command (cluster/metadata/properties.ts).
 */
import type Router from '@koa/router'
import type { Context } from 'koa'
import { Counter } from 'prom-client'
import { FlotillaError } from '../../storage/errors.js'
import { isDigest } from '../../storage/reference.js'
import { badProperty, checksumsOf, propertiesOf } from '../../cluster/metadata/properties.js'
import type { Identity } from '../auth/identity.js'
import type { RegistryDeps } from './deps.js'

/** Property changes through the API, by op (set, rm): registered on the node's registry by app.ts. */
export const propertyChanges = new Counter({ name: 'flotilla_property_changes_total', help: 'Property changes accepted through the admin API, by op: set, rm', labelNames: ['op'] as const, registers: [] })
propertyChanges.inc({ op: 'set' }, 0)
propertyChanges.inc({ op: 'rm' }, 0)

interface Helpers {
  me: (ctx: Context) => Identity
  deny: (ctx: Context, why: string) => Promise<never>
  jsonBody: (ctx: Context) => Promise<Record<string, unknown>>
  parseImageRef: (s: string) => { repo: string; tag?: string; digest?: string }
}

function list (v: unknown): string[] {
  if (v === undefined) return []
  return Array.isArray(v) ? v.map(String) : [String(v)]
}

/** `key=value` → its parts (the first '=' splits: values may hold more); `key` alone has no value. */
export function splitProperty (s: string): { key: string; value?: string } {
  const i = s.indexOf('=')
  return i < 0 ? { key: s } : { key: s.slice(0, i), value: s.slice(i + 1) }
}

export function propertyRoutes (router: Router, deps: RegistryDeps, h: Helpers): void {
  const auth = deps.auth
  // Read when a request comes (building the router touches no dependency: test/http/openapi.test.ts).
  const store = (): RegistryDeps['queries']['kv'] => deps.queries.kv

  /** The manifest an image reference names now, after the caller's right on its repository is checked. */
  async function target (ctx: Context, image: unknown, action: 'read' | 'annotate'): Promise<{ repo: string; digest: string }> {
    if (typeof image !== 'string' || image === '') throw new FlotillaError('BAD_REQUEST', 'image must be REPO:TAG or REPO@DIGEST')
    const ref = h.parseImageRef(image)
    if (ref.tag === undefined && ref.digest === undefined) throw new FlotillaError('BAD_REQUEST', `${image} names no manifest: give REPO:TAG or REPO@DIGEST`)
    if (!h.me(ctx).can(ref.repo, action)) await h.deny(ctx, `${action} on ${ref.repo}`)
    await deps.sink.barrier()
    const digest = ref.digest ?? await deps.queries.resolveTag(ref.repo, ref.tag!)
    if (digest === undefined || await deps.queries.manifest(ref.repo, digest) === undefined) {
      throw new FlotillaError('MANIFEST_UNKNOWN', `${image} is unknown: push it first, or check the name`)
    }
    return { repo: ref.repo, digest }
  }

  router.get('/properties', async (ctx) => {
    const { repo, digest } = await target(ctx, ctx.query.image, 'read')
    ctx.body = { repo, digest, tags: await deps.queries.tagsOfManifest(repo, digest), properties: await propertiesOf(store(), repo, digest) }
  })

  router.put('/properties', async (ctx) => {
    const b = await h.jsonBody(ctx)
    for (const k of Object.keys(b)) if (!['image', 'properties', 'replace'].includes(k)) throw new FlotillaError('BAD_REQUEST', `unknown field ${JSON.stringify(k.slice(0, 40))}: expected image, properties and replace`)
    const props = b.properties
    if (!Array.isArray(props) || props.length === 0) throw new FlotillaError('BAD_REQUEST', 'properties must be a non-empty list of {key, value}')
    const pairs = props.map((p: unknown, i) => {
      const o = p as { key?: unknown; value?: unknown }
      if (typeof o?.key !== 'string' || typeof o.value !== 'string') throw new FlotillaError('BAD_REQUEST', `properties[${i}] must be {key, value} with string values`)
      const why = badProperty(o.key, o.value)
      if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why)
      return { key: o.key, value: o.value }
    })
    if (b.replace !== undefined && typeof b.replace !== 'boolean') throw new FlotillaError('BAD_REQUEST', 'replace must be true or false')
    const { repo, digest } = await target(ctx, b.image, 'annotate')
    const value = await auth.submitAudited({ type: 'SetProperties', repo, digest, props: pairs, ...(b.replace === true ? { replace: true } : {}), at: auth.now() })
    propertyChanges.inc({ op: 'set' })
    ctx.body = { repo, digest, ...(value as object), properties: await propertiesOf(store(), repo, digest) }
  })

  router.delete('/properties', async (ctx) => {
    const wanted = list(ctx.query.property).map(splitProperty)
    if (wanted.length === 0) throw new FlotillaError('BAD_REQUEST', 'give the properties to remove: property=KEY (all its values) or property=KEY=VALUE, repeatable')
    for (const p of wanted) { const why = badProperty(p.key, p.value); if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why) }
    const { repo, digest } = await target(ctx, ctx.query.image, 'annotate')
    const value = await auth.submitAudited({ type: 'RemoveProperties', repo, digest, props: wanted, at: auth.now() })
    propertyChanges.inc({ op: 'rm' })
    ctx.body = { repo, digest, ...(value as object), properties: await propertiesOf(store(), repo, digest) }
  })

  router.get('/checksums/:digest', async (ctx) => {
    const digest = (ctx.params as { digest: string }).digest
    if (!isDigest(digest)) throw new FlotillaError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest.slice(0, 100))}: expected ALGORITHM:HEX`)
    await deps.sink.barrier()
    const sums = await checksumsOf(store(), digest)
    if (sums === undefined) {
      const known = await deps.queries.blobRecorded(digest)
      throw new FlotillaError('NOT_FOUND', known ? `blob ${digest} has no checksums yet: they are computed right after its upload, retry in a moment` : `blob ${digest} is unknown`)
    }
    ctx.body = { digest, ...sums }
  })
}
