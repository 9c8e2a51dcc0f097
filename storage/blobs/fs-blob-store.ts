/**
 * BlobStore on a local filesystem. On-disk layout under ROOT:
 *
 *   ROOT/
 *   ├── blobs/
 *   │   ├── sha256/
 *   │   │   └── ab/
 *   │   │       └── abcdef…       committed blob, named by its hex digest; mode 0444, never rewritten
 *   │   └── sha512/
 *   │       └── 0f/
 *   │           └── 0f12…
 *   ├── tmp/
 *   │   └── <random>              in-flight ingest; emptied by open()
 *   └── uploads/                  upload sessions (FsUploadStore, same filesystem so commit is a rename)
 *
 * A blob becomes visible only by rename(2) of a complete, verified, fsynced file, so a crash
 * (kill -9, power loss) at any moment leaves either the whole blob or nothing under blobs/;
 * leftovers can only be in tmp/, which open() clears.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { chmod, mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { FlotillaError } from '../errors.js'
import { digestAlgorithm, digestHex, digestOf, isDigest, type Digest, type DigestAlgorithm } from '../reference.js'
import type { BlobInfo, BlobStore, ByteRange } from './blob-store.js'
import { checkDigest, checkExpectedSize, ingestAlgorithm, satisfiableRange } from './checks.js'
import { fsyncDir, READ_CHUNK, isErrno, unlinkIfPresent, writeHashed } from './fs-io.js'
import type { Writable } from 'node:stream'

/** Buffers in flight per blob GET (see writeTo). */
const RING = 4
import { batchesOf, type Source } from './source.js'
import { acquireAligned, alignDown, DIRECT_CHUNK, openDirect, releaseAligned } from './direct-io.js'

const ALGORITHMS: readonly DigestAlgorithm[] = ['sha256', 'sha512']

export class FsBlobStore implements BlobStore {
  readonly root: string
  private readonly blobsDir: string
  private readonly tmpDir: string
  private opening: Promise<void> | undefined

  /** Whether large writes and reads bypass the page cache (direct-io.ts). */
  private readonly directIO: boolean

  constructor (root: string, opts: { directIO?: boolean } = {}) {
    this.directIO = opts.directIO ?? false
    this.root = root
    this.blobsDir = join(root, 'blobs')
    this.tmpDir = join(root, 'tmp')
  }

  /**
   * Create the directories and discard in-flight ingests left by a previous process.
   * Idempotent; ingest() calls it, so forgetting it costs nothing, but call it at startup
   * before serving so tmp/ is cleared while nothing can be writing there.
   */
  async open (): Promise<void> {
    this.opening ??= (async () => {
      await rm(this.tmpDir, { recursive: true, force: true })
      await mkdir(this.tmpDir, { recursive: true })
      for (const alg of ALGORITHMS) await mkdir(join(this.blobsDir, alg), { recursive: true })
    })()
    // A failed open may be retried.
    await this.opening.catch((err: unknown) => { this.opening = undefined; throw err })
  }

  /** Nothing to release: every handle is closed by the operation that opened it. */
  async close (): Promise<void> {}

  /** Where a committed blob lives. */
  pathOf (digest: Digest): string {
    const hex = digestHex(digest)
    return join(this.blobsDir, digestAlgorithm(digest), hex.slice(0, 2), hex)
  }

  async stat (digest: Digest): Promise<BlobInfo | undefined> {
    try {
      const st = await stat(this.pathOf(digest))
      return { digest, size: st.size }
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined
      throw err
    }
  }

  /** Open a committed blob; BLOB_UNKNOWN when absent. Open first, then fstat: a delete between the two cannot make us stream a missing file. */
  private async openBlob (digest: Digest): Promise<FileHandle> {
    try {
      return await open(this.pathOf(digest), 'r')
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new FlotillaError('BLOB_UNKNOWN', `blob ${digest} unknown`, { digest })
      throw err
    }
  }

  async read (digest: Digest, range?: ByteRange): Promise<Readable> {
    const fh = await this.openBlob(digest)
    try {
      const { size } = await fh.stat()
      const r = range === undefined ? undefined : satisfiableRange(range, size)
      return createReadStream('', { fd: fh, start: r?.start, end: r?.end, highWaterMark: READ_CHUNK })
    } catch (err) {
      await fh.close()
      throw err
    }
  }

