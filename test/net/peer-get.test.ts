/**
 * Bulk reads over the peer port (PeerClient.get, net/peer-https.ts): the answer is read off
 * the TLS socket into one reused buffer and parsed by net/peer-response.ts. First the reader
 * alone, fed the way a socket feeds it (one buffer, overwritten after every read); then the
 * client against a real PeerServer: identity check, ranges, keep-alive, timeouts, aborts, a
 * peer that says too much.
 */
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Socket } from 'node:net'
import { PeerClient, PeerServer, createPeerCredentials, createPeerMetrics, type PeerCredentials, type PeerMetrics } from '../../net/peer-https.js'
import { ResponseReader, type PeerResponse, SLAB } from '../../net/peer-response.js'
import { returnChunk } from '../../storage/blobs/source.js'

/** A reader whose hooks record what it told the connection. */
function reader (method = 'GET'): { r: ResponseReader; log: { done?: boolean; aborted: boolean; failed: string[]; paused: number } } {
  const log: { done?: boolean; aborted: boolean; failed: string[]; paused: number } = { aborted: false, failed: [], paused: 0 }
  const r = new ResponseReader(method, {
    pause: () => { log.paused++ },
    resume: () => {},
    done: (reusable) => { log.done = reusable },
    abort: () => { log.aborted = true },
    failed: (reason) => log.failed.push(reason),
  })
  return { r, log }
}

/** Feed `bytes` in pieces of `sizes` (cycled), through ONE buffer reused for every read, as the socket's onread does. */
function feedReused (r: ResponseReader, bytes: Buffer, sizes: number[]): void {
  const shared = Buffer.alloc(64 * 1024)
  let at = 0
  for (let i = 0; at < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, bytes.length - at)
    bytes.copy(shared, 0, at, at + n)
    r.feed(shared.subarray(0, n))
    shared.fill(0xee, 0, n) // what the next read would do to it
    at += n
  }
}

/** Everything a response delivers, as the chunks it handed out (kept, like the upload store keeps them). */
async function collect (res: Readable): Promise<{ chunks: Buffer[]; error?: Error }> {
  const chunks: Buffer[] = []
  return await new Promise((resolve) => {
    res.on('data', (c: Buffer) => chunks.push(c))
    res.once('end', () => resolve({ chunks }))
    res.once('error', (error) => resolve({ chunks, error }))
  })
}

