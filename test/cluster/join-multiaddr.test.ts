/**
 * `flotilla join MULTIADDR --token T` (issue 4), on a cluster of real processes, and the
 * probation that lets a joiner reach a member's libp2p host (cluster/probation.ts):
 * - with no join token outstanding, a stranger cannot connect to a member at all;
 * - a node joins through a follower's multiaddr (the one `flotilla status` prints) and serves
 *   an image pushed before; a multiaddr without /p2p/ is refused by the CLI;
 * - a join through a multiaddr with a wrong token is refused with the reason, and the
 *   stranger's connection is closed;
 * - with a token outstanding a stranger connects on probation, but opening Raft loses it its
 *   connection at once, it gets no gossip and its own is ignored, at most 4 strangers are let
 *   in at a time, and an idle one is disconnected when its probation (10 s) ends (n1 lets 4 in
 *   from one address, as every stranger here dials from 127.0.0.1; the default of 1 per
 *   address is tested in probation.test.ts);
 * - once every join token has expired, strangers cannot connect again, and a join through a
 *   multiaddr with the expired token says so.
 * The one token of the test lives 60 s (the shortest allowed); the last test waits for it.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { SignJWT, decodeJwt } from 'jose'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { createHost, type Host } from '../../net/host.js'
import { sendRequest } from '../../net/request-response.js'
import { RAFT_PROTOCOL } from '../../cluster/cluster.js'
import { JOIN_PROTOCOL, type JoinAnswer } from '../../cluster/join.js'
import { BLOB_TOPIC } from '../../cluster/replication/replicator.js'
import { tempDir } from '../../scripts/lib/procs.js'
import { image as smallImage } from '../helpers/oci.js'
import {
  checkImage, clusterStatus, issueToken, pushHttp, runCli, sleep, startNode, tryJoin, waitFor, tail, type ClusterNode,
} from '../helpers/cluster.js'

const base = await tempDir('flotilla-join-ma-')
const creds = { username: 'admin', password: `test-${randomBytes(12).toString('hex')}` }
const user = `${creds.username}:${creds.password}`
const nodes: ClusterNode[] = []
t.teardown(async () => {
  if (!t.passing()) for (const n of nodes) t.comment(`--- ${n.name}\n${await tail(n.logFile, 30)}`)
  await Promise.all(nodes.map(async (n) => { await n.kill('SIGKILL').catch(() => {}) }))
  if (process.env.FLOTILLA_KEEP_CLUSTER !== '1') await rm(base, { recursive: true, force: true }).catch(() => {})
})

/** A member's libp2p address as /api/v1/cluster lists it (with /p2p/<id>). */
async function p2pAddr (n: ClusterNode): Promise<string> {
  const st = await clusterStatus(n.url, creds)
  const addr = st.members.find((m) => m.peerId === n.peerId)?.p2p[0]
  if (addr === undefined) throw new Error(`${n.name} lists no p2p address`)
  return addr
}

/** A libp2p host with a fresh identity nobody has heard of; stopped at teardown. */
async function stranger (tt: { teardown (fn: () => unknown): void }): Promise<Host> {
  const host = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], admit: () => true })
  tt.teardown(async () => { await host.stop() })
  return host
}

function connected (host: Host, addr: string): boolean {
  return host.getConnections(peerIdFromString(multiaddr(addr).getComponents().at(-1)!.value!)).length > 0
}

/**
 * Connect; resolves 'connected' when the connection still stands 300 ms later, or why not.
 * (The dialer's handshake can finish before the member's gater refuses and hangs up.)
 */
async function dial (host: Host, addr: string): Promise<string> {
  try {
    await host.dial(multiaddr(addr), { signal: AbortSignal.timeout(5000) })
  } catch (err) {
    if (typeof Event !== 'undefined' && err instanceof Event) return `connection closed (event ${err.type})`
    return (err as Error).message ?? String(err)
  }
  await sleep(300)
  return connected(host, addr) ? 'connected' : 'closed by the member right after the handshake'
}

async function disconnectedWithin (host: Host, addr: string, ms: number): Promise<number | string> {
  const start = Date.now()
  return await waitFor('the member to close the connection', async () => connected(host, addr) ? undefined : Date.now() - start, ms, 50)
    .catch((err: Error) => err.message)
}

// A fresh single-node cluster: no join token was ever handed out. Its strangers all come from
// 127.0.0.1, so it lets as many in from one address as in all (cluster.probation).
nodes.push(await startNode({ name: 'n1', base, adminPassword: creds.password, env: { FLOTILLA_PROBATION_PER_ADDRESS: '4' } }))
const n1 = nodes[0]!

