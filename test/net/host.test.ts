/**
 * The libp2p host and the framed transport, over real TCP on 127.0.0.1: members exchange
 * frames in order; a peer with an unknown identity cannot connect.
 */
import t from 'tap'
import { join } from 'node:path'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { createHost, type Host } from '../../net/host.js'
import { loadOrCreateIdentity } from '../../net/identity.js'
import { FrameTransport } from '../../net/frame-transport.js'

async function makeNode (dir: string, name: string, members: Set<string>): Promise<{ host: Host; peerId: string; transport: FrameTransport; frames: Array<[string, string]> }> {
  const id = await loadOrCreateIdentity(join(dir, `${name}.key`))
  const host = await createHost({ privateKey: id.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], admit: (p) => members.has(p) })
  const transport = new FrameTransport({ host, protocol: '/flotilla/test/1.0.0', accept: (p) => members.has(p) })
  const frames: Array<[string, string]> = []
  transport.onMessage((from, bytes) => frames.push([from, Buffer.from(bytes).toString()]))
  await transport.start()
  return { host, peerId: id.peerId, transport, frames }
}

async function until (cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 20))
  }
}

t.test('identity survives a restart', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-id-'))
  const a = await loadOrCreateIdentity(join(dir, 'key'))
  const b = await loadOrCreateIdentity(join(dir, 'key'))
  t.ok(a.created)
  t.notOk(b.created)
  t.equal(a.peerId, b.peerId)
})

t.test('members exchange frames in order; an unknown peer is refused', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-net-'))
  const members = new Set<string>()
  const a = await makeNode(dir, 'a', members)
  const b = await makeNode(dir, 'b', members)
  const stranger = await makeNode(dir, 'c', new Set([a.peerId, b.peerId]))
  members.add(a.peerId).add(b.peerId)
  t.teardown(async () => { await Promise.all([a.host.stop(), b.host.stop(), stranger.host.stop()]) })
  await a.transport.setAddresses(b.peerId, b.host.getMultiaddrs().map(String))
  await b.transport.setAddresses(a.peerId, a.host.getMultiaddrs().map(String))
  for (let i = 0; i < 200; i++) a.transport.send(b.peerId, Buffer.from(`a${i}`))
  b.transport.send(a.peerId, Buffer.from('hello a'))
  await until(() => b.frames.length === 200 && a.frames.length === 1)
  t.same(b.frames.map(([, s]) => s), Array.from({ length: 200 }, (_, i) => `a${i}`), 'in order, none lost')
  t.same(b.frames[0]![0], a.peerId, 'the sender is the authenticated peer')
  t.same(a.frames, [[b.peerId, 'hello a']])

  await stranger.transport.setAddresses(a.peerId, a.host.getMultiaddrs().map(String))
  await t.rejects(stranger.host.dialProtocol(a.host.peerId, '/flotilla/test/1.0.0'), 'the gater refuses a peer that is not a member')
  stranger.transport.send(a.peerId, Buffer.from('let me in'))
  await new Promise((r) => setTimeout(r, 500))
  t.equal(a.frames.length, 1, 'no frame from the stranger arrived')
  t.equal(a.host.getConnections(stranger.host.peerId).length, 0, 'no connection from the stranger is held')
})