t.test('reader: a head split over many reads, a head and body sharing a read, chunks never reused', async (t) => {
  const body = randomBytes(3 * SLAB + 12345)
  const wire = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nX-Thing: a\r\nx-thing: b\r\nContent-Type: application/octet-stream\r\n\r\n`), body])
  for (const sizes of [[1, 5000], [7, 3, 40000], [16384], [65536, 100]]) {
    const { r, log } = reader()
    // Byte by byte through the head, then as told: every terminator position straddles some read.
    const headLen = wire.indexOf('\r\n\r\n') + 4
    const got = r.response.then(async (res) => ({ res, ...(await collect(res)) }))
    feedReused(r, wire.subarray(0, headLen + 10), sizes[0] === 1 ? [1] : [1, 2, 3])
    feedReused(r, wire.subarray(headLen + 10), sizes)
    const { res, chunks, error } = await got
    t.equal(error, undefined, `pieces ${sizes.join(',')}: no error`)
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-type'], 'application/octet-stream')
    t.equal(res.headers['x-thing'], 'a, b', 'repeated headers joined, names lower-cased')
    // The chunks are kept until the end: had any memory been reused, the bytes would differ now.
    t.ok(Buffer.concat(chunks).equals(body), `pieces ${sizes.join(',')}: the body intact after the read buffer was overwritten`)
    t.ok(chunks.every((c) => c.length <= SLAB), 'chunks no bigger than a slab')
    t.equal(log.done, true, 'the connection may be reused')
  }
})

t.test('reader: a body that ends in the middle of a read, then the next answer is not ours', async (t) => {
  const { r, log } = reader()
  const got = r.response.then(collect)
  r.feed(Buffer.from('HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 2-5/10\r\nContent-Length: 4\r\n\r\nabcd'))
  const { chunks } = await got
  t.equal(Buffer.concat(chunks).toString(), 'abcd')
  t.equal(log.done, true, 'exactly the body: reusable')
  t.equal(r.overrun, false)
})

t.test('reader: a peer that sends more than its Content-Length', async (t) => {
  const { r, log } = reader()
  const got = r.response.then(collect)
  r.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA BYTES'))
  const { chunks, error } = await got
  t.equal(error, undefined)
  t.equal(Buffer.concat(chunks).toString(), 'hello', 'only Content-Length bytes are delivered')
  t.equal(log.done, false, 'the connection is not reused')
  t.equal(r.overrun, true)
})

t.test('reader: a short body (the peer closed early) fails the stream', async (t) => {
  const { r, log } = reader()
  r.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n'))
  const res = await r.response
  const got = collect(res)
  const first = new Promise((resolve) => res.once('data', resolve))
  r.feed(Buffer.from('0123456789'))
  await first
  r.end()
  const { chunks, error } = await got
  t.match(error?.message, /closed the connection after 10 of 100 bytes/)
  t.equal(Buffer.concat(chunks).toString(), '0123456789', 'what came is delivered before the error')
  t.same(log.failed, ['short-body'])
  t.equal(log.done, undefined, 'never reusable')
  // A connection error (reset) names its cause and how far it got.
  const b = reader()
  const got2 = b.r.response.then(collect)
  b.r.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123'))
  b.r.end(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))
  const e2 = (await got2).error as NodeJS.ErrnoException
  t.match(e2.message, /ECONNRESET \(after 4 of 100 bytes\)/)
  t.equal(e2.code, 'ECONNRESET')
  t.same(b.log.failed, ['connection'])
})

t.test('reader: a close before or in the middle of the head rejects the answer', async (t) => {
  const a = reader()
  a.r.end()
  await t.rejects(a.r.response, /without answering/)
  const b = reader()
  b.r.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Len'))
  b.r.end()
  await t.rejects(b.r.response, /in the middle of its answer's head/)
  t.same(b.log.failed, ['bad-head'])
  const c = reader()
  c.r.feed(Buffer.from('SSH-2.0-OpenSSH\r\n\r\n'))
  await t.rejects(c.r.response, /no HTTP\/1.1 status line/)
  const d = reader()
  d.r.feed(Buffer.from('HTTP/1.1 200 OK\r\nX: ' + 'y'.repeat(70 * 1024)))
  await t.rejects(d.r.response, /longer than 65536 bytes/, 'a head that never ends is cut off')
  const e = reader()
  e.r.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n'))
  await t.rejects(e.r.response, /two different Content-Length/)
})

t.test('reader: a non-200 answer, HEAD, an interim 100, chunked, Connection: close, read-until-close', async (t) => {
  const a = reader()
  const ga = a.r.response.then(async (res) => ({ res, ...(await collect(res)) }))
  const json = '{"errors":[{"code":"NOPE"}]}'
  feedReused(a.r, Buffer.from(`HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: ${json.length}\r\n\r\n${json}`), [9])
  const ra = await ga
  t.equal(ra.res.statusCode, 404)
  t.equal(ra.res.statusMessage, 'Not Found')
  t.same(JSON.parse(Buffer.concat(ra.chunks).toString()), { errors: [{ code: 'NOPE' }] })
  t.equal(a.log.done, true)

  const h = reader('HEAD')
  const gh = h.r.response.then(async (res) => ({ res, ...(await collect(res)) }))
  h.r.feed(Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n'))
  const rh = await gh
  t.equal(rh.res.statusCode, 200, 'the interim 100 is skipped')
  t.equal(rh.res.headers['content-length'], '1048576')
  t.equal(rh.chunks.length, 0, 'HEAD: no body whatever the Content-Length')
  t.equal(h.log.done, true)

  const c = reader()
  const gc = c.r.response.then(collect)
  feedReused(c.r, Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n'), [3, 5])
  t.equal(Buffer.concat((await gc).chunks).toString(), 'hello world', 'chunked body decoded')
  t.equal(c.log.done, false, 'Connection: close: not reused')

  const bad = reader()
  const gb = bad.r.response.then(collect)
  bad.r.feed(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'))
  t.match((await gb).error?.message, /invalid chunk size/)

  const u = reader()
  const gu = u.r.response.then(collect)
  u.r.feed(Buffer.from('HTTP/1.1 200 OK\r\n\r\nall of it'))
  u.r.feed(Buffer.from(' until close'))
  u.r.end()
  const ru = await gu
  t.equal(ru.error, undefined)
  t.equal(Buffer.concat(ru.chunks).toString(), 'all of it until close', 'no length: the body ends with the connection')
  t.equal(u.log.done, false)
})

t.test('reader: a consumer that falls behind pauses the connection; destroying the answer aborts it', async (t) => {
  const { r, log } = reader()
  r.feed(Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${16 * SLAB}\r\n\r\n`))
  const res = await r.response
  feedReused(r, randomBytes(8 * SLAB), [65536])
  t.ok(log.paused > 0, 'unread chunks past the high-water mark pause the socket')
  res.destroy()
  t.equal(log.aborted, true, 'the connection is dropped')
})