t.test('with no join token outstanding, a stranger cannot connect to a member at all', async (t) => {
  const addr = await p2pAddr(n1)
  const s = await stranger(t)
  const result = await dial(s, addr)
  t.not(result, 'connected', `the gater refuses the stranger: ${result}`)
  t.notOk(connected(s, addr), 'the stranger holds no connection')
  // Nor can it reach the join protocol.
  const join = await s.dialProtocol(multiaddr(addr), JOIN_PROTOCOL, { signal: AbortSignal.timeout(5000) }).then(() => 'opened', (err: unknown) => err instanceof Error ? err.message : 'connection closed')
  t.not(join, 'opened', `${JOIN_PROTOCOL} cannot be opened: ${join}`)
})

let token = ''
let tokenExpiresAt = 0
let n2: ClusterNode
let n3: ClusterNode
const img = smallImage({ layers: 2, seed: 'join-multiaddr' })

t.test('a node joins through a follower\'s multiaddr and serves an image pushed before', async (t) => {
  const issued = await issueToken(n1.url, creds, 60)
  token = issued.token
  tokenExpiresAt = Date.parse(issued.expiresAt)
  n2 = await startNode({ name: 'n2', base, adminPassword: creds.password, join: { url: n1.url, token }, readyTimeoutMs: 60_000 })
  nodes.push(n2)
  t.equal((await pushHttp(n1.url, creds, 'joinma/app', img, 'v1', 30_000)).outcome, 'ok', 'an image is pushed before the join')

  // The address an operator copies from `flotilla status`.
  const status = await runCli(['status', '--node', n2.url, '--user', user])
  t.equal(status.code, 0, `flotilla status exits 0 ${status.stderr}`)
  const printed = status.stdout.match(new RegExp(`\\S+/p2p/${n2.peerId}`))?.[0]
  t.ok(printed, `flotilla status prints n2's multiaddr with /p2p/<id>: ${printed ?? status.stdout}`)
  const addr = printed ?? await p2pAddr(n2)
  t.equal(addr, await p2pAddr(n2), 'the same as /api/v1/cluster lists')
  const leader = (await clusterStatus(n1.url, creds)).leader
  t.not(leader, n2.peerId, 'n2 is a follower')

  const started = Date.now()
  n3 = await startNode({ name: 'n3', base, adminPassword: creds.password, join: { url: addr, token }, readyTimeoutMs: 60_000 })
  nodes.push(n3)
  t.comment(`n3 joined through ${addr} and was ready after ${Date.now() - started} ms`)
  await waitFor('three voters', async () => (await clusterStatus(n1.url, creds)).members.filter((m) => m.role === 'voter').length === 3 ? true : undefined, 30_000)
  t.same(await checkImage(n3.url, creds, 'joinma/app', img, 'v1'), [], 'n3 serves the image pushed before it joined')
  await sleep(11_000 - (Date.now() - started))
  t.equal((await clusterStatus(n2.url, creds)).members.find((m) => m.peerId === n3.peerId)?.role, 'voter', 'n3 kept its connection past the probation time and is a voter')
  t.same(await checkImage(n3.url, creds, 'joinma/app', img, 'v1'), [], 'and still serves it')

  const bad = await runCli(['join', '/ip4/127.0.0.1/tcp/7001', '--token', token])
  t.equal(bad.code, 1, 'a multiaddr without /p2p/ is refused')
  t.match(bad.stderr, /does not name the member: add \/p2p\/PEER-ID/, `and the CLI says what is missing: ${bad.stderr.trim()}`)
})

t.test('a join through a multiaddr with a wrong token is refused and the stranger disconnected', async (t) => {
  const via = n2
  const addr = await p2pAddr(via)
  // Same claims as a real token (the cluster id, audience, purpose), signed with a key the cluster never had.
  const forged = await new SignJWT({ ...decodeJwt(token) }).setProtectedHeader({ alg: 'HS256' }).sign(randomBytes(32))
  const join = await tryJoin({ name: 'forged', base, adminPassword: creds.password, join: { url: addr, token: forged } })
  t.notOk(join.joined, 'the node with a forged token does not start')
  t.equal(join.code, 1, 'flotilla join exits 1')
  t.match(join.log, /refused the join \(401\).*join token refused/, 'and says the token was refused')
  join.node && await join.node.kill()

  // The same over the protocol from a stranger: the answer names the reason, then the member hangs up.
  const s = await stranger(t)
  const req = { token: forged, peerId: s.peerId.toString(), p2p: s.getMultiaddrs().map(String), http: 'http://127.0.0.1:1' }
  const answer = JSON.parse(new TextDecoder().decode(await sendRequest(s, multiaddr(addr), JOIN_PROTOCOL, new TextEncoder().encode(JSON.stringify(req)), { timeoutMs: 15_000, maxAnswerBytes: 1 << 20 }))) as JoinAnswer
  t.match(answer, { error: { status: 401, message: /join token refused/ } }, `the answer says why: ${JSON.stringify(answer)}`)
  const gone = await disconnectedWithin(s, addr, 3000)
  t.type(gone, 'number', `the member closed the stranger's connection (${gone} ms after the answer)`)
  t.equal((await clusterStatus(n1.url, creds)).members.length, 3, 'no member was added')
})

