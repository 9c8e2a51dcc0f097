/**
 * Node-to-node routes under /internal/v1/, for members only: every request is signed with
 * the sender's libp2p key (net/peer-auth.ts), single-use (its nonce is remembered for the
 * skew window: a replay is refused), and the sender must be a member. When the node has a
 * peer port (net/peer-https.ts) these routes are served there only, and the signer must be
 * the peer its TLS certificate names; the client port answers them 403.
 *
 * This middleware also guards the peer port as a whole: a connection admitted there only to
 * learn it was removed (GET /internal/v1/membership) may use nothing else.
 *
 *   GET      /internal/v1/membership                   {member: true, connected}: connected when a live process with
 *                                                       the caller's identity holds a libp2p connection to us;
 *                                                       a removed peer gets 403 {detail: {removed: true}}
 *   GET|HEAD /internal/v1/blobs/<digest>                a blob's bytes (Range supported), for replication
 *   PUT      /internal/v1/mirrors/<id>/<offset>         a chunk of an upload mirrored here and passed on
 *                                                       (Flotilla-Mirror on the first: the rest of the chain)
 *   POST     /internal/v1/mirrors/<id>/commit/<digest>  keep the mirrored bytes as a blob, pass the commit
 *                                                       on (201 {size, holders}; Flotilla-Mirror: the quorum)
 *   DELETE   /internal/v1/mirrors/<id>                  the upload was cancelled: here and down the chain
 *   GET|HEAD /internal/v1/remote/blobs/<digest>/<repo>  a remote repository's blob, filled from its upstream by this
 *                                                       node (or being filled) and streamed as it arrives (src/http/remote.ts)
 *   GET      /internal/v1/disk                          this node's disk: {full, freeBytes, totalBytes, usedPercent}
 *   GET      /internal/v1/gc/in-use                     digests this node is using now {digests} (cluster/gc/)
 *   POST     /internal/v1/gc/sweep                      delete blobs the metadata forgot {deleted, bytes}
 *
 * The Flotilla-Mirror header, when present, is covered by the signature. (cluster/replication/
 * upload-mirror.ts explains upload chains.)
 */
import { longRequest } from './long-request.js'
import type { Context, Next } from 'koa'
import { checkSignature, ReplayGuard } from '../../net/peer-auth.js'
import { peerOfRequest, type PeerMetrics } from '../../net/peer-https.js'
import { FORWARDED } from './forwarded.js'
import { FlotillaError } from '../../storage/errors.js'
import { parseDigest, parseRepositoryName, type RepositoryName } from '../../storage/reference.js'
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import { serveLocal } from './blobs.js'
import { safeDecode } from './routes.js'
import type { MirrorReceiver } from '../../cluster/replication/mirror-receiver.js'
import { MIRROR_HEADER, parseChainSpec, parseCommitSpec } from '../../cluster/replication/upload-mirror.js'
import type { ReplicationMetrics } from '../../cluster/replication/metrics.js'

const MIRROR_ID = '[A-Za-z0-9_-]{8,120}'

/** This node's disk as its peers see it. */
export interface InternalDisk { state: () => { full: boolean; freeBytes: number; totalBytes: number; usedPercent: number } }

/** A member's side of garbage collection (cluster/gc/collector.ts). */
export interface InternalGc {
  /** Digests this node is using now (the collection leaves them alone). */
  inUse (): string[]
  /** Delete this node's blobs the metadata no longer knows, once caught up. */
  sweep (): Promise<{ deleted: number; bytes: number }>
}

export interface InternalRoutesOptions {
  blobs: BlobStore
  admits: (peerId: string) => boolean
  removed?: (peerId: string) => boolean
  liveConnection?: (peerId: string) => Promise<boolean>
  mirrors?: MirrorReceiver
  /** Whether this node serves a peer port: then these routes answer there only. */
  peerPort?: () => boolean
  metrics?: PeerMetrics
  /** Bytes sent to peers (cluster/replication/metrics.ts). */
  replicationMetrics?: ReplicationMetrics
  gc?: InternalGc
  disk?: InternalDisk
  /** A remote repository's blob, filled here for the cluster (src/http/remote.ts serveFill). */
  remoteFill?: (ctx: Context, repo: RepositoryName, digest: string) => Promise<void>
}

