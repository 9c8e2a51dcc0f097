/**
 * Gossip with members only (net/gossip-gate.ts), on real libp2p hosts over TCP on 127.0.0.1:
 * a peer the gater lets in but that is not a member gets nothing from gossipsub (no
 * subscription, no message) and its messages are not read; once it is a member, on the same
 * connection, gossip flows both ways. Two members that learn of each other at different
 * moments (a joiner knows the member it joined through before that member has applied the
 * join) end up gossiping both ways, whichever learns first.
 */
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createHost, type Host } from '../../net/host.js'

const TOPIC = 'flotilla/test/gate'

async function until (what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** A host subscribed to TOPIC that records what it hears there. */
async function node (members: Set<string> | undefined): Promise<{ host: Host; id: string; heard: string[] }> {
  const privateKey = await generateKeyPair('Ed25519')
  const host = await createHost({
    privateKey,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    admit: () => true,
    ...(members !== undefined ? { gossip: (p: string) => members.has(p) } : {}),
  })
  const heard: string[] = []
  host.services.pubsub.addEventListener('message', (e) => { if (e.detail.topic === TOPIC) heard.push(new TextDecoder().decode(e.detail.data)) })
  host.services.pubsub.subscribe(TOPIC)
  return { host, id: peerIdFromPrivateKey(privateKey).toString(), heard }
}

const publish = async (host: Host, text: string): Promise<void> => { await host.services.pubsub.publish(TOPIC, new TextEncoder().encode(text)) }
const subscribers = (host: Host): string[] => host.services.pubsub.getSubscribers(TOPIC).map(String)

t.test('a connected non-member gets no gossip and is not heard; once a member, it gossips', async (t) => {
  const members = new Set<string>()
  const a = await node(members)
  const b = await node(members)
  // The stranger runs plain gossipsub, subscribed, and would take anything it is sent.
  const s = await node(undefined)
  members.add(a.id).add(b.id)
  t.teardown(async () => { await Promise.all([a.host.stop(), b.host.stop(), s.host.stop()]) })

  await b.host.dial(a.host.getMultiaddrs()[0]!)
  await s.host.dial(a.host.getMultiaddrs()[0]!)
  await until('the members to see each other on the topic', () => subscribers(a.host).includes(b.id) && subscribers(b.host).includes(a.id))
  t.equal(a.host.getConnections(s.host.peerId).length, 1, 'the stranger holds a connection (the gater let it in)')

  for (let i = 0; i < 5; i++) { await publish(a.host, `from a ${i}`); await sleep(100) }
  await publish(s.host, 'from the stranger')
  await until('b to hear a', () => b.heard.length === 5)
  await sleep(1500)
  t.same(b.heard, [0, 1, 2, 3, 4].map((i) => `from a ${i}`), 'a member hears every message')
  t.same(s.heard, [], 'the stranger hears nothing')
  t.notOk(subscribers(s.host).includes(a.id), 'nor does it learn what the member subscribes to')
  t.notOk(a.host.services.pubsub.getPeers().map(String).includes(s.id), 'the member\'s gossipsub does not know the stranger')
  t.same(a.heard, [], 'and nothing of the stranger\'s reaches the member\'s gossipsub')
  t.equal(a.host.getConnections(s.host.peerId).length, 1, 'its connection stands (only gossip is refused)')

  // It joins: same connection, and gossip starts within a recheck.
  members.add(s.id)
  await until('the new member to see a on the topic', () => subscribers(s.host).includes(a.id) && subscribers(a.host).includes(s.id))
  await publish(a.host, 'welcome')
  await publish(s.host, 'hello')
  await until('the new member to hear a, and a to hear it', () => s.heard.includes('welcome') && a.heard.includes('hello'))
  t.pass('the new member and the member hear each other')
  t.same(s.heard, ['welcome'], 'nothing published before it was a member reached it')
})

t.test('two members that learn of each other at different moments gossip both ways', async (t) => {
  for (const first of ['dialer', 'listener'] as const) {
    const known = { dialer: new Set<string>(), listener: new Set<string>() }
    const dialer = await node(known.dialer)
    const listener = await node(known.listener)
    t.teardown(async () => { await Promise.all([dialer.host.stop(), listener.host.stop()]) })
    known.dialer.add(dialer.id)
    known.listener.add(listener.id)
    // One side knows the other from the start; the other learns of it a second later.
    if (first === 'dialer') known.dialer.add(listener.id)
    else known.listener.add(dialer.id)
    await dialer.host.dial(listener.host.getMultiaddrs()[0]!)
    await sleep(1000)
    t.notOk(subscribers(dialer.host).includes(listener.id) || subscribers(listener.host).includes(dialer.id), `${first} knew first: no gossip while the other does not know it`)
    known.dialer.add(listener.id)
    known.listener.add(dialer.id)
    await until('both to see each other on the topic', () => subscribers(dialer.host).includes(listener.id) && subscribers(listener.host).includes(dialer.id))
    await publish(dialer.host, 'from the dialer')
    await publish(listener.host, 'from the listener')
    await until('each to hear the other', () => listener.heard.includes('from the dialer') && dialer.heard.includes('from the listener'))
    t.pass(`${first} knew first: once both know each other, each hears the other`)
  }
})