t.test('with a token outstanding, a stranger on probation cannot use Raft and is disconnected within 10 s', async (t) => {
  // Opening Raft: the stream is reset and the connection closed at once.
  const raftAddr = await p2pAddr(n3)
  const r = await stranger(t)
  t.equal(await dial(r, raftAddr), 'connected', 'the stranger is let in on probation while a join token is outstanding')
  let frames = 'none'
  try {
    const stream = await r.dialProtocol(multiaddr(raftAddr), RAFT_PROTOCOL, { signal: AbortSignal.timeout(5000) })
    const lp = lpStream(stream)
    await lp.write(new TextEncoder().encode('{"type":"MsgHeartbeat"}'))
    await lp.read({ signal: AbortSignal.timeout(3000) })
    frames = 'answered'
  } catch (err) {
    frames = `refused (${(err as Error).message ?? String(err)})`
  }
  t.match(frames, /^refused/, `${RAFT_PROTOCOL} is refused to a stranger: ${frames}`)
  const gone = await disconnectedWithin(r, raftAddr, 3000)
  t.type(gone, 'number', `and its connection is closed (${gone} ms)`)

  // Gossip: the member's gossipsub does not see a stranger (net/gossip-gate.ts), so the stranger
  // learns nothing, and its `want` for a blob the member holds gets no `have`.
  const gaddr = await p2pAddr(n2)
  const g = await stranger(t)
  t.equal(await dial(g, gaddr), 'connected', 'another stranger connects on probation')
  const heard: string[] = []
  const pubsub = g.services.pubsub
  pubsub.addEventListener('message', (e) => { if (e.detail.topic === BLOB_TOPIC) heard.push(new TextDecoder().decode(e.detail.data)) })
  pubsub.subscribe(BLOB_TOPIC)
  await sleep(2000)
  t.notOk(pubsub.getSubscribers(BLOB_TOPIC).some((p) => p.toString() === n2.peerId), 'the stranger does not learn the member\'s subscriptions')
  const digest = img.layers[0]!.digest
  await pubsub.publish(BLOB_TOPIC, new TextEncoder().encode(JSON.stringify({ want: digest, peer: g.peerId.toString() })))
  await sleep(2500)
  t.same(heard.filter((h) => h.includes(digest)), [], 'no member answered the stranger\'s want')

  // Idle strangers: four are let in at a time, the fifth is refused; all are gone after 10 s.
  const addr = await p2pAddr(n1)
  const hosts = await Promise.all(Array.from({ length: 5 }, async () => await stranger(t)))
  const start = Date.now()
  const results: string[] = []
  for (const h of hosts) results.push(await dial(h, addr))
  t.same(results.slice(0, 4), ['connected', 'connected', 'connected', 'connected'], 'four strangers connect on probation')
  t.not(results[4], 'connected', `a fifth is refused while four are on probation: ${results[4]}`)
  await sleep(8000 - (Date.now() - start))
  t.ok(hosts.slice(0, 4).every((h) => connected(h, addr)), 'they are still connected 8 s in')
  const ends = await Promise.all(hosts.slice(0, 4).map(async (h) => await disconnectedWithin(h, addr, 6000)))
  t.ok(ends.every((e) => typeof e === 'number'), `each is disconnected when its probation ends (${Date.now() - start} ms after connecting): ${ends.join(', ')}`)
  const st = await clusterStatus(n1.url, creds)
  t.equal(st.members.length, 3, 'the strangers were never members')
})

t.test('once every join token has expired, strangers cannot connect and a join through a multiaddr is refused', async (t) => {
  const wait = tokenExpiresAt + 1000 - Date.now()
  if (wait > 0) { t.comment(`waiting ${wait} ms for the 60 s join token to expire`); await sleep(wait) }
  const addr = await p2pAddr(n2)
  const s = await stranger(t)
  const result = await dial(s, addr)
  t.not(result, 'connected', `no probation without an outstanding token: ${result}`)
  const join = await tryJoin({ name: 'expired', base, adminPassword: creds.password, join: { url: addr, token } })
  t.notOk(join.joined, 'the node with the expired token does not start')
  t.equal(join.code, 1, 'flotilla join exits 1')
  t.match(join.log, /the join token expired at \d{4}-\d\d-\d\dT[\d:.]+Z: ask a member for a new one with flotilla token/, 'and the message says the token expired, and when')
  join.node && await join.node.kill()
  t.equal((await clusterStatus(n1.url, creds)).members.length, 3, 'still three members')
})
