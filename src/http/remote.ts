/**
 * Remote repositories (pull-through caches) on the read path. Every per-repository read,
 * manifests.get, blobs.get and listing.tags, asks `remoteFor(name)` first; for a name under a
 * remote's prefix it comes here, so anything that resolves a pull to such a name (a virtual
 * repository's member included) gets the cache by calling those same functions.
 *
 *   manifest by tag     cached and checked within the TTL: served from the cache. Past the TTL:
 *                       a HEAD upstream; same digest: checked again (RemoteTagChecked), served;
 *                       another: fetched anew. Upstream down, 5xx or 429: the cached one is
 *                       served anyway (stale-if-error: logged, counted).
 *   manifest by digest  from the cache when there; else fetched, verified, recorded (PutManifest,
 *                       partial: its blobs come when first pulled)
 *   blob                linked in the repository: as any blob. Known elsewhere in the cluster:
 *                       linked here too. Else fetched from the upstream by one member for the
 *                       whole cluster (the first of the blob's rendezvous ranking that answers),
 *                       the others streaming from it while it downloads (internal route
 *                       GET /internal/v1/remote/blobs/<digest>/<repo>), verified, then linked.
 *   tags/list           the upstream's list; the cached tags when the upstream fails
 *   push                refused (DENIED), in routes.ts
 */
import type { Context } from 'koa'
import type { IncomingMessage } from 'node:http'
import { Readable, Transform } from 'node:stream'
import { createHash } from 'node:crypto'
import { FlotillaError } from '../../storage/errors.js'
import { digestAlgorithm, digestOf, parseDigest, parseReference, type Digest, type RepositoryName } from '../../storage/reference.js'
import { remoteAllows, remoteOf, upstreamName, upstreamOrigin, type RemoteRecord } from '../../cluster/remote/model.js'
import { decryptSecret } from '../../cluster/remote/secret.js'
import { Upstream, UpstreamFailure, failureOf, httpsAgent, readAll } from '../../cluster/remote/upstream.js'
import { trustedCAs } from '../../net/trusted-fetch.js'
import type { Agent as HttpsAgent } from 'node:https'
import { BlobFills, type BlobFill, type FillReader, type FillSource } from '../../cluster/remote/fill.js'
import type { RemoteMetrics } from '../../cluster/remote/metrics.js'
import { rank } from '../../cluster/replication/replicator.js'
import { parseManifest } from '../oci/manifest.js'
import { submit, type RegistryDeps } from './deps.js'
import { blobHeaders, parseRange, serveLinked } from './blobs.js'
import type { ByteRange } from '../../storage/blobs/blob-store.js'
import { getLocal as getLocalManifest } from './manifests.js'
import { nextLink, pageParams, readLocalTagPage, tagsLocal } from './listing.js'
import { CachedList } from './cached-list.js'

/** Every manifest type a remote asks its upstream for (Accept), Docker's and OCI's. */
const MANIFEST_ACCEPT_ALL = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ')

export interface RemoteServiceOptions {
  deps: RegistryDeps
  metrics: RemoteMetrics
  /** Members of the cluster, by peer id (this node included). */
  members: () => string[]
  /** A signed GET to a member's internal route (its peer port); rejects when it cannot be reached. */
  peerGet: (peer: string, path: string) => Promise<IncomingMessage>
  /** CAs for https:// upstreams besides the system's (tls.trust); none: the system's only. */
  trust?: string[]
}

/** What a remote pull needs: the remote and the name upstream. */
export interface RemoteTarget { remote: RemoteRecord; upstream: string }

/**
 * A fill's reader with its first chunk read already: a fill that fails before its first byte
 * is then the client's clear error status, not a response cut before its headers.
 */
async function primed (r: FillReader): Promise<Readable> {
  try {
    await r.prime()
  } catch (err) {
    r.destroy()
    throw err
  }
  return r
}

export class RemoteService {
  private readonly list: CachedList<RemoteRecord>
  private readonly upstreams = new Map<string, { at: number; client: Upstream }>()
  private readonly manifestFills = new Map<string, Promise<void>>()
  readonly fills: BlobFills
  readonly metrics: RemoteMetrics
  private readonly tlsAgent: HttpsAgent

