/**
 * end-3 (GET/HEAD a manifest by tag or digest), end-7 (PUT) and end-9 (DELETE).
 */
import type { Context } from 'koa'
import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'
import { FlotillaError, type ErrorCode } from '../../storage/errors.js'
import { digestAlgorithm, digestOf, parseReference, parseTag, type RepositoryName } from '../../storage/reference.js'
import { parseManifest } from '../oci/manifest.js'
import { submit, type RegistryDeps } from './deps.js'
import { mayPutManifest } from '../auth/checks.js'
import { configLabels } from './config-labels.js'

/** How much of a refused body is read and thrown away before the connection is cut instead. */
const DRAIN_LIMIT = 16 * 1024 * 1024

/** Read a request body into memory, refusing more than `max` bytes. */
export async function readLimited (req: Readable, max: number, tooLarge: ErrorCode = 'BODY_TOO_LARGE'): Promise<Buffer> {
  const chunks: Buffer[] = []
  let total = 0
  // destroyOnReturn: false: leaving the loop must not reset the connection before the 413 is sent.
  for await (const chunk of req.iterator({ destroyOnReturn: false })) {
    const b = chunk as Buffer
    total += b.length
    if (total > max) {
      drain(req)
      throw new FlotillaError(tooLarge, `the body is larger than the ${max}-byte limit`)
    }
    chunks.push(b)
  }
  return Buffer.concat(chunks, total)
}

/**
 * Discard the rest of a refused body, so that a client still sending it reads the error rather
 * than a reset connection; one that sends more than DRAIN_LIMIT is cut off.
 */
function drain (req: Readable): void {
  let left = DRAIN_LIMIT
  req.on('data', (c: Buffer) => {
    left -= c.length
    if (left < 0) req.destroy()
  })
  req.resume()
}

/** end-3: a manifest of a repository; one under a remote's prefix comes from its cache or upstream (remote.ts). */
export async function get (ctx: Context, deps: RegistryDeps, name: RepositoryName, param: string): Promise<void> {
  const remote = await deps.remotes?.remoteFor(name)
  if (remote !== undefined) return await deps.remotes!.getManifestForClient(ctx, remote, name, param)
  await getLocal(ctx, deps, name, param)
}

/** end-3 from this registry's own metadata only. */
export async function getLocal (ctx: Context, deps: RegistryDeps, name: RepositoryName, param: string): Promise<void> {
  let ref: ReturnType<typeof parseReference>
  try {
    ref = parseReference(param)
  } catch (err) {
    // No manifest can have a name that is not a tag: the spec's conformance suite (and the
    // CNCF registry) expect 404 for a GET or HEAD of one, not 400. A malformed digest stays 400.
    if (err instanceof FlotillaError && err.code === 'TAG_INVALID') throw new FlotillaError('MANIFEST_UNKNOWN', `manifest ${JSON.stringify(param.slice(0, 200))} is unknown in ${name}: it is not a valid tag or digest`)
    throw err
  }
  await deps.sink.barrier()
  const digest = ref.kind === 'digest' ? ref.digest : await deps.queries.resolveTag(name, ref.tag)
  if (digest === undefined) throw new FlotillaError('MANIFEST_UNKNOWN', `manifest ${param} is unknown in ${name}`, { tag: param })
  const rec = await deps.queries.manifest(name, digest)
  const body = rec === undefined ? undefined : await deps.queries.manifestBody(name, digest)
  if (rec === undefined || body === undefined) throw new FlotillaError('MANIFEST_UNKNOWN', `manifest ${param} is unknown in ${name}`, { digest })
  ctx.status = 200
  ctx.set('Docker-Content-Digest', digest)
  ctx.set('ETag', `"${digest}"`)
  ctx.type = rec.mediaType
  if (ctx.method === 'HEAD') {
    ctx.set('Content-Length', String(body.length))
    return
  }
  ctx.body = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  // "Not pulled within D days" (retention): a GET is a pull, a HEAD only a look.
  deps.retention?.pulls.record(name, digest)
}

