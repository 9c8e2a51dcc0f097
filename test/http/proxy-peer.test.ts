/**
 * src/http/proxy.ts over the peer port: a request for an upload owned by another node is
 * passed to the owner's peer port (mutual TLS, net/peer-https.ts) and its answer relayed. The
 * owner's challenge names its token endpoint at the address it was reached on (the peer port,
 * members only): the client must be pointed at the forwarding node's instead.
 */
import t from 'tap'
import Koa from 'koa'
import { createServer } from 'node:http'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { PeerClient, PeerServer, createPeerCredentials, createPeerMetrics, peerOfRequest } from '../../net/peer-https.js'
import { proxyTo } from '../../src/http/proxy.js'
import type { Forwarding } from '../../src/http/forwarded.js'

const ownerKey = await generateKeyPair('Ed25519')
const fwdKey = await generateKeyPair('Ed25519')
const ownerId = peerIdFromPrivateKey(ownerKey).toString()
const fwdId = peerIdFromPrivateKey(fwdKey).toString()

// The owner: answers on its peer port, as its app would, naming its own address in the challenge.
const seen: Array<{ peer: string | undefined; forwarded: string | undefined; body: string }> = []
const owner = new PeerServer({
  credentials: await createPeerCredentials(ownerKey),
  admits: (p) => p === fwdId,
  metrics: createPeerMetrics(),
  handler: (req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      seen.push({ peer: peerOfRequest(req), forwarded: req.headers['x-flotilla-forwarded'] as string | undefined, body })
      if (req.url?.includes('expired') === true) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="https://${req.headers.host}/token",service="flotilla"`, 'content-type': 'application/json' })
        res.end('{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}')
        return
      }
      res.writeHead(202, { location: req.url, 'content-type': 'text/plain' })
      res.end(`got ${body.length} bytes`)
    })
  },
})
const ownerAddr = await owner.listen('127.0.0.1', 0)
t.teardown(async () => { await owner.close() })

// The forwarding node: a Koa app on a plain client port that proxies everything to the owner.
const client = new PeerClient(await createPeerCredentials(fwdKey), createPeerMetrics())
t.teardown(() => client.close())
const forwarding: Forwarding = { mark: async () => 'mark', marked: async () => false }
const app = new Koa()
app.use(async (ctx) => { await proxyTo(ctx, { peerId: ownerId, url: `https://127.0.0.1:${ownerAddr.port}` }, forwarding, client) })
const server = createServer(app.callback())
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`
t.teardown(() => { server.close() })

t.test('a forwarded PATCH reaches the owner over its peer port, as this node, with its body', async (t) => {
  const res = await fetch(`${base}/v2/r/blobs/uploads/abc?x=1`, { method: 'PATCH', body: 'hello world' })
  t.equal(res.status, 202)
  t.equal(await res.text(), 'got 11 bytes')
  t.equal(res.headers.get('location'), '/v2/r/blobs/uploads/abc?x=1', 'the owner\'s relative Location is relayed as is')
  t.same(seen.at(-1), { peer: fwdId, forwarded: 'mark', body: 'hello world' }, 'the owner saw this node\'s TLS identity and the forwarding mark')
})

t.test('the owner\'s challenge is rewritten to name this node\'s token endpoint', async (t) => {
  const res = await fetch(`${base}/v2/r/blobs/uploads/expired`, { method: 'PATCH', body: 'x' })
  t.equal(res.status, 401)
  const challenge = res.headers.get('www-authenticate') ?? ''
  t.equal(challenge, `Bearer realm="${base}/token",service="flotilla"`, challenge)
  t.notMatch(challenge, String(ownerAddr.port), 'the peer port is not shown to the client')
  await res.arrayBuffer()
})
