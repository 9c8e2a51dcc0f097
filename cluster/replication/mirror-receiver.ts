/**
 * A hop of an upload chain (upload-mirror.ts): the bytes its predecessor sends land in a local
 * upload session `mirror-<id>` while they go on to the next hop, and become a blob when the
 * commit comes down the chain.
 *
 * A chunk that fails here (the predecessor broke off, a byte is missing, the disk failed)
 * voids the mirror on this hop and on every hop after it: the session is dropped and the next
 * hop told to drop its own, and replication copies the blob to all of them later.
 */
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { BlobStore, UploadStore } from '../../storage/blobs/blob-store.js'
import { FlotillaError } from '../../storage/errors.js'
import { parseDigest } from '../../storage/reference.js'
import type { CommandSink } from '../metadata/applier.js'
import { UploadMirror, type ChainSpec, type CommitSpec } from './upload-mirror.js'

/**
 * A blob announced by a chain whose bytes stopped growing here this long ago is no longer
 * expected from it (its predecessor froze, say): replication may copy it.
 */
export const ARRIVING_IDLE_MS = 5_000
/** Receiver state of uploads nobody touched for this long is forgotten. */
const IDLE_MS = 3600_000

export interface MirrorReceiverOptions {
  peerId: string
  uploads: UploadStore
  blobs: BlobStore
  sink: CommandSink
  /** Passes the bytes on to the next hop; without it this node ends every chain. */
  relay?: UploadMirror
  log?: Logger
}

interface Incoming {
  /** The blob's digest, when the chain announced it. */
  digest: string | undefined
  /** A chunk is being received now. */
  receiving: boolean
  /** Bytes in the session when last looked at, and when that changed (or a chunk started or ended). */
  size: number
  touched: number
}

export class MirrorReceiver {
  private readonly incoming = new Map<string, Incoming>()
  /** Digests this node is committing from a chain now, with how many commits. */
  private readonly committing = new Map<string, number>()

  constructor (private readonly opts: MirrorReceiverOptions) {}

  /**
   * Whether `digest` is on its way here through a chain (announced by a monolithic upload, or
   * being committed): replication then leaves it alone instead of copying it a second time.
   */
  async arriving (digest: string): Promise<boolean> {
    if (this.committing.has(digest)) return true
    for (const [id, s] of this.incoming) {
      if (s.digest !== digest) continue
      const size = await this.opts.uploads.size(UploadMirror.sessionId(id)) ?? -1
      const now = Date.now()
      if (size !== s.size) { s.size = size; s.touched = now }
      if (now - s.touched < ARRIVING_IDLE_MS) return true
    }
    return false
  }

  /**
   * Append one chunk at `offset` and pass it on; the session is created by the chunk at 0,
   * whose `spec` names the rest of the chain. Resolves with the new size.
   */
  async receive (id: string, offset: number, source: Readable, spec?: ChainSpec): Promise<number> {
    const sid = UploadMirror.sessionId(id)
    let state = this.incoming.get(id)
    if (offset === 0 && await this.opts.uploads.size(sid) === undefined) {
      await this.opts.uploads.create(sid)
      state = { digest: spec?.digest, receiving: false, size: 0, touched: Date.now() }
      this.incoming.set(id, state)
    }
    if (state !== undefined) { state.receiving = true; state.touched = Date.now() }
    try {
      const next = spec?.next.filter((p) => p !== this.opts.peerId)
      const input = this.opts.relay === undefined ? source : await this.opts.relay.relay(id, offset, source, spec === undefined || next === undefined ? undefined : { ...spec, next })
      return await this.opts.uploads.append(sid, input, { offset })
    } catch (err) {
      await this.drop(id)
      throw err
    } finally {
      if (state !== undefined) { state.receiving = false; state.touched = Date.now() }
    }
  }

  /**
   * Verify and keep the mirrored bytes as blob `digest`, and record this node as a holder; the
   * commit goes on down the chain at once, so that the hops commit in parallel. Resolves with
   * the size and the holders confirmed: this node, then as many of the next hops as `need`
   * asked for (the next `need - 1`).
   */
  async commit (id: string, digestRaw: string, spec: CommitSpec = { need: 1, withinMs: 10_000 }): Promise<{ size: number; holders: string[] }> {
    const digest = parseDigest(digestRaw)
    const sid = UploadMirror.sessionId(id)
    this.committing.set(digest, (this.committing.get(digest) ?? 0) + 1)
    try {
      const rest = Math.max(spec.need - 1, 0)
      // Nobody waits for the next hops when this one completes the quorum: they get a fresh budget.
      const downstream = this.opts.relay?.passCommit(id, digest, rest, rest > 0 ? spec.withinMs : undefined) ?? Promise.resolve([])
      let info
      try {
        info = await this.opts.blobs.stat(digest) ?? await this.opts.uploads.commit(sid, digest, this.opts.blobs)
      } catch (err) {
        this.opts.relay?.abandon(id)
        throw err
      } finally {
        // A mirror is not resumed: whatever happened, its session is done.
        this.incoming.delete(id)
        await this.opts.uploads.remove(sid)
      }
      const res = await this.opts.sink.submit({ type: 'AddHolder', digest, size: info.size, peerId: this.opts.peerId })
      if (!res.ok) throw new FlotillaError(res.code, res.message)
      if (rest === 0) {
        void downstream.then((peers) => {
          if (peers.length === 0 && this.opts.relay !== undefined) this.opts.log?.debug({ upload: id, digest }, 'the chain ends here or was cut after this node')
        })
        return { size: info.size, holders: [this.opts.peerId] }
      }
      return { size: info.size, holders: [this.opts.peerId, ...await downstream] }
    } finally {
      const n = (this.committing.get(digest) ?? 1) - 1
      if (n <= 0) this.committing.delete(digest)
      else this.committing.set(digest, n)
    }
  }

  /** The upload was cancelled, or its chain broke here: drop the bytes, here and down the chain. */
  async drop (id: string): Promise<void> {
    this.incoming.delete(id)
    this.opts.relay?.abandon(id)
    await this.opts.uploads.remove(UploadMirror.sessionId(id))
  }

  /** Forget what nobody touched for an hour (the upload session itself goes with the orphan sweep). */
  sweep (now = Date.now()): void {
    for (const [id, s] of this.incoming) if (!s.receiving && now - s.touched > IDLE_MS) this.incoming.delete(id)
  }
}
