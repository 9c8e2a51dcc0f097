/**
 * Argument checks shared by every BlobStore and UploadStore implementation, so that
 * the memory and filesystem stores reject the same inputs with the same codes.
 */
import { FlotillaError } from '../errors.js'
import { digestAlgorithm, type Digest, type DigestAlgorithm } from '../reference.js'
import type { ByteRange } from './blob-store.js'

/**
 * The hash algorithm for an ingest: the expected digest's, else the one asked for, else sha256.
 * Asking for one algorithm while expecting a digest of another is a caller bug.
 */
export function ingestAlgorithm (opts: { expected?: Digest; algorithm?: DigestAlgorithm }): DigestAlgorithm {
  if (opts.expected === undefined) return opts.algorithm ?? 'sha256'
  const alg = digestAlgorithm(opts.expected)
  if (opts.algorithm !== undefined && opts.algorithm !== alg) {
    throw new FlotillaError('DIGEST_INVALID', `algorithm ${opts.algorithm} does not match expected digest ${opts.expected}`)
  }
  return alg
}

/**
 * Clamp a requested byte range to a blob of `size` bytes (RFC 9110 §14.1.2: an end past the
 * last byte means "to the end"). A range that starts past the end, or is inverted, cannot be served.
 */
export function satisfiableRange (range: ByteRange, size: number): ByteRange {
  const { start, end } = range
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || start >= size) {
    throw new FlotillaError('RANGE_NOT_SATISFIABLE', `range ${start}-${end} not satisfiable for a blob of ${size} bytes`, { size })
  }
  return { start, end: Math.min(end, size - 1) }
}

export function checkExpectedSize (expectedSize: number | undefined, size: number): void {
  if (expectedSize !== undefined && size !== expectedSize) {
    throw new FlotillaError('SIZE_INVALID', `received ${size} bytes, expected ${expectedSize}`, { size, expectedSize })
  }
}

export function checkDigest (expected: Digest | undefined, actual: Digest): void {
  if (expected !== undefined && expected !== actual) {
    throw new FlotillaError('DIGEST_INVALID', `content digest ${actual} does not match ${expected}`, { expected, actual })
  }
}

/** Upload ids come from the caller and name files: this pattern keeps them out of path syntax. */
const UPLOAD_ID_RE = /^[A-Za-z0-9_-]{8,128}$/

export function isUploadId (id: string): boolean {
  return UPLOAD_ID_RE.test(id)
}

/** An invalid id cannot name an upload, so it is reported as unknown rather than as a bad request. */
export function checkUploadId (id: string): void {
  if (!isUploadId(id)) {
    throw new FlotillaError('BLOB_UPLOAD_UNKNOWN', `invalid upload id ${JSON.stringify(id.slice(0, 140))}: expected [A-Za-z0-9_-]{8,128}`)
  }
}
