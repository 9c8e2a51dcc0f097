/**
 * Framed messages between peers over one long-lived libp2p stream per peer and direction,
 * length-prefixed. Opening a stream costs milliseconds; Raft sends thousands of small
 * messages, so a stream is opened once and reused until it breaks.
 *
 * Back-pressure: frames wait in a bounded queue per peer while the stream drains. When the
 * queue is full the newest frames are dropped; the protocols above (Raft) tolerate loss
 * and retransmit.
 */
import { LengthPrefixedDecoder, lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream } from '@libp2p/interface'
import type { Host } from './host.js'

export type FrameHandler = (from: string, bytes: Uint8Array) => void

export interface FrameTransportOptions {
  host: Host
  protocol: string
  /** Only frames from these peers are accepted. */
  accept: (peerId: string) => boolean
  /** Most bytes waiting for one peer before frames are dropped. Default 64 MiB. */
  maxQueuedBytes?: number
  /** Largest frame accepted. Default 16 MiB. */
  maxFrameBytes?: number
  /** Told when frames to a peer are lost (dial failed, stream broke, queue full), or a peer sent a bad frame. */
  onError?: (peer: string, err: unknown) => void
  /** Told when a peer that is not accepted opens the protocol (its stream is reset). */
  onRefused?: (peer: string) => void
}

class PeerLink {
  private queue: Uint8Array[] = []
  private queued = 0
  private pumping = false
  private lp: LengthPrefixedStream<Stream> | undefined
  private stream: Stream | undefined
  dropped = 0
  closed = false
  /** The last reason a frame to this peer was lost, and when (ms). */
  lastError: { message: string; at: number } | undefined

  constructor (private readonly peer: string, private readonly t: FrameTransport) {}

  enqueue (bytes: Uint8Array): void {
    if (this.closed) return
    if (bytes.length > this.t.maxFrameBytes) {
      // The receiver would reset the stream for it: never send it at all.
      this.dropped++
      this.fail(new Error(`a ${bytes.length}-byte frame is over the ${this.t.maxFrameBytes}-byte limit`))
      return
    }
    if (this.queued + bytes.length > this.t.maxQueuedBytes) {
      this.dropped++
      this.fail(new Error(`send queue full (${this.queued} bytes wait for a slow stream)`))
      return
    }
    this.queue.push(bytes)
    this.queued += bytes.length
    if (!this.pumping) void this.pump()
  }

  private async pump (): Promise<void> {
    this.pumping = true
    try {
      while (this.queue.length > 0 && !this.closed) {
        if (this.lp === undefined) {
          try {
            this.stream = await this.t.host.dialProtocol(peerIdFromString(this.peer), this.t.protocol, { signal: AbortSignal.timeout(5000) })
            this.lp = lpStream(this.stream, { maxDataLength: this.t.maxFrameBytes })
          } catch (err) {
            // Unreachable: drop what waits (Raft will resend) and let the next send retry.
            this.dropped += this.queue.length
            this.queue = []
            this.queued = 0
            this.fail(err)
            return
          }
        }
        const frame = this.queue.shift()!
        this.queued -= frame.length
        try {
          await this.lp.write(frame)
        } catch (err) {
          this.dropped++
          this.reset()
          this.fail(err)
        }
      }
    } finally {
      this.pumping = false
    }
  }

  private fail (err: unknown): void {
    this.lastError = { message: err instanceof Error ? err.message : String(err), at: Date.now() }
    this.t.onError?.(this.peer, err)
  }

  reset (): void {
    this.stream?.abort(new Error('frame stream reset'))
    this.stream = undefined
    this.lp = undefined
  }

  close (): void {
    this.closed = true
    this.queue = []
    this.queued = 0
    void this.stream?.close().catch(() => this.stream?.abort(new Error('closing')))
  }
}

export class FrameTransport {
  readonly host: Host
  readonly protocol: string
  readonly maxQueuedBytes: number
  readonly maxFrameBytes: number
  readonly onError: ((peer: string, err: unknown) => void) | undefined
  private readonly accept: (peerId: string) => boolean
  private readonly onRefused: ((peer: string) => void) | undefined
  private readonly links = new Map<string, PeerLink>()
  /** When a frame last arrived from each peer (ms). */
  private readonly heard = new Map<string, number>()
  private handler: FrameHandler | undefined

  constructor (opts: FrameTransportOptions) {
    this.host = opts.host
    this.protocol = opts.protocol
    this.accept = opts.accept
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 64 * 1024 * 1024
    this.maxFrameBytes = opts.maxFrameBytes ?? 16 * 1024 * 1024
    this.onError = opts.onError
    this.onRefused = opts.onRefused
  }

  async start (): Promise<void> {
    await this.host.handle(this.protocol, (stream, connection) => {
      const from = connection.remotePeer.toString()
      if (!this.accept(from)) {
        stream.abort(new Error('not a member'))
        this.onRefused?.(from)
        return
      }
      this.readLoop(from, stream)
    }, { maxInboundStreams: 64, runOnLimitedConnection: false })
  }

  /**
   * Decode frames as bytes arrive and hand each to the handler at once (it is synchronous).
   * An async `lpStream.read()` loop would leave the bytes that arrive between two reads in
   * an unbounded-by-us buffer that libp2p caps at 4 MiB and then aborts the stream: two
   * back-to-back frames of 2 MiB (one large Raft entry and its resend) reset the stream
   * every time they were sent, and the follower never received the entry. Here at most one
   * partial frame waits, so any frame up to maxFrameBytes gets through.
   */
  private readLoop (from: string, stream: Stream): void {
    const decoder = new LengthPrefixedDecoder({ maxDataLength: this.maxFrameBytes, maxBufferSize: 2 * this.maxFrameBytes + 64 * 1024 })
    stream.addEventListener('message', (evt) => {
      try {
        for (const frame of decoder.decode(evt.data)) {
          this.heard.set(from, Date.now())
          this.handler?.(from, frame.subarray())
        }
      } catch (err) {
        // A frame over the limit or a bad length prefix: this stream cannot be resynchronized.
        this.onError?.(from, err)
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      }
    })
    stream.addEventListener('remoteCloseWrite', () => { void stream.close().catch(() => {}) })
  }

  /** Tell libp2p where a peer listens (from the membership records). */
  async setAddresses (peerId: string, addrs: string[]): Promise<void> {
    await this.host.peerStore.merge(peerIdFromString(peerId), { multiaddrs: addrs.map((a) => multiaddr(a)) })
  }

  send (to: string, bytes: Uint8Array): void {
    let link = this.links.get(to)
    if (link === undefined) { link = new PeerLink(to, this); this.links.set(to, link) }
    link.enqueue(bytes)
  }

  onMessage (handler: FrameHandler): void {
    this.handler = handler
  }

  /** Forget a peer (removed from the cluster): close its stream and drop what waits. */
  forget (peerId: string): void {
    this.links.get(peerId)?.close()
    this.links.delete(peerId)
    this.heard.delete(peerId)
  }

  /** When a frame last arrived from `peerId` (ms), if one ever did. */
  lastReceived (peerId: string): number | undefined {
    return this.heard.get(peerId)
  }

  /** The last reason a frame to `peerId` was lost, if any was. */
  lastError (peerId: string): { message: string; at: number } | undefined {
    return this.links.get(peerId)?.lastError
  }

  dropped (): number {
    let n = 0
    for (const l of this.links.values()) n += l.dropped
    return n
  }

  async stop (): Promise<void> {
    for (const l of this.links.values()) l.close()
    this.links.clear()
    await this.host.unhandle(this.protocol)
  }
}
