/**
 * Reading an HTTP/1.1 answer off a peer-port connection without node's HTTP client, for bulk
 * blob copies between nodes (PeerClient.get in net/peer-https.ts).
 *
 * Why: node's TLS socket hands every read (at most one 16 KiB TLS record) to JS in a fresh
 * buffer, and node's HTTP client passes each on as a chunk: allocation, GC and many small
 * writes made the peer port 0.7× of plain HTTP (scripts/bench/transfer.ts). There the socket
 * reads with `onread` into 1 MiB slabs, each read right after the one before, and this reader
 * hands the body out as views of those slabs, consecutive reads joined into one chunk (up to
 * CHUNK bytes): no copy. A slab is written again only once every chunk of it came back (a
 * get with `recycle` lends them, storage/blobs/source.ts, and writeHashed returns each once
 * written); otherwise the consumer may keep the chunks for good. Bytes fed without that
 * guarantee (`owned` false: a reused buffer) are copied into slabs of the reader's own first.
 *
 *   feed(bytes) ──► head: status line, headers (up to MAX_HEAD bytes; 1xx heads skipped)
 *                   body: Content-Length bytes (the blob route), or chunked, or until close;
 *                         none for HEAD, 204 and 304
 *                   ──► PeerResponse (a Readable: statusCode, headers, then the body)
 *
 * A connection ending before the body does destroys the response with an error; bytes beyond
 * the body mark the connection as not reusable (they are dropped, never delivered).
 */
import { Readable } from 'node:stream'
import type { IncomingHttpHeaders } from 'node:http'

/** Largest response head accepted (the peer port's server allows heads this large). */
export const MAX_HEAD = 64 * 1024
/** Bytes per slab the body is copied into (when the bytes fed are not ours to keep). */
export const SLAB = 1 << 20
/** A slab with less room than this left is replaced by a fresh one. */
const SLAB_MIN_ROOM = 16 * 1024
/** Chunks handed to the consumer are at most this long. */
export const CHUNK = 1 << 20
/** Body bytes wait at most this long for more to fill a bigger chunk. */
const FLUSH_MS = 1
/** Buffered body bytes beyond which the connection stops reading until the consumer catches up. */
const HIGH_WATER = 4 << 20

const CRLFCRLF = Buffer.from('\r\n\r\n')

/** Why a response could not be read: the `reason` label of flotilla_peer_fetch_failures_total. */
export type ResponseFailure = 'bad-head' | 'short-body' | 'bad-chunk' | 'timeout' | 'connection'

export class ResponseError extends Error {
  constructor (readonly reason: ResponseFailure, message: string) { super(message) }
}

/** An answer read by ResponseReader: the head, then the body as a stream of chunks that are never reused. */
export class PeerResponse extends Readable {
  readonly statusCode: number
  readonly statusMessage: string
  readonly headers: IncomingHttpHeaders

  constructor (head: { status: number; message: string; headers: IncomingHttpHeaders }, private readonly hooks: { demand: () => void; abort: (err: Error | null) => void }) {
    super({ highWaterMark: HIGH_WATER })
    this.statusCode = head.status
    this.statusMessage = head.message
    this.headers = head.headers
  }

  override _read (): void { this.hooks.demand() }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    this.hooks.abort(err)
    cb(err)
  }
}

export interface ReaderHooks {
  /** Stop reading the connection (the consumer is behind). */
  pause: () => void
  /** Read on. */
  resume: () => void
  /** The body is complete; `reusable`: the connection may carry another request. */
  done: (reusable: boolean) => void
  /** The consumer gave up on the body before its end (or it failed): the connection is spent. */
  abort: () => void
  /** The answer failed (before or after its head), and why. */
  failed?: (reason: ResponseFailure) => void
  /** A chunk of the body that points into bytes fed as `owned`, as it is handed to the consumer (the connection may lend it: storage/blobs/source.ts). */
  handOut?: (chunk: Buffer) => void
}

type Framing = { kind: 'none' } | { kind: 'length'; left: number } | { kind: 'chunked' } | { kind: 'close' }

/**
 * One answer's parser. Feed it the connection's bytes as they come (they may be a reused
 * buffer: nothing is kept by reference), then `end()` when the connection ends or fails.
 */
