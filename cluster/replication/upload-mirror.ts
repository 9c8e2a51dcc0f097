/**
 * Upload mirroring: the write quorum's copies travel while the client is still sending.
 *
 * Without it a 1 GiB layer reaches a second node only after the client finished sending it
 * to the first, and the manifest PUT (which waits for W copies) waits for a whole second
 * transfer. Here the owner of an upload tees every appended chunk to W-1 peers as it
 * arrives; when the client completes the upload, the owner and its mirrors commit at the
 * same time, each verifying the digest, and each mirror records itself as a holder
 * (AddHolder) before the owner links the blob. The blob PUT's 201 then already means "on W
 * nodes", and the replicator of a mirror finds the blob present when it applies the link.
 *
 *   owner                                         mirror peer
 *   PATCH/PUT body ──tee──► local upload session
 *                     └──► PUT  /internal/v1/mirrors/<id>/<offset>   → upload mirror-<id>
 *   PUT ?digest=      ───► POST /internal/v1/mirrors/<id>/commit/<digest> → blob + AddHolder
 *   DELETE (cancel)   ───► DELETE /internal/v1/mirrors/<id>
 *
 * The client goes at the pace of the slower of the owner's disk and its mirrors (the manifest
 * waits for all of them anyway). A mirror is best effort: one that holds the client back for
 * 3 s, answers an error, or misses a chunk is dropped for that upload (and skipped for the
 * next 30 s), and the blob reaches it later through ordinary replication. A resumed upload (after
 * a restart of the owner) is not mirrored.
 */