export async function put (ctx: Context, deps: RegistryDeps, name: RepositoryName, param: string): Promise<void> {
  const ref = parseReference(param)
  const extraTags: string[] = []
  const q = ctx.query.tag
  for (const t of q === undefined ? [] : Array.isArray(q) ? q : [q]) extraTags.push(parseTag(t))
  const max = deps.limits.manifestMaxBytes
  const declared = ctx.get('content-length')
  if (declared !== '' && Number(declared) > max) {
    // node:http reads and drops an unread body to keep the connection: not a huge one.
    if (!(Number(declared) <= DRAIN_LIMIT)) ctx.set('Connection', 'close')
    throw new FlotillaError('MANIFEST_TOO_LARGE', `manifest of ${declared} bytes is larger than the ${max}-byte limit`)
  }
  const body = await readLimited(ctx.req, max, 'MANIFEST_TOO_LARGE')
  if (body.length === 0) throw new FlotillaError('MANIFEST_INVALID', 'the manifest body is empty')
  const parsed = parseManifest(body, ctx.get('content-type') || undefined)
  const alg = ref.kind === 'digest' ? digestAlgorithm(ref.digest) : 'sha256'
  const digest = digestOf(alg, createHash(alg).update(body).digest('hex'))
  if (ref.kind === 'digest' && ref.digest !== digest) {
    throw new FlotillaError('DIGEST_INVALID', `manifest digest ${digest} does not match ${ref.digest} in the URL`)
  }
  const tags = [...new Set([...(ref.kind === 'tag' ? [ref.tag] : []), ...extraTags])]
  mayPutManifest(ctx, name, { subject: parsed.subject, tags })
  const cmd: Parameters<typeof submit>[1] = {
    type: 'PutManifest',
    repo: name,
    digest,
    body: body.toString('base64'),
    mediaType: parsed.mediaType,
    tags,
    blobs: parsed.blobs,
    manifests: parsed.manifests,
    at: deps.now(),
  }
  if (parsed.subject !== undefined) cmd.subject = parsed.subject
  if (parsed.artifactType !== undefined) cmd.artifactType = parsed.artifactType
  if (parsed.annotations !== undefined) cmd.annotations = parsed.annotations
  // The image config's labels become read-only properties (cluster/metadata/properties.ts).
  const labels = await configLabels(deps.blobs, parsed.config)
  if (labels !== undefined) cmd.labels = labels
  // GC leaves the referenced blobs alone while this PUT is under way (cluster/gc/collector.ts).
  const release = deps.gc?.inUse.hold([...parsed.blobs, ...parsed.manifests])
  try {
    // Pushed through a virtual name (virtual.ts): what the client saw there is linked in first.
    await (ctx.state.linkMissing as ((refs: { blobs: string[]; manifests: string[] }) => Promise<void>) | undefined)?.(parsed)
    await commitManifest(deps, name, parsed, cmd)
  } finally {
    release?.()
  }
  ctx.status = 201
  ctx.set('Location', `/v2/${name}/manifests/${digest}`)
  ctx.set('Docker-Content-Digest', digest)
  if (parsed.subject !== undefined) ctx.set('OCI-Subject', parsed.subject)
  ctx.set('Content-Length', '0')
  ctx.body = ''
}

/** Check what can be checked before the log, wait for the blobs' copies, then commit. */
async function commitManifest (deps: RegistryDeps, name: RepositoryName, parsed: ReturnType<typeof parseManifest>, cmd: Parameters<typeof submit>[1]): Promise<void> {
  await checkSizes(deps, name, parsed)
  if (deps.replication !== undefined) {
    // Refuse at once what the state machine would refuse, rather than wait for copies of a blob that does not exist.
    for (const d of parsed.blobs) {
      // The blob may have been pushed through another node a moment ago: catch up once before refusing.
      if (await deps.queries.linkedBlob(name, d) === undefined) await deps.sink.barrier()
      if (await deps.queries.linkedBlob(name, d) === undefined) {
        throw new FlotillaError('MANIFEST_BLOB_UNKNOWN', `manifest references blob ${d}, which is not in ${name}: push the blob first`, { digest: d })
      }
    }
    // Acknowledge only once every referenced blob survives the loss of a minority of nodes.
    await deps.replication.waitForCopies(parsed.blobs)
  }
  await submit(deps, cmd)
}

/**
 * Every descriptor's size must be that of what it names: clients verify sizes, so an image
 * whose manifest lies about one can never be pulled. What is not stored yet is left to the
 * state machine (MANIFEST_BLOB_UNKNOWN); blobs and manifests never change size once stored.
 */
async function checkSizes (deps: RegistryDeps, name: RepositoryName, parsed: ReturnType<typeof parseManifest>): Promise<void> {
  for (const d of parsed.blobs) {
    const stored = await deps.queries.linkedBlob(name, d)
    const said = parsed.sizes.get(d)
    if (stored !== undefined && said !== undefined && stored.size !== said) {
      throw new FlotillaError('MANIFEST_INVALID', `the manifest gives blob ${d} a size of ${said} bytes, but it has ${stored.size}`, { digest: d })
    }
  }
  for (const d of parsed.manifests) {
    const stored = await deps.queries.manifest(name, d)
    const said = parsed.sizes.get(d)
    if (stored !== undefined && said !== undefined && stored.size !== said) {
      throw new FlotillaError('MANIFEST_INVALID', `the index gives manifest ${d} a size of ${said} bytes, but it has ${stored.size}`, { digest: d })
    }
  }
}

export async function remove (ctx: Context, deps: RegistryDeps, name: RepositoryName, param: string): Promise<void> {
  const ref = parseReference(param)
  if (!deps.deleteEnabled) throw new FlotillaError('METHOD_NOT_ALLOWED', 'deletes are disabled on this registry (storage.delete: false)')
  if (ref.kind === 'digest') await submit(deps, { type: 'DeleteManifest', repo: name, digest: ref.digest })
  else await submit(deps, { type: 'DeleteTag', repo: name, tag: ref.tag })
  ctx.status = 202
  ctx.set('Content-Length', '0')
  ctx.body = ''
}