// The client against a real peer port.
interface Ident { id: string; creds: PeerCredentials }
async function ident (): Promise<Ident> {
  const key = await generateKeyPair('Ed25519')
  return { id: peerIdFromPrivateKey(key).toString(), creds: await createPeerCredentials(key) }
}
const server = await ident()
const member = await ident()
const blob = randomBytes(5 * SLAB + 777)
const sockets = new Set<Socket>()
const srv = new PeerServer({
  credentials: server.creds,
  admits: (p) => p === member.id,
  metrics: createPeerMetrics(),
  handler: (req, res) => {
    sockets.add(req.socket)
    if (req.url === '/blob') {
      const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
      const start = m === null ? 0 : Number(m[1])
      const end = m === null || m[2] === '' ? blob.length - 1 : Number(m[2])
      res.statusCode = m === null ? 200 : 206
      res.setHeader('content-length', end - start + 1)
      if (req.method === 'HEAD') { res.end(); return }
      res.end(blob.subarray(start, end + 1))
      return
    }
    // Says more than its Content-Length, bypassing node's HTTP server.
    if (req.url === '/overrun') { req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloWORLD'); return }
    if (req.url === '/silent') return // never answers
    // No length: the body ends with the connection.
    if (req.url === '/until-close') { req.socket.end('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it until close'); return }
    if (req.url === '/slow') { res.setHeader('content-length', blob.length); res.write(blob.subarray(0, SLAB)); return } // and then nothing
    res.statusCode = 404
    res.end('{"errors":[{"code":"BLOB_UNKNOWN"}]}')
  },
})
const addr = await srv.listen('127.0.0.1', 0)
const target = { peerId: server.id, url: `https://127.0.0.1:${addr.port}` }
t.teardown(async () => { await srv.close() })

async function count (m: PeerMetrics, name: 'connections' | 'getFailures' | 'handshakeFailures', label: string): Promise<number> {
  return (await m[name].get()).values.filter((v) => Object.values(v.labels).includes(label)).reduce((a, v) => a + v.value, 0)
}

t.test('get: a whole blob, a range, HEAD and a 404 over one kept-alive, verified connection', async (t) => {
  const m = createPeerMetrics()
  const client = new PeerClient(member.creds, m)
  t.teardown(() => client.close())
  const whole = await client.get(target, { method: 'GET', path: '/blob', timeoutMs: 20_000 })
  t.equal(whole.statusCode, 200)
  t.ok(Buffer.concat((await collect(whole)).chunks).equals(blob), 'the whole blob')
  const part = await client.get(target, { method: 'GET', path: '/blob', headers: { range: 'bytes=1000-' }, timeoutMs: 20_000 })
  t.equal(part.statusCode, 206)
  t.ok(Buffer.concat((await collect(part)).chunks).equals(blob.subarray(1000)), 'Range: bytes=1000- is the rest')
  const head = await client.get(target, { method: 'HEAD', path: '/blob', timeoutMs: 20_000 })
  t.equal(head.headers['content-length'], String(blob.length))
  t.equal((await collect(head)).chunks.length, 0)
  const missing = await client.get(target, { method: 'GET', path: '/nothing', timeoutMs: 20_000 })
  t.equal(missing.statusCode, 404)
  t.match(Buffer.concat((await collect(missing)).chunks).toString(), /BLOB_UNKNOWN/)
  t.equal(await count(m, 'connections', 'outbound'), 1, 'one connection carried all four')
})

t.test('get: the client refuses a server that is not the member it meant to reach', async (t) => {
  const stranger = await ident()
  const m = createPeerMetrics()
  const client = new PeerClient(member.creds, m)
  t.teardown(() => client.close())
  await t.rejects(client.get({ peerId: stranger.id, url: target.url }, { method: 'GET', path: '/blob', timeoutMs: 20_000 }), new RegExp(`is ${server.id}, not the member ${stranger.id}`))
  t.equal(await count(m, 'handshakeFailures', 'wrong-peer'), 1)
})

t.test('get: a peer that says more than its Content-Length loses the connection', async (t) => {
  const m = createPeerMetrics()
  const client = new PeerClient(member.creds, m)
  t.teardown(() => client.close())
  const res = await client.get(target, { method: 'GET', path: '/overrun', timeoutMs: 20_000 })
  t.equal(Buffer.concat((await collect(res)).chunks).toString(), 'hello')
  // The next get dials anew: the spoiled connection was dropped.
  const again = await client.get(target, { method: 'GET', path: '/nothing', timeoutMs: 20_000 })
  await collect(again)
  t.equal(await count(m, 'connections', 'outbound'), 2)
  t.equal(await count(m, 'getFailures', 'overrun'), 1)
})

t.test('get: an answer without a length ends with the connection', async (t) => {
  const m = createPeerMetrics()
  const client = new PeerClient(member.creds, m)
  t.teardown(() => client.close())
  const res = await client.get(target, { method: 'GET', path: '/until-close', timeoutMs: 20_000 })
  const { chunks, error } = await collect(res)
  t.equal(error, undefined)
  t.equal(Buffer.concat(chunks).toString(), 'all of it until close')
  t.equal(await count(m, 'getFailures', 'connection'), 0)
})

t.test('get: silence before the head, and in the middle of the body, times out', async (t) => {
  const m = createPeerMetrics()
  const client = new PeerClient(member.creds, m)
  t.teardown(() => client.close())
  await t.rejects(client.get(target, { method: 'GET', path: '/silent', timeoutMs: 500 }), /stopped answering/)
  const slow = await client.get(target, { method: 'GET', path: '/slow', timeoutMs: 500 })
  const { chunks, error } = await collect(slow)
  t.match(error?.message, /stopped answering/)
  t.equal(Buffer.concat(chunks).length, SLAB, 'what came is delivered')
  t.equal(await count(m, 'getFailures', 'timeout'), 2)
})

t.test('get: destroying the answer mid-body drops the connection', async (t) => {
  const client = new PeerClient(member.creds, createPeerMetrics())
  t.teardown(() => client.close())
  const before = new Set(sockets)
  const res = await client.get(target, { method: 'GET', path: '/slow', timeoutMs: 20_000 })
  const serverSide = [...sockets].find((s) => !before.has(s))!
  const closed = new Promise<void>((resolve) => serverSide.once('close', resolve))
  res.once('data', () => res.destroy())
  await closed
  t.pass('the server saw the connection close')
})

t.test('get with recycle: returned chunks are read into again; chunks not returned, or of a get without recycle, never are', async (t) => {
  const client = new PeerClient(member.creds, createPeerMetrics())
  t.teardown(() => client.close())
  const get = async (recycle: boolean): Promise<Buffer[]> => {
    const { chunks, error } = await collect(await client.get(target, { method: 'GET', path: '/blob', timeoutMs: 20_000, recycle }))
    t.equal(error, undefined)
    t.ok(Buffer.concat(chunks).equals(blob), `recycle ${String(recycle)}: the whole blob`)
    return chunks
  }
  // Whether some chunk of `a` and some chunk of `b` are the same bytes of memory (a slab read into again).
  const overlap = (a: Buffer[], b: Buffer[]): number => a.filter((x) => b.some((y) => x.buffer === y.buffer && x.byteOffset < y.byteOffset + y.length && y.byteOffset < x.byteOffset + x.length)).length
  // Returned once read, as an upload store returns them once written.
  const first = await get(true)
  for (const c of first) returnChunk(c)
  // Kept (never returned): these must stay intact through every later read.
  const kept = await get(true)
  const second = await get(true)
  t.ok(overlap(second, first) > 0, `the next answers read into the returned slabs (${overlap(second, first)} of ${second.length} chunks)`)
  t.equal(overlap(second, kept), 0, 'never into a slab whose chunks are still out')
  for (const c of second) returnChunk(c)
  // Without recycle the chunks are the caller's for good: returning them changes nothing.
  const plain = await get(false)
  for (const c of plain) returnChunk(c)
  const third = await get(true)
  t.equal(overlap(third, plain) + overlap(third, kept), 0, 'nor into one that a get without recycle gave away')
  t.ok(Buffer.concat(kept).equals(blob), 'the kept chunks are intact')
  t.ok(Buffer.concat(plain).equals(blob), 'the chunks of the get without recycle are intact')
})
