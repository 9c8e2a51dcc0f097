/**
 * Blob uploads: end-4a/4b (POST, monolithic POST ?digest=), end-11 (mount), end-5 (PATCH,
 * chunked with Content-Range or streamed without), end-6 (PUT, with an optional last chunk),
 * end-13 (GET status) and cancel (DELETE).
 *
 * An upload's bytes stay on the node that opened it; its record (repository, owner) is
 * metadata, so any node can tell where an upload lives and a restart forgets nothing.
 */
import type { Context } from 'koa'
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { BlobInfo } from '../../storage/blobs/blob-store.js'
import { FlotillaError, type ErrorCode } from '../../storage/errors.js'
import { matches } from '../../cluster/access/model.js'
import { gib } from '../../cluster/metadata/quotas.js'
import { parseDigest, parseDigestAlgorithm, parseRepositoryName, type Digest, type RepositoryName } from '../../storage/reference.js'
import type { UploadRecord } from '../../cluster/metadata/commands.js'
import { submit, type RegistryDeps } from './deps.js'
import { proxyTo } from './proxy.js'
import type { Handler } from './routes.js'
import { mayMountFrom } from '../auth/checks.js'

const UPLOAD_ID_RE = /^[A-Za-z0-9_-]{8,128}$/

/**
 * A query parameter given at most once. Given twice it is refused with the code of what it
 * names (`code`: DIGEST_INVALID for a digest, NAME_INVALID for `from`): neither copy can be trusted.
 */
function queryString (ctx: Context, name: string, code: ErrorCode): string | undefined {
  const v = ctx.query[name]
  if (v === undefined) return undefined
  if (Array.isArray(v)) throw new FlotillaError(code, `query parameter ${name} given more than once`)
  return v
}

function uploadLocation (name: string, id: string): string {
  return `/v2/${name}/blobs/uploads/${id}`
}

function rangeHeader (size: number): string {
  return `0-${size > 0 ? size - 1 : 0}`
}

function contentLength (ctx: Context): number | undefined {
  const raw = ctx.get('content-length')
  if (raw === '') return undefined
  if (!/^\d+$/.test(raw)) throw new FlotillaError('SIZE_INVALID', `Content-Length ${JSON.stringify(raw.slice(0, 40))} is not a number`)
  return Number(raw)
}

function hasBody (ctx: Context): boolean {
  const len = contentLength(ctx)
  return (len !== undefined && len > 0) || ctx.get('transfer-encoding') !== ''
}

function blobCreated (ctx: Context, name: string, digest: string): void {
  ctx.status = 201
  ctx.set('Location', `/v2/${name}/blobs/${digest}`)
  ctx.set('Docker-Content-Digest', digest)
  ctx.set('Content-Length', '0')
  ctx.body = ''
}

async function session (deps: RegistryDeps, name: RepositoryName, id: string): Promise<UploadRecord> {
  if (!UPLOAD_ID_RE.test(id)) throw new FlotillaError('BLOB_UPLOAD_UNKNOWN', `upload ${JSON.stringify(id.slice(0, 130))} is unknown`)
  let rec = await deps.queries.upload(id)
  if (rec === undefined) {
    // Opened a moment ago through another node? Catch up with the log before saying no.
    await deps.sink.barrier()
    rec = await deps.queries.upload(id)
  }
  if (rec === undefined || rec.repo !== name) throw new FlotillaError('BLOB_UPLOAD_UNKNOWN', `upload ${id} is unknown in ${name}: start a new one with POST /v2/${name}/blobs/uploads/`)
  return rec
}

/**
 * Routing for upload-session routes: the session's bytes live on the node that opened it,
 * so a request that reached another node is proxied to that owner.
 */
export function ownedUpload (handler: Handler): Handler {
  return async (ctx, deps, name, id) => {
    const rec = await session(deps, name, id)
    if (rec.owner !== deps.nodeId) {
      const target = deps.replication?.peerTarget(rec.owner)
      if (target === undefined || deps.replication === undefined) throw new FlotillaError('UNAVAILABLE', `upload ${id} belongs to node ${rec.owner}, which is not reachable now: retry, or start a new upload`)
      return await proxyTo(ctx, target, deps.replication.forwarding, deps.replication.peers)
    }
    await handler(ctx, deps, name, id)
  }
}