export class ResponseReader {
  /** The answer, once its head is in; rejects if the connection fails before. */
  readonly response: Promise<PeerResponse>
  /** Bytes came after the body (or after a failure): the connection must not be reused. */
  overrun = false
  private resolve!: (r: PeerResponse) => void
  private reject!: (err: Error) => void
  private state: 'head' | 'body' | 'done' = 'head'
  private head: Buffer[] = []
  private headLength = 0
  private res: PeerResponse | undefined
  private framing: Framing = { kind: 'none' }
  private keepAlive = true
  private received = 0
  /** Our own slab (bytes fed without ownership are copied here) and how far it is filled. */
  private slab: Buffer | undefined
  private slabFill = 0
  /** Body bytes gathered and not yet handed out: one stretch of one buffer (`owned`: the caller's, not a slab of ours). */
  private run: { buffer: ArrayBufferLike; start: number; end: number; owned: boolean } | undefined
  /** The bytes of the current feed() are the caller's to give: held by reference, never copied. */
  private owned = false
  private timer: NodeJS.Timeout | undefined
  // Chunked framing: the size line being read, the data left in the current chunk, and where we are.
  private chunkState: 'size' | 'data' | 'data-crlf' | 'trailer' = 'size'
  private chunkLine = ''
  private chunkLeft = 0
  private feeding = false
  /** Set when the body ended inside feed(): whether the connection may be reused. */
  private completed: boolean | undefined

  constructor (private readonly method: string, private readonly hooks: ReaderHooks) {
    this.response = new Promise((resolve, reject) => { this.resolve = resolve; this.reject = reject })
    // Not every caller waits (a connection that fails while idle): mark it handled.
    this.response.catch(() => {})
  }

  /** Whether the answer was read to its end. */
  get finished (): boolean { return this.state === 'done' }

  /**
   * Bytes off the connection. Unless `owned`, they are only read during the call (a reused
   * buffer). `owned`: they are never written again, and the body's chunks may point into them.
   */
  feed (bytes: Uint8Array, owned = false): void {
    let at = 0
    this.owned = owned
    this.feeding = true
    try {
      while (at < bytes.length) {
        if (this.state === 'done') { this.overrun = true; break }
        if (this.state === 'head') at = this.readHead(bytes, at)
        else at = this.readBody(bytes, at)
      }
    } finally {
      this.feeding = false
    }
    // Told once the whole read is looked at: bytes after the body make the connection unfit for reuse.
    const completed = this.completed
    this.completed = undefined
    if (completed !== undefined) this.hooks.done(completed && !this.overrun)
  }

  /**
   * Hand out the body bytes gathered so far now: the connection is about to read into another
   * buffer, and the one before must have no bytes left that a later chunk would point into.
   */
  cut (): void { if (this.state === 'body') this.flush() }

  /** The connection ended (cleanly when `err` is undefined) or failed. */
  end (err?: Error): void {
    if (this.state === 'done') return
    const reason: ResponseFailure = err instanceof ResponseError ? err.reason : err !== undefined ? 'connection' : this.state === 'head' ? 'bad-head' : 'short-body'
    if (this.state === 'head') {
      this.state = 'done'
      this.hooks.failed?.(reason)
      this.reject(err ?? new ResponseError('bad-head', this.headLength === 0 ? 'the peer closed the connection without answering' : 'the peer closed the connection in the middle of its answer\'s head'))
      return
    }
    if (err === undefined && this.framing.kind === 'close') { this.finish(false); return }
    this.state = 'done'
    this.hooks.failed?.(reason)
    this.flush()
    const what = this.framing.kind === 'length' ? `after ${this.received} of ${this.received + this.framing.left} bytes` : `after ${this.received} bytes, before the end of its body`
    this.res!.destroy(err !== undefined ? Object.assign(new Error(`${err.message} (${what})`), { code: (err as NodeJS.ErrnoException).code }) : new ResponseError('short-body', `the peer closed the connection ${what}`))
  }

