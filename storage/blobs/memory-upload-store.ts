/**
 * UploadStore in memory, for unit tests of the floors above. Same rules as FsUploadStore
 * (both pass test/storage/upload-store.suite.ts): all-or-nothing appends, one operation at a
 * time per upload, the upload kept when its digest does not match.
 */
import { Readable } from 'node:stream'
import { FlotillaError } from '../errors.js'
import type { Digest } from '../reference.js'
import type { AppendOptions, BlobInfo, BlobStore, CommitOptions, UploadStore } from './blob-store.js'
import { checkDigest, checkExpectedSize, checkUploadId, isUploadId } from './checks.js'
import { checkNotOver, chunksOf, type Source } from './source.js'

interface Upload { chunks: Buffer[]; size: number; busy: boolean; removed: AbortController }

export class MemoryUploadStore implements UploadStore {
  private readonly uploads = new Map<string, Upload>()

  async open (): Promise<void> {}
  async close (): Promise<void> {}

  async create (id: string): Promise<void> {
    checkUploadId(id)
    if (this.uploads.has(id)) throw new FlotillaError('BLOB_UPLOAD_INVALID', `upload ${id} already exists`)
    this.uploads.set(id, { chunks: [], size: 0, busy: false, removed: new AbortController() })
  }

  async size (id: string): Promise<number | undefined> {
    return this.uploads.get(id)?.size
  }

  async append (id: string, source: Source, opts: AppendOptions = {}): Promise<number> {
    const u = this.claim(id)
    try {
      if (opts.offset !== undefined && opts.offset !== u.size) {
        throw new FlotillaError('UPLOAD_OUT_OF_ORDER', `chunk starts at ${opts.offset} but upload ${id} has ${u.size} bytes`, { size: u.size })
      }
      const signal = AbortSignal.any(opts.signal ? [opts.signal, u.removed.signal] : [u.removed.signal])
      const got: Buffer[] = []
      let n = 0
      for await (const chunk of chunksOf(source, signal)) {
        n += chunk.length
        checkNotOver(opts.length, n)
        got.push(Buffer.from(chunk))
      }
      checkExpectedSize(opts.length, n)
      u.chunks.push(...got)
      u.size += n
      return u.size
    } finally {
      u.busy = false
    }
  }

  async commit (id: string, digest: Digest, blobs: BlobStore, opts: CommitOptions = {}): Promise<BlobInfo> {
    const u = this.claim(id)
    try {
      // A caller whose bytes hashed to another digest is refused as the file store refuses it.
      if (opts.hashed !== undefined) checkDigest(digest, opts.hashed.digest)
      // The blob store verifies the digest (memory is cheap to hash again); on DIGEST_INVALID the upload is still here.
      const info = await blobs.ingest(Readable.from(u.chunks), { expected: digest, expectedSize: u.size })
      this.uploads.delete(id)
      return info
    } finally {
      u.busy = false
    }
  }

  async remove (id: string): Promise<boolean> {
    const u = this.uploads.get(id)
    if (u === undefined) return false
    u.removed.abort(new FlotillaError('BLOB_UPLOAD_UNKNOWN', `upload ${id} was removed`))
    this.uploads.delete(id)
    return true
  }

  async * list (): AsyncIterable<string> {
    yield * [...this.uploads.keys()].sort()
  }

  private claim (id: string): Upload {
    checkUploadId(id)
    const u = this.uploads.get(id)
    if (u === undefined) throw new FlotillaError('BLOB_UPLOAD_UNKNOWN', `upload ${id} unknown`)
    if (u.busy) throw new FlotillaError('BLOB_UPLOAD_INVALID', `another request is writing upload ${id}`)
    u.busy = true
    return u
  }
}