/** Parse `Content-Range: <start>-<end>` (inclusive) into the offset and length it promises. */
export function parseContentRange (header: string): { offset: number; length: number } {
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim())
  if (m === null) throw new FlotillaError('UPLOAD_OUT_OF_ORDER', `malformed Content-Range ${JSON.stringify(header.slice(0, 80))}: expected <start>-<end>`)
  const start = Number(m[1])
  const end = Number(m[2])
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) {
    throw new FlotillaError('UPLOAD_OUT_OF_ORDER', `Content-Range ${header} is not a valid range`)
  }
  return { offset: start, length: end - start + 1 }
}

/**
 * Append the request body to upload `id`, down the upload's chain too (upload-mirror.ts).
 * `digest`: the blob's digest when the client gave it with the body (PUT ?digest=), which
 * then picks the chain of a fresh session: the nodes that should hold the blob.
 */
async function appendBody (ctx: Context, deps: RegistryDeps, id: string, digest?: Digest): Promise<number> {
  const cr = ctx.get('content-range')
  const len = contentLength(ctx)
  const opts: { offset?: number; length?: number } = {}
  if (cr !== '') {
    const r = parseContentRange(cr)
    if (len !== undefined && len !== r.length) {
      throw new FlotillaError('SIZE_INVALID', `Content-Length ${len} does not match Content-Range ${cr} (${r.length} bytes)`)
    }
    opts.offset = r.offset
    opts.length = r.length
  } else if (len !== undefined) {
    opts.length = len
  }
  const mirror = deps.replication?.mirror
  let source: Readable = ctx.req
  if (mirror?.wants(id) === true) {
    const start = await deps.uploads.size(id)
    if (start !== undefined && (opts.offset === undefined || opts.offset === start)) source = await mirror.tee(id, start, ctx.req, digest !== undefined ? { key: digest, digest } : {})
  }
  try {
    return await deps.uploads.append(id, source, opts)
  } catch (err) {
    if (err instanceof FlotillaError && err.code === 'UPLOAD_OUT_OF_ORDER') {
      const size = await deps.uploads.size(id)
      if (size !== undefined) ctx.set('Range', rangeHeader(size))
      ctx.set('Location', uploadLocation(ctx.state.repoName as string, id))
    }
    throw err
  }
}

export async function start (ctx: Context, deps: RegistryDeps, name: RepositoryName): Promise<void> {
  ctx.state.repoName = name
  const mount = queryString(ctx, 'mount', 'DIGEST_INVALID')
  if (mount !== undefined) {
    const digest = parseDigest(mount)
    const fromRaw = queryString(ctx, 'from', 'NAME_INVALID')
    const from = fromRaw === undefined ? undefined : parseRepositoryName(fromRaw)
    const known = from === undefined ? await deps.queries.knownBlob(digest) : await deps.queries.linkedBlob(from, digest)
    if (known !== undefined && await mayMountFrom(ctx, deps.queries, digest, from, deps.auth, name) && await deps.blobs.stat(digest) !== undefined) {
      const release = deps.gc?.inUse.hold([digest])
      try {
        await submit(deps, { type: 'LinkBlob', repo: name, digest, size: known.size, mount: true, at: deps.now() })
        return blobCreated(ctx, name, digest)
      } catch (err) {
        // Collected since it was checked: the client uploads it instead (a 202, as for any refused mount).
        if (!(err instanceof FlotillaError) || err.code !== 'BLOB_UNKNOWN') throw err
      } finally {
        release?.()
      }
    }
    // Not mountable: fall back to a fresh upload session, as the spec allows (202).
  }
  // A namespace at its quota is told so before it sends any byte (the log has the last word).
  await roomInQuota(deps, name)
  // A full node opens the upload on a member with room; the client's next requests come back
  // here and are passed to that owner like any session another node holds.
  if (deps.disk?.state().full === true) {
    const peer = await deps.disk.roomElsewhere()
    const target = peer === undefined ? undefined : deps.replication?.peerTarget(peer)
    if (target === undefined || deps.replication === undefined) {
      throw new FlotillaError('DISK_FULL', `this node's disk is ${Math.round(deps.disk.state().usedPercent)}% full (above storage.diskHighWatermark) and no other node has room: free space (delete images, run flotilla gc) or add a node`)
    }
    return await proxyTo(ctx, target, deps.replication.forwarding, deps.replication.peers)
  }
  const digestParam = queryString(ctx, 'digest', 'DIGEST_INVALID')
  if (digestParam !== undefined && mount === undefined) {
    const digest = parseDigest(digestParam)
    const expectedSize = contentLength(ctx)
    const opts: { expected: Digest; expectedSize?: number } = { expected: digest }
    if (expectedSize !== undefined) opts.expectedSize = expectedSize
    const mirror = deps.replication?.mirror
    const mirrorId = `post-${randomBytes(18).toString('base64url')}`
    const source = mirror?.wants(mirrorId) === true ? await mirror.tee(mirrorId, 0, ctx.req, { key: digest, digest }) : ctx.req
    let info: BlobInfo
    try {
      info = await deps.blobs.ingest(source, opts)
    } catch (err) {
      mirror?.abandon(mirrorId)
      throw err
    }
    // The first W-1 nodes of the chain record themselves as holders before the link: the 201
    // means "on W nodes" (unless the chain was cut: then the manifest PUT waits for the copies).
    await mirror?.commit(mirrorId, digest)
    await submit(deps, { type: 'LinkBlob', repo: name, digest, size: info.size, holder: deps.nodeId, at: deps.now() })
    return blobCreated(ctx, name, digest)
  }
  const algRaw = queryString(ctx, 'digest-algorithm', 'DIGEST_INVALID')
  const algorithm = algRaw === undefined ? 'sha256' : parseDigestAlgorithm(algRaw)
  const id = randomBytes(18).toString('base64url')
  // The bytes' home first: a crash before the record leaves only an orphan file, swept at start.
  await deps.uploads.create(id)
  await submit(deps, { type: 'CreateUpload', id, repo: name, owner: deps.nodeId, algorithm, at: deps.now() })
  ctx.status = 202
  ctx.set('Location', uploadLocation(name, id))
  ctx.set('Range', '0-0')
  ctx.set('Docker-Upload-UUID', id)
  ctx.set('Content-Length', '0')
  ctx.body = ''
}

