/**
 * One request, a streamed answer: the dialer writes one length-prefixed request; the listener
 * answers with length-prefixed frames (the first one a header the caller defines, then data),
 * and a zero-length frame to end. For bulk bytes between sites (cluster/peering/), where a
 * whole answer in one message would not fit in memory. Back-pressure comes from the stream:
 * each frame's write waits for the muxer to take it.
 */
import { lpStream } from '@libp2p/utils'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Host } from './host.js'

/** Yields the frames of the answer; the stream ends after them. Throwing aborts the stream. */
export type StreamedHandler = (peer: string, request: Uint8Array) => AsyncIterable<Uint8Array>

export async function serveStreamed (host: Host, protocol: string, handler: StreamedHandler, opts: { maxRequestBytes: number; idleTimeoutMs: number; maxInboundStreams?: number }): Promise<void> {
  await host.handle(protocol, async (stream, connection) => {
    const lp = lpStream(stream, { maxDataLength: opts.maxRequestBytes })
    try {
      const request = await lp.read({ signal: AbortSignal.timeout(opts.idleTimeoutMs) })
      for await (const frame of handler(connection.remotePeer.toString(), request.subarray())) {
        if (frame.byteLength === 0) continue
        await lp.write(frame, { signal: AbortSignal.timeout(opts.idleTimeoutMs) })
      }
      await lp.write(new Uint8Array(0), { signal: AbortSignal.timeout(opts.idleTimeoutMs) })
      await stream.close({ signal: AbortSignal.timeout(opts.idleTimeoutMs) })
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }, { maxInboundStreams: opts.maxInboundStreams ?? 4, runOnLimitedConnection: false })
}

/**
 * Send a request and read the answer's frames until the zero-length one. Each read waits at
 * most `idleTimeoutMs`; leaving the loop early aborts the stream.
 */
export async function * requestStreamed (host: Host, addr: Multiaddr, protocol: string, request: Uint8Array, opts: { idleTimeoutMs: number; maxFrameBytes: number }): AsyncGenerator<Uint8Array> {
  const stream = await host.dialProtocol(addr, protocol, { signal: AbortSignal.timeout(opts.idleTimeoutMs) })
  let done = false
  try {
    const lp = lpStream(stream, { maxDataLength: opts.maxFrameBytes })
    await lp.write(request, { signal: AbortSignal.timeout(opts.idleTimeoutMs) })
    for (;;) {
      const frame = await lp.read({ signal: AbortSignal.timeout(opts.idleTimeoutMs) })
      if (frame.byteLength === 0) break
      yield frame.subarray()
    }
    done = true
    await stream.close({ signal: AbortSignal.timeout(opts.idleTimeoutMs) }).catch(() => {})
  } finally {
    if (!done) stream.abort(new Error('the reader stopped before the end of the answer'))
  }
}
