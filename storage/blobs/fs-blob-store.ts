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
import { FreshMarks, type BlobInfo, type BlobStore, type ByteRange } from './blob-store.js'
import { checkDigest, checkExpectedSize, ingestAlgorithm, satisfiableRange } from './checks.js'
import { fsyncDir, READ_CHUNK, isErrno, unlinkIfPresent, writeHashed } from './fs-io.js'
import type { Writable } from 'node:stream'

/**
 * Read up to `want` bytes at `from` into `buf`, finishing short reads: only the end of the
 * file or of the range (`last`, inclusive) stops it. Resolves with how many bytes are there.
 */
async function fill (src: FileHandle, buf: Buffer, want: number, from: number, last: number): Promise<{ from: number; got: number }> {
  let got = 0
  while (got < want && from + got <= last) {
    const { bytesRead } = await src.read(buf, got, want - got, from + got)
    if (bytesRead === 0) break
    got += bytesRead
  }
  return { from, got }
}

/** Blobs remembered as written directly and not read since (FsBlobStore.cold). */
const COLD_MAX = 10_000

/** Buffers in flight per blob GET (see writeTo): RING in the loop below. */
const RING_DEFAULT = 4
/**
 * A direct read keeps the device busy with more reads in flight: 8 of 8 MiB served the first
 * pull after a push at 1.0–1.1× the reference's (page-cache) speed on a loaded VM, where 4 of
 * 4 MiB reached 0.6×. That is 64 MiB of buffers, so only WIDE_READS_MAX reads at once get it;
 * the rest use RING buffers of DIRECT_READ_CHUNK_NARROW (16 MiB each).
 */
const WIDE_RING = 8
const WIDE_READS_MAX = 2
/**
 * A cold blob is warmed into the page cache only once nobody has read it for this long: a
 * pull that comes meanwhile (the second of a burst) would otherwise race the warming read for
 * the device and the CPU, and run at 0.5–0.7× of a cached read instead of at direct speed.
 */
const WARM_AFTER_IDLE_MS = 2_000
import { batchesOf, type Source } from './source.js'
import { acquireAligned, alignDown, DIRECT_CHUNK, DIRECT_READ_CHUNK, DIRECT_READ_CHUNK_NARROW, openDirect, releaseAligned } from './direct-io.js'

const ALGORITHMS: readonly DigestAlgorithm[] = ['sha256', 'sha512']

export class FsBlobStore implements BlobStore {
  readonly root: string
  private readonly blobsDir: string
  private readonly tmpDir: string
  private opening: Promise<void> | undefined

  /** Whether large writes and reads bypass the page cache (direct-io.ts). */
  private readonly directIO: boolean
  /**
   * Blobs this process wrote with direct I/O and has not read through the page cache since:
   * not in the cache, so the first client read goes direct too (a buffered read would pay for
   * filling the cache: the first pull after a push ran at 0.57× the reference's), and then
   * warms the cache in the background for the pulls after it. Oldest forgotten past COLD_MAX.
   */
  private readonly cold = new Set<string>()
  private warming: Promise<void> = Promise.resolve()
  private readonly warmQueued = new Set<string>()
  /** Cold blobs waiting to be warmed, with their idle timers (reset by every read). */
  private readonly warmTimers = new Map<string, NodeJS.Timeout>()
  /** Blobs placed and not settled yet (BlobStore.collect). */
  private readonly marks = new FreshMarks()
  /** Placements and collections under way, per digest (locked()). */
  private readonly locks = new Map<string, Promise<void>>()
  /** Direct reads running now with the wide ring. */
  private wideReads = 0
  /** When each blob was last read by this process (lastRead). */
  private readonly reads = new Map<string, number>()

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

  lastRead (digest: Digest): number | undefined {
    return this.reads.get(digest)
  }

  async storedAt (digest: Digest): Promise<number | undefined> {
    try {
      // The upload's last write: a committed blob is renamed into place, never rewritten.
      return (await stat(this.pathOf(digest))).mtimeMs
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined
      throw err
    }
  }