  constructor (private readonly opts: RemoteServiceOptions) {
    const { deps } = opts
    this.metrics = opts.metrics
    this.tlsAgent = httpsAgent(trustedCAs(opts.trust ?? []))
    this.metrics.activeFills = () => this.fills.active()
    this.list = new CachedList(async () => await deps.queries.remotes())
    this.fills = new BlobFills({ uploads: deps.uploads, blobs: deps.blobs, log: deps.log, metrics: opts.metrics, hold: (d) => deps.gc?.inUse.hold(d) ?? (() => {}) })
  }

  /** Forget the cached list of remotes (a PutRemote or DeleteRemote was applied). */
  invalidate (): void { this.list.invalidate() }

  /** The remote a repository name belongs to (its prefix), or undefined for a local repository. */
  async remoteFor (name: string): Promise<RemoteRecord | undefined> {
    return remoteOf(name, await this.list.get())
  }

  /** The remote and upstream name of `name`, refused when its patterns do not allow it. */
  private target (r: RemoteRecord, name: string): RemoteTarget {
    const upstream = upstreamName(r, name)
    if (!remoteAllows(r, upstream)) throw new FlotillaError('DENIED', `${name} is not allowed by remote ${r.name} (its allow and block patterns exclude ${upstream})`)
    return { remote: r, upstream }
  }

  private async client (r: RemoteRecord): Promise<Upstream> {
    const c = this.upstreams.get(r.name)
    if (c !== undefined && c.at === r.at) return c.client
    let creds: { username: string; password: string } | undefined
    if (r.username !== undefined && r.password !== undefined) {
      const info = await this.opts.deps.queries.clusterInfo()
      if (info === undefined) throw new FlotillaError('UNAVAILABLE', 'the cluster key is not there yet: retry')
      creds = { username: r.username, password: decryptSecret(r.password, info) }
    }
    const client = new Upstream(upstreamOrigin(r), r.name, creds, this.opts.metrics, this.tlsAgent)
    this.upstreams.set(r.name, { at: r.at, client })
    return client
  }

  /** An upstream failure as the client's error: what went wrong, where, and that nothing was cached. */
  private clientError (err: unknown, what: 'manifest' | 'blob', name: string): FlotillaError {
    if (err instanceof FlotillaError) return err
    if (!(err instanceof UpstreamFailure)) return new FlotillaError('UPSTREAM_ERROR', `${name}: ${(err as Error).message}`)
    if (err.why === 'not_found') return new FlotillaError(what === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `${name}: ${err.message}`)
    if (err.transient) return new FlotillaError('UPSTREAM_UNAVAILABLE', `${name}: ${err.message}, and nothing is cached for it: retry later`)
    return new FlotillaError('UPSTREAM_ERROR', `${name}: ${err.message}`)
  }

  // ── manifests ─────────────────────────────────────────────────────────────────────

  async getManifest (ctx: Context, r: RemoteRecord, name: RepositoryName, param: string): Promise<void> {
    const { deps, metrics } = this.opts
    const t = this.target(r, name)
    let ref: ReturnType<typeof parseReference>
    try { ref = parseReference(param) } catch { return await getLocalManifest(ctx, deps, name, param) }
    await deps.sink.barrier()
    if (ref.kind === 'digest') {
      if (await deps.queries.manifest(name, ref.digest) === undefined) await this.fillManifest(t, name, ref.digest)
      else metrics.cache.inc({ remote: r.name, kind: 'manifest', result: 'hit' })
      return await getLocalManifest(ctx, deps, name, param)
    }
    const info = await deps.queries.tagInfo(name, ref.tag)
    const cached = info !== undefined && await deps.queries.manifest(name, info.digest) !== undefined
    if (!cached) {
      await this.fillManifest(t, name, ref.tag)
      return await getLocalManifest(ctx, deps, name, param)
    }
    if (deps.now() - info.checkedAt >= r.ttlSeconds * 1000) await this.revalidate(t, name, ref.tag, info.digest)
    else metrics.cache.inc({ remote: r.name, kind: 'manifest', result: 'hit' })
    return await getLocalManifest(ctx, deps, name, param)
  }

