/**
 * The peer port (net/peer-https.ts) on its own, with real sockets: mutual TLS with the
 * certificates of the libp2p TLS spec, each side checking the other's libp2p identity; and
 * single-use request signatures (net/peer-auth.ts ReplayGuard).
 */
import t from 'tap'
import { connect as tlsConnect } from 'node:tls'
import { connect as netConnect } from 'node:net'
import { X509Certificate } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { PeerClient, PeerServer, createPeerCredentials, createPeerMetrics, peerIdOfCertificate, peerOfRequest, type PeerCredentials, type PeerMetrics } from '../../net/peer-https.js'
import { checkSignature, MAX_SKEW_MS, ReplayGuard, signRequest } from '../../net/peer-auth.js'
import { createLibp2pCertificate, verifyLibp2pCertificate } from '../../net/libp2p-cert.js'

/** An ordinary self-signed certificate, as openssl makes one. */
const plainCert = await (async () => {
  const dir = mkdtempSync(join(tmpdir(), 'peer-tls-'))
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '1', '-subj', '/CN=stranger'], { stdio: 'ignore' })
    return { cert: readFileSync(join(dir, 'c.pem'), 'utf8'), key: readFileSync(join(dir, 'k.pem'), 'utf8') }
  } finally { rmSync(dir, { recursive: true, force: true }) }
})()

interface Ident { key: PrivateKey; id: string; creds: PeerCredentials }
async function ident (): Promise<Ident> {
  const key = await generateKeyPair('Ed25519')
  return { key, id: peerIdFromPrivateKey(key).toString(), creds: await createPeerCredentials(key) }
}

const server = await ident()
const member = await ident()
const stranger = await ident()
const metrics: PeerMetrics = createPeerMetrics()
/** Requests the HTTP handler saw, with the peer id the TLS layer attached. */
const seen: Array<{ path: string; peer: string | undefined }> = []
const refused: string[] = []
const srv = new PeerServer({
  credentials: server.creds,
  admits: (p) => p === member.id,
  metrics,
  onRefused: (reason) => refused.push(reason),
  handler: (req, res) => {
    seen.push({ path: req.url ?? '', peer: peerOfRequest(req) })
    res.end(`hello ${peerOfRequest(req) ?? 'nobody'}`)
  },
})
const addr = await srv.listen('127.0.0.1', 0)
const url = `https://127.0.0.1:${addr.port}`
t.teardown(async () => { await srv.close() })

async function failures (direction: string, reason: string): Promise<number> {
  const m = await metrics.handshakeFailures.get()
  return m.values.find((v) => v.labels.direction === direction && v.labels.reason === reason)?.value ?? 0
}

/** A raw TLS connection with `cert`/`key` (or none): resolves with what the server answered, or why it failed. */
async function tlsTry (creds: PeerCredentials | undefined): Promise<{ answer?: string; error?: string }> {
  return await new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port: addr.port, rejectUnauthorized: false, minVersion: 'TLSv1.3', ...(creds !== undefined ? { cert: creds.cert, key: creds.key } : {}) })
    let got = ''
    s.setTimeout(10_000, () => s.destroy(new Error('timeout')))
    s.on('secureConnect', () => s.write('GET /probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'))
    s.on('data', (d: Buffer) => { got += d.toString() })
    s.on('error', (err) => resolve({ error: err.message }))
    s.on('close', () => resolve(got === '' ? { error: 'closed without an answer' } : { answer: got }))
  })
}

t.test('libp2p TLS spec: the certificate carries the node\'s identity, signed by its key', async (t) => {
  const der = new X509Certificate(member.creds.cert).raw
  t.equal(await peerIdOfCertificate(der), member.id, 'the certificate yields the peer id of the key that made it')
  // A certificate whose libp2p extension claims the member's public key, signed by another key.
  const forged = await createPeerCredentials({ type: 'Ed25519', publicKey: member.key.publicKey, sign: async (d: Uint8Array) => await stranger.key.sign(d) } as unknown as PrivateKey)
  await t.rejects(peerIdOfCertificate(new X509Certificate(forged.cert).raw), 'a certificate claiming a member\'s identity without its key does not verify')
  const year = 365 * 24 * 3600_000
  const future = await createLibp2pCertificate(member.key, Date.now() + 2 * 24 * 3600_000)
  await t.rejects(verifyLibp2pCertificate(new X509Certificate(future.cert).raw), /not valid yet/, 'a certificate not valid yet is refused')
  const old = await createLibp2pCertificate(member.key, Date.now() - 101 * year)
  await t.rejects(verifyLibp2pCertificate(new X509Certificate(old.cert).raw), /expired/, 'an expired one too')
  await t.rejects(verifyLibp2pCertificate(Buffer.from('not a certificate')), 'garbage is refused')
  // An ordinary self-signed certificate (openssl's, no libp2p extension) names no peer.
  await t.rejects(verifyLibp2pCertificate(new X509Certificate(plainCert.cert).raw), /libp2p/, 'a certificate without the libp2p extension is refused')
})