  async read (digest: Digest, range?: ByteRange): Promise<Readable> {
    const fh = await this.openBlob(digest)
    this.reads.set(digest, Date.now())
    try {
      const { size } = await fh.stat()
      const r = range === undefined ? undefined : satisfiableRange(range, size)
      return createReadStream('', { fd: fh, start: r?.start, end: r?.end, highWaterMark: READ_CHUNK })
    } catch (err) {
      await fh.close()
      throw err
    }
  }

  async writeTo (digest: Digest, range: ByteRange | undefined, dest: Writable, _opts: { oneShot?: boolean } = {}): Promise<void> {
    const fh = await this.openBlob(digest)
    this.reads.set(digest, Date.now())
    let direct: FileHandle | undefined
    try {
      const { size } = await fh.stat()
      const r = range === undefined ? { start: 0, end: size - 1 } : satisfiableRange(range, size)
      // Big reads bypass the page cache (direct-io.ts) when nobody reads them again soon (a
      // peer's copy), and when the blob is known not to be in the cache (written directly and
      // not read since): a buffered read would pay for filling it (1.2–1.6 CPU s per GiB on the
      // 2-core VM; the first pull after a push ran at 0.57× the reference's), a direct one costs
      // 0.05. Other client reads use the cache, where hot layers are served several times faster.
      // The blob was opened above, so a delete in between is no reason to fail: the direct
      // open falls back to that handle.
      const wasCold = this.cold.has(digest)
      if (this.directIO && (_opts.oneShot === true || wasCold) && r.end - r.start + 1 >= DIRECT_CHUNK) direct = await openDirect(this.pathOf(digest), 'read').catch(() => undefined)
      const src = direct ?? fh
      const wide = direct !== undefined && this.wideReads < WIDE_READS_MAX
      if (wide) this.wideReads++
      if (wasCold) clearTimeout(this.warmTimers.get(digest))
      const RING = wide ? WIDE_RING : RING_DEFAULT
      const chunk = direct === undefined ? READ_CHUNK : wide ? DIRECT_READ_CHUNK : DIRECT_READ_CHUNK_NARROW
      // A ring of RING buffers, each either being read or being written: a buffer's next read
      // starts once the socket has taken its last write (the write callback), so up to RING
      // reads run at once (a direct read of 1 MiB waits on the device; four keep it busy) and
      // nothing is copied.
      const ring = Array.from({ length: RING }, () => direct !== undefined ? acquireAligned(chunk) : Buffer.allocUnsafe(READ_CHUNK))
      const reads: Array<Promise<{ from: number; got: number }> | undefined> = new Array(RING)
      const inFlight: Array<Promise<void> | undefined> = new Array(RING)
      // Direct reads start on a block boundary and read whole blocks; the bytes before r.start are skipped.
      let nextRead = direct !== undefined ? alignDown(r.start) : r.start
      let stopped = false
      const startRead = (i: number): void => {
        if (stopped || nextRead > r.end) { reads[i] = undefined; return }
        const from = nextRead
        const want = direct !== undefined ? chunk : Math.min(chunk, r.end - from + 1)
        nextRead = from + want
        reads[i] = fill(src, ring[i]!, want, from, r.end)
        reads[i]!.catch(() => {}) // awaited below; a failure is seen there
      }
      let failed: unknown
      let clean = false
      const closed = new Promise<void>((resolve) => dest.once('close', resolve))
      let pos = r.start
      try {
        for (let i = 0; i < RING; i++) startRead(i)
        for (let i = 0; pos <= r.end; i = (i + 1) % RING) {
          // The buffer's last write must be taken first: its callback starts this read.
          await inFlight[i]
          if (failed !== undefined) throw failed
          const pending = reads[i]
          if (pending === undefined) throw new Error(`blob ${digest} ended early at byte ${pos}`)
          const { from, got } = await pending
          reads[i] = undefined
          if (failed !== undefined) throw failed
          if (dest.destroyed) throw new Error('the client went away')
          const upTo = Math.min(got, r.end + 1 - from)
          if (from > pos || upTo <= pos - from) throw new Error(`blob ${digest} ended early at byte ${pos}`)
          const slot = i
          inFlight[i] = Promise.race([
            new Promise<void>((resolve) => dest.write(ring[slot]!.subarray(pos - from, upTo), (err) => {
              if (err != null) failed ??= err
              else startRead(slot)
              resolve()
            })),
            closed,
          ])
          pos = from + upTo
        }
        await Promise.all(inFlight)
        if (failed !== undefined) throw failed
        clean = true
      } finally {
        stopped = true
        // No read may still fill a buffer (or use a handle) once we let go of them.
        await Promise.allSettled(reads.filter((x) => x !== undefined))
        // Aligned buffers go back to the pool only when no write can still refer to them.
        if (clean && direct !== undefined) for (const b of ring) releaseAligned(b)
        if (wide) this.wideReads--
        if (wasCold && _opts.oneShot !== true) this.warmWhenIdle(digest)
      }
      dest.end()
    } finally {
      await direct?.close()
      await fh.close()
    }
  }