  /** A cached tag past its TTL: checked with a HEAD; fetched anew when it moved; kept when the upstream fails. */
  private async revalidate (t: RemoteTarget, name: RepositoryName, tag: string, digest: string): Promise<void> {
    const { deps, metrics } = this.opts
    const r = t.remote
    let failure: UpstreamFailure
    try {
      const res = await (await this.client(r)).request('HEAD', `/v2/${t.upstream}/manifests/${tag}`, t.upstream, { accept: MANIFEST_ACCEPT_ALL })
      res.resume()
      const now = res.headers['docker-content-digest']
      if (res.statusCode === 200 && now === digest) {
        metrics.cache.inc({ remote: r.name, kind: 'manifest', result: 'hit' })
        await submit(deps, { type: 'RemoteTagChecked', repo: name, tag, digest, at: deps.now() })
        return
      }
      if (res.statusCode === 200) {
        // Moved upstream (or no digest said): fetch it; if that fails, the cached one still serves.
        try { await this.fillManifest(t, name, tag); return } catch (err) {
          if (!(err instanceof UpstreamFailure) || !err.transient) throw err
          failure = err
        }
      } else {
        failure = failureOf(res.statusCode ?? 0, `${t.upstream}:${tag}`, upstreamOrigin(r))
        if (failure.why === 'not_found') throw this.clientError(failure, 'manifest', name)
      }
    } catch (err) {
      if (!(err instanceof UpstreamFailure)) throw err
      if (err.why === 'not_found') throw this.clientError(err, 'manifest', name)
      failure = err
    }
    metrics.stale.inc({ remote: r.name })
    deps.log.warn({ remote: r.name, repo: name, tag, digest, cause: failure.why, err: failure.message }, 'remote: the upstream failed; serving the cached tag past its TTL (stale-if-error)')
  }

  /** Fetch a manifest from the upstream, verify it and record it (one fetch per name and reference on this node at a time). */
  private async fillManifest (t: RemoteTarget, name: RepositoryName, ref: string): Promise<void> {
    const k = `${name}\u0000${ref}`
    let p = this.manifestFills.get(k)
    if (p === undefined) {
      p = this.fetchManifest(t, name, ref).finally(() => this.manifestFills.delete(k))
      this.manifestFills.set(k, p)
    }
    await p
  }

  private async fetchManifest (t: RemoteTarget, name: RepositoryName, ref: string): Promise<void> {
    const { deps, metrics } = this.opts
    const r = t.remote
    const origin = upstreamOrigin(r)
    const what = `manifest ${t.upstream}:${ref}`
    try {
      const res = await (await this.client(r)).request('GET', `/v2/${t.upstream}/manifests/${ref}`, t.upstream, { accept: MANIFEST_ACCEPT_ALL })
      if (res.statusCode !== 200) { res.resume(); throw failureOf(res.statusCode ?? 0, what, origin) }
      const body = await readAll(res, deps.limits.manifestMaxBytes)
      const isDigest = ref.includes(':')
      const alg = isDigest ? digestAlgorithm(parseDigest(ref)) : 'sha256'
      const digest = digestOf(alg, createHash(alg).update(body).digest('hex'))
      if (isDigest && digest !== ref) throw new UpstreamFailure('bad_answer', `the upstream ${origin} sent a ${what} whose digest is ${digest}: nothing was cached`)
      const said = res.headers['docker-content-digest']
      if (!isDigest && typeof said === 'string' && said.startsWith(`${alg}:`) && said !== digest) throw new UpstreamFailure('bad_answer', `the upstream ${origin} sent a ${what} whose bytes have digest ${digest}, not ${said} as it said: nothing was cached`)
      let parsed: ReturnType<typeof parseManifest>
      try {
        parsed = parseManifest(body, typeof res.headers['content-type'] === 'string' ? res.headers['content-type'] : undefined)
      } catch (err) {
        throw new UpstreamFailure('bad_answer', `the upstream ${origin} sent a ${what} that is not a valid manifest (${(err as Error).message}): nothing was cached`)
      }
      const cmd: Parameters<typeof submit>[1] = { type: 'PutManifest', repo: name, digest, body: body.toString('base64'), mediaType: parsed.mediaType, tags: isDigest ? [] : [ref], blobs: parsed.blobs, manifests: parsed.manifests, partial: true, at: deps.now() }
      if (parsed.subject !== undefined) cmd.subject = parsed.subject
      if (parsed.artifactType !== undefined) cmd.artifactType = parsed.artifactType
      if (parsed.annotations !== undefined) cmd.annotations = parsed.annotations
      await submit(deps, cmd)
      metrics.cache.inc({ remote: r.name, kind: 'manifest', result: 'miss' })
    } catch (err) {
      if (err instanceof UpstreamFailure) {
        metrics.fillErrors.inc({ remote: r.name, cause: err.why })
        deps.log.warn({ remote: r.name, repo: name, ref, cause: err.why, err: err.message }, 'remote: fetching a manifest from the upstream failed')
      }
      throw err instanceof UpstreamFailure ? err : this.clientError(err, 'manifest', name)
    }
  }

