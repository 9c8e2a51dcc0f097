/**
 * end-2 (GET/HEAD a blob, with Range) and end-10 (DELETE a blob from a repository).
 */
import type { Context } from 'koa'
import { FlotillaError } from '../../storage/errors.js'
import { parseDigest, type Digest, type RepositoryName } from '../../storage/reference.js'
import type { ByteRange } from '../../storage/blobs/blob-store.js'
import { submit, type BlobReplication, type RegistryDeps } from './deps.js'

/**
 * Parse a single `Range: bytes=…` request against a blob of `size` bytes.
 * Returns undefined for no (or an ignorable, multi-part) range; throws 416 when unsatisfiable.
 */
export function parseRange (header: string, size: number): ByteRange | undefined {
  if (header === '') return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m === null) {
    // RFC 9110: a syntactically invalid or multi-range request may be ignored; serve the whole blob.
    return undefined
  }
  const [, a, b] = m
  let start: number
  let end: number
  if (a === '' && b === '') return undefined
  if (a === '') {
    const suffix = Number(b)
    if (suffix === 0) throw new FlotillaError('RANGE_NOT_SATISFIABLE', 'an empty suffix range selects no bytes', { size })
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(a)
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1)
    if (b !== '' && Number(b) < start) return undefined
  }
  if (!Number.isSafeInteger(start) || start >= size) {
    throw new FlotillaError('RANGE_NOT_SATISFIABLE', `range ${header} starts beyond the blob's ${size} bytes`, { size })
  }
  return { start, end }
}

/** end-2: a blob of a repository; one under a remote's prefix is fetched upstream when not cached (remote.ts). */
export async function get (ctx: Context, deps: RegistryDeps, name: RepositoryName, param: string): Promise<void> {
  const remote = await deps.remotes?.remoteFor(name)
  if (remote !== undefined) return await deps.remotes!.getBlob(ctx, remote, name, param)
  await getLocal(ctx, deps, name, param)
}

/** end-2 from this registry's own blobs only. */
export async function getLocal (ctx: Context, deps: RegistryDeps, name: RepositoryName, param: string): Promise<void> {
  const digest = parseDigest(param)
  await deps.sink.barrier()
  const linked = await deps.queries.linkedBlob(name, digest)
  if (linked === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${digest} is not in ${name}`, { digest })
  await serveLinked(ctx, deps, digest, linked.size)
}

/**
 * end-2 for a blob the caller found linked in the repository (`size` as linked): from this
 * node's store, else streamed from a peer. A remote repository's cached blob comes here too.
 */
export async function serveLinked (ctx: Context, deps: RegistryDeps, digest: Digest, size: number): Promise<void> {
  const info = await deps.blobs.stat(digest)
  if (info === undefined) {
    // Known to the registry but not on this node yet: stream it from a peer that has it.
    if (deps.replication === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${digest} is not stored on this node`, { digest })
    return await serveFromPeer(ctx, deps.replication, digest, size)
  }
  await serveLocal(ctx, deps, digest, info.size)
}

export function blobHeaders (ctx: Context, digest: Digest, size: number, range: ByteRange | undefined): number {
  ctx.set('Docker-Content-Digest', digest)
  ctx.set('ETag', `"${digest}"`)
  ctx.set('Accept-Ranges', 'bytes')
  ctx.set('Cache-Control', 'max-age=31536000')
  ctx.type = 'application/octet-stream'
  if (range !== undefined) {
    ctx.status = 206
    ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${size}`)
  } else {
    ctx.status = 200
  }
  const length = range === undefined ? size : range.end - range.start + 1
  if (ctx.method === 'HEAD') ctx.set('Content-Length', String(length))
  return length
}

/** Serve a blob from this node's store (also the internal route peers copy from). */
export async function serveLocal (ctx: Context, deps: Pick<RegistryDeps, 'blobs'>, digest: Digest, size: number, opts: { oneShot?: boolean } = {}): Promise<void> {
  const range = parseRange(ctx.get('range'), size)
  const length = blobHeaders(ctx, digest, size, range)
  if (ctx.method === 'HEAD') return
  if (deps.blobs.writeTo !== undefined && length > 0) {
    // Bypass Koa's piping: the store writes into the socket from a few reused buffers.
    ctx.length = length
    ctx.respond = false
    ctx.res.writeHead(ctx.status, ctx.response.headers as Record<string, string>)
    await deps.blobs.writeTo(digest, range, ctx.res, opts).catch((err: unknown) => {
      ctx.state.errorCode = 'STREAM_ABORTED'
      ctx.res.destroy(err as Error)
    })
    return
  }
  ctx.body = await deps.blobs.read(digest, range)
  ctx.length = length
}

async function serveFromPeer (ctx: Context, replication: BlobReplication, digest: Digest, size: number): Promise<void> {
  const range = parseRange(ctx.get('range'), size)
  const length = blobHeaders(ctx, digest, size, range)
  if (ctx.method === 'HEAD') return
  const stream = await replication.fetchThrough(digest, range)
  if (stream === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${digest} is on no reachable node right now: retry shortly`, { digest })
  ctx.body = stream
  ctx.length = length
}

export async function remove (ctx: Context, deps: RegistryDeps, name: RepositoryName, param: string): Promise<void> {
  const digest = parseDigest(param)
  if (!deps.deleteEnabled) throw new FlotillaError('METHOD_NOT_ALLOWED', 'deletes are disabled on this registry (storage.delete: false)')
  await submit(deps, { type: 'UnlinkBlob', repo: name, digest })
  ctx.status = 202
  ctx.set('Content-Length', '0')
  ctx.body = ''
}
