/**
 * Filling a remote repository's cache with one blob: one download from the upstream per
 * blob and node (single flight), written into an upload session and followed by every
 * reader at once, late ones included, so each client streams while the blob arrives.
 *
 *   upstream ──► upload session file ──► verified (digest, size) ──► blob store ──► recorded
 *                     ▲  ▲  ▲
 *                readers take the upstream's chunks as they pass (a window of the last few
 *                MiB), or the file when further behind; the last chunk is held back until
 *                the digest is verified, so no client ever gets a whole blob that is wrong.
 *                That check is the only hash: the upload store's commit takes its digest.
 *
 * On a bad answer (wrong digest, short body, an error mid-way) nothing is stored or recorded,
 * every reader's stream fails (the client sees its transfer cut, not a wrong blob) and the
 * cause is logged and counted. Which member fills a blob for the whole cluster is decided by
 * the caller (src/http/remote.ts: the first of the blob's rendezvous ranking that answers).
 */
import { open, type FileHandle } from 'node:fs/promises'
import { PassThrough, Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { BlobStore, ByteRange, UploadStore } from '../../storage/blobs/blob-store.js'
import { createHash, randomBytes } from 'node:crypto'
import { digestAlgorithm, digestHex, digestOf, type Digest } from '../../storage/reference.js'
import { UpstreamFailure } from './upstream.js'
import type { RemoteMetrics } from './metrics.js'

/** An upstream blob response, about to be read. */
export interface FillSource { body: Readable; size: number | undefined }

/** Bytes a reader reads from the file at once, and buffers ahead of its client at most. */
const CHUNK = 1 << 20
/**
 * The last chunks to arrive, kept in memory (the upstream's own buffers, never copied): a
 * reader at the head of the download (the usual case: one client per fill) or a little behind
 * it (a second client, a peer's stream) takes them from here; one further behind reads the file.
 * Measured with a 200 MiB blob: an 80 MiB window of 64 KiB buffers cost more in garbage
 * collection than the reads from the page cache it saved.
 */
const WINDOW = 8 << 20
/**
 * A reader at the head of the download waits for this many bytes (or the end) before it hands
 * them on: it wakes once per batch, not once per upstream chunk (often 30–64 KiB).
 */
const BATCH = 256 << 10
/** How far the download may run ahead of the file write (held in memory meanwhile). */
const LAG = 16 << 20

/** Resolves when `s` drains or closes (a closed stream never drains). */
async function drained (s: PassThrough): Promise<void> {
  await new Promise<void>((resolve) => {
    const done = (): void => { s.off('drain', done); s.off('close', done); resolve() }
    s.on('drain', done)
    s.on('close', done)
  })
}
/** How often a reader waiting for bytes in the file looks again (the write lands after the count). */
const POLL_MS = 5

export class BlobFill {
  size: number | undefined
  /** Bytes received (hashed, and handed to the upload file) so far. */
  written = 0
  state: 'starting' | 'running' | 'verified' | 'failed' = 'starting'
  /**
   * Every byte arrived and hashes to the digest (checked as the bytes pass): readers may have
   * the last chunk while the copy is still being made durable and committed.
   */
  complete = false
  error: Error | undefined
  path: string | undefined
  private waiters: Array<() => void> = []
  private window: Array<{ at: number; buf: Buffer }> = []
  private head = 0
  private windowBytes = 0
  /** Length of the last chunk: held back from readers until the digest is verified. */
  private lastLength = 0
  /** Resolves once the upstream answered (size known) or the fill failed before (rejects). */
  readonly started: Promise<void>
  /** Resolves once the blob is verified and stored, rejects when the fill failed. */
  readonly done: Promise<void>
  private startedResolve!: () => void
  private startedReject!: (err: Error) => void
  private doneResolve!: () => void
  private doneReject!: (err: Error) => void

  constructor (readonly digest: Digest, readonly remote: string, readonly blobs: BlobStore) {
    this.started = new Promise((resolve, reject) => { this.startedResolve = resolve; this.startedReject = reject })
    this.done = new Promise((resolve, reject) => { this.doneResolve = resolve; this.doneReject = reject })
    this.started.catch(() => {})
    this.done.catch(() => {})
  }

  /** A chunk arrived: kept in the window, counted, and readers waiting at the head woken. */
  arrived (buf: Buffer): void {
    this.window.push({ at: this.written, buf })
    this.windowBytes += buf.length
    while (this.windowBytes > WINDOW && this.window.length - this.head > 2) this.windowBytes -= this.window[this.head++]!.buf.length
    // Dropped entries are cut off now and then, not one by one (shift() moves the whole array).
    if (this.head > 1024) { this.window = this.window.slice(this.head); this.head = 0 }
    this.written += buf.length
    this.lastLength = buf.length
    this.changed()
  }

  /**
   * Bytes readers may have: all once verified, else all but the last chunk. Until the bytes are
   * known good a client never holds a whole blob that is wrong.
   */
  released (): number {
    return this.complete || this.state === 'verified' ? this.size ?? this.written : this.written - this.lastLength
  }

  /** Bytes from `pos` (before `upto`) still in the window, as one of its chunks (a view, not a copy); undefined when not there. */
  fromMemory (pos: number, upto: number): Buffer | undefined {
    for (let i = this.window.length - 1; i >= this.head; i--) {
      const c = this.window[i]!
      if (pos >= c.at + c.buf.length) return undefined
      if (pos < c.at) continue
      const from = pos - c.at
      const to = Math.min(c.buf.length, upto - c.at)
      return from === 0 && to === c.buf.length ? c.buf : c.buf.subarray(from, to)
    }
    return undefined
  }

  /** Wake every reader waiting for bytes. */
  changed (): void {
    if (this.waiters.length === 0) return
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  /** Until the next change (new bytes, the end either way), or at most `ms`. */
  async wait (ms?: number): Promise<void> {
    await new Promise<void>((resolve) => {
      if (ms === undefined) { this.waiters.push(resolve); return }
      const t = setTimeout(resolve, ms)
      this.waiters.push(() => { clearTimeout(t); resolve() })
    })
  }

  markStarted (size: number | undefined, path: string | undefined): void {
    this.size = size
    this.path = path
    this.state = 'running'
    this.startedResolve()
    this.changed()
  }

  markComplete (): void {
    this.complete = true
    this.changed()
  }

  markVerified (size: number): void {
    this.size = size
    this.state = 'verified'
    this.window = []
    this.head = 0
    this.windowBytes = 0
    this.doneResolve()
    this.changed()
  }

  markFailed (err: Error): void {
    this.state = 'failed'
    this.error = err
    this.window = []
    this.head = 0
    this.windowBytes = 0
    this.startedReject(err)
    this.doneReject(err)
    this.changed()
  }

  /**
   * Resolves once a reader would get its first byte, or the fill ended either way: a caller
   * that waits for it can still answer a fill that failed at once with an error status.
   */
  async firstByte (): Promise<void> {
    while (this.state === 'starting' || (this.state === 'running' && !this.complete && this.released() === 0)) await this.wait()
  }

  /** The blob (or a range of it) as it arrives; fails if the fill does. Call after `started`. */
  reader (range?: ByteRange): FillReader {
    return new FillReader(this, range?.start ?? 0, range?.end)
  }
}

/**
 * One client's stream of a fill. At the head of the download it hands on the upstream's chunks
 * as they are released (views of the same buffers: no copy, no re-chunking); behind the window
 * it reads the upload file, which it opened first so a rename into the blob store does not
 * matter; with no file (the blob was stored already) it reads the blob store.
 */
export class FillReader extends Readable {
  private pos: number
  private fh: FileHandle | undefined
  private opened = false
  private stored: AsyncIterator<Buffer> | undefined
  private pumping = false
  private wanted = false
  private gone = false
  /** The end of the batch being handed on (BATCH). */
  private until = 0

  constructor (private readonly fill: BlobFill, start: number, private readonly end: number | undefined) {
    super({ highWaterMark: CHUNK })
    this.pos = start
  }

  /**
   * Read the first bytes ahead (into the stream's buffer): rejects if the fill fails before,
   * so the caller can still answer with an error status rather than a response cut short.
   */
  async prime (): Promise<void> {
    this.pumping = true
    try {
      this.push(await this.next())
    } finally {
      this.pumping = false
    }
    if (this.wanted) void this.pump()
  }

  override _read (): void {
    this.wanted = true
    if (!this.pumping) void this.pump()
  }

  private async pump (): Promise<void> {
    this.pumping = true
    try {
      while (this.wanted && !this.gone) {
        this.wanted = false
        const b = await this.next()
        // push() may call _read() again (wanted); true: there is room for more.
        if (this.push(b) && b !== null) this.wanted = true
        if (b === null) return
      }
    } catch (err) {
      this.destroy(err as Error)
    } finally {
      this.pumping = false
      if (this.gone) this.release()
    }
  }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    this.gone = true
    if (!this.pumping) this.release()
    cb(err)
  }

  private release (): void {
    const fh = this.fh
    this.fh = undefined
    void fh?.close().catch(() => {})
    const s = this.stored
    this.stored = undefined
    void s?.return?.().catch(() => {})
  }

  /** The next bytes for the client; null at the end. Throws the fill's error when it failed. */
  private async next (): Promise<Buffer | null> {
    const f = this.fill
    if (!this.opened) {
      this.opened = true
      if (f.state === 'running' && f.path !== undefined) {
        try { this.fh = await open(f.path, 'r') } catch { this.fh = undefined }
      }
    }
    for (;;) {
      if (this.gone) return null
      if (f.state === 'failed') throw f.error!
      if (this.fh === undefined) return await this.fromStore()
      const last = this.end ?? (f.size !== undefined ? f.size - 1 : undefined)
      if (last !== undefined && this.pos > last) return null
      const limit = f.released()
      if ((f.complete || f.state === 'verified') && this.pos >= limit) return null
      const upto = Math.min(limit, last !== undefined ? last + 1 : Infinity)
      if (this.pos < upto) {
        // More bytes for this reader still to come, and fewer than a batch at hand: wait for
        // them. A batch once started is handed on whole, its chunks in one go.
        const more = !(f.complete || f.state === 'verified') && (last === undefined || limit <= last)
        if (more && this.pos >= this.until) {
          if (upto - this.pos < BATCH) { await f.wait(); continue }
          this.until = upto
        }
        const m = f.fromMemory(this.pos, upto)
        if (m !== undefined) { this.pos += m.length; return m }
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, upto - this.pos))
        const { bytesRead } = await this.fh.read(buf, 0, buf.length, this.pos)
        if (bytesRead > 0) { this.pos += bytesRead; return buf.subarray(0, bytesRead) }
        // Counted but not in the file yet: its write lands shortly.
        await f.wait(POLL_MS)
        continue
      }
      // At the head: until more bytes arrive or the fill ends.
      await f.wait()
    }
  }

  /** No file to follow (gone into the store already, or none): the stored blob, once verified. */
  private async fromStore (): Promise<Buffer | null> {
    const f = this.fill
    if (this.stored === undefined) {
      await f.done
      const last = this.end ?? f.size! - 1
      if (this.pos > last || this.gone) return null
      this.stored = (await f.blobs.read(f.digest, { start: this.pos, end: last }))[Symbol.asyncIterator]() as AsyncIterator<Buffer>
    }
    const r = await this.stored.next()
    if (r.done === true) return null
    this.pos += r.value.length
    return r.value
  }
}