  /** getManifest's errors for the client (UpstreamFailure is kept inside for stale-if-error). */
  async getManifestForClient (ctx: Context, r: RemoteRecord, name: RepositoryName, param: string): Promise<void> {
    try {
      await this.getManifest(ctx, r, name, param)
    } catch (err) {
      throw this.clientError(err, 'manifest', name)
    }
  }

  // ── blobs ─────────────────────────────────────────────────────────────────────────

  async getBlob (ctx: Context, r: RemoteRecord, name: RepositoryName, param: string): Promise<void> {
    const { deps, metrics } = this.opts
    const digest = parseDigest(param)
    const t = this.target(r, name)
    await deps.sink.barrier()
    // Cached: served as a local repository's blob is (the same file serving, the same headers).
    const linked = await deps.queries.linkedBlob(name, digest)
    if (linked !== undefined) {
      metrics.cache.inc({ remote: r.name, kind: 'blob', result: 'hit' })
      return await serveLinked(ctx, deps, digest, linked.size)
    }
    // Cached for another repository (or pushed): linked here too, no download.
    const known = await deps.queries.knownBlob(digest)
    if (known !== undefined) {
      await submit(deps, { type: 'LinkBlob', repo: name, digest, size: known.size, mount: true, at: deps.now() }).catch(() => {})
      const now = await deps.queries.linkedBlob(name, digest)
      if (now !== undefined) {
        metrics.cache.inc({ remote: r.name, kind: 'blob', result: 'hit' })
        return await serveLinked(ctx, deps, digest, now.size)
      }
    }
    metrics.cache.inc({ remote: r.name, kind: 'blob', result: 'miss' })
    if (ctx.method === 'HEAD') return await this.headUpstream(ctx, t, name, digest)
    let got: { size: number | undefined; body: Readable; range?: ByteRange }
    try {
      got = await this.blobStream(t, name, digest, ctx.get('range'))
    } catch (err) {
      throw this.clientError(err, 'blob', name)
    }
    if (got.range !== undefined && got.size !== undefined) {
      // A range of a blob not cached yet (a client resuming a pull): cut from the fill's bytes.
      ctx.length = blobHeaders(ctx, digest, got.size, got.range)
      ctx.body = got.body
      return
    }
    if (got.size !== undefined) {
      blobHeaders(ctx, digest, got.size, undefined)
      ctx.length = got.size
    } else {
      ctx.set('Docker-Content-Digest', digest)
      ctx.status = 200
      ctx.type = 'application/octet-stream'
    }
    ctx.body = got.body
  }

  private async headUpstream (ctx: Context, t: RemoteTarget, name: RepositoryName, digest: Digest): Promise<void> {
    let res: IncomingMessage
    try {
      res = await (await this.client(t.remote)).request('HEAD', `/v2/${t.upstream}/blobs/${digest}`, t.upstream)
    } catch (err) { throw this.clientError(err, 'blob', name) }
    res.resume()
    if (res.statusCode !== 200) throw this.clientError(failureOf(res.statusCode ?? 0, `blob ${digest} of ${t.upstream}`, upstreamOrigin(t.remote)), 'blob', name)
    const size = Number(res.headers['content-length'] ?? NaN)
    if (Number.isSafeInteger(size)) blobHeaders(ctx, digest, size, undefined)
    else { ctx.status = 200; ctx.set('Docker-Content-Digest', digest) }
  }

