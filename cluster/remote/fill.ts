/**
 * Filling a remote repository's cache with one blob: one download from the upstream per
 * blob and node (single flight), written into an upload session and followed by every
 * reader at once, late ones included, so each client streams while the blob arrives.
 *
 *   upstream ──► upload session file ──► verified (digest, size) ──► blob store ──► recorded
 *                     ▲  ▲  ▲
 *                readers follow the file as it grows; the last byte is held back until
 *                the digest is verified, so no client ever gets a whole blob that is wrong
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

const CHUNK = 1 << 20
/**
 * The last bytes to arrive, kept in memory: readers close behind the download (the usual case)
 * take them from here, without waiting for the file write to land and reading it back.
 */
const WINDOW = 80 << 20
/** How far the download may run ahead of the file write (held in memory meanwhile). */
const LAG = 64 << 20

/** Resolves when `s` drains or closes (a closed stream never drains). */
async function drained (s: PassThrough): Promise<void> {
  await new Promise<void>((resolve) => {
    const done = (): void => { s.off('drain', done); s.off('close', done); resolve() }
    s.on('drain', done)
    s.on('close', done)
  })
}
/** How often a reader waiting for bytes looks at the file even without news (the write may land after the count). */
const POLL_MS = 5

export class BlobFill {
  size: number | undefined
  /** Bytes handed to the upload file so far. */
  written = 0
  state: 'starting' | 'running' | 'verified' | 'failed' = 'starting'
  /**
   * Every byte arrived and hashes to the digest (checked as the bytes pass): readers may have
   * the last one while the copy is still being made durable and committed.
   */
  complete = false
  error: Error | undefined
  path: string | undefined
  private waiters: Array<() => void> = []
  private window: Array<{ at: number; buf: Buffer }> = []
  private head = 0
  private windowBytes = 0
  /** Resolves once the upstream answered (size known) or the fill failed before (rejects). */
  readonly started: Promise<void>
  /** Resolves once the blob is verified and stored, rejects when the fill failed. */
  readonly done: Promise<void>
  private startedResolve!: () => void
  private startedReject!: (err: Error) => void
  private doneResolve!: () => void
  private doneReject!: (err: Error) => void

  constructor (readonly digest: Digest, readonly remote: string, private readonly blobs: BlobStore) {
    this.started = new Promise((resolve, reject) => { this.startedResolve = resolve; this.startedReject = reject })
    this.done = new Promise((resolve, reject) => { this.doneResolve = resolve; this.doneReject = reject })
    this.started.catch(() => {})
    this.done.catch(() => {})
  }

  /** A chunk arrived at offset `written` (call before counting it). */
  remember (buf: Buffer): void {
    this.window.push({ at: this.written, buf })
    this.windowBytes += buf.length
    while (this.windowBytes > WINDOW && this.window.length - this.head > 1) this.windowBytes -= this.window[this.head++]!.buf.length
    // Dropped entries are cut off now and then, not one by one (shift() moves the whole array).
    if (this.head > 4096) { this.window = this.window.slice(this.head); this.head = 0 }
  }

  /** Bytes from `pos` (before `upto`) still in the window, up to 1 MiB at once; undefined when not there. */
  private fromMemory (pos: number, upto: number): Buffer | undefined {
    for (let i = this.window.length - 1; i >= this.head; i--) {
      const c = this.window[i]!
      if (pos >= c.at + c.buf.length) return undefined
      if (pos < c.at) continue
      const first = c.buf.subarray(pos - c.at, Math.min(c.buf.length, upto - c.at))
      // A reader behind the tail takes several chunks in one write.
      const parts = [first]
      let n = first.length
      for (let j = i + 1; j < this.window.length && n < CHUNK; j++) {
        const d = this.window[j]!
        if (d.at >= upto) break
        const part = d.buf.subarray(0, Math.min(d.buf.length, upto - d.at))
        parts.push(part)
        n += part.length
      }
      return parts.length === 1 ? first : Buffer.concat(parts, n)
    }
    return undefined
  }

