/**
 * Node-to-node routes under /internal/v1/, for members only: every request is signed with
 * the sender's libp2p key (net/peer-auth.ts) and the sender must be a member.
 *
 *   GET|HEAD /internal/v1/blobs/<digest>     a blob's bytes (Range supported), for replication
 */
import type { Context, Next } from 'koa'
import { verifyRequest } from '../../net/peer-auth.js'
import { FlotillaError } from '../../storage/errors.js'
import { parseDigest } from '../../storage/reference.js'
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import { serveLocal } from './blobs.js'

export function internalRoutes (opts: { blobs: BlobStore; admits: (peerId: string) => boolean }) {
  return async function internal (ctx: Context, next: Next): Promise<void> {
    if (!ctx.path.startsWith('/internal/')) return await next()
    const peer = await verifyRequest(ctx.get('authorization') || undefined, ctx.method, ctx.path)
    if (peer === undefined) throw new FlotillaError('UNAUTHORIZED', 'node-to-node routes need a valid peer signature')
    if (!opts.admits(peer)) throw new FlotillaError('DENIED', `peer ${peer} is not a member of this cluster`)
    const m = /^\/internal\/v1\/blobs\/([^/]+)$/.exec(ctx.path)
    if (m === null) throw new FlotillaError('NOT_FOUND', `no such internal route: ${ctx.path.slice(0, 100)}`)
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed here`)
    const digest = parseDigest(decodeURIComponent(m[1]!))
    const info = await opts.blobs.stat(digest)
    if (info === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${digest} is not on this node`, { digest })
    await serveLocal(ctx, opts, digest, info.size)
  }
}