t.test('interoperates with @libp2p/tls: each side verifies the other\'s certificates', async (t) => {
  // @libp2p/tls does not load under the test runner's TypeScript loader: ask a plain Node process.
  const script = [
    "import { generateCertificate, verifyPeerCertificate } from '@libp2p/tls/utils'",
    "import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'",
    "import { X509Certificate } from 'node:crypto'",
    "const [keyB64, ours] = JSON.parse(process.argv[1])",
    "const key = privateKeyFromProtobuf(Buffer.from(keyB64, 'base64'))",
    "const theirs = await generateCertificate(key)",
    "const verified = (await verifyPeerCertificate(new X509Certificate(ours).raw)).toString()",
    "process.stdout.write(JSON.stringify({ cert: theirs.cert, verified }))",
  ].join('\n')
  const arg = JSON.stringify([Buffer.from(privateKeyToProtobuf(member.key)).toString('base64'), member.creds.cert])
  const out = execFileSync(process.execPath, ['--import', './scripts/polyfill.mjs', '--input-type=module', '-e', script, arg], { cwd: new URL('../..', import.meta.url).pathname, encoding: 'utf8' })
  const { cert, verified } = JSON.parse(out) as { cert: string; verified: string }
  t.equal(verified, member.id, '@libp2p/tls verifies our certificate as the member\'s')
  t.equal(await verifyLibp2pCertificate(new X509Certificate(cert).raw), member.id, 'we verify @libp2p/tls\'s certificate for the same key')
})

t.test('a member gets through; the handler learns its peer id from the certificate', async (t) => {
  const client = new PeerClient(member.creds, createPeerMetrics())
  t.teardown(() => client.close())
  const a = await client.call({ peerId: server.id, url }, { method: 'GET', path: '/hello', timeoutMs: 10_000 })
  t.equal(a.status, 200)
  t.equal(a.body.toString(), `hello ${member.id}`)
  const b = await client.call({ peerId: server.id, url }, { method: 'GET', path: '/again', timeoutMs: 10_000 })
  t.equal(b.status, 200, 'a second request (kept-alive connection)')
  t.same(seen.slice(-2), [{ path: '/hello', peer: member.id }, { path: '/again', peer: member.id }])
  t.equal((await metrics.connections.get()).values.find((v) => v.labels.direction === 'inbound')?.value, 1, 'one connection served both')
})

t.test('a plain-HTTP connection to the peer port is refused with a plain answer', async (t) => {
  const before = seen.length
  const answer = await new Promise<string>((resolve) => {
    const s = netConnect(addr.port, '127.0.0.1', () => s.write('GET /internal/v1/membership HTTP/1.1\r\nHost: x\r\n\r\n'))
    let got = ''
    s.on('data', (d: Buffer) => { got += d.toString() })
    s.on('close', () => resolve(got))
    s.on('error', () => resolve(got))
  })
  t.match(answer, /^HTTP\/1\.1 400 /, 'a 400, then the connection closes')
  t.match(answer, /peer port: members only, over TLS/, 'saying what the port is for')
  t.equal(seen.length, before, 'the request never reached the handler')
  t.equal(await failures('inbound', 'plain-http'), 1, 'counted as plain-http')
  // fetch sees the same.
  const res = await fetch(`http://127.0.0.1:${addr.port}/v2/`)
  t.equal(res.status, 400)
  await res.arrayBuffer()
})

t.test('a TLS client without a certificate is refused', async (t) => {
  const before = seen.length
  const r = await tlsTry(undefined)
  t.equal(r.answer, undefined, `no answer: ${r.error}`)
  t.equal(seen.length, before, 'nothing reached the handler')
  t.equal(await failures('inbound', 'no-certificate'), 1)
})

t.test('a TLS client with a stranger\'s libp2p certificate is refused', async (t) => {
  const before = seen.length
  const r = await tlsTry(stranger.creds)
  t.equal(r.answer, undefined, `no answer: ${r.error}`)
  const client = new PeerClient(stranger.creds, createPeerMetrics())
  t.teardown(() => client.close())
  await t.rejects(client.call({ peerId: server.id, url }, { method: 'GET', path: '/x', timeoutMs: 10_000 }), 'through PeerClient too')
  t.equal(seen.length, before, 'nothing reached the handler')
  t.equal(await failures('inbound', 'not-member'), 2)
})

