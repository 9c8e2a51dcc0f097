/**
 * One request, one answer, on a new libp2p stream: the dialer writes one length-prefixed
 * message, the listener answers with one, and the stream is closed. For rare exchanges
 * (a node asking to join); Raft's many small messages use frame-transport.ts.
 */
import { lpStream } from '@libp2p/utils'
import type { Connection } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Host } from './host.js'

export interface Answer {
  bytes: Uint8Array
  /** Close the whole connection once the answer is sent (the peer has no more business here). */
  hangUp?: boolean
}

/** Answers a request from `peer` (its identity proven by the encrypted handshake). */
export type RequestHandler = (peer: string, request: Uint8Array, connection: Connection) => Promise<Answer>

export interface ServeOptions {
  /** Largest request accepted; a bigger one resets the stream. */
  maxRequestBytes: number
  /** The whole exchange, from the stream opening to the answer written. */
  timeoutMs: number
  /** Streams of this protocol one connection may have open at once. Default 2. */
  maxInboundStreams?: number
}

export async function serveRequests (host: Host, protocol: string, handler: RequestHandler, opts: ServeOptions): Promise<void> {
  await host.handle(protocol, async (stream, connection) => {
    const signal = AbortSignal.timeout(opts.timeoutMs)
    const lp = lpStream(stream, { maxDataLength: opts.maxRequestBytes })
    let answer: Answer
    try {
      const request = await lp.read({ signal })
      answer = await handler(connection.remotePeer.toString(), request.subarray(), connection)
      await lp.write(answer.bytes, { signal })
      await stream.close({ signal })
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      return
    }
    if (answer.hangUp !== true) return
    // Let the dialer read the answer and close its end first (up to 2 s): closing the
    // connection at once can cut the answer off before the dialer has read it.
    await new Promise<void>((resolve) => {
      if (stream.status !== 'open' && stream.status !== 'closing') { resolve(); return }
      const timer = setTimeout(resolve, 2000)
      stream.addEventListener('close', () => { clearTimeout(timer); resolve() }, { once: true })
    })
    await connection.close({ signal: AbortSignal.timeout(2000) }).catch((err: Error) => connection.abort(err))
  }, { maxInboundStreams: opts.maxInboundStreams ?? 2, runOnLimitedConnection: false })
}

/** Send one request to the peer at `addr` (which names its /p2p/ id) and read its answer. */
export async function sendRequest (host: Host, addr: Multiaddr, protocol: string, request: Uint8Array, opts: { timeoutMs: number; maxAnswerBytes: number }): Promise<Uint8Array> {
  const signal = AbortSignal.timeout(opts.timeoutMs)
  // The answer is returned without waiting for the close handshake: over a WAN that cost a
  // round trip per request. (negotiateFully: false asks for optimistic protocol selection, which
  // libp2p 3.3's multistream-select declares but does not implement yet: negotiation still
  // costs a round trip.)
  const stream = await host.dialProtocol(addr, protocol, { signal, negotiateFully: false })
  try {
    const lp = lpStream(stream, { maxDataLength: opts.maxAnswerBytes })
    await lp.write(request, { signal })
    const answer = await lp.read({ signal })
    void stream.close({ signal: AbortSignal.timeout(opts.timeoutMs) }).catch(() => {})
    return answer.subarray()
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    throw err
  }
}