export interface BlobFillsOptions {
  uploads: UploadStore
  blobs: BlobStore
  log: Logger
  metrics?: RemoteMetrics
  /** Hold digests against garbage collection while they are filled (cluster/gc/collector.ts). */
  hold?: (digests: string[]) => () => void
}

export class BlobFills {
  private readonly fills = new Map<string, BlobFill>()

  constructor (private readonly opts: BlobFillsOptions) {}

  /** The fill of `digest` under way on this node, if any. */
  get (digest: string): BlobFill | undefined {
    return this.fills.get(digest)
  }

  /** Fills under way (for metrics and tests). */
  active (): number { return this.fills.size }

  /**
   * Join the fill of `digest`, or start one: `fetch` opens the upstream response, `record`
   * links the verified blob in the metadata. The fill goes on if every reader leaves.
   */
  fill (digest: Digest, remote: string, fetch: () => Promise<FillSource>, record: (size: number) => Promise<void>): BlobFill {
    const running = this.fills.get(digest)
    // A failed fill still cleaning up is not joined: the next pull tries the upstream again.
    if (running !== undefined && running.state !== 'failed') return running
    const f = new BlobFill(digest, remote, this.opts.blobs)
    this.fills.set(digest, f)
    const release = this.opts.hold?.([digest]) ?? (() => {})
    void this.run(f, fetch, record).finally(() => {
      release()
      if (this.fills.get(digest) === f) this.fills.delete(digest)
    })
    return f
  }

