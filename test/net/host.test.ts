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

// Issue 15: two back-to-back frames of about 2 MiB overflowed libp2p's 4 MiB read buffer,
// which reset the stream every time a large Raft entry was (re)sent: the entry never arrived.
t.test('large frames back to back arrive whole; a frame over the limit is never sent', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-net-'))
  const members = new Set<string>()
  const a = await makeNode(dir, 'a', members)
  const b = await makeNode(dir, 'b', members)
  members.add(a.peerId).add(b.peerId)
  t.teardown(async () => { await Promise.all([a.host.stop(), b.host.stop()]) })
  await a.transport.setAddresses(b.peerId, b.host.getMultiaddrs().map(String))
  const sizes = [6 << 20, 6 << 20, 3 << 20, 10, 12 << 20]
  const sent = sizes.map((n, i) => Buffer.alloc(n, 97 + i))
  for (const f of sent) a.transport.send(b.peerId, f)
  await until(() => b.frames.length === sizes.length, 30_000)
  t.same(b.frames.map(([, s]) => s.length), sizes, 'every frame arrived, whole and in order')
  t.ok(b.frames.every(([, s], i) => s === sent[i]!.toString()), 'with its bytes')
  t.equal(a.transport.lastError(b.peerId), undefined, 'no frame was lost')

  const errors: string[] = []
  const small = new FrameTransport({ host: a.host, protocol: '/flotilla/test-small/1.0.0', accept: () => true, maxFrameBytes: 1024, onError: (_p, err) => errors.push((err as Error).message) })
  small.send(b.peerId, Buffer.alloc(2048))
  t.match(errors[0], /2048-byte frame is over the 1024-byte limit/, 'the sender refuses it and says why')
  t.match(small.lastError(b.peerId)?.message, /over the 1024-byte limit/)
})
