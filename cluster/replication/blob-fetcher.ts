/**
 * Moving blob bytes between nodes, over peer-authenticated HTTP (net/peer-auth.ts) on the
 * members' peer ports (net/peer-https.ts, mutual TLS): several times faster than a libp2p
 * stream on this hardware (see scripts/bench/transfer.ts).
 *
 * A replication download lands in an upload session named after the digest, so a broken
 * connection resumes where it stopped (Range: bytes=N-) instead of starting over, and the
 * digest is verified when the session is committed into the blob store.
 */
import type { PrivateKey } from '@libp2p/interface'
import { signRequest } from '../../net/peer-auth.js'
import type { PeerBody, PeerClient, PeerTarget } from '../../net/peer-https.js'
import type { BlobInfo, BlobStore, UploadStore } from '../../storage/blobs/blob-store.js'
import { parseDigest, digestHex } from '../../storage/reference.js'

export interface BlobFetcherOptions {
  privateKey: PrivateKey
  peerId: string
  blobs: BlobStore
  uploads: UploadStore
  /** Where to reach a peer, or undefined when unknown. */
  target: (peerId: string) => PeerTarget | undefined
  client: PeerClient
}

export class BlobFetcher {
  constructor (private readonly opts: BlobFetcherOptions) {}

  /**
   * GET a blob (or a range of it) from a peer; the response body streams, a plain Readable
   * (PeerClient.get: read off the peer port into large chunks; fetch's web stream costs
   * several times more per byte). `recycle`: the body goes to one upload store only, which
   * returns its chunks once written, so their memory is read into again (PeerGetOptions).
   */
  async get (peer: string, digest: string, range?: { start: number; end?: number }, method: 'GET' | 'HEAD' = 'GET', recycle = false): Promise<PeerBody> {
    const target = this.opts.target(peer)
    if (target === undefined) throw new Error(`no address known for peer ${peer}`)
    const path = `/internal/v1/blobs/${digest}`
    const headers: Record<string, string> = { authorization: await signRequest(this.opts.privateKey, this.opts.peerId, method, path) }
    if (range !== undefined) headers.range = `bytes=${range.start}-${range.end ?? ''}`
    return await this.opts.client.get(target, { method, path, headers, timeoutMs: 60_000, recycle })
  }

  /** Upload-session id used to assemble a replica of `digest`. */
  static sessionId (digest: string): string {
    return `repl-${digestHex(parseDigest(digest)).slice(0, 64)}`
  }

  /**
   * Copy a blob from the first holder that answers into the local store, resuming a
   * partial copy. Resolves once it is durable and verified here.
   */
  async fetchInto (digest: string, holders: string[]): Promise<BlobInfo> {
    const d = parseDigest(digest)
    const have = await this.opts.blobs.stat(d)
    if (have !== undefined) return have
    const id = BlobFetcher.sessionId(digest)
    if (await this.opts.uploads.size(id) === undefined) await this.opts.uploads.create(id)
    let lastErr: unknown = new Error(`no holder of ${digest} is known`)
    for (const peer of holders) {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          const offset = await this.opts.uploads.size(id) ?? 0
          // The body goes to the upload session alone: its chunks may be recycled.
          const res = await this.get(peer, digest, offset > 0 ? { start: offset } : undefined, 'GET', true)
          if (res.statusCode === 416) { res.resume(); break } // we already have every byte (or the peer's copy is shorter): commit decides
          if (res.statusCode !== 200 && res.statusCode !== 206) { res.resume(); throw new Error(`peer ${peer} answered ${res.statusCode ?? 0}`) }
          if (offset > 0 && res.statusCode === 200) {
            // The peer ignored the range: start over.
            await this.opts.uploads.remove(id)
            await this.opts.uploads.create(id)
          }
          await this.opts.uploads.append(id, res)
          return await this.opts.uploads.commit(id, d, this.opts.blobs)
        } catch (err) {
          lastErr = err
          if ((err as { code?: string }).code === 'DIGEST_INVALID') {
            // A corrupt partial copy: throw it away, try the next holder from scratch.
            await this.opts.uploads.remove(id)
            await this.opts.uploads.create(id)
            break
          }
        }
      }
      const size = await this.opts.uploads.size(id)
      if (size !== undefined && size > 0) {
        try { return await this.opts.uploads.commit(id, d, this.opts.blobs) } catch { /* keep going */ }
      }
    }
    throw lastErr
  }
}
