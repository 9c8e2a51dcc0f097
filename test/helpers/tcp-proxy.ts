/**
 * A userspace TCP proxy that stands in for a WAN between two sites (this machine has no tc
 * netem): every connection to `listen` is forwarded to `target`; each chunk can be delayed by
 * a fixed latency and the bytes per second capped (per direction and connection); cut()
 * closes every connection and refuses new ones until heal().
 */
import { createServer, connect, type Server, type Socket } from 'node:net'

export interface ProxyOptions {
  target: { host: string; port: number }
  /** Delay added to each chunk, each way (ms). */
  latencyMs?: number
  /** Bytes per second, each way and per connection; undefined: no cap. */
  bytesPerSecond?: number
}

export interface TcpProxy {
  port: number
  /** Point new connections elsewhere (a node whose port is known only once it runs). */
  retarget (target: { host: string; port: number }): void
  /** Bytes forwarded so far, both ways. */
  bytes (): number
  cut (): void
  heal (): void
  close (): Promise<void>
}

export async function startTcpProxy (opts: ProxyOptions, port = 0): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  let target = opts.target
  let cut = false
  let forwarded = 0
  /**
   * One direction of a connection as a delay line: a chunk goes on the wire once the wire is
   * free (the cap: each chunk holds it for its length / bytesPerSecond) and arrives `latencyMs`
   * after it left, so latency delays the bytes without slowing the stream, as on a WAN (a
   * chunk waiting for the wire at every hop would make 25 ms each way cap a stream at a few
   * MiB/s). Chunks keep their order; the source is paused while more than a window waits.
   */
  const pipe = (from: Socket, to: Socket): void => {
    const latency = opts.latencyMs ?? 0
    const rate = opts.bytesPerSecond
    // What may wait in the line: what the link carries in its latency plus 100 ms, 256 KiB at least.
    const window = Math.max(256 * 1024, rate === undefined ? 8 << 20 : rate * (latency + 100) / 1000)
    let wireFree = 0
    let waiting = 0
    // One queue per direction, run by one timer: chunks, the end and the close leave in order
    // (a timer per chunk could let a close due now overtake a chunk due a fraction of a ms ago).
    const line: Array<{ at: number; run: () => void }> = []
    let timer: NodeJS.Timeout | undefined
    const pump = (): void => {
      timer = undefined
      const now = Date.now()
      while (line.length > 0 && line[0]!.at <= now) line.shift()!.run()
      if (line.length > 0) timer = setTimeout(pump, Math.max(1, line[0]!.at - now))
    }
    const deliver = (at: number, run: () => void): void => {
      line.push({ at, run })
      if (timer === undefined) timer = setTimeout(pump, Math.max(0, at - Date.now()))
    }
    from.on('data', (chunk: Buffer) => {
      if (latency <= 0 && rate === undefined) { forwarded += chunk.length; if (!to.write(chunk)) { from.pause(); to.once('drain', () => from.resume()) } return }
      const now = Date.now()
      wireFree = Math.max(now, wireFree) + (rate === undefined ? 0 : chunk.length * 1000 / rate)
      waiting += chunk.length
      if (waiting > window) from.pause()
      deliver(wireFree + latency, () => {
        waiting -= chunk.length
        if (to.destroyed) return
        forwarded += chunk.length
        const ok = to.write(chunk)
        if (waiting <= window / 2 && from.isPaused()) { if (ok) from.resume(); else to.once('drain', () => from.resume()) }
      })
    })
    // The end follows the last chunk down the line (and lets what `to` still buffers out); a
    // connection closed without an end (reset, error, cut) is torn down the same way.
    let ended = false
    from.on('end', () => { ended = true; deliver(Math.max(Date.now(), wireFree) + latency, () => to.end()) })
    from.on('error', () => to.destroy())
    from.on('close', () => { if (!ended) deliver(Math.max(Date.now(), wireFree) + latency, () => to.destroy()) })
  }
  const server: Server = createServer((client) => {
    if (cut) { client.destroy(); return }
    const upstream = connect(target.port, target.host)
    // No Nagle in the proxy: the endpoints turn it off on their own sockets, and a proxy that
    // held small writes back for ACKs would add round trips a real link does not.
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    for (const s of [client, upstream]) { sockets.add(s); s.once('close', () => sockets.delete(s)) }
    pipe(client, upstream)
    pipe(upstream, client)
  })
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(port, '127.0.0.1', () => resolve()) })
  const addr = server.address()
  return {
    port: typeof addr === 'object' && addr !== null ? addr.port : port,
    retarget (t) { target = t },
    bytes: () => forwarded,
    cut () { cut = true; for (const s of sockets) s.destroy() },
    heal () { cut = false },
    async close () {
      cut = true
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