  private readHead (bytes: Uint8Array, at: number): number {
    // A terminator may straddle two reads: look from 3 bytes before this read's start.
    const prev = this.headLength
    const piece = Buffer.from(bytes.buffer, bytes.byteOffset + at, bytes.length - at)
    const joined = prev === 0 ? piece : Buffer.concat([...this.head, piece])
    const end = joined.indexOf(CRLFCRLF, Math.max(0, prev - 3))
    if (end < 0) {
      if (joined.length > MAX_HEAD) { this.failHead(`the peer's answer head is longer than ${MAX_HEAD} bytes`); return bytes.length }
      // The reused read buffer is overwritten by the next read: keep a copy.
      this.head = [Buffer.from(joined)]
      this.headLength = joined.length
      return bytes.length
    }
    if (end + 4 > MAX_HEAD) { this.failHead(`the peer's answer head is longer than ${MAX_HEAD} bytes`); return bytes.length }
    const consumed = end + 4 - prev
    this.head = []
    this.headLength = 0
    this.parseHead(joined.toString('latin1', 0, end))
    return at + consumed
  }

  private failHead (message: string): void {
    this.state = 'done'
    this.overrun = true
    this.hooks.failed?.('bad-head')
    this.reject(new ResponseError('bad-head', message))
  }

