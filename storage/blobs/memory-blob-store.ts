/**
 * BlobStore in memory, for unit tests of the floors above. Same checks and error codes as
 * FsBlobStore (both pass test/storage/blob-store.suite.ts); a blob is stored only once verified.
 */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { FlotillaError } from '../errors.js'
import { digestOf, type Digest, type DigestAlgorithm } from '../reference.js'
import { FreshMarks, type BlobInfo, type BlobStore, type ByteRange } from './blob-store.js'
import { checkDigest, checkExpectedSize, ingestAlgorithm, satisfiableRange } from './checks.js'
import { checkNotOver, chunksOf, type Source } from './source.js'

export class MemoryBlobStore implements BlobStore {
  private readonly blobs = new Map<Digest, Buffer>()
  private readonly marks = new FreshMarks()

  async open (): Promise<void> {}
  async close (): Promise<void> {}

  async stat (digest: Digest): Promise<BlobInfo | undefined> {
    const data = this.blobs.get(digest)
    return data === undefined ? undefined : { digest, size: data.length }
  }

  async read (digest: Digest, range?: ByteRange): Promise<Readable> {
    const data = this.blobs.get(digest)
    if (data === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${digest} unknown`, { digest })
    const r = range === undefined ? { start: 0, end: data.length - 1 } : satisfiableRange(range, data.length)
    return Readable.from([data.subarray(r.start, r.end + 1)])
  }

  async ingest (source: Source, opts: { expected?: Digest; expectedSize?: number; algorithm?: DigestAlgorithm; signal?: AbortSignal } = {}): Promise<BlobInfo> {
    const algorithm = ingestAlgorithm(opts)
    const hash = createHash(algorithm)
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of chunksOf(source, opts.signal)) {
      size += chunk.length
      checkNotOver(opts.expectedSize, size)
      hash.update(chunk)
      // Copy: the producer may reuse its buffer.
      chunks.push(Buffer.from(chunk))
    }
    checkExpectedSize(opts.expectedSize, size)
    const digest = digestOf(algorithm, hash.digest('hex'))
    checkDigest(opts.expected, digest)
    if (!this.blobs.has(digest)) this.blobs.set(digest, Buffer.concat(chunks, size))
    this.marks.mark(digest)
    return { digest, size }
  }

  async delete (digest: Digest): Promise<boolean> {
    return this.blobs.delete(digest)
  }

  async collect (digest: Digest): Promise<boolean> {
    if (this.marks.has(digest)) return false
    return this.blobs.delete(digest)
  }

  settle (digest: Digest): void { this.marks.settle(digest) }
  fresh (): Digest[] { return this.marks.list() }

  async * list (): AsyncIterable<BlobInfo> {
    for (const [digest, data] of [...this.blobs].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
      yield { digest, size: data.length }
    }
  }
}
