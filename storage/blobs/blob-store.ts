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
  /** Every committed blob. */
  list (): AsyncIterable<BlobInfo>
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
  commit (id: string, digest: Digest, blobs: BlobStore): Promise<BlobInfo>
  /** Discard an upload. Resolves false when absent. */
  remove (id: string): Promise<boolean>
  /** Ids of uploads present (for cleanup of abandoned sessions). */
  list (): AsyncIterable<string>
}
