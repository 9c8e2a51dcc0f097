/**
 * The peer port: HTTPS between members, bound to their libp2p identities. Each node presents
 * the self-signed certificate of the libp2p TLS spec (an ECDSA key signed into the
 * certificate's libp2p extension by the node's Ed25519 identity; net/libp2p-cert.ts makes and
 * checks them), and each side checks the other's:
 *
 *   client (PeerClient)                                 server (PeerServer)
 *   dial https://HOST:PORT of member X  ──TLS 1.3──►    plain bytes (not a TLS hello)? answer 400, close
 *   present our certificate                             no certificate, a bad one, or not a member's? close
 *   X's certificate must name X, else close             the request goes to the HTTP handler with
 *   send the request (signed, net/peer-auth.ts)         peerOfRequest(req) = the certificate's peer id
 *
 * The client verifies the server before a byte of the request leaves (its agent hands the
 * socket to HTTP only then), and never resumes a TLS session, so every connection is checked.
 * Connections are kept alive per peer. AES-GCM first (hardware accelerated); TLS 1.3 only.
 *
 * Knows nothing of the cluster: whom to admit is a callback.
 */
import { createServer as createHttpServer, request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type RequestOptions, type Server as HttpServer, type ServerResponse } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { connect as tlsConnect, createServer as createTlsServer, type ConnectionOptions, type Server as TlsServer, type TLSSocket } from 'node:tls'
import { createHash } from 'node:crypto'
import type { Duplex, Readable } from 'node:stream'
import type { PrivateKey } from '@libp2p/interface'
import { createLibp2pCertificate, verifyLibp2pCertificate } from './libp2p-cert.js'
import { Counter } from 'prom-client'
import { ResponseError, ResponseReader } from './peer-response.js'
import { lendChunk } from '../storage/blobs/source.js'

/** This node's certificate and its key (PEM), per the libp2p TLS spec. */
export interface PeerCredentials { cert: string; key: string }

/** Where to reach a member for node-to-node HTTP: its peer port (https:) or, for a member that has none recorded, its client API (http:). */
export interface PeerTarget { peerId: string; url: string }

/** TLS 1.3 suites, AES-GCM first: hardware accelerated here, and the fastest of the three. */
const CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256'
const TLS_OPTIONS = { minVersion: 'TLSv1.3', ciphers: CIPHERS } as const
/** How long a connection may take to say hello and finish the handshake. */
const HANDSHAKE_MS = 10_000

export async function createPeerCredentials (privateKey: PrivateKey): Promise<PeerCredentials> {
  return await createLibp2pCertificate(privateKey)
}

/** Metrics of the peer port (registered by whoever owns the node's registry). */
export function createPeerMetrics (): {
  handshakeFailures: Counter<'direction' | 'reason'>
  connections: Counter<'direction'>
  requests: Counter<'kind'>
  replaysRefused: Counter
  internalOnClientPort: Counter
  getFailures: Counter<'reason'>
} {
  return {
    handshakeFailures: new Counter({ name: 'flotilla_peer_tls_handshake_failures_total', help: 'Peer-port connections refused or failed before any HTTP, by direction and reason (plain-http, no-certificate, bad-certificate, not-member, wrong-peer, tls-error, timeout)', labelNames: ['direction', 'reason'] as const, registers: [] }),
    connections: new Counter({ name: 'flotilla_peer_tls_connections_total', help: 'Peer-port connections whose peer was verified, by direction (inbound: accepted; outbound: dialed)', labelNames: ['direction'] as const, registers: [] }),
    requests: new Counter({ name: 'flotilla_peer_requests_total', help: 'Requests served on the peer port, by kind (internal: /internal/v1 routes; forwarded: a request a member passed on; other)', labelNames: ['kind'] as const, registers: [] }),
    replaysRefused: new Counter({ name: 'flotilla_peer_replays_refused_total', help: 'Node-to-node requests refused because their signed nonce was already used (a replay)', registers: [] }),
    internalOnClientPort: new Counter({ name: 'flotilla_peer_internal_on_client_port_total', help: 'Node-to-node (/internal/v1) requests refused on the client port because this node has a peer port', registers: [] }),
    getFailures: new Counter({ name: 'flotilla_peer_get_failures_total', help: 'Bulk reads from a member\'s peer port (blob copies) that failed, by reason (connection, timeout, bad-head, short-body, bad-chunk; overrun: bytes after the body, the connection dropped)', labelNames: ['reason'] as const, registers: [] }),
  }
}
export type PeerMetrics = ReturnType<typeof createPeerMetrics>

