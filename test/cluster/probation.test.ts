/**
 * Strangers on probation (issue 10, item 9): cluster/probation.ts and net/gossip-gate.ts.
 * Unlike the rest of this folder, the member runs in this process (test/helpers/inproc.ts),
 * so that the test can publish on its gossipsub and look at whom it gossips with; the
 * strangers are raw libp2p nodes (plain gossipsub, no gate) dialing it over TCP, from
 * 127.0.0.1 or from another loopback address (127.0.0.0/8 is all loopback on Linux: a socket
 * bound to 127.0.0.2 reaches a listener on 127.0.0.1 and shows as 127.0.0.2 there).
 *
 * - A stranger on probation, subscribed to the blob topic, receives nothing while the member
 *   publishes announcements, does not learn the member's subscriptions, and cannot open Raft;
 *   a stranger on probation can run the join protocol, and once it has joined it hears them.
 * - One source address holds at most `cluster.probation.maxPerAddress` slots (default 1):
 *   a second stranger from 127.0.0.1 is refused while the first holds its slot, one from
 *   127.0.0.2 is let in, and the slot is free again once the first has gone. Raised limits
 *   (`maxPerAddress: 2`, `maxPeers: 3`) let two in from one address, and three in all.
 * - The Probation class itself: both limits, a stranger that became a member frees its slot,
 *   IPv6 sources are /64s; FLOTILLA_PROBATION_PER_ADDRESS and FLOTILLA_PROBATION_PEERS.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp, type TCPSocketOptions } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify, type Identify } from '@libp2p/identify'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { sendRequest } from '../../net/request-response.js'
import { RAFT_PROTOCOL } from '../../cluster/cluster.js'
import { JOIN_PROTOCOL, type JoinAnswer } from '../../cluster/join.js'
import { BLOB_TOPIC } from '../../cluster/replication/replicator.js'
import { Probation, sourceOf } from '../../cluster/probation.js'
import { loadConfig } from '../../src/config.js'
import { startInProcess, type InProcessNode } from '../helpers/inproc.js'

type Stranger = Libp2p<{ identify: Identify; pubsub: GossipSub }>

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

async function until<T> (what: string, fn: () => T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = fn()
    if (v !== undefined && v !== false) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

/**
 * A libp2p node nobody has heard of, dialing from `from` (and listening there), running plain
 * gossipsub subscribed to the blob topic: it takes whatever it is sent. Stopped at teardown.
 */
async function stranger (tt: { teardown (fn: () => unknown): void }, from = '127.0.0.1'): Promise<{ host: Stranger; heard: string[] }> {
  const host = await createLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    addresses: { listen: [`/ip4/${from}/tcp/0`] },
    // net.connect takes localAddress; @libp2p/tcp passes dialOpts through but types a subset.
    transports: [tcp({ dialOpts: { localAddress: from } as TCPSocketOptions })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: { denyDialMultiaddr: () => false },
    services: { identify: identify(), pubsub: gossipsub({ allowPublishToZeroTopicPeers: true }) },
  })
  tt.teardown(async () => { await host.stop() })
  const heard: string[] = []
  host.services.pubsub.addEventListener('message', (e) => { if (e.detail.topic === BLOB_TOPIC) heard.push(new TextDecoder().decode(e.detail.data)) })
  host.services.pubsub.subscribe(BLOB_TOPIC)
  return { host, heard }
}

function connected (host: Stranger, member: Multiaddr): boolean {
  return host.getConnections().some((c) => c.remotePeer.toString() === member.getComponents().at(-1)?.value)
}

/** Connect; 'connected' when the connection still stands 300 ms later, or why not. */
async function dial (host: Stranger, member: Multiaddr): Promise<string> {
  try {
    await host.dial(member, { signal: AbortSignal.timeout(5000) })
  } catch (err) {
    if (typeof Event !== 'undefined' && err instanceof Event) return `connection closed (event ${err.type})`
    return (err as Error).message ?? String(err)
  }
  await sleep(300)
  return connected(host, member) ? 'connected' : 'closed by the member right after the handshake'
}

/** The member's libp2p address, with /p2p/<id>. */
function addressOf (m: InProcessNode): Multiaddr {
  const host = m.node.cluster.host!
  return multiaddr(`${host.getMultiaddrs().map(String).find((a) => a.startsWith('/ip4/127.0.0.1/'))!.replace(/\/p2p\/.*$/, '')}/p2p/${host.peerId.toString()}`)
}

