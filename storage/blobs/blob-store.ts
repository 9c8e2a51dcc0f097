/**
 * Content-addressed blob storage. A blob is written once, verified against its digest,
 * made durable, and only then becomes visible under that digest. Metadata (which
 * repositories link a blob) lives elsewhere; this store only knows bytes by digest.
 */
import type { Readable, Writable } from 'node:stream'
import type { Digest, DigestAlgorithm } from '../reference.js'

export interface BlobInfo {
  digest: Digest
  size: number
}

export interface ByteRange {
  /** First byte, inclusive. */
  start: number
  /** Last byte, inclusive. */
  end: number
}

export interface BlobStore {
  /** Size of a committed blob, or undefined when absent. */
  stat (digest: Digest): Promise<BlobInfo | undefined>
  /** Stream a committed blob, or a byte range of it. Throws FlotillaError BLOB_UNKNOWN when absent. */
  read (digest: Digest, range?: ByteRange): Promise<Readable>
  /**
   * Write a blob (or a range) into `dest` and end it; resolves when the last write is flushed.
   * Lets an implementation reuse a few buffers instead of allocating one per read, which is
   * what bounds a large GET (garbage collection, not I/O). Optional: callers fall back to read().
   * `oneShot`: nobody is expected to read these bytes again soon (a replication copy), so an
   * implementation may bypass its caches.
   */
  writeTo? (digest: Digest, range: ByteRange | undefined, dest: Writable, opts?: { oneShot?: boolean }): Promise<void>
  /**
   * Stream `source` into the store while hashing. If `expected` is given and does not match,
   * nothing becomes visible and DIGEST_INVALID is thrown. If `expectedSize` is given and differs,
   * SIZE_INVALID is thrown. Resolves once the blob is durable (fsynced and renamed into place).
   */
  ingest (source: AsyncIterable<Uint8Array> | Readable, opts?: { expected?: Digest; expectedSize?: number; algorithm?: DigestAlgorithm; signal?: AbortSignal }): Promise<BlobInfo>
  /** Remove a blob. Resolves false when it was absent. */
  delete (digest: Digest): Promise<boolean>
  /**
   * Garbage collection's delete: remove the blob unless it is fresh, that is placed (written,
   * or found already there by an ingest of the same bytes) since the last `settle(digest)`
   * and less than FRESH_MS ago. A fresh blob is on its way into the metadata (its link or
   * holder record not applied yet), so metadata that does not know it proves nothing. The
   * check and the removal are atomic with respect to placements. Resolves true when removed.
   */
  collect (digest: Digest): Promise<boolean>
  /** The metadata now records the blob (or never will): it is no longer fresh. */
  settle (digest: Digest): void
  /** Digests fresh now (the collector leaves them alone everywhere). */
  fresh (): Digest[]
  /** Every committed blob. */
  list (): AsyncIterable<BlobInfo>
  /**
   * When this process last read the blob (ms), or undefined when it has not: what garbage
   * collection asks before it drops a copy kept outside a blob's placement. In memory only.
   */
  lastRead? (digest: Digest): number | undefined
  /** When the blob's bytes were stored here (ms; the file's mtime), or undefined when it is not here. */
  storedAt? (digest: Digest): Promise<number | undefined>
}

/** How long a placed blob stays fresh if nothing settles it (an upload whose link never came). */
export const FRESH_MS = 10 * 60_000

/** Fresh marks, shared by the implementations: digest → when placed. */
export class FreshMarks {
  private readonly marks = new Map<Digest, number>()
  constructor (private readonly ttlMs = FRESH_MS) {}
  mark (digest: Digest, now = Date.now()): void { this.marks.set(digest, now) }
  settle (digest: Digest): void { this.marks.delete(digest) }
  has (digest: Digest, now = Date.now()): boolean {
    const at = this.marks.get(digest)
    if (at === undefined) return false
    if (now - at < this.ttlMs) return true
    this.marks.delete(digest)
    return false
  }

  list (now = Date.now()): Digest[] {
    return [...this.marks.keys()].filter((d) => this.has(d, now))
  }
}

export interface AppendOptions {
  offset?: number
  length?: number
  signal?: AbortSignal
  /**
   * Leave hashing to commit (which then reads the bytes back) instead of hashing while the
   * bytes arrive: for a copy that shares a thread with a reader who should not wait for it.
   */
  deferHash?: boolean
}

export interface CommitOptions {
  /**
   * The caller hashed the upload's bytes itself, exactly as it handed them to append (all of
   * them, from byte 0, usually with deferHash), and got `digest` over `size` bytes. Commit then
   * checks that this is the digest asked for and that the upload holds exactly the bytes this
   * process appended, and does not read them again. An implementation that cannot vouch for the
   * latter (a restart since, another writer) hashes as usual; so may any implementation.
   */
  hashed?: { digest: Digest; size: number }
}

/**
 * Upload sessions: append-only byte buffers that become blobs.
 * An upload's bytes survive a restart of the process; its hash state is rebuilt on demand.
 */
export interface UploadStore {
  create (id: string): Promise<void>
  /** Bytes received so far, or undefined when the upload does not exist. */
  size (id: string): Promise<number | undefined>
  /**
   * Append a chunk. When `offset` is given it must equal the current size, else UPLOAD_OUT_OF_ORDER
   * (HTTP 416). Resolves with the new size once the bytes are durable.
   * Throws BLOB_UPLOAD_UNKNOWN when the upload does not exist.
   */
  append (id: string, source: AsyncIterable<Uint8Array> | Readable, opts?: AppendOptions): Promise<number>
  /**
   * Verify the upload against `digest` and move it into `blobs` (which must share the filesystem for a
   * cheap rename). On mismatch throws DIGEST_INVALID and keeps the upload so the client may retry.
   */
  commit (id: string, digest: Digest, blobs: BlobStore, opts?: CommitOptions): Promise<BlobInfo>
  /** Discard an upload. Resolves false when absent. */
  remove (id: string): Promise<boolean>
  /** Ids of uploads present (for cleanup of abandoned sessions). */
  list (): AsyncIterable<string>
  /**
   * The file holding an upload's bytes, for readers that follow it while it is written (a
   * remote repository's fill, cluster/remote/fill.ts). Optional: without it they wait for the blob.
   */
  filePath? (id: string): string
}