import type { ClientRequest } from 'node:http'
import { PassThrough, type Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { PrivateKey } from '@libp2p/interface'
import { signRequest } from '../../net/peer-auth.js'
import type { PeerClient, PeerTarget } from '../../net/peer-https.js'
import type { BlobStore, UploadStore } from '../../storage/blobs/blob-store.js'
import { FlotillaError } from '../../storage/errors.js'
import { parseDigest } from '../../storage/reference.js'
import { tee } from './tee.js'
import type { CommandSink } from '../metadata/applier.js'

/** Bytes a mirror's connection may buffer before the client is made to wait for it. */
const MIRROR_BUFFER_BYTES = 4 << 20
/** A mirror that holds the client back this long is dropped. */
const STALL_MS = 3_000
/** How long a peer that failed a mirror is left alone. */
const PEER_COOLDOWN_MS = 30_000
/** After the owner's own commit, how long it waits for its mirrors to catch up and commit. */
const COMMIT_GRACE_MS = 5_000
/** Mirror state of uploads nobody touched for this long is forgotten. */
const IDLE_MS = 3600_000

export interface UploadMirrorOptions {
  peerId: string
  privateKey: PrivateKey
  /** Where to reach a peer (its peer port), or undefined when unknown or unreachable. */
  target: (peerId: string) => PeerTarget | undefined
  client: PeerClient
  /** Peers an upload may be mirrored to, best first (`key`: the digest when known, else the upload id). */
  targets: (key: string) => string[]
  /** How many mirrors an upload gets: the write quorum less the owner's own copy. */
  copies: () => number
  log: Logger
}

interface PeerMirror {
  /** The upload's id. */
  id: string
  peer: string
  target: PeerTarget
  /** Bytes the peer has confirmed. */
  offset: number
  ok: boolean
  /** The chunk request in flight, if any: resolves when it ends either way. */
  pending: Promise<void>
  req: ClientRequest | undefined
}

interface Session { peers: PeerMirror[]; touched: number }

export class UploadMirror {
  private readonly sessions = new Map<string, Session>()
  private readonly cooldown = new Map<string, number>()

  constructor (private readonly opts: UploadMirrorOptions) {}

  /** Path of the peer-side session; the upload id travels in the path, which the signature covers. */
  static sessionId (id: string): string {
    return `mirror-${id}`
  }

  /** Whether an append to upload `id` would be mirrored at all (a lone node mirrors nothing). */
  wants (id: string): boolean {
    return this.sessions.has(id) || this.opts.copies() > 0
  }

  /**
   * Tee the bytes of one append (starting at `start`) to the upload's mirrors. Returns the
   * stream the local store should consume; it applies the local store's back-pressure to
   * `source`. `key` picks the peers for a new session (the digest when the client gave it).
   */
  async tee (id: string, start: number, source: Readable, key = id): Promise<Readable> {
    let session = this.sessions.get(id)
    if (session === undefined) {
      if (start !== 0) return source
      session = { peers: this.open(id, key), touched: Date.now() }
      if (session.peers.length === 0) return source
      this.sessions.set(id, session)
    }
    session.touched = Date.now()
    const live: PeerMirror[] = []
    const path = `/internal/v1/mirrors/${id}/${start}`
    // Signed before any byte flows: the request's headers go out with its first write.
    const authorization = await signRequest(this.opts.privateKey, this.opts.peerId, 'PUT', path)
    // The previous chunk's answer may still be on its way (the client got its own already).
    await Promise.all(session.peers.map(async (m) => await withDeadline(m.pending, Date.now() + STALL_MS)))
    for (const m of session.peers) {
      if (!m.ok) continue
      if (m.req !== undefined) { this.drop(m, `its previous chunk took over ${STALL_MS} ms`); continue }
      if (m.offset !== start) { this.drop(m, `it holds ${m.offset} bytes, the chunk starts at ${start}`); continue }
      this.sendChunk(m, path, authorization)
      live.push(m)
    }
    if (live.length === 0) return source
    const local = new PassThrough({ highWaterMark: 1 << 20 })
    // The client goes at the pace of the slower of the local store and the mirrors, since the
    // manifest waits for both anyway; a mirror that holds it back for STALL_MS is dropped.
    tee(source, local, live.map((m) => ({ stream: m.req!, highWater: MIRROR_BUFFER_BYTES, onStall: (why: string) => this.drop(m, why) })), STALL_MS)
    return local
  }

  /**
   * Commit the upload on every mirror that kept up, after the owner committed `digest`
   * locally (or at the same time). Resolves with the peers that now hold the blob durably and
   * have recorded themselves as holders; never rejects.
   */
  async commit (id: string, digest: string): Promise<string[]> {
    const session = this.sessions.get(id)
    if (session === undefined) return []
    this.sessions.delete(id)
    const deadline = Date.now() + COMMIT_GRACE_MS
    const done = await Promise.all(session.peers.map(async (m) => {
      if (!m.ok) return undefined
      await withDeadline(m.pending, deadline)
      if (!m.ok || m.req !== undefined) { this.drop(m, 'its last chunk did not complete in time'); return undefined }
      try {
        const res = await this.call(m, 'POST', `/internal/v1/mirrors/${id}/commit/${digest}`, Math.max(deadline - Date.now(), 1000))
        if (res.status !== 201) { this.drop(m, `its commit answered ${res.status}: ${res.body.slice(0, 200)}`); return undefined }
        return m.peer
      } catch (err) {
        this.drop(m, `its commit failed: ${(err as Error).message}`)
        return undefined
      }
    }))
    return done.filter((p): p is string => p !== undefined)
  }

  /** The upload was cancelled or failed for good: drop the mirrors' bytes too. */
  abandon (id: string): void {
    const session = this.sessions.get(id)
    if (session === undefined) return
    this.sessions.delete(id)
    for (const m of session.peers) {
      m.req?.destroy()
      void this.call(m, 'DELETE', `/internal/v1/mirrors/${id}`, 10_000).catch(() => {})
    }
  }

  /** Forget sessions idle for an hour (their uploads expired or were abandoned by clients). */
  sweep (now = Date.now()): void {
    for (const [id, s] of this.sessions) if (now - s.touched > IDLE_MS) this.abandon(id)
    for (const [peer, until] of this.cooldown) if (until < now) this.cooldown.delete(peer)
  }

  private open (id: string, key: string): PeerMirror[] {
    const now = Date.now()
    const peers: PeerMirror[] = []
    const wanted = this.opts.copies()
    if (wanted <= 0) return peers
    for (const peer of this.opts.targets(key)) {
      if (peers.length >= wanted) break
      if (peer === this.opts.peerId || (this.cooldown.get(peer) ?? 0) > now) continue
      const target = this.opts.target(peer)
      if (target === undefined) continue
      peers.push({ id, peer, target, offset: 0, ok: true, pending: Promise.resolve(), req: undefined })
    }
    return peers
  }

  private sendChunk (m: PeerMirror, path: string, authorization: string): void {
    const req = this.opts.client.request(m.target, { path, method: 'PUT', headers: { authorization, 'content-type': 'application/octet-stream' } })
    m.req = req
    m.pending = new Promise<void>((resolve) => {
      req.on('response', (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (s: string) => { if (body.length < 1000) body += s })
        res.on('end', () => {
          const size = Number(res.headers['flotilla-upload-size'])
          if (res.statusCode === 204 && Number.isSafeInteger(size)) m.offset = size
          else this.drop(m, `it answered ${res.statusCode ?? 0} to a chunk: ${body.slice(0, 200)}`)
          if (m.req === req) m.req = undefined
          resolve()
        })
        res.on('error', () => { this.drop(m, 'its answer broke off'); resolve() })
      })
      req.on('error', (err) => {
        if (m.ok) this.drop(m, err.message)
        if (m.req === req) m.req = undefined
        resolve()
      })
    })
  }

  private drop (m: PeerMirror, why: string): void {
    if (!m.ok) return
    m.ok = false
    m.req?.destroy()
    // Tell the peer to let go of the bytes it has (it would otherwise keep them until its next sweep).
    void this.call(m, 'DELETE', `/internal/v1/mirrors/${m.id}`, 10_000).catch(() => {})
    this.cooldown.set(m.peer, Date.now() + PEER_COOLDOWN_MS)
    this.opts.log.info({ peer: m.peer, why }, 'upload mirror dropped; replication will copy the blob later')
  }

  private async call (m: PeerMirror, method: string, path: string, timeoutMs: number): Promise<{ status: number; body: string }> {
    const authorization = await signRequest(this.opts.privateKey, this.opts.peerId, method, path)
    return await new Promise((resolve, reject) => {
      const req = this.opts.client.request(m.target, { path, method, headers: { authorization, 'content-length': 0 }, timeout: timeoutMs }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (s: string) => { if (body.length < 1000) body += s })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        res.on('error', reject)
      })
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
      req.on('error', reject)
      req.end()
    })
  }
}

