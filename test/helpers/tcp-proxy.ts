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
  const pipe = (from: Socket, to: Socket): void => {
    from.on('data', (chunk: Buffer) => {
      const wait = (opts.latencyMs ?? 0) + (opts.bytesPerSecond !== undefined ? chunk.length * 1000 / opts.bytesPerSecond : 0)
      if (wait <= 0) { forwarded += chunk.length; if (!to.write(chunk)) { from.pause(); to.once('drain', () => from.resume()) } return }
      // Hold the source while this chunk waits: chunks keep their order and the cap holds.
      from.pause()
      setTimeout(() => {
        if (to.destroyed) return
        forwarded += chunk.length
        if (to.write(chunk)) from.resume(); else to.once('drain', () => from.resume())
      }, wait)
    })
    from.on('end', () => to.end())
    from.on('error', () => to.destroy())
    from.on('close', () => to.destroy())
  }
  const server: Server = createServer((client) => {
    if (cut) { client.destroy(); return }
    const upstream = connect(target.port, target.host)
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