t.test('a certificate claiming a member\'s peer id with another key is refused', async (t) => {
  const before = seen.length
  const plain = await tlsTry(plainCert)
  t.equal(plain.answer, undefined, `an ordinary certificate gets no answer: ${plain.error}`)
  const forged = await createPeerCredentials({ type: 'Ed25519', publicKey: member.key.publicKey, sign: async (d: Uint8Array) => await stranger.key.sign(d) } as unknown as PrivateKey)
  const r = await tlsTry(forged)
  t.equal(r.answer, undefined, `no answer: ${r.error}`)
  t.equal(seen.length, before, 'nothing reached the handler')
  t.equal(await failures('inbound', 'bad-certificate'), 2, 'both counted as bad-certificate')
  // A member's genuine certificate is useless without its TLS key: the handshake proves possession.
  t.throws(() => tlsConnect({ host: '127.0.0.1', port: addr.port, cert: member.creds.cert, key: stranger.creds.key, rejectUnauthorized: false }).destroy(), 'the member\'s certificate with another key cannot even be offered')
})

t.test('the client refuses a server that is not the member it meant to reach', async (t) => {
  const before = seen.length
  const m = createPeerMetrics()
  const client = new PeerClient(member.creds, m)
  t.teardown(() => client.close())
  // The server at `url` is `server`: asking for `stranger` there (a stale address, or someone in the way).
  const err = await client.call({ peerId: stranger.id, url }, { method: 'PUT', path: '/secret', body: 'private bytes', timeoutMs: 10_000 }).then(() => undefined, (e: Error) => e)
  t.ok(err instanceof Error, 'the request fails')
  t.match(err?.message, new RegExp(`is ${server.id}, not the member ${stranger.id}`), String(err?.message))
  t.equal(seen.length, before, 'no request (and no byte of its body) reached the server')
  t.equal((await m.handshakeFailures.get()).values.find((v) => v.labels.reason === 'wrong-peer')?.value, 1, 'counted as wrong-peer')
})

t.test('a signed request is single-use: a replay within the skew window is refused', async (t) => {
  const guard = new ReplayGuard()
  const now = 1_700_000_000_000
  const h = await signRequest(member.key, member.id, 'GET', '/internal/v1/blobs/x', now)
  const a = await checkSignature(h, 'GET', '/internal/v1/blobs/x', now)
  t.ok(a !== undefined, 'the signature verifies')
  t.ok(guard.accept(a!, now), 'accepted the first time')
  const again = await checkSignature(h, 'GET', '/internal/v1/blobs/x', now + 1000)
  t.ok(again !== undefined, 'the copy still verifies as a signature')
  t.notOk(guard.accept(again!, now + 1000), 'but is refused as a replay')
  const other = await checkSignature(await signRequest(member.key, member.id, 'GET', '/internal/v1/blobs/x', now), 'GET', '/internal/v1/blobs/x', now)
  t.ok(guard.accept(other!, now), 'a new signature of the same request (a new nonce) is accepted')
  t.equal(await checkSignature(h, 'GET', '/internal/v1/blobs/x', now + MAX_SKEW_MS + 1), undefined, 'after the window the signature is too old anyway')
  // The guard forgets nonces whose signatures are past the window, so it does not grow forever.
  guard.accept((await checkSignature(await signRequest(member.key, member.id, 'GET', '/y', now + 10 * MAX_SKEW_MS), 'GET', '/y', now + 10 * MAX_SKEW_MS))!, now + 10 * MAX_SKEW_MS)
  t.equal(guard.size(), 1, 'old nonces were swept')
  // A nonce-less (old format) signature is refused.
  const old = h.split(' ')
  t.equal(await checkSignature([old[0], old[1], old[2], old[4]].join(' '), 'GET', '/internal/v1/blobs/x', now), undefined, 'a signature without a nonce is refused')
})

t.test('the server picks AES-128-GCM (hardware accelerated) even for a client that lists ChaCha20 first', async (t) => {
  const cipher = await new Promise<string>((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: addr.port, rejectUnauthorized: false, minVersion: 'TLSv1.3', ciphers: 'TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256', cert: member.creds.cert, key: member.creds.key })
    s.setTimeout(10_000, () => s.destroy(new Error('timeout')))
    s.once('secureConnect', () => { resolve(s.getCipher().name); s.destroy() })
    s.once('error', reject)
  })
  t.equal(cipher, 'TLS_AES_128_GCM_SHA256')
})
