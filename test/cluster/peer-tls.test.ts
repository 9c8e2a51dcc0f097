/**
 * Issue 16, between nodes: a real 3-node cluster whose node-to-node HTTP (blob copies, upload
 * mirrors, uploads forwarded to their owner, admin requests and joins forwarded to the
 * leader, membership checks) goes over each member's peer port: mutual TLS with the libp2p
 * certificates of the members' identities (net/peer-https.ts). Traffic is proven to go there
 * by the nodes' metrics; the client port refuses node-to-node routes; a replayed, a plain-HTTP
 * or a wrongly keyed request gets nothing.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { image as smallImage, sha256 } from '../helpers/oci.js'
import { authFetch, hasBlobOnDisk, pushHttp, startTestCluster, waitFor, type ClusterNode } from '../helpers/cluster.js'
import { PeerClient, createPeerCredentials, createPeerMetrics, type PeerTarget } from '../../net/peer-https.js'
import { signRequest } from '../../net/peer-auth.js'

const c = await startTestCluster(t, { size: 3 })
const creds = c.credentials
const [n1, n2, n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode]

/** A counter's value on a node's /metrics (summed over the series matching `labels`). */
async function metric (n: ClusterNode, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${n.url}/metrics`)).text()
  let sum = 0
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(?:\\{([^}]*)\\})? ([0-9.e+-]+)$`).exec(line)
    if (m === null) continue
    const have = Object.fromEntries([...(m[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[2])
  }
  return sum
}

async function sumOver (nodes: ClusterNode[], name: string, labels: Record<string, string> = {}): Promise<number> {
  let s = 0
  for (const n of nodes) s += await metric(n, name, labels)
  return s
}

async function peerUrlOf (n: ClusterNode, via: ClusterNode = n1): Promise<string> {
  const st = await c.status(via)
  const url = st.members.find((m) => m.peerId === n.peerId)?.peer
  if (typeof url !== 'string') throw new Error(`${n.name} has no peer port in ${via.name}'s member list`)
  return url
}

async function identityOf (n: ClusterNode): Promise<{ key: PrivateKey; id: string }> {
  const key = privateKeyFromProtobuf(await readFile(join(n.dataDir, 'p2p-key')))
  return { key, id: peerIdFromPrivateKey(key).toString() }
}

/** A node-to-node client holding `n`'s identity (as the test reads it from its data dir). */
async function clientAs (t: { teardown (fn: () => unknown): void }, key: PrivateKey): Promise<PeerClient> {
  const client = new PeerClient(await createPeerCredentials(key), createPeerMetrics())
  t.teardown(() => client.close())
  return client
}

const img = smallImage({ seed: `peer-tls-${randomBytes(4).toString('hex')}` })

t.test('every member records a peer port (https, apart from its client port)', async (t) => {
  const st = await c.status(n1)
  t.equal(st.members.length, 3)
  for (const m of st.members) {
    t.match(m.peer, /^https:\/\/127\.0\.0\.1:\d+$/, `${m.peerId.slice(-6)}: ${String(m.peer)}`)
    t.not(new URL(m.peer!).port, new URL(m.http!).port, 'its own port')
  }
})

t.test('blobs replicate over the peer port; the client port sees no node-to-node request', async (t) => {
  const before = await sumOver(c.nodes, 'flotilla_peer_requests_total', { kind: 'internal' })
  t.equal((await pushHttp(n1.url, creds, 'peer/replicated', img, 'v1')).outcome, 'ok', 'an image is pushed to n1')
  for (const l of img.layers) {
    await waitFor(`layer ${l.digest.slice(0, 19)} on every disk`, async () => {
      for (const n of c.nodes) if (!await hasBlobOnDisk(n.dataDir, l.digest)) return undefined
      return true
    }, 60_000)
  }
  t.pass('every layer is on every node')
  const after = await sumOver(c.nodes, 'flotilla_peer_requests_total', { kind: 'internal' })
  t.ok(after > before, `node-to-node requests were served on peer ports (${before} → ${after})`)
  t.equal(await sumOver(c.nodes, 'flotilla_peer_internal_on_client_port_total'), 0, 'no node sent one to a client port')
  t.ok(await sumOver(c.nodes, 'flotilla_peer_tls_connections_total', { direction: 'inbound' }) > 0, 'verified TLS connections were accepted')
})

t.test('an upload driven through other nodes is forwarded to its owner over the peer port', async (t) => {
  const before = await metric(n1, 'flotilla_peer_requests_total', { kind: 'forwarded' })
  const res = await authFetch(`${n1.url}/v2/peer/forwarded/blobs/uploads/`, creds, { method: 'POST' })
  t.equal(res.status, 202, 'the upload is opened on n1')
  const path = new URL(res.headers.get('location')!, n1.url)
  const data = randomBytes(3 << 20)
  const patch = await authFetch(`${n2.url}${path.pathname}${path.search}`, creds, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${data.length - 1}` }, body: data }, 30_000)
  t.equal(patch.status, 202, `a PATCH through n2 lands: ${patch.status === 202 ? '' : await patch.text()}`)
  const loc = new URL(patch.headers.get('location')!, n3.url)
  const put = await authFetch(`${n3.url}${loc.pathname}${loc.search}${loc.search === '' ? '?' : '&'}digest=${sha256(data)}`, creds, { method: 'PUT' }, 30_000)
  t.equal(put.status, 201, `the PUT through n3 completes it: ${put.status === 201 ? '' : await put.text()}`)
  const head = await authFetch(`${n1.url}/v2/peer/forwarded/blobs/${sha256(data)}`, creds, { method: 'HEAD' })
  t.equal(head.status, 200, 'the blob is there, with every byte')
  t.equal(Number(head.headers.get('content-length')), data.length)
  const after = await metric(n1, 'flotilla_peer_requests_total', { kind: 'forwarded' })
  t.ok(after - before >= 2, `n1 served both forwarded requests on its peer port (${before} → ${after})`)
})

t.test('a join and a removal through a follower reach the leader over its peer port', async (t) => {
  const leader = await c.leader()
  const follower = c.live().find((n) => n !== leader)!
  const before = await metric(leader, 'flotilla_peer_requests_total', { kind: 'forwarded' })
  const n4 = await c.join({ via: follower })
  await c.converged({ voters: 4, timeoutMs: 60_000 })
  t.pass(`${n4.name} joined through ${follower.name}`)
  t.match(await peerUrlOf(n4, leader), /^https:/, 'its peer port is in its member record')
  const mid = await metric(leader, 'flotilla_peer_requests_total', { kind: 'forwarded' })
  t.ok(mid > before, `the follower passed the join to the leader on its peer port (${before} → ${mid})`)
  const del = await authFetch(`${follower.url}/api/v1/cluster/members/${n4.peerId}`, creds, { method: 'DELETE' }, 60_000)
  t.equal(del.status, 202, `the removal through ${follower.name} is accepted: ${del.status === 202 ? '' : await del.text()}`)
  t.ok(await metric(leader, 'flotilla_peer_requests_total', { kind: 'forwarded' }) > mid, 'and was forwarded to the leader on its peer port')
  await waitFor('the removed node to stop', async () => n4.alive() ? undefined : true, 60_000)
  t.pass('the removed node stopped')
  await c.converged({ voters: 3, among: [n1, n2, n3], timeoutMs: 60_000 })
})

t.test('node-to-node routes: refused on the client port, served once on the peer port, a replay refused', async (t) => {
  const layer = img.layers[0]!
  const path = `/internal/v1/blobs/${layer.digest}`
  const me = await identityOf(n2)
  // A member's valid signature, sent to n1's client port.
  const onClient = await fetch(`${n1.url}${path}`, { headers: { authorization: await signRequest(me.key, me.id, 'GET', path) } })
  const body = await onClient.json() as { errors: Array<{ code: string; message: string }> }
  t.equal(onClient.status, 403, 'the client port refuses it')
  t.match(body.errors[0]?.message, /peer port only/, body.errors[0]?.message ?? '')
  t.equal(await metric(n1, 'flotilla_peer_internal_on_client_port_total'), 1, 'and counts it')

  const target: PeerTarget = { peerId: n1.peerId, url: await peerUrlOf(n1) }
  const client = await clientAs(t, me.key)
  const headers = { authorization: await signRequest(me.key, me.id, 'GET', path) }
  const first = await client.call(target, { method: 'GET', path, headers, timeoutMs: 30_000 })
  t.equal(first.status, 200, 'on the peer port, as the member whose certificate it presents, it is served')
  t.equal(sha256(first.body), layer.digest, 'with the blob\'s bytes')
  // The same request again, byte for byte (what someone who captured it would send).
  const replay = await client.call(target, { method: 'GET', path, headers, timeoutMs: 30_000 })
  t.equal(replay.status, 401, 'its replay is refused')
  t.match(replay.body.toString(), /already served once/)
  t.equal(await metric(n1, 'flotilla_peer_replays_refused_total'), 1, 'counted as a replay')

  // Signed by n2 but sent over n3's TLS identity: the certificate and the signature must agree.
  const other = await identityOf(n3)
  const asN3 = await clientAs(t, other.key)
  const mixed = await asN3.call(target, { method: 'GET', path, headers: { authorization: await signRequest(me.key, me.id, 'GET', path) }, timeoutMs: 30_000 })
  t.equal(mixed.status, 403, 'a request signed by one member over another member\'s connection is refused')
})

t.test('a stranger, plain HTTP and a certificate claiming a member\'s identity get nothing from the peer port', async (t) => {
  const url = await peerUrlOf(n1)
  const target: PeerTarget = { peerId: n1.peerId, url }
  const plain = await fetch(url.replace('https:', 'http:') + '/internal/v1/membership')
  t.equal(plain.status, 400, 'plain HTTP: 400 and the connection closes')
  t.match(await plain.text(), /peer port: members only/)
  const strangerKey = (await import('@libp2p/crypto/keys')).generateKeyPair
  const sk = await strangerKey('Ed25519')
  const stranger = await clientAs(t, sk)
  await t.rejects(stranger.call(target, { method: 'GET', path: '/internal/v1/membership', headers: { authorization: await signRequest(sk, peerIdFromPrivateKey(sk).toString(), 'GET', '/internal/v1/membership') }, timeoutMs: 10_000 }), 'a stranger\'s certificate: the connection is cut')
  await t.rejects(stranger.call(target, { method: 'GET', path: '/v2/', timeoutMs: 10_000 }), 'for every route')
  // A certificate whose libp2p extension names n2, signed by the stranger's key.
  const n2id = await identityOf(n2)
  const forgedKey = { type: 'Ed25519', publicKey: n2id.key.publicKey, sign: async (d: Uint8Array) => await sk.sign(d) } as unknown as PrivateKey
  const forged = new PeerClient(await createPeerCredentials(forgedKey), createPeerMetrics())
  t.teardown(() => forged.close())
  await t.rejects(forged.call(target, { method: 'GET', path: '/internal/v1/membership', timeoutMs: 10_000 }), 'a certificate claiming n2 without n2\'s key: cut')
  t.ok(await metric(n1, 'flotilla_peer_tls_handshake_failures_total', { reason: 'plain-http' }) >= 1, 'counted: plain-http')
  t.ok(await metric(n1, 'flotilla_peer_tls_handshake_failures_total', { reason: 'not-member' }) >= 2, 'counted: not-member')
  t.ok(await metric(n1, 'flotilla_peer_tls_handshake_failures_total', { reason: 'bad-certificate' }) >= 1, 'counted: bad-certificate')
})

t.test('a restarted node records its new peer port and gets new blobs there', async (t) => {
  const old = await peerUrlOf(n3)
  const again = await c.restart(n3)
  const fresh = await waitFor('n1 to learn n3\'s new peer port', async () => {
    const u = await peerUrlOf(again).catch(() => undefined)
    return u !== undefined && u !== old ? u : undefined
  }, 60_000)
  t.not(fresh, old, `a new free port (${old} → ${fresh})`)
  const img2 = smallImage({ seed: `peer-tls-after-restart-${randomBytes(4).toString('hex')}` })
  t.equal((await pushHttp(n1.url, creds, 'peer/after-restart', img2, 'v1')).outcome, 'ok', 'a new image is pushed to n1')
  for (const l of img2.layers) await waitFor(`layer ${l.digest.slice(0, 19)} on n3`, async () => await hasBlobOnDisk(again.dataDir, l.digest) ? true : undefined, 60_000)
  t.pass('n3 has every layer')
  t.equal(await sumOver(c.live(), 'flotilla_peer_internal_on_client_port_total'), 1, 'still nothing node-to-node on a client port (the 1 is the test\'s own probe)')
})