  /** Wake every reader waiting for bytes. */
  changed (): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  private async wait (ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
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
    this.startedReject(err)
    this.doneReject(err)
    this.changed()
  }

  /**
   * Resolves once a reader would get its first byte, or the fill ended either way: a caller
   * that waits for it can still answer a fill that failed at once with an error status.
   */
  async firstByte (): Promise<void> {
    while (this.state === 'starting' || (this.state === 'running' && this.written < 2)) await this.wait(POLL_MS)
  }

  /** The blob (or a range of it) as it arrives; fails if the fill does. Call after `started`. */
  reader (range?: ByteRange): Readable {
    return Readable.from(this.chunks(range?.start ?? 0, range?.end), { objectMode: false, highWaterMark: CHUNK })
  }

  private async * chunks (start: number, end: number | undefined): AsyncGenerator<Buffer> {
    let fh: FileHandle | undefined
    let pos = start
    try {
      if (this.state === 'running' && this.path !== undefined) {
        try { fh = await open(this.path, 'r') } catch { fh = undefined }
      }
      for (;;) {
        if (this.state === 'failed') throw this.error!
        if (fh === undefined) {
          // No file to follow (gone into the store already, or none): the stored blob, once verified.
          await this.done
          const size = this.size!
          const last = end ?? size - 1
          if (pos > last) return
          for await (const c of await this.blobs.read(this.digest, { start: pos, end: last })) yield c as Buffer
          return
        }
        const last = end ?? (this.size !== undefined ? this.size - 1 : undefined)
        if (last !== undefined && pos > last) return
        // Until the bytes are known good, the last one stays back: a client never holds a whole blob that is wrong.
        const done = this.state === 'verified' || this.complete
        const limit = done ? this.size ?? this.written : this.written - 1
        if (done && pos >= limit) return
        const upto = Math.min(limit, last !== undefined ? last + 1 : Infinity)
        if (pos < upto) {
          const m = this.fromMemory(pos, upto)
          if (m !== undefined && m.length > 0) { pos += m.length; yield m; continue }
          const buf = Buffer.allocUnsafe(Math.min(CHUNK, upto - pos))
          const { bytesRead } = await fh.read(buf, 0, buf.length, pos)
          if (bytesRead > 0) { pos += bytesRead; yield buf.subarray(0, bytesRead); continue }
        }
        await this.wait(POLL_MS)
      }
    } finally {
      await fh?.close()
    }
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
        // Hashed as the bytes pass (the upload store hashes again at commit, once the clients
        // have everything): a right digest lets readers finish before the copy is durable.
        const alg = digestAlgorithm(f.digest)
        const hash = createHash(alg)
        // The download runs ahead of the disk by up to LAG bytes (readers take them from the
        // window in memory): clients go at the upstream's pace, not at the pace of the writes.
        const toDisk = new PassThrough({ highWaterMark: LAG })
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
                f.remember(b)
                f.written += b.length
                counted += b.length
                if (counted >= 1 << 20) count()
                f.changed()
                if (!toDisk.write(b)) { body.pause(); void drained(toDisk).then(() => body.resume()) }
              })
              body.once('end', () => { count(); resolve() })
              body.once('error', (err) => { count(); reject(err) })
              body.once('close', () => { if (!body.readableEnded) { count(); reject(Object.assign(new Error('aborted'), { code: 'ECONNRESET' })) } })
            })
            if (f.size !== undefined && f.written !== f.size) throw new UpstreamFailure('bad_answer', `the upstream sent ${f.written} of the ${f.size} bytes of blob ${f.digest}`)
            if (digestOf(alg, hash.digest('hex')) !== f.digest) throw Object.assign(new Error(`the bytes do not match ${f.digest}`), { code: 'DIGEST_INVALID' })
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
        if (f.size !== undefined && n !== f.size) throw new UpstreamFailure('bad_answer', `the upstream sent ${n} of the ${f.size} bytes of blob ${f.digest}`)
        // Verifies the digest; on a mismatch nothing becomes visible.
        const info = await uploads.commit(id, f.digest, blobs)
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