  private parseHead (text: string): void {
    const lines = text.split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]!)
    if (m === null) { this.failHead(`the peer answered with no HTTP/1.1 status line: ${JSON.stringify(lines[0]!.slice(0, 80))}`); return }
    const status = Number(m[1])
    const headers: IncomingHttpHeaders = {}
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      if (colon <= 0) { this.failHead(`the peer's answer has a malformed header line: ${JSON.stringify(line.slice(0, 80))}`); return }
      const name = line.slice(0, colon).trim().toLowerCase()
      const value = line.slice(colon + 1).trim()
      const had = headers[name]
      if (name === 'set-cookie') headers[name] = [...(had as string[] | undefined ?? []), value]
      else if (had === undefined) headers[name] = value
      else if (name === 'content-length' && had !== value) { this.failHead('the peer\'s answer has two different Content-Length headers'); return }
      else if (name !== 'content-length') headers[name] = `${had as string}, ${value}`
    }
    // An interim answer (100 Continue): the real one follows.
    if (status >= 100 && status < 200) return
    const connection = String(headers.connection ?? '').toLowerCase()
    this.keepAlive = !connection.split(',').some((t) => t.trim() === 'close')
    const te = headers['transfer-encoding']
    const cl = headers['content-length']
    if (this.method === 'HEAD' || status === 204 || status === 304) this.framing = { kind: 'none' }
    else if (te !== undefined) {
      if (!/(^|,)\s*chunked\s*$/i.test(te)) { this.failHead(`the peer's answer has a Transfer-Encoding this client does not read: ${te}`); return }
      this.framing = { kind: 'chunked' }
    } else if (cl !== undefined) {
      if (!/^\d{1,15}$/.test(cl as string)) { this.failHead(`the peer's answer has an invalid Content-Length: ${JSON.stringify(cl)}`); return }
      this.framing = { kind: 'length', left: Number(cl) }
    } else this.framing = { kind: 'close' }
    if (this.framing.kind === 'close') this.keepAlive = false
    this.state = 'body'
    this.res = new PeerResponse({ status, message: m[2] ?? '', headers }, {
      demand: () => this.hooks.resume(),
      abort: (err) => {
        if (this.state === 'done') return
        clearTimeout(this.timer)
        this.state = 'done'
        this.hooks.abort()
        void err
      },
    })
    this.resolve(this.res)
    if (this.framing.kind === 'none' || (this.framing.kind === 'length' && this.framing.left === 0)) this.finish(this.keepAlive)
  }

  private readBody (bytes: Uint8Array, at: number): number {
    const f = this.framing
    if (f.kind === 'length') {
      const n = Math.min(f.left, bytes.length - at)
      this.deliver(bytes, at, n)
      f.left -= n
      if (f.left === 0) this.finish(this.keepAlive)
      return at + n
    }
    if (f.kind === 'close') {
      this.deliver(bytes, at, bytes.length - at)
      return bytes.length
    }
    return this.readChunked(bytes, at)
  }

  /** Transfer-Encoding: chunked (RFC 9112 §7.1): hex size line, data, CRLF; a 0 size, trailers, an empty line. */
  private readChunked (bytes: Uint8Array, at: number): number {
    while (at < bytes.length && this.state === 'body') {
      if (this.chunkState === 'data') {
        const n = Math.min(this.chunkLeft, bytes.length - at)
        this.deliver(bytes, at, n)
        this.chunkLeft -= n
        at += n
        if (this.chunkLeft === 0) this.chunkState = 'data-crlf'
        continue
      }
      // Line-oriented states: read up to the next LF.
      const lf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).indexOf(10, at)
      const upto = lf < 0 ? bytes.length : lf + 1
      this.chunkLine += Buffer.from(bytes.buffer, bytes.byteOffset + at, upto - at).toString('latin1')
      at = upto
      if (this.chunkLine.length > 4096) { this.failBody('bad-chunk', 'a chunk-size or trailer line of the peer\'s answer is too long'); return bytes.length }
      if (lf < 0) continue
      const line = this.chunkLine.replace(/\r?\n$/, '')
      this.chunkLine = ''
      if (this.chunkState === 'data-crlf') {
        if (line !== '') { this.failBody('bad-chunk', 'a chunk of the peer\'s answer is longer than its size'); return bytes.length }
        this.chunkState = 'size'
      } else if (this.chunkState === 'size') {
        const m = /^([0-9a-fA-F]{1,12})(;.*)?$/.exec(line)
        if (m === null) { this.failBody('bad-chunk', `the peer's answer has an invalid chunk size: ${JSON.stringify(line.slice(0, 40))}`); return bytes.length }
        this.chunkLeft = parseInt(m[1]!, 16)
        this.chunkState = this.chunkLeft === 0 ? 'trailer' : 'data'
      } else if (line === '') this.finish(this.keepAlive)
    }
    return at
  }

  private failBody (reason: ResponseFailure, message: string): void {
    this.state = 'done'
    this.overrun = true
    this.hooks.failed?.(reason)
    clearTimeout(this.timer)
    this.hooks.abort()
    this.res!.destroy(new ResponseError(reason, message))
  }

  /**
   * Body bytes: held by reference when the caller owns them (`feed(…, true)`), else copied into
   * a slab of our own first. Stretches that follow each other in memory (consecutive reads
   * into one slab) are handed out as one chunk: when the run breaks, grows to CHUNK bytes,
   * the body ends, or FLUSH_MS after the run began.
   */
  private deliver (bytes: Uint8Array, at: number, n: number): void {
    if (n === 0) return
    this.received += n
    if (this.owned) { this.extend(bytes.buffer, bytes.byteOffset + at, n, true); return }
    while (n > 0) {
      if (this.slab === undefined || this.slab.length - this.slabFill < SLAB_MIN_ROOM) {
        this.slab = Buffer.allocUnsafeSlow(SLAB)
        this.slabFill = 0
      }
      const k = Math.min(n, this.slab.length - this.slabFill)
      this.slab.set(k === bytes.length && at === 0 ? bytes : bytes.subarray(at, at + k), this.slabFill)
      this.extend(this.slab.buffer, this.slab.byteOffset + this.slabFill, k, false)
      this.slabFill += k
      at += k
      n -= k
    }
  }

  private extend (buffer: ArrayBufferLike, offset: number, n: number, owned: boolean): void {
    if (this.run !== undefined && (this.run.buffer !== buffer || this.run.end !== offset)) this.flush()
    if (this.run === undefined) this.run = { buffer, start: offset, end: offset + n, owned }
    else this.run.end += n
    if (this.run.end - this.run.start >= CHUNK) this.flush()
    else this.timer ??= setTimeout(() => { this.timer = undefined; this.flush() }, FLUSH_MS)
  }

  /** Hand the run gathered so far to the consumer. */
  private flush (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    const r = this.run
    if (r === undefined) return
    this.run = undefined
    if (this.res!.destroyed) return
    const chunk = Buffer.from(r.buffer, r.start, r.end - r.start)
    if (r.owned) this.hooks.handOut?.(chunk)
    if (!this.res!.push(chunk)) this.hooks.pause()
  }

  private finish (reusable: boolean): void {
    this.state = 'done'
    this.flush()
    this.slab = undefined
    this.res!.push(null)
    if (this.feeding) this.completed = reusable
    else this.hooks.done(reusable && !this.overrun)
  }
}