/** Verified certificates by their hash: a certificate's check does not change, and costs a few ms. */
const verified = new Map<string, string>()

/** The peer id a libp2p TLS certificate (DER) carries, once its signatures check; throws otherwise. */
export async function peerIdOfCertificate (raw: Uint8Array): Promise<string> {
  const h = createHash('sha256').update(raw).digest('base64')
  const hit = verified.get(h)
  if (hit !== undefined) return hit
  const id = await verifyLibp2pCertificate(raw)
  if (verified.size >= 4096) verified.clear()
  verified.set(h, id)
  return id
}

const peers = new WeakMap<Socket, string>()

/** The verified peer id of a request that came in on the peer port; undefined for any other request. */
export function peerOfRequest (req: IncomingMessage): string | undefined {
  return peers.get(req.socket)
}

export interface PeerServerOptions {
  credentials: PeerCredentials
  /** Whether a verified peer may use the port (the cluster's members); others are cut off after the handshake. */
  admits: (peerId: string) => boolean
  /** The HTTP handler (the node's app); peerOfRequest(req) names the caller. */
  handler: (req: IncomingMessage, res: ServerResponse) => void
  metrics: PeerMetrics
  onRefused?: (reason: string, detail: string) => void
}

const PLAIN_ANSWER = 'this is a Flotilla peer port: members only, over TLS with their libp2p certificates. Clients use the node\'s --listen address.\n'

/**
 * The peer-port server: a TCP listener that sniffs the first byte (a TLS handshake starts
 * with 0x16; anything else is answered in plain text and closed), a TLS server that asks for
 * the client's certificate, and an HTTP server that gets only verified connections.
 */
export class PeerServer {
  private readonly net: NetServer
  private readonly tls: TlsServer
  readonly http: HttpServer
  private readonly sockets = new Set<Socket>()