  async writeTo (digest: Digest, range: ByteRange | undefined, dest: Writable, opts: { oneShot?: boolean } = {}): Promise<void> {
    const fh = await this.openBlob(digest)
    let direct: FileHandle | undefined
    try {
      const { size } = await fh.stat()
      const r = range === undefined ? { start: 0, end: size - 1 } : satisfiableRange(range, size)
      // Big one-shot reads (replication) bypass the page cache (direct-io.ts); clients' reads go
      // through it, since a layer pulled once is often pulled again. The blob was opened above,
      // so a delete in between is no reason to fail: the direct open falls back to that handle.
      if (this.directIO && opts.oneShot === true && r.end - r.start + 1 >= DIRECT_CHUNK) direct = await openDirect(this.pathOf(digest), 'read').catch(() => undefined)
      // A small ring of buffers: a buffer is refilled only once the socket has taken its last
      // write (the write callback), so at most RING writes are in flight and nothing is copied.
      const ring = Array.from({ length: RING }, () => direct !== undefined ? acquireAligned() : Buffer.allocUnsafe(READ_CHUNK))
      const inFlight: Array<Promise<void> | undefined> = new Array(RING)
      let failed: unknown
      let clean = false
      const closed = new Promise<void>((resolve) => dest.once('close', resolve))
      let pos = r.start
      try {
        for (let i = 0; pos <= r.end; i = (i + 1) % RING) {
          await inFlight[i]
          if (failed !== undefined) throw failed
          if (dest.destroyed) throw new Error('the client went away')
          const buf = ring[i]!
          // Direct reads start on a block boundary and read whole blocks; the bytes before `pos` are skipped.
          const from = direct !== undefined ? alignDown(pos) : pos
          const want = direct !== undefined ? DIRECT_CHUNK : Math.min(READ_CHUNK, r.end - pos + 1)
          const { bytesRead } = await (direct ?? fh).read(buf, 0, want, from)
          const upTo = Math.min(bytesRead, r.end + 1 - from)
          if (upTo <= pos - from) throw new Error(`blob ${digest} ended early at byte ${pos}`)
          inFlight[i] = Promise.race([
            new Promise<void>((resolve) => dest.write(buf.subarray(pos - from, upTo), (err) => { if (err != null) failed ??= err; resolve() })),
            closed,
          ])
          pos = from + upTo
        }
        await Promise.all(inFlight)
        if (failed !== undefined) throw failed
        clean = true
      } finally {
        // Aligned buffers go back to the pool only when no write can still refer to them.
        if (clean && direct !== undefined) for (const b of ring) releaseAligned(b)
      }
      dest.end()
    } finally {
      await direct?.close()
      await fh.close()
    }
  }

  async ingest (source: Source, opts: { expected?: Digest; expectedSize?: number; algorithm?: DigestAlgorithm; signal?: AbortSignal } = {}): Promise<BlobInfo> {
    const algorithm = ingestAlgorithm(opts)
    await this.open()
    const tmp = join(this.tmpDir, randomBytes(16).toString('hex'))
    const fh = await open(tmp, 'wx', 0o644)
    let closed = false
    try {
      const hash = createHash(algorithm)
      const direct = this.directIO ? await openDirect(tmp, 'write') : undefined
      let size: number
      try {
        size = await writeHashed(fh, 0, batchesOf(source, opts.signal), hash, opts.expectedSize, direct)
      } finally {
        await direct?.close()
      }
      checkExpectedSize(opts.expectedSize, size)
      const digest = digestOf(algorithm, hash.digest('hex'))
      checkDigest(opts.expected, digest)
      await fh.sync()
      closed = true
      await fh.close()
      return await this.adopt(tmp, { digest, size })
    } catch (err) {
      if (!closed) await fh.close().catch(() => {})
      await rm(tmp, { force: true })
      throw err
    }
  }

  /**
   * Move a complete file that the caller has already verified against `info.digest` and fsynced
   * into its committed place (used by FsUploadStore.commit; `path` must be on this filesystem).
   * If the blob is already there, the file is discarded: a blob is stored once.
   */
  async adopt (path: string, info: BlobInfo): Promise<BlobInfo> {
    const dest = this.pathOf(info.digest)
    if (await this.stat(info.digest) !== undefined) {
      await rm(path, { force: true })
      return info
    }
    await chmod(path, 0o444)
    const shard = join(dest, '..')
    const created = await mkdir(shard, { recursive: true })
    // rename(2) replaces atomically, so a concurrent ingest of the same bytes is harmless.
    await rename(path, dest)
    await fsyncDir(shard)
    if (created !== undefined) await fsyncDir(join(shard, '..'))
    return info
  }

  /**
   * Not fsynced: a blob that reappears after a crash is only garbage to collect again,
   * while a lost blob would be data loss, which cannot happen here.
   */
  async delete (digest: Digest): Promise<boolean> {
    return await unlinkIfPresent(this.pathOf(digest))
  }

  async * list (): AsyncIterable<BlobInfo> {
    for (const alg of ALGORITHMS) {
      for (const shard of await readdirIfAny(join(this.blobsDir, alg))) {
        for (const name of await readdirIfAny(join(this.blobsDir, alg, shard))) {
          const raw = `${alg}:${name}`
          // Skip anything that is not a well-formed blob name in its right shard.
          if (!isDigest(raw) || name.slice(0, 2) !== shard) continue
          const info = await this.stat(raw)
          if (info !== undefined) yield info
        }
      }
    }
  }
}

async function readdirIfAny (dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort()
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return []
    throw err
  }
}