async function roomInQuota (deps: RegistryDeps, name: RepositoryName): Promise<void> {
  for (const q of await deps.queries.quotas()) {
    if (q.usedBytes < q.maxBytes || !q.repositories.some((p) => matches(p, name))) continue
    throw new FlotillaError('QUOTA_EXCEEDED', `quota ${q.name} (${q.repositories.join(', ')}) is ${gib(q.maxBytes)} and ${gib(q.usedBytes)} are used: delete images there (then run flotilla gc) or raise the quota`)
  }
}

export async function status (ctx: Context, deps: RegistryDeps, name: RepositoryName, id: string): Promise<void> {
  await session(deps, name, id)
  const size = await deps.uploads.size(id)
  if (size === undefined) throw new FlotillaError('BLOB_UPLOAD_UNKNOWN', `upload ${id} has no data on this node`)
  ctx.status = 204
  ctx.set('Location', uploadLocation(name, id))
  ctx.set('Range', rangeHeader(size))
  ctx.set('Docker-Upload-UUID', id)
}

export async function patch (ctx: Context, deps: RegistryDeps, name: RepositoryName, id: string): Promise<void> {
  ctx.state.repoName = name
  await session(deps, name, id)
  const size = await appendBody(ctx, deps, id)
  ctx.status = 202
  ctx.set('Location', uploadLocation(name, id))
  ctx.set('Range', rangeHeader(size))
  ctx.set('Docker-Upload-UUID', id)
  ctx.set('Content-Length', '0')
  ctx.body = ''
}

export async function finish (ctx: Context, deps: RegistryDeps, name: RepositoryName, id: string): Promise<void> {
  ctx.state.repoName = name
  await session(deps, name, id)
  const digestParam = queryString(ctx, 'digest', 'DIGEST_INVALID')
  if (digestParam === undefined) throw new FlotillaError('DIGEST_INVALID', 'the digest query parameter is required to complete an upload: PUT …?digest=sha256:<hex>')
  const digest = parseDigest(digestParam)
  if (hasBody(ctx)) await appendBody(ctx, deps, id, digest)
  let info: BlobInfo
  try {
    info = await deps.uploads.commit(id, digest, deps.blobs)
  } catch (err) {
    deps.replication?.mirror?.abandon(id)
    throw err
  }
  await deps.replication?.mirror?.commit(id, digest)
  await submit(deps, { type: 'LinkBlob', repo: name, digest, size: info.size, uploadId: id, holder: deps.nodeId, at: deps.now() })
  blobCreated(ctx, name, digest)
}

export async function cancel (ctx: Context, deps: RegistryDeps, name: RepositoryName, id: string): Promise<void> {
  await session(deps, name, id)
  await submit(deps, { type: 'DeleteUpload', id })
  await deps.uploads.remove(id)
  deps.replication?.mirror?.abandon(id)
  ctx.status = 204
}
