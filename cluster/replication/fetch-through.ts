/**
 * Serving a blob this node lacks: stream it from a holder to the client, and into this
 * node's own store at the same time (a whole-blob read only), so the next read is local.
 * The digest is verified when the copy is committed; a client that wants the same
 * guarantee checks it too (every registry client does).
 */
import { PassThrough, type Readable } from 'node:stream'
import type { PeerBody } from '../../net/peer-https.js'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { ByteRange, UploadStore, BlobStore } from '../../storage/blobs/blob-store.js'
import type { Digest } from '../../storage/reference.js'
import type { CommandSink } from '../metadata/applier.js'
import type { BlobFetcher } from './blob-fetcher.js'
import type { Replicator } from './replicator.js'
import { tee } from './tee.js'

export interface FetchThroughDeps {
  peerId: string
  fetcher: BlobFetcher
  replicator: Replicator
  uploads: UploadStore
  blobs: BlobStore
  sink: CommandSink
  log: Logger
  /** This node is above its disk high watermark: serve the bytes, keep no copy. */
  full?: () => boolean
}

export async function fetchThrough (deps: FetchThroughDeps, digest: Digest, range?: ByteRange): Promise<Readable | undefined> {
  for (const peer of await deps.replicator.candidates(digest)) {
    let res: PeerBody
    try {
      res = await deps.fetcher.get(peer, digest, range)
    } catch (err) {
      deps.log.warn({ peer, digest, err: (err as Error).message }, 'holder unreachable')
      continue
    }
    if (res.statusCode !== (range === undefined ? 200 : 206)) { res.resume(); continue }
    const body: Readable = res
    if (range !== undefined || deps.full?.() === true) return body
    // The client sets the pace. The copy into our store follows while it keeps up; on this
    // kind of machine writing the copy costs the client about half its speed when it must wait
    // for it, so a copy 16 MiB behind is dropped and the blob fetched again once the client has
    // it all (digest verified at commit either way).
    const toClient = new PassThrough({ highWaterMark: 1 << 20 })
    const toStore = new PassThrough({ highWaterMark: 1 << 20 })
    const size = Number(res.headers['content-length'] ?? 0)
    tee(body, toClient, [{
      stream: toStore,
      highWater: 16 << 20,
      pace: false,
      onStall: (why) => {
        deps.log.info({ digest, why }, 'copy while serving dropped; the blob is fetched again once the client has it')
        toClient.once('close', () => deps.replicator.keepCopy(digest, size))
      },
    }], 3000)
    void storeCopy(deps, digest, toStore)
    return toClient
  }
  return undefined
}

async function storeCopy (deps: FetchThroughDeps, digest: Digest, source: Readable): Promise<void> {
  const id = `pull-${randomBytes(12).toString('base64url')}`
  try {
    await deps.uploads.create(id)
    // Hashed at commit, after the client is served: the stream to the client shares this thread.
    await deps.uploads.append(id, source, { deferHash: true })
    const info = await deps.uploads.commit(id, digest, deps.blobs)
    const res = await deps.sink.submit({ type: 'AddHolder', digest, size: info.size, peerId: deps.peerId })
    if (!res.ok) throw new Error(res.message)
  } catch (err) {
    source.resume()
    await deps.uploads.remove(id).catch(() => {})
    deps.log.warn({ digest, err: (err as Error).message }, 'copy while serving failed; replication will retry')
  }
}