  /**
   * Read a cold blob through the page cache in the background, one at a time, so later pulls
   * are served from it. Until that read is done the blob counts as cold (reads stay direct):
   * a pull that came meanwhile would otherwise pay for filling the cache itself.
   */
  /** Whether `digest` counts as not in the page cache (written directly, not warmed since): reads of it go direct. */
  isCold (digest: Digest): boolean {
    return this.cold.has(digest)
  }

  private warmWhenIdle (digest: Digest): void {
    clearTimeout(this.warmTimers.get(digest))
    this.warmTimers.set(digest, setTimeout(() => {
      this.warmTimers.delete(digest)
      this.warm(digest)
    }, WARM_AFTER_IDLE_MS).unref())
  }

  private warm (digest: Digest): void {
    if (this.warmQueued.has(digest)) return
    this.warmQueued.add(digest)
    this.warming = this.warming.then(async () => {
      const stream = createReadStream(this.pathOf(digest), { highWaterMark: READ_CHUNK })
      for await (const chunk of stream) void chunk
    }).catch(() => {}).finally(() => {
      this.warmQueued.delete(digest)
      this.cold.delete(digest)
    })
  }

  private markCold (digest: Digest): void {
    if (!this.directIO) return
    this.cold.add(digest)
    if (this.cold.size > COLD_MAX) this.cold.delete(this.cold.values().next().value!)
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
    // Marked before anything else, and under the digest's lock: a collect() either ran before
    // (the bytes are put back below) or sees the mark and leaves them.
    this.marks.mark(info.digest)
    return await this.locked(info.digest, async () => await this.place(path, info))
  }

  private async place (path: string, info: BlobInfo): Promise<BlobInfo> {
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
    this.markCold(info.digest)
    await fsyncDir(shard)
    if (created !== undefined) await fsyncDir(join(shard, '..'))
    return info
  }

  /**
   * Not fsynced: a blob that reappears after a crash is only garbage to collect again,
   * while a lost blob would be data loss, which cannot happen here.
   */
  async delete (digest: Digest): Promise<boolean> {
    this.reads.delete(digest)
    return await unlinkIfPresent(this.pathOf(digest))
  }

  async collect (digest: Digest): Promise<boolean> {
    return await this.locked(digest, async () => {
      if (this.marks.has(digest)) return false
      this.reads.delete(digest)
      return await unlinkIfPresent(this.pathOf(digest))
    })
  }

  settle (digest: Digest): void { this.marks.settle(digest) }
  fresh (): Digest[] { return this.marks.list() }

  /** Run `fn` alone among placements and collections of `digest`. */
  private async locked<T> (digest: Digest, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(digest) ?? Promise.resolve()
    const run = prev.then(fn, fn)
    const tail = run.then(() => {}, () => {})
    this.locks.set(digest, tail)
    try {
      return await run
    } finally {
      if (this.locks.get(digest) === tail) this.locks.delete(digest)
    }
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