export function internalRoutes (opts: InternalRoutesOptions) {
  const replays = new ReplayGuard()
  return async function internal (ctx: Context, next: Next): Promise<void> {
    // The peer id of the TLS certificate, when the request came in on the peer port.
    const tlsPeer = peerOfRequest(ctx.req)
    const isInternal = ctx.path.startsWith('/internal/')
    if (tlsPeer !== undefined) {
      opts.metrics?.requests.inc({ kind: isInternal ? 'internal' : ctx.get(FORWARDED) !== '' ? 'forwarded' : 'other' })
      if (!isInternal && !opts.admits(tlsPeer)) throw new FlotillaError('DENIED', `peer ${tlsPeer} is not a member of this cluster`)
    }
    if (!isInternal) return await next()
    const signed = await checkSignature(ctx.get('authorization') || undefined, ctx.method, ctx.path, Date.now(), ctx.get(MIRROR_HEADER) || undefined)
    if (signed === undefined) {
      // Not the users' challenge: only a member's key can answer this one (net/peer-auth.ts).
      ctx.set('WWW-Authenticate', 'Flotilla-Peer')
      throw new FlotillaError('UNAUTHORIZED', 'node-to-node routes need a valid, current peer signature')
    }
    const peer = signed.peer
    if (tlsPeer === undefined && opts.peerPort?.() === true) {
      opts.metrics?.internalOnClientPort.inc()
      throw new FlotillaError('DENIED', 'node-to-node routes are served on this node\'s peer port only (mutual TLS with the members\' libp2p certificates), not on its client port: the member records give each node\'s peer port')
    }
    if (tlsPeer !== undefined && tlsPeer !== peer) {
      throw new FlotillaError('DENIED', `the request is signed by ${peer} but its TLS connection is ${tlsPeer}'s`)
    }
    if (!replays.accept(signed)) {
      opts.metrics?.replaysRefused.inc()
      ctx.set('WWW-Authenticate', 'Flotilla-Peer')
      throw new FlotillaError('UNAUTHORIZED', 'this signed request was already served once: node-to-node requests are single-use (a replay is refused)')
    }
    if (!opts.admits(peer)) {
      // A removed node that asks learns that it was removed (it may have missed the entry), and stops.
      if (opts.removed?.(peer) === true) throw new FlotillaError('DENIED', `peer ${peer} was removed from this cluster`, { removed: true })
      throw new FlotillaError('DENIED', `peer ${peer} is not a member of this cluster`)
    }
    if (ctx.path === '/internal/v1/membership' && ctx.method === 'GET') {
      // connected: a live process with the caller's identity is connected to us over libp2p.
      // A node about to start asks this before it has a host: yes means it is a copy.
      ctx.body = { member: true, connected: await opts.liveConnection?.(peer) ?? false }
      return
    }
    if (ctx.path === '/internal/v1/disk' && ctx.method === 'GET' && opts.disk !== undefined) { ctx.body = opts.disk.state(); return }
    if (ctx.path.startsWith('/internal/v1/mirrors/') && opts.mirrors !== undefined) {
      // A full node is no hop of a new chain: refused before the first byte, it is skipped.
      if (ctx.method === 'PUT' && /\/0$/.test(ctx.path) && opts.disk?.state().full === true) throw new FlotillaError('DISK_FULL', 'this node is above its disk high watermark')
      return await mirror(ctx, opts.mirrors)
    }
    if (ctx.path.startsWith('/internal/v1/gc/') && opts.gc !== undefined) {
      if (ctx.path === '/internal/v1/gc/in-use' && ctx.method === 'GET') { ctx.body = { digests: opts.gc.inUse() }; return }
      if (ctx.path === '/internal/v1/gc/sweep' && ctx.method === 'POST') { longRequest(ctx); ctx.body = await opts.gc.sweep(); return }
      if (ctx.path === '/internal/v1/gc/in-use' || ctx.path === '/internal/v1/gc/sweep') throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed on ${ctx.path}`)
    }
    const rf = /^\/internal\/v1\/remote\/blobs\/([^/]+)\/(.+)$/.exec(ctx.path)
    if (rf !== null && opts.remoteFill !== undefined) {
      if (ctx.method !== 'GET' && ctx.method !== 'HEAD') throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed here`)
      countSent(ctx, opts.replicationMetrics)
      return await opts.remoteFill(ctx, parseRepositoryName(rf[2]!), safeDecode(rf[1]!))
    }
    const m = /^\/internal\/v1\/blobs\/([^/]+)$/.exec(ctx.path)
    if (m === null) throw new FlotillaError('NOT_FOUND', `no such internal route: ${ctx.path.slice(0, 100)}`)
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed here`)
    const digest = parseDigest(safeDecode(m[1]!))
    const info = await opts.blobs.stat(digest)
    if (info === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${digest} is not on this node`, { digest })
    countSent(ctx, opts.replicationMetrics)
    // A peer copies a blob once: no point filling this node's page cache with it.
    await serveLocal(ctx, opts, digest, info.size, { oneShot: true })
  }
}

/** Count what the response puts on the wire (headers included), once it is done either way. */
function countSent (ctx: Context, metrics: ReplicationMetrics | undefined): void {
  const socket = ctx.req.socket
  if (metrics === undefined) return
  const before = socket.bytesWritten
  ctx.res.once('close', () => metrics.sent('blobs', socket.bytesWritten - before))
}

async function mirror (ctx: Context, mirrors: MirrorReceiver): Promise<void> {
  const chunk = new RegExp(`^/internal/v1/mirrors/(${MIRROR_ID})/(\\d{1,15})$`).exec(ctx.path)
  const spec = ctx.get(MIRROR_HEADER)
  if (chunk !== null && ctx.method === 'PUT') {
    const chain = spec === '' ? undefined : parseChainSpec(spec)
    // The sender waits for this before it sends a byte (the first chunk of a chain): signed, a member, well-formed.
    if (/100-continue/i.test(ctx.get('expect'))) ctx.res.writeContinue()
    const size = await mirrors.receive(chunk[1]!, Number(chunk[2]), ctx.req, chain)
    ctx.set('Flotilla-Upload-Size', String(size))
    ctx.status = 204
    return
  }
  const commit = new RegExp(`^/internal/v1/mirrors/(${MIRROR_ID})/commit/([^/]+)$`).exec(ctx.path)
  if (commit !== null && ctx.method === 'POST') {
    const done = await mirrors.commit(commit[1]!, safeDecode(commit[2]!), spec === '' ? undefined : parseCommitSpec(spec))
    ctx.status = 201
    ctx.body = done
    return
  }
  const drop = new RegExp(`^/internal/v1/mirrors/(${MIRROR_ID})$`).exec(ctx.path)
  if (drop !== null && ctx.method === 'DELETE') {
    await mirrors.drop(drop[1]!)
    ctx.status = 204
    return
  }
  throw new FlotillaError('NOT_FOUND', `no such internal route: ${ctx.method} ${ctx.path.slice(0, 100)}`)
}