  /**
   * The blob's bytes as they arrive, through this node's fill of it (joined when under way).
   * The fill's source is the upstream when this node is the first of the blob's rendezvous
   * ranking that answers, else that member's fill (internal route): one upstream download for
   * the cluster, one stream per other node, however many clients pull at once.
   */
  private async blobStream (t: RemoteTarget, name: RepositoryName, digest: Digest, rangeHeader = ''): Promise<{ size: number | undefined; body: Readable; range?: ByteRange }> {
    const f = this.localFill(t, name, digest, true)
    await f.started
    await f.firstByte()
    const range = f.size === undefined ? undefined : parseRange(rangeHeader, f.size)
    // A range reads on to the blob's end: that end comes only once the digest matched.
    if (range !== undefined) return { size: f.size, range, body: rangeOfFill(await primed(f.reader({ start: range.start, end: f.size! - 1 })), range) }
    return { size: f.size, body: await primed(f.reader()) }
  }

  /** The upstream's answer for a blob, or the failure it means. */
  private async upstreamBlob (t: RemoteTarget, digest: Digest): Promise<FillSource> {
    const res = await (await this.client(t.remote)).request('GET', `/v2/${t.upstream}/blobs/${digest}`, t.upstream)
    if (res.statusCode !== 200) { res.resume(); throw failureOf(res.statusCode ?? 0, `blob ${digest} of ${t.upstream}`, upstreamOrigin(t.remote)) }
    const size = Number(res.headers['content-length'] ?? NaN)
    return { body: res, size: Number.isSafeInteger(size) ? size : undefined }
  }

  /** The blob from the first member of its ranking that answers; this node itself: the upstream. */
  private async sourceBlob (t: RemoteTarget, name: RepositoryName, digest: Digest): Promise<FillSource> {
    const { deps, metrics } = this.opts
    const members = this.opts.members()
    for (const peer of rank(digest, members.length > 0 ? members : [deps.nodeId])) {
      if (peer === deps.nodeId) return await this.upstreamBlob(t, digest)
      let res: IncomingMessage
      try {
        res = await this.opts.peerGet(peer, `/internal/v1/remote/blobs/${digest}/${name}`)
      } catch (err) {
        deps.log.info({ peer, digest, err: (err as Error).message }, 'remote: the member that fills this blob cannot be reached; trying the next')
        continue
      }
      if (res.statusCode === 200) {
        metrics.peerStreams.inc({ remote: t.remote.name })
        const size = Number(res.headers['content-length'] ?? NaN)
        return { size: Number.isSafeInteger(size) ? size : undefined, body: res }
      }
      const text = (await readAll(res, 1 << 16).catch(() => Buffer.alloc(0))).toString('utf8')
      let message = `member ${peer} answered ${res.statusCode ?? 0}`
      try { message = (JSON.parse(text) as { errors: Array<{ message: string }> }).errors[0]!.message } catch { /* keep the status */ }
      if (res.statusCode === 404) throw new FlotillaError('BLOB_UNKNOWN', message, { digest })
      if (res.statusCode === 502) throw new FlotillaError('UPSTREAM_ERROR', message)
      if (res.statusCode === 503 && /upstream/i.test(message)) throw new FlotillaError('UPSTREAM_UNAVAILABLE', message)
      deps.log.info({ peer, digest, status: res.statusCode, err: message }, 'remote: the member that fills this blob refused; trying the next')
    }
    throw new FlotillaError('UPSTREAM_UNAVAILABLE', `no member could fetch blob ${digest} of ${name} from the upstream: retry shortly`)
  }

  /**
   * Start or join this node's fill of a blob (from the upstream, or through the cluster's
   * filler when `viaPeers`); once verified it is linked in `name` with this node as a holder.
   */
  private localFill (t: RemoteTarget, name: RepositoryName, digest: Digest, viaPeers: boolean): BlobFill {
    const { deps } = this.opts
    return this.fills.fill(digest, t.remote.name, async () => viaPeers ? await this.sourceBlob(t, name, digest) : await this.upstreamBlob(t, digest), async (size) => {
      await submit(deps, { type: 'LinkBlob', repo: name, digest, size, holder: deps.nodeId, at: deps.now() })
    })
  }

