/**
 * One request, a streamed answer, with back-pressure both ways: for bulk bytes between sites
 * (cluster/peering/), where a whole answer in one message would not fit in memory.
 *
 *   dialer → listener   [u32 length][request]
 *   listener → dialer   [u32 length][header] then the body's raw bytes, until the listener closes
 *
 * The first item the handler yields is the header, the rest is the body. The reader pauses
 * the stream (the muxer stops the sender) while more than `highWaterBytes` wait to be
 * consumed, and resumes it once they are: a slow disk at the reader never makes the stream's
 * buffers grow without bound, as reading with lpStream would (it buffers whatever arrives).
 */
import type { Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Host } from './host.js'

/** Yields the answer: a header, then the body's bytes. Throwing aborts the stream. */
export type StreamedHandler = (peer: string, request: Uint8Array) => AsyncIterable<Uint8Array>

const HIGH_WATER = 4 * 1024 * 1024

function frame (bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + bytes.byteLength)
  new DataView(out.buffer).setUint32(0, bytes.byteLength)
  out.set(bytes, 4)
  return out
}

/** Reads a stream's bytes as they are consumed, pausing it while too many wait. */
class FlowReader {
  private readonly chunks: Uint8Array[] = []
  private queued = 0
  private ended = false
  private failure: Error | undefined
  private wake: (() => void) | undefined
  private paused = false

  constructor (private readonly stream: Stream, private readonly highWater = HIGH_WATER) {
    stream.addEventListener('message', (evt) => {
      const d = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
      this.chunks.push(d)
      this.queued += d.byteLength
      if (this.queued > this.highWater && !this.paused) {
        try { stream.pause(); this.paused = true } catch { /* closing: nothing more comes */ }
      }
      this.notify()
    })
    stream.addEventListener('remoteCloseWrite', () => { this.ended = true; this.notify() })
    stream.addEventListener('close', (evt) => {
      const err = (evt as { error?: Error }).error
      if (err !== undefined) this.failure = err
      this.ended = true
      this.notify()
    })
  }

  private notify (): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  /** The next bytes (at most `max`), or undefined at the end. Waits at most `idleMs`. */
  async next (idleMs: number, max = Infinity): Promise<Uint8Array | undefined> {
    while (this.chunks.length === 0) {
      if (this.failure !== undefined) throw this.failure
      if (this.ended) return undefined
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no data for ${idleMs} ms`)), idleMs)
        this.wake = () => { clearTimeout(t); resolve() }
      })
    }
    let c = this.chunks[0]!
    if (c.byteLength > max) {
      this.chunks[0] = c.subarray(max)
      c = c.subarray(0, max)
    } else {
      this.chunks.shift()
    }
    this.queued -= c.byteLength
    if (this.paused && this.queued < this.highWater / 4) {
      try { this.stream.resume(); this.paused = false } catch { /* closing */ }
    }
    return c
  }

  async exactly (n: number, idleMs: number): Promise<Uint8Array> {
    const out = new Uint8Array(n)
    let off = 0
    while (off < n) {
      const c = await this.next(idleMs, n - off)
      if (c === undefined) throw new Error(`the stream ended after ${off} of ${n} bytes`)
      out.set(c, off)
      off += c.byteLength
    }
    return out
  }

  /** A length-prefixed message of at most `max` bytes. */
  async message (max: number, idleMs: number): Promise<Uint8Array> {
    const head = await this.exactly(4, idleMs)
    const len = new DataView(head.buffer, head.byteOffset, 4).getUint32(0)
    if (len > max) throw new Error(`a message of ${len} bytes is over the ${max}-byte limit`)
    return await this.exactly(len, idleMs)
  }
}

async function write (stream: Stream, bytes: Uint8Array, idleMs: number): Promise<void> {
  if (!stream.send(bytes)) await drained(stream, idleMs)
}

/**
 * The stream's next 'drain' event. Not stream.onDrain(): libp2p 3.3 keeps the promise of the
 * first drain and answers every later call with it at once, so after one drain nothing held
 * the sender back (a 9.5 MiB write buffer was seen).
 */
async function drained (stream: Stream, idleMs: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer)
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
      if (err === undefined) resolve(); else reject(err)
    }
    const onDrain = (): void => { done() }
    const onClose = (evt: Event): void => { done((evt as Event & { error?: Error }).error ?? new Error('the stream closed while a write waited for it to drain')) }
    const timer = setTimeout(() => { done(new Error(`the peer read nothing for ${idleMs} ms`)) }, idleMs)
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
  })
}

export async function serveStreamed (host: Host, protocol: string, handler: StreamedHandler, opts: { maxRequestBytes: number; idleTimeoutMs: number; maxInboundStreams?: number }): Promise<void> {
  await host.handle(protocol, async (stream, connection) => {
    try {
      const request = await new FlowReader(stream).message(opts.maxRequestBytes, opts.idleTimeoutMs)
      let first = true
      for await (const part of handler(connection.remotePeer.toString(), request)) {
        await write(stream, first ? frame(part) : part, opts.idleTimeoutMs)
        first = false
      }
      await stream.close({ signal: AbortSignal.timeout(opts.idleTimeoutMs) })
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }, { maxInboundStreams: opts.maxInboundStreams ?? 4, runOnLimitedConnection: false })
}

/**
 * Send a request; resolves with the answer's header and its body as an async iterable. Each
 * read waits at most `idleTimeoutMs`; leaving the body early aborts the stream.
 */
export async function requestStreamed (host: Host, addr: Multiaddr, protocol: string, request: Uint8Array, opts: { idleTimeoutMs: number; maxHeaderBytes: number }): Promise<{ header: Uint8Array; body: (length?: number) => AsyncGenerator<Uint8Array>; cancel: () => void }> {
  // Asks for optimistic negotiation (the protocol's name sent with the request); libp2p 3.3's
  // multistream-select does not implement it yet, so it still costs a round trip per stream.
  const stream = await host.dialProtocol(addr, protocol, { signal: AbortSignal.timeout(opts.idleTimeoutMs), negotiateFully: false })
  try {
    const reader = new FlowReader(stream)
    await write(stream, frame(request), opts.idleTimeoutMs)
    const header = await reader.message(opts.maxHeaderBytes, opts.idleTimeoutMs)
    /**
     * The body: until the listener closes, or exactly `length` bytes when the header said how
     * many (then the stream is closed at once, without waiting for the listener's end).
     */
    const body = async function * (length?: number): AsyncGenerator<Uint8Array> {
      let done = false
      let left = length ?? Infinity
      try {
        while (left > 0) {
          const c = await reader.next(opts.idleTimeoutMs, left)
          if (c === undefined) {
            if (length !== undefined) throw new Error(`the answer ended ${left} bytes short of ${length}`)
            break
          }
          left -= c.byteLength
          yield c
        }
        done = true
        // Not awaited: the close handshake is a round trip the reader need not wait for.
        void stream.close({ signal: AbortSignal.timeout(opts.idleTimeoutMs) }).catch(() => {})
      } finally {
        if (!done) stream.abort(new Error('the reader stopped before the end of the answer'))
      }
    }
    return { header, body, cancel: () => stream.abort(new Error('the answer was not wanted')) }
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    throw err
  }
}