  private async run (f: BlobFill, fetch: () => Promise<FillSource>, record: (size: number) => Promise<void>): Promise<void> {
    const { uploads, blobs, log, metrics } = this.opts
    // Its own session: a failed fill of the same blob may still be removing its file.
    const id = `remote-${digestHex(f.digest).slice(0, 64)}-${randomBytes(6).toString('hex')}`
    let created = false
    try {
      const have = await blobs.stat(f.digest)
      if (have === undefined) {
        const src = await fetch()
        await uploads.create(id)
        created = true
        f.markStarted(src.size, uploads.filePath?.(id))
        const t0 = Date.now()
        // Hashed once, as the bytes pass: a right digest lets readers finish before the copy is
        // durable, and the upload store takes it at commit (the bytes it wrote are these).
        const alg = digestAlgorithm(f.digest)
        const hash = createHash(alg)
        let digest: Digest | undefined
        // The download runs ahead of the disk by up to LAG bytes (readers take them from the
        // window in memory): clients go at the upstream's pace, not at the pace of the writes.
        const toDisk = new PassThrough({ writableHighWaterMark: LAG, readableHighWaterMark: 1 << 20 })
        // Its failure is reported through the download; an 'error' nobody hears would end the process.
        toDisk.on('error', () => {})
        const download = (async (): Promise<void> => {
          try {
            await new Promise<void>((resolve, reject) => {
              const body = src.body
              let counted = 0
              const count = (): void => { metrics?.bytes.inc({ remote: f.remote }, counted); counted = 0 }
              // 'data' rather than for await: a chunk is often 16 KiB, and each costs little this way.
              body.on('data', (b: Buffer) => {
                hash.update(b)
                f.arrived(b)
                counted += b.length
                if (counted >= 1 << 20) count()
                if (!toDisk.write(b)) { body.pause(); void drained(toDisk).then(() => body.resume()) }
              })
              body.once('end', () => { count(); resolve() })
              body.once('error', (err) => { count(); reject(err) })
              body.once('close', () => { if (!body.readableEnded) { count(); reject(Object.assign(new Error('aborted'), { code: 'ECONNRESET' })) } })
            })
            if (f.size !== undefined && f.written !== f.size) throw new UpstreamFailure('bad_answer', `the upstream sent ${f.written} of the ${f.size} bytes of blob ${f.digest}: nothing was cached`)
            digest = digestOf(alg, hash.digest('hex'))
            if (digest !== f.digest) throw Object.assign(new Error(`the bytes do not match ${f.digest}`), { code: 'DIGEST_INVALID' })
            f.size = f.written
            f.markComplete()
            log.info({ remote: f.remote, digest: f.digest, bytes: f.written, ms: Date.now() - t0 }, 'remote: blob downloaded from the upstream and verified')
            toDisk.end()
          } catch (err) {
            // Never end()ed: the append fails too, and nothing is committed.
            toDisk.destroy(err as Error)
            throw err
          }
        })()
        download.catch(() => {})
        const [n] = await Promise.all([uploads.append(id, toDisk, { deferHash: true }), download])
        if (f.size !== undefined && n !== f.size) throw new UpstreamFailure('bad_answer', `the upstream sent ${n} of the ${f.size} bytes of blob ${f.digest}: nothing was cached`)
        // The digest was checked as the bytes passed (the store checks it is the one asked for,
        // and hashes the file itself if it cannot vouch that it holds exactly those bytes).
        const info = await uploads.commit(id, f.digest, blobs, { hashed: { digest: digest!, size: n } })
        created = false
        f.markVerified(info.size)
      } else {
        f.markStarted(have.size, undefined)
        f.markVerified(have.size)
      }
      await record(f.size!)
    } catch (err) {
      const e = err as Error & { code?: string }
      const cause = err instanceof UpstreamFailure ? err.why : e.code === 'DIGEST_INVALID' ? 'digest' : e.code === 'SIZE_INVALID' ? 'size' : /aborted|premature|ECONNRESET|socket hang up/i.test(e.message) ? 'truncated' : 'other'
      if (f.state !== 'verified') {
        metrics?.fillErrors.inc({ remote: f.remote, cause })
        log.warn({ remote: f.remote, digest: f.digest, cause, err: e.message }, 'remote: filling a blob from the upstream failed; nothing was cached')
        const shown = e.code === 'DIGEST_INVALID' ? new UpstreamFailure('bad_answer', `the upstream sent bytes for blob ${f.digest} that do not match its digest: nothing was cached`) : err instanceof UpstreamFailure ? err : new UpstreamFailure('bad_answer', `the upstream's answer for blob ${f.digest} broke off (${cause}: ${e.message}): nothing was cached`)
        f.markFailed(shown)
      } else {
        log.warn({ remote: f.remote, digest: f.digest, err: e.message }, 'remote: a filled blob could not be recorded yet; the next pull records it')
      }
      if (created) await uploads.remove(id).catch(() => false)
    }
  }
}