  constructor (private readonly opts: PeerServerOptions) {
    // Headers up to 64 KiB: the first chunk of an upload chain names the rest of the chain
    // (cluster/replication/upload-mirror.ts).
    this.http = createHttpServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000, highWaterMark: 1 << 20, maxHeaderSize: 64 * 1024 }, opts.handler)
    // Expect: 100-continue. A hop of an upload chain is told to go on only once its route has
    // checked the request (src/http/internal.ts): a hop that refuses is skipped before any byte.
    this.http.on('checkContinue', (req, res) => {
      if (req.url?.startsWith('/internal/') !== true) res.writeContinue()
      opts.handler(req, res)
    })
    this.http.setTimeout(120_000, (s: Socket) => s.destroy())
    // Our order wins (AES-128-GCM), whatever order a client lists the suites in: node's server
    // already picked it for a client listing ChaCha20 first (test/net/peer-tls.test.ts); said
    // explicitly here, as the bulk path's speed depends on it.
    this.tls = createTlsServer({ ...TLS_OPTIONS, honorCipherOrder: true, cert: opts.credentials.cert, key: opts.credentials.key, requestCert: true, rejectUnauthorized: false, handshakeTimeout: HANDSHAKE_MS })
    this.tls.on('secureConnection', (s: TLSSocket) => { this.accept(s) })
    this.tls.on('tlsClientError', (err: NodeJS.ErrnoException, s: TLSSocket) => {
      this.refuse(/timed out/i.test(err.message) ? 'timeout' : 'tls-error', err.message)
      s.destroy()
    })
    this.net = createNetServer((s) => { this.sniff(s) })
  }

  /** Listen; resolves with the address bound (port 0 picks a free one). */
  async listen (host: string, port: number): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.net.once('error', reject)
      this.net.listen(port, host, () => { this.net.off('error', reject); resolve() })
    })
    const a = this.net.address() as { address: string; port: number }
    return { host: a.address, port: a.port }
  }

  async close (): Promise<void> {
    const closed = new Promise<void>((resolve) => this.net.close(() => resolve()))
    this.http.closeIdleConnections()
    const timer = setTimeout(() => { for (const s of this.sockets) s.destroy() }, 2000)
    for (const s of this.sockets) if (!peers.has(s)) s.destroy()
    await closed
    clearTimeout(timer)
  }

  private refuse (reason: string, detail: string): void {
    this.opts.metrics.handshakeFailures.inc({ direction: 'inbound', reason })
    this.opts.onRefused?.(reason, detail)
  }

  private track (s: Socket): void {
    this.sockets.add(s)
    s.once('close', () => this.sockets.delete(s))
  }

  private sniff (s: Socket): void {
    this.track(s)
    s.on('error', () => s.destroy())
    s.setTimeout(HANDSHAKE_MS, () => { this.refuse('timeout', 'no hello'); s.destroy() })
    s.once('data', (chunk: Buffer) => {
      s.pause()
      s.setTimeout(0)
      s.unshift(chunk)
      if (chunk[0] !== 0x16) {
        this.refuse('plain-http', `first byte 0x${chunk[0]!.toString(16)}`)
        s.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(PLAIN_ANSWER)}\r\nConnection: close\r\n\r\n${PLAIN_ANSWER}`)
        s.destroySoon()
        return
      }
      this.tls.emit('connection', s)
    })
  }

  private accept (s: TLSSocket): void {
    this.track(s)
    const raw = s.getPeerCertificate(false)?.raw as Buffer | undefined
    if (raw === undefined || raw.length === 0) { this.refuse('no-certificate', 'the client sent no certificate'); s.destroy(); return }
    // Bytes that arrive meanwhile wait in the socket: HTTP sees the connection only once it is verified.
    s.pause()
    peerIdOfCertificate(raw).then((peer) => {
      if (s.destroyed) return
      if (!this.opts.admits(peer)) { this.refuse('not-member', peer); s.destroy(); return }
      peers.set(s, peer)
      this.opts.metrics.connections.inc({ direction: 'inbound' })
      this.http.emit('connection', s)
      s.resume()
    }, (err: unknown) => {
      this.refuse('bad-certificate', (err as Error).message)
      s.destroy()
    })
  }
}

/**
 * Dial a member's peer port: TLS 1.3 with our certificate, then check that the server's
 * certificate carries the expected peer id. `cb` gets the socket only once it is verified.
 * `extra` adds socket options (the bulk path reads with `onread`).
 */
function dialPeer (peerId: string, creds: PeerCredentials, metrics: PeerMetrics, host: string, port: number, extra: Partial<ConnectionOptions>, cb: (err: Error | null, s?: TLSSocket) => void): void {
  let done = false
  const finish = (err: Error | null, sock?: TLSSocket): void => { if (!done) { done = true; cb(err, sock) } }
  const fail = (reason: string, err: Error): void => {
    metrics.handshakeFailures.inc({ direction: 'outbound', reason })
    s.destroy()
    finish(err)
  }
  let connected = false
  const s = tlsConnect({
    host,
    port,
    ...TLS_OPTIONS,
    cert: creds.cert,
    key: creds.key,
    // The certificate is self-signed: it is checked below, against the member we meant to reach.
    rejectUnauthorized: false,
    highWaterMark: 1 << 20,
    ...extra,
  } as ConnectionOptions)
  s.once('connect', () => { connected = true })
  s.setTimeout(HANDSHAKE_MS, () => fail('timeout', new Error(`the peer port of ${peerId} at ${host}:${port} did not finish the TLS handshake in ${HANDSHAKE_MS} ms`)))
  s.once('error', (err) => {
    if (done) return
    if (connected) metrics.handshakeFailures.inc({ direction: 'outbound', reason: 'tls-error' })
    finish(err)
  })
  s.once('secureConnect', () => {
    s.setTimeout(0)
    const raw = s.getPeerCertificate(false)?.raw as Buffer | undefined
    if (raw === undefined || raw.length === 0) { fail('no-certificate', new Error(`the peer port at ${host}:${port} presented no certificate`)); return }
    peerIdOfCertificate(raw).then((peer) => {
      if (peer !== peerId) {
        fail('wrong-peer', new Error(`the peer port at ${host}:${port} is ${peer}, not the member ${peerId} it is recorded for: refused (a stale address, or someone in the way)`))
        return
      }
      metrics.connections.inc({ direction: 'outbound' })
      finish(null, s)
    }, (err: unknown) => fail('bad-certificate', new Error(`the peer port at ${host}:${port} presented an invalid libp2p certificate: ${(err as Error).message}`)))
  })
}

/**
 * An HTTPS agent pinned to one member: it dials, checks that the server's certificate carries
 * the expected peer id, and only then hands the socket to HTTP. Keeps connections alive.
 */
class PinnedAgent extends HttpsAgent {
  constructor (private readonly peerId: string, private readonly creds: PeerCredentials, private readonly metrics: PeerMetrics) {
    // As many connections as requests in flight (upload mirrors hold one each for a whole
    // upload: a queued chunk would stall the client), a few kept for the next ones.
    super({ keepAlive: true, keepAliveMsecs: 10_000, maxFreeSockets: 16, maxCachedSessions: 0 })
  }

  // Node's Agent waits for the callback when createConnection returns nothing.
  override createConnection (options: RequestOptions, cb?: (err: Error | null, s: Duplex) => void): undefined {
    dialPeer(this.peerId, this.creds, this.metrics, options.host ?? 'localhost', Number(options.port), {}, (err, s) => cb!(err, s!))
    return undefined
  }
}

/** How long a bulk connection waits idle for the next get (the server keeps one 65 s). */
const BULK_IDLE_MS = 30_000
/** Idle bulk connections kept per member. */
const BULK_FREE = 16
/** Slabs a bulk connection reads into, one after the other. */
const BULK_SLAB = 1 << 20
/** Room below which the next read goes into a fresh slab (a TLS record holds at most 16 KiB). */
const BULK_MIN_ROOM = 16 * 1024
/** Returned slabs kept for the next reads, per PeerClient (a replica being written holds about 8 MiB of its answer). */
const BULK_POOL = 16

/**
 * A slab bulk reads decrypt into. It goes back to the pool, to be written again, only once
 * nothing can read it: the connection reads into another one, and every chunk of it was
 * lent (a get with `recycle`) and returned by its consumer (storage/blobs/source.ts).
 */
interface Slab {
  buf: Buffer
  /** Chunks of it lent and not returned yet. */
  out: number
  /** The connection still reads into it. */
  filling: boolean
  /** A chunk of it went to a consumer that never returns chunks: it is never written again. */
  kept: boolean
}

/** A peer-port connection read through `onread` into slabs, for PeerClient.get. */
interface BulkConn {
  socket: TLSSocket
  /** The answer being read; undefined while idle. */
  reader: ResponseReader | undefined
  /** What ended the connection, for the answer being read. */
  failure: Error | undefined
  /** The slab reads land in, and how much of it is filled. */
  slab: Slab | undefined
  fill: number
}

export interface PeerGetOptions {
  method: 'GET' | 'HEAD'
  path: string
  headers?: Record<string, string>
  /** The connection may be silent this long before the answer fails ("stopped answering"). */
  timeoutMs: number
  /**
   * The body's chunks are lent (storage/blobs/source.ts): the caller hands each chunk to one
   * consumer only, which returns it once done (an upload store's writeHashed), so its memory
   * is read into again. Never for a body that is teed or kept.
   */
  recycle?: boolean
}

/** A streamed answer: a PeerResponse (peer port) or node's IncomingMessage (a member without one). */
export type PeerBody = Readable & { statusCode?: number; headers: IncomingHttpHeaders }

export interface PeerCallOptions {
  method: string
  path: string
  headers?: Record<string, string>
  body?: Buffer | string
  timeoutMs: number
}

export interface PeerAnswer { status: number; headers: IncomingHttpHeaders; body: Buffer }

/**
 * The client side: one pinned, keep-alive agent per member, and for bulk reads (get) kept-alive
 * connections of its own per member, read without node's HTTP client.
 */
export class PeerClient {
  private readonly agents = new Map<string, PinnedAgent>()
  /** Bulk connections per member: all of them, and the idle ones (most recently used last). */
  private readonly bulk = new Map<string, { all: Set<BulkConn>; idle: BulkConn[] }>()
  /** Slabs free to read into again, and every slab by its memory (to find a chunk's). */
  private readonly freeSlabs: Buffer[] = []
  private readonly slabOf = new WeakMap<ArrayBufferLike, Slab>()

  constructor (private readonly creds: PeerCredentials, private readonly metrics: PeerMetrics) {}

  /** Like http.request, to `target`: over its peer port when its URL is https:, else plain HTTP (a member with no peer port recorded). */
  request (target: PeerTarget, options: Omit<RequestOptions, 'host' | 'hostname' | 'port' | 'agent' | 'protocol'>, cb?: (res: IncomingMessage) => void): ClientRequest {
    const url = new URL(target.url)
    const base = { ...options, host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port }
    if (url.protocol !== 'https:') return httpRequest(base, cb)
    return httpsRequest({ ...base, agent: this.agentFor(target.peerId) }, cb)
  }

  /** One request with a small answer, read whole. */
  async call (target: PeerTarget, o: PeerCallOptions): Promise<PeerAnswer> {
    return await new Promise<PeerAnswer>((resolve, reject) => {
      const headers = { ...o.headers, ...(o.body === undefined && o.method !== 'GET' && o.method !== 'HEAD' ? { 'content-length': '0' } : {}) }
      const req = this.request(target, { method: o.method, path: o.path, headers, timeout: o.timeoutMs }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
        res.on('error', reject)
      })
      const timer = setTimeout(() => req.destroy(new Error(`no answer from ${target.peerId} within ${o.timeoutMs} ms`)), o.timeoutMs)
      req.on('close', () => clearTimeout(timer))
      req.on('timeout', () => req.destroy(new Error(`${target.peerId} stopped answering`)))
      req.on('error', reject)
      req.end(o.body)
    })
  }

  /**
   * A GET or HEAD whose answer streams (a blob, or a range of one). Over the peer port the
   * answer is read off the TLS socket into one reused buffer and copied into large chunks
   * (net/peer-response.ts): about twice as fast as node's HTTPS client for bulk copies. Resolves
   * once the answer's head is in; a failure after that destroys the returned stream with the
   * error. Destroying the stream before its end drops the connection.
   */
  async get (target: PeerTarget, o: PeerGetOptions): Promise<PeerBody> {
    const url = new URL(target.url)
    if (url.protocol !== 'https:') {
      return await new Promise<IncomingMessage>((resolve, reject) => {
        const req = this.request(target, { path: o.path, method: o.method, headers: o.headers ?? {}, timeout: o.timeoutMs }, resolve)
        req.on('timeout', () => req.destroy(new Error(`peer ${target.peerId} stopped answering`)))
        req.on('error', reject)
        req.end()
      })
    }
    const head = [`${o.method} ${o.path} HTTP/1.1`, `host: ${url.host}`]
    for (const [k, v] of Object.entries(o.headers ?? {})) head.push(`${k}: ${v}`)
    const text = head.join('\r\n') + '\r\n\r\n'
    // No way to smuggle a second request (or header) through a path or a value.
    if (/[\r\n]/.test(head.join('')) || /\s/.test(o.path)) throw new Error(`refusing to send a request with a line break or blank in its path or headers: ${JSON.stringify(o.path)}`)
    const conn = this.idleBulk(target.peerId) ?? await this.dialBulk(target.peerId, url.hostname.replace(/^\[|\]$/g, ''), Number(url.port))
    const s = conn.socket
    // pause/resume only while this answer owns the connection: a consumer still reading an
    // earlier answer's chunks must not resume the socket under the next one.
    const reader: ResponseReader = new ResponseReader(o.method, {
      pause: () => { if (conn.reader === reader) s.pause() },
      resume: () => { if (conn.reader === reader) s.resume() },
      done: (reusable) => {
        conn.reader = undefined
        if (reader.overrun) this.metrics.getFailures.inc({ reason: 'overrun' })
        if (reusable && !s.destroyed) this.parkBulk(target.peerId, conn)
        else s.destroy()
      },
      abort: () => { conn.reader = undefined; s.destroy() },
      failed: (reason) => this.metrics.getFailures.inc({ reason }),
      handOut: (chunk) => {
        const slab = this.slabOf.get(chunk.buffer)
        if (slab === undefined) return
        if (o.recycle !== true) { slab.kept = true; return }
        slab.out++
        lendChunk(chunk, () => { slab.out--; this.settleSlab(slab) })
      },
    })
    conn.reader = reader
    conn.failure = undefined
    s.setTimeout(o.timeoutMs)
    s.write(text)
    try {
      return await reader.response
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      throw Object.assign(new Error(`peer ${target.peerId} at ${url.host}: ${e.message}`), { code: e.code, reason: err instanceof ResponseError ? err.reason : undefined })
    }
  }

  /** Drop a member's connections (it was removed, or its address changed). */
  forget (peerId: string): void {
    this.agents.get(peerId)?.destroy()
    this.agents.delete(peerId)
    for (const c of this.bulk.get(peerId)?.all ?? []) c.socket.destroy()
    this.bulk.delete(peerId)
  }

  close (): void {
    for (const a of this.agents.values()) a.destroy()
    this.agents.clear()
    for (const b of this.bulk.values()) for (const c of b.all) c.socket.destroy()
    this.bulk.clear()
  }

  private takeSlab (): Slab {
    const slab: Slab = { buf: this.freeSlabs.pop() ?? Buffer.allocUnsafeSlow(BULK_SLAB), out: 0, filling: true, kept: false }
    this.slabOf.set(slab.buf.buffer, slab)
    return slab
  }

  /** Back to the pool once nothing reads it any more (else the garbage collector has it, with its chunks). */
  private settleSlab (slab: Slab): void {
    if (slab.filling || slab.out > 0 || slab.kept) return
    slab.kept = true // settled once
    if (this.freeSlabs.length < BULK_POOL) this.freeSlabs.push(slab.buf)
  }

  /** The connection reads no more into its slab: what the answer gathered of it goes out first. */
  private retireSlab (conn: BulkConn): void {
    const slab = conn.slab
    if (slab === undefined) return
    conn.reader?.cut()
    conn.slab = undefined
    slab.filling = false
    this.settleSlab(slab)
  }

  private bulkOf (peerId: string): { all: Set<BulkConn>; idle: BulkConn[] } {
    let b = this.bulk.get(peerId)
    if (b === undefined) { b = { all: new Set(), idle: [] }; this.bulk.set(peerId, b) }
    return b
  }

  private idleBulk (peerId: string): BulkConn | undefined {
    const idle = this.bulk.get(peerId)?.idle
    for (let c = idle?.pop(); c !== undefined; c = idle!.pop()) {
      if (!c.socket.destroyed && c.socket.readyState === 'open') return c
    }
    return undefined
  }

  private parkBulk (peerId: string, conn: BulkConn): void {
    const b = this.bulkOf(peerId)
    if (b.idle.length >= BULK_FREE || !b.all.has(conn)) { conn.socket.destroy(); return }
    conn.socket.setTimeout(BULK_IDLE_MS)
    // Reading on while idle: the peer closing the connection is noticed (and any stray byte refused).
    conn.socket.resume()
    b.idle.push(conn)
  }

  private async dialBulk (peerId: string, host: string, port: number): Promise<BulkConn> {
    const conn: BulkConn = { socket: undefined as unknown as TLSSocket, reader: undefined, failure: undefined, slab: undefined, fill: 0 }
    // TLS decrypts each read straight into the connection's current slab, after the bytes
    // before it: the body's chunks are views of it, and a slab is written again only once
    // every chunk of it came back (takeSlab, settleSlab).
    const onread = {
      buffer: (): Buffer => {
        if (conn.slab === undefined || conn.slab.buf.length - conn.fill < BULK_MIN_ROOM) {
          this.retireSlab(conn)
          conn.slab = this.takeSlab()
          conn.fill = 0
        }
        return conn.slab.buf.subarray(conn.fill)
      },
      callback: (n: number, buf: Uint8Array): boolean => {
        conn.fill += n
        // Bytes on an idle connection answer nothing we asked: drop it.
        if (conn.reader === undefined) { this.metrics.getFailures.inc({ reason: 'overrun' }); conn.socket?.destroy(); return false }
        conn.reader.feed(buf.subarray(0, n), true)
        return true
      },
    }
    const s = await new Promise<TLSSocket>((resolve, reject) => dialPeer(peerId, this.creds, this.metrics, host, port, { onread } as Partial<ConnectionOptions>, (err, sock) => { if (err !== null) reject(err); else resolve(sock!) }))
    conn.socket = s
    const b = this.bulkOf(peerId)
    b.all.add(conn)
    const end = (err?: Error): void => {
      const r = conn.reader
      if (r !== undefined && !r.finished) r.end(err)
    }
    s.on('timeout', () => {
      if (conn.reader !== undefined) end(new ResponseError('timeout', `peer ${peerId} stopped answering`))
      s.destroy()
    })
    s.on('error', (err) => { conn.failure = err; end(err) })
    s.on('end', () => end())
    s.on('close', () => {
      end(conn.failure ?? new Error('the connection closed'))
      this.retireSlab(conn)
      b.all.delete(conn)
      const i = b.idle.indexOf(conn)
      if (i >= 0) b.idle.splice(i, 1)
    })
    return conn
  }

  private agentFor (peerId: string): PinnedAgent {
    let a = this.agents.get(peerId)
    if (a === undefined) {
      a = new PinnedAgent(peerId, this.creds, this.metrics)
      this.agents.set(peerId, a)
    }
    return a
  }
}
