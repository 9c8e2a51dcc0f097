/**
 * cluster/replication/replicator.ts, the policy alone (metadata in memory, no network):
 * placement, where an upload is mirrored, which holder each lacking node copies from, and the
 * write quorum.
 */
import t from 'tap'
import pino from 'pino'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../../cluster/metadata/queries.js'
import { LocalApplier } from '../../cluster/metadata/applier.js'
import { MemoryBlobStore } from '../../storage/blobs/memory-blob-store.js'
import { Replicator, placement, rank } from '../../cluster/replication/replicator.js'
import type { BlobFetcher } from '../../cluster/replication/blob-fetcher.js'

const D = 'sha256:' + 'ab'.repeat(32)
const PEERS = ['p1', 'p2', 'p3', 'p4', 'p5']

async function setup (self: string, opts: { replicas?: number; members?: string[] } = {}): Promise<{ r: Replicator; sink: LocalApplier }> {
  const kv = new MemoryKV()
  const sink = new LocalApplier(new MetadataStateMachine(kv, { sync: false }))
  const members = opts.members ?? PEERS
  const r = new Replicator({
    peerId: self,
    blobs: new MemoryBlobStore(),
    queries: new MetadataQueries(kv),
    sink,
    fetcher: {} as BlobFetcher, // never reached: nothing here copies
    log: pino({ level: 'silent' }),
    members: () => members,
    voters: () => members,
    ...(opts.replicas !== undefined ? { replicas: opts.replicas } : {}),
  })
  return { r, sink }
}

t.test('placement: every member, or R of them by rendezvous hashing, stable as members come and go', async (t) => {
  t.same(placement(D, PEERS), PEERS)
  const three = placement(D, PEERS, 3)
  t.equal(three.length, 3)
  const without = PEERS.filter((p) => p !== three[2])
  t.same(placement(D, without, 2), three.slice(0, 2), 'removing a holder keeps the others in place')
})

t.test('the write quorum is a majority of the voters, capped by the copies kept', async (t) => {
  t.equal((await setup('p1')).r.writeQuorum(), 3)
  t.equal((await setup('p1', { replicas: 2 })).r.writeQuorum(), 2)
  t.equal((await setup('p1', { members: ['p1'] })).r.writeQuorum(), 1)
})

t.test('upload chains: never this node; the whole placement when the digest is known; spread by upload id', async (t) => {
  const { r } = await setup('p1', { replicas: 3 })
  const byDigest = r.mirrorChain(D)
  t.notOk(byDigest.peers.includes('p1'))
  t.same([...byDigest.peers].sort(), placement(D, PEERS, 3).filter((p) => p !== 'p1').sort(), 'every other node that should hold the blob, and only those')
  t.equal(byDigest.length, byDigest.peers.length, 'all of them make the chain')
  const firsts = new Set<string>()
  for (let i = 0; i < 40; i++) {
    const chain = r.mirrorChain(`upload-${i}`)
    t.equal(chain.peers.length, 4, 'without the digest, every other member is a candidate')
    t.equal(chain.length, 2, 'of which the write quorum\'s W-1 make the chain (the placement is not known yet)')
    firsts.add(chain.peers[0]!)
  }
  t.ok(firsts.size >= 3, `uploads start on different peers (${[...firsts].join(', ')})`)
  const all = (await setup('p2')).r
  const everyone = all.mirrorChain('upload-x')
  t.same([...everyone.peers].sort(), ['p1', 'p3', 'p4', 'p5'], 'when every member keeps every blob, the chain is every other member')
  t.equal(everyone.length, 4)
  t.same(all.mirrorChain(D), { peers: rank(D, PEERS).filter((p) => p !== 'p2'), length: 4 }, 'with the digest: in rendezvous order')
})

t.test('the nodes lacking a blob share its holders out among themselves', async (t) => {
  const lacking = ['p3', 'p4', 'p5']
  const firsts: string[] = []
  for (const self of lacking) {
    const { r, sink } = await setup(self)
    await sink.submit({ type: 'AddHolder', digest: D, size: 10, peerId: 'p1' })
    await sink.submit({ type: 'AddHolder', digest: D, size: 10, peerId: 'p2' })
    const c = await r.candidates(D)
    t.same([...c].sort(), ['p1', 'p2'], `${self} may ask either holder`)
    firsts.push(c[0]!)
  }
  t.same(firsts, ['p1', 'p2', 'p1'], 'the i-th lacking node starts with the i-th holder')
  const { r, sink } = await setup('p1')
  await sink.submit({ type: 'AddHolder', digest: D, size: 10, peerId: 'p1' })
  t.same(await r.candidates(D), [], 'a holder never asks itself')
})