async function withDeadline (p: Promise<void>, deadline: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p, new Promise<void>((resolve) => { timer = setTimeout(resolve, Math.max(0, deadline - Date.now())) })])
  clearTimeout(timer)
}

/**
 * The mirror side: bytes teed by an upload's owner land in a local upload session
 * `mirror-<id>`, which becomes a blob when the owner commits.
 */
export class MirrorReceiver {
  constructor (private readonly opts: { peerId: string; uploads: UploadStore; blobs: BlobStore; sink: CommandSink }) {}

  /** Append one chunk at `offset`; the session is created by the chunk at 0. Resolves with the new size. */
  async receive (id: string, offset: number, source: Readable): Promise<number> {
    const sid = UploadMirror.sessionId(id)
    if (offset === 0 && await this.opts.uploads.size(sid) === undefined) await this.opts.uploads.create(sid)
    return await this.opts.uploads.append(sid, source, { offset })
  }

  /** Verify and keep the mirrored bytes as blob `digest`, and record this node as a holder. */
  async commit (id: string, digestRaw: string): Promise<number> {
    const digest = parseDigest(digestRaw)
    const sid = UploadMirror.sessionId(id)
    let info
    try {
      info = await this.opts.blobs.stat(digest) ?? await this.opts.uploads.commit(sid, digest, this.opts.blobs)
    } finally {
      // A mirror is not resumed: whatever happened, its session is done.
      await this.opts.uploads.remove(sid)
    }
    const res = await this.opts.sink.submit({ type: 'AddHolder', digest, size: info.size, peerId: this.opts.peerId })
    if (!res.ok) throw new FlotillaError(res.code, res.message)
    return info.size
  }

  async drop (id: string): Promise<void> {
    await this.opts.uploads.remove(UploadMirror.sessionId(id))
  }
}