async function joinToken (m: InProcessNode): Promise<string> {
  const res = await m.fetch(`${m.url}/api/v1/cluster/tokens`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ttlSeconds: 600 }) })
  const body = await res.json() as { token?: string }
  if (res.status !== 201 || body.token === undefined) throw new Error(`no join token: ${res.status} ${JSON.stringify(body)}`)
  return body.token
}

async function member (tt: { teardown (fn: () => unknown): void }, probation?: { maxPeers?: number; maxPerAddress?: number }): Promise<InProcessNode> {
  const m = await startInProcess(probation !== undefined ? { cluster: { probation } } : {})
  tt.teardown(async () => { await m.stop() })
  return m
}

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))

t.test('a stranger on probation gets no gossip and cannot use Raft; it may join, and a member hears announcements', async (t) => {
  const m = await member(t)
  const addr = addressOf(m)
  const token = await joinToken(m)
  const pubsub = m.node.cluster.host!.services.pubsub
  // A blob the member holds, which a `want` makes it announce.
  const blob = Buffer.from('probation: a layer the strangers must not hear of')
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
  const put = await m.fetch(`${m.url}/v2/probation/app/blobs/uploads/?digest=${digest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: blob })
  t.equal(put.status, 201, `a blob is pushed to the member: ${await put.text()}`)

  const s = await stranger(t, '127.0.0.1')
  t.equal(await dial(s.host, addr), 'connected', 'a stranger from 127.0.0.1 connects on probation (a join token is outstanding)')

  // It joins from another address: the join protocol is open to a stranger on probation.
  const j = await stranger(t, '127.0.0.2')
  t.equal(await dial(j.host, addr), 'connected', 'a stranger from 127.0.0.2 connects on probation too')
  t.ok(j.host.getConnections().some((c) => c.remoteAddr.toString().startsWith('/ip4/127.0.0.1/')), 'it reached the member on 127.0.0.1')
  const req = { token, peerId: j.host.peerId.toString(), p2p: j.host.getMultiaddrs().map(String), http: 'http://127.0.0.2:1' }
  const answer = JSON.parse(new TextDecoder().decode(await sendRequest(j.host, addr, JOIN_PROTOCOL, enc(req), { timeoutMs: 15_000, maxAnswerBytes: 1 << 20 }))) as JoinAnswer
  t.ok('members' in answer, `it runs ${JOIN_PROTOCOL} and joins: ${JSON.stringify(answer).slice(0, 200)}`)
  const subscribers = (): string[] => pubsub.getSubscribers(BLOB_TOPIC).map(String)
  await until('the member to gossip with the new member', () => subscribers().includes(j.host.peerId.toString()))
  t.pass('once it has joined, on the connection it joined on, the member gossips with it')

  // The want below is published with allowPublishToZeroTopicPeers: until the new member has
  // heard the member's own subscription, it would go nowhere (the test, not the member, at fault).
  await until('the new member to know the member subscribes', () => j.host.services.pubsub.getSubscribers(BLOB_TOPIC).map(String).includes(m.node.cluster.peerId) ? true : undefined)
  // Announcements: the member answers the new member's want with a have, and publishes more.
  await j.host.services.pubsub.publish(BLOB_TOPIC, enc({ want: digest, peer: j.host.peerId.toString() }))
  for (let i = 0; i < 5; i++) {
    await pubsub.publish(BLOB_TOPIC, enc({ have: `sha256:${String(i).repeat(64)}`, peer: m.node.cluster.peerId }))
    await sleep(100)
  }
  await until('the new member to hear every announcement', () => j.heard.filter((h) => h.includes('"have"')).length === 6 ? true : undefined, 30_000)
  t.ok(j.heard.some((h) => h.includes(digest)), 'the member announced the blob it holds')
  await sleep(1000)
  t.same(s.heard, [], 'the stranger on probation, subscribed to the blob topic, heard nothing')
  t.notOk(s.host.services.pubsub.getSubscribers(BLOB_TOPIC).map(String).includes(m.node.cluster.peerId), 'nor learnt what the member subscribes to')
  t.notOk(pubsub.getPeers().map(String).includes(s.host.peerId.toString()), 'the member\'s gossipsub does not know it')
  t.ok(connected(s.host, addr), 'it is still connected, on probation')

  // Probation slots: one per address.
  const s2 = await stranger(t, '127.0.0.1')
  const second = await dial(s2.host, addr)
  t.not(second, 'connected', `a second stranger from 127.0.0.1 is refused while the first holds its slot: ${second}`)

  // Raft: the stream is refused and the connection closed.
  let frames = 'none'
  try {
    const stream = await s.host.dialProtocol(addr, RAFT_PROTOCOL, { signal: AbortSignal.timeout(5000) })
    const lp = lpStream(stream)
    await lp.write(new TextEncoder().encode('{"type":"MsgHeartbeat"}'))
    await lp.read({ signal: AbortSignal.timeout(3000) })
    frames = 'answered'
  } catch (err) {
    frames = `refused (${(err as Error).message ?? String(err)})`
  }
  t.match(frames, /^refused/, `${RAFT_PROTOCOL} is refused to the stranger: ${frames}`)
  await until('the member to hang up on it', () => !connected(s.host, addr), 3000)
  t.pass('and its connection is closed')

  const s3 = await stranger(t, '127.0.0.1')
  t.equal(await dial(s3.host, addr), 'connected', 'with the first one gone, 127.0.0.1 has its slot again')
})

t.test('raised limits: two strangers from one address, three in all', async (t) => {
  const m = await member(t, { maxPeers: 3, maxPerAddress: 2 })
  const addr = addressOf(m)
  await joinToken(m)
  const results: string[] = []
  for (const from of ['127.0.0.1', '127.0.0.1', '127.0.0.1', '127.0.0.3', '127.0.0.4']) results.push(await dial((await stranger(t, from)).host, addr))
  t.same(results.slice(0, 2), ['connected', 'connected'], 'two strangers from 127.0.0.1 connect')
  t.not(results[2], 'connected', `a third from 127.0.0.1 is refused: ${results[2]}`)
  t.equal(results[3], 'connected', 'one from 127.0.0.3 connects')
  t.not(results[4], 'connected', `a fourth stranger in all is refused, from 127.0.0.4: ${results[4]}`)
})

t.test('the Probation class: limits per source and in all; members free their slots', async (t) => {
  const members = new Set<string>()
  const disconnected: string[] = []
  const p = new Probation({ open: () => true, isMember: (id) => members.has(id), disconnect: (id) => disconnected.push(id), maxPeers: 3, maxPerAddress: 1 })
  t.teardown(() => p.stop())
  t.ok(p.admit('a', '10.0.0.1'), 'a stranger from 10.0.0.1')
  t.notOk(p.admit('b', '10.0.0.1'), 'not a second one from 10.0.0.1')
  t.ok(p.admit('a', '10.0.0.1'), 'the first may connect again')
  t.ok(p.admit('c', '10.0.0.2'), 'one from 10.0.0.2')
  t.ok(p.admit('d', '2001:db8:0:1::5'), 'one from an IPv6 /64')
  t.notOk(p.admit('e', '2001:db8:0:1:ffff::9'), 'not a second one from the same /64')
  members.add('d')
  t.equal(p.pending(), 2, 'a stranger that became a member no longer counts')
  t.ok(p.admit('e', '2001:db8:0:1:ffff::9'), 'so its /64 has a slot again')
  t.notOk(p.admit('f', '10.0.0.3'), 'three strangers at once at most')
  p.refuse('a', 'test')
  t.same(disconnected, ['a'], 'a refused stranger is disconnected')
  t.ok(p.admit('b', '10.0.0.1'), 'and its slot is free')
  t.notOk(p.admit('g', undefined), 'no slot left for a stranger without an address either')

  t.equal(sourceOf('192.0.2.7'), '192.0.2.7')
  t.equal(sourceOf('::ffff:192.0.2.7'), '192.0.2.7', 'an IPv4-mapped address is its IPv4 address')
  t.equal(sourceOf('2001:DB8::1'), '2001:db8:0:0::/64')
  t.equal(sourceOf('2001:db8:0:1:2:3:4:5'), '2001:db8:0:1::/64')
  t.equal(sourceOf('fe80::1%eth0'), 'fe80:0:0:0::/64')
  t.equal(sourceOf('::1'), '0:0:0:0::/64')
})

t.test('the limits are settings', async (t) => {
  const defaults = await loadConfig({}, {})
  t.same(defaults.cluster.probation, { maxPeers: 4, maxPerAddress: 1 }, 'defaults: 4 strangers, 1 per address')
  const raised = await loadConfig({}, { FLOTILLA_PROBATION_PER_ADDRESS: '8', FLOTILLA_PROBATION_PEERS: '16' })
  t.same(raised.cluster.probation, { maxPeers: 16, maxPerAddress: 8 }, 'FLOTILLA_PROBATION_PEERS and FLOTILLA_PROBATION_PER_ADDRESS')
  await t.rejects(loadConfig({}, { FLOTILLA_PROBATION_PER_ADDRESS: '0' }), /cluster\.probation\.maxPerAddress/, 'at least 1')
})