  /** GET /internal/v1/remote/blobs/<digest>/<repo>: this node fills the blob (or is already) and streams it to a member. */
  async serveFill (ctx: Context, name: RepositoryName, param: string): Promise<void> {
    const digest = parseDigest(param)
    const r = await this.remoteFor(name)
    if (r === undefined) throw new FlotillaError('NAME_UNKNOWN', `${name} belongs to no remote here`)
    const t = this.target(r, name)
    const f = this.localFill(t, name, digest, false)
    let body: Readable
    let range: ReturnType<typeof parseRange>
    try {
      await f.started
      await f.firstByte()
      range = f.size === undefined ? undefined : parseRange(ctx.get('range'), f.size)
      body = await primed(f.reader(range))
    } catch (err) { throw this.clientError(err, 'blob', name) }
    if (f.size !== undefined) blobHeaders(ctx, digest, f.size, range)
    else ctx.status = 200
    if (ctx.method === 'HEAD') { body.destroy(); return }
    ctx.body = body
    if (f.size !== undefined) ctx.length = range === undefined ? f.size : range.end - range.start + 1
  }

  // ── tags ──────────────────────────────────────────────────────────────────────────

  async tags (ctx: Context, r: RemoteRecord, name: RepositoryName): Promise<void> {
    const page = pageParams(ctx)
    const upstream = await this.upstreamTags(r, name, page)
    if (upstream === undefined) return await tagsLocal(ctx, this.opts.deps, name)
    if (upstream.more && upstream.items.length > 0) ctx.set('Link', nextLink(`/v2/${name}/tags/list`, page.n ?? upstream.items.length, upstream.items[upstream.items.length - 1]!))
    ctx.status = 200
    ctx.body = { name, tags: upstream.items }
  }

  /** A page of the upstream's tags, else (the upstream does not answer) of the cached ones. */
  async tagPage (r: RemoteRecord, name: RepositoryName, page: { n?: number; last?: string }): Promise<{ items: string[]; more: boolean } | undefined> {
    return await this.upstreamTags(r, name, page) ?? await readLocalTagPage(this.opts.deps, name, page)
  }

  private async upstreamTags (r: RemoteRecord, name: RepositoryName, page: { n?: number; last?: string }): Promise<{ items: string[]; more: boolean } | undefined> {
    const { deps } = this.opts
    const t = this.target(r, name)
    try {
      const q = new URLSearchParams()
      if (page.n !== undefined) q.set('n', String(page.n))
      if (page.last !== undefined) q.set('last', page.last)
      const res = await (await this.client(r)).request('GET', `/v2/${t.upstream}/tags/list${q.size > 0 ? `?${q.toString()}` : ''}`, t.upstream)
      if (res.statusCode === 200) {
        const doc = JSON.parse((await readAll(res, 16 << 20)).toString('utf8')) as { tags?: unknown }
        if (doc.tags === null || Array.isArray(doc.tags)) {
          const more = /rel="?next"?/.test(String(res.headers.link ?? ''))
          return { items: (doc.tags ?? []).filter((x): x is string => typeof x === 'string'), more }
        }
      } else res.resume()
    } catch (err) {
      deps.log.info({ remote: r.name, repo: name, err: (err as Error).message }, 'remote: the upstream tag list failed; listing the cached tags')
    }
    return undefined
  }
}

/**
 * The bytes `range` of a fill's reader that starts at range.start and reads on to the blob's
 * end. The range's last piece is held back
 * until the reader has ended, which it only does once the whole blob matched its digest (else
 * it fails, and the answer is cut): as with a whole blob, no complete answer carries bytes the
 * digest did not vouch for. The bytes after the range are read and dropped meanwhile.
 */
export function rangeOfFill (source: Readable, range: ByteRange): Readable {
  let at = range.start
  let held: Buffer | undefined
  const out = new Transform({
    transform (chunk: Buffer, _enc, done) {
      const from = Math.max(range.start - at, 0)
      const to = Math.min(range.end + 1 - at, chunk.length)
      at += chunk.length
      if (from < to) {
        if (held !== undefined) this.push(held)
        held = chunk.subarray(from, to)
      }
      done()
    },
    flush (done) {
      if (held !== undefined) this.push(held)
      done()
    },
  })
  source.on('error', (err) => out.destroy(err))
  out.on('close', () => { if (!source.readableEnded) source.destroy() })
  return source.pipe(out)
}
