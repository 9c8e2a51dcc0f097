// Snapshots: compaction, InstallSnapshot in chunks, reassembly, retry of lost chunks.
import t, { type Test } from 'tap'
import { Network, appliedData, dec, enc } from './network.js'
import type { Message } from '../../cluster/raft/types.js'

const STATE = 'the-whole-state-machine-at-this-point' // 37 bytes

function lagging (t: Test, chunk: number) {
  const net = new Network(['a', 'b', 'c'], { snapshotChunkSize: chunk })
  net.campaign('a')
  net.propose('a', 'x0')
  net.isolate('c')
  for (let i = 1; i <= 10; i++) net.propose('a', `x${i}`)
  const a = net.node('a')
  a.compact(enc(STATE))
  t.equal(a.storage.firstIndex(), a.raft.raftLog.committed + 1, 'leader compacted everything applied')
  return net
}

t.test('a slow follower is caught up by a chunked snapshot after compaction', async t => {
  const net = lagging(t, 4)
  const c = net.node('c')
  net.heal()
  net.trace = []
  net.tick(2)
  const chunks = net.trace.filter(m => m.type === 'Snap')
  t.equal(chunks.length, Math.ceil(STATE.length / 4), 'sent in 4-byte chunks')
  t.ok(chunks.every(m => (m.snapshot?.data.byteLength ?? 0) <= 4))
  t.ok(chunks[chunks.length - 1]!.done, 'the last chunk says done')
  t.same(c.restored.map(dec), [STATE], 'follower reassembled and installed it')
  t.equal(c.raft.raftLog.firstIndex(), net.node('a').storage.firstIndex())
  net.propose('a', 'after')
  t.same(appliedData(c), ['x0', 'after'], 'and then applies new entries (x0 before the partition)')
  t.equal(net.node('a').rn.status().progress!.get('c')!.state, 'replicate')
})

t.test('snapshot chunks arriving out of order and twice are reassembled once', async t => {
  const net = lagging(t, 5)
  const c = net.node('c')
  net.heal()
  // Hold the chunks back, then deliver them reversed, each twice.
  const held: Message[] = []
  net.filter = m => {
    if (m.type !== 'Snap') return true
    held.push(m)
    return false
  }
  net.tick(2)
  t.ok(held.length > 1)
  net.filter = undefined
  const reordered = [...held].reverse().flatMap(m => [m, m])
  net.send(...reordered)
  t.same(c.restored.map(dec), [STATE], 'installed exactly once')
})

t.test('a snapshot whose chunks were lost is sent again', async t => {
  const net = lagging(t, 8)
  const c = net.node('c')
  net.heal()
  let dropped = 0
  net.filter = m => {
    if (m.type === 'Snap' && m.offset === 8 && dropped === 0) { dropped++; return false }
    return true
  }
  net.tick(2)
  t.same(c.restored, [], 'incomplete: not installed')
  t.equal(net.node('a').rn.status().progress!.get('c')!.state, 'snapshot')
  net.tick(2 * net.node('a').raft.electionTimeout + 2)
  t.same(c.restored.map(dec), [STATE], 'resent and installed')
})

t.test('reportSnapshot(failure) puts the follower back to probing', async t => {
  const net = lagging(t, 64)
  net.heal()
  net.dropTypes.add('Snap')
  net.tick(2)
  const a = net.node('a')
  t.equal(a.rn.status().progress!.get('c')!.state, 'snapshot')
  a.rn.reportSnapshot('c', false)
  t.equal(a.rn.status().progress!.get('c')!.state, 'probe')
  net.dropTypes.clear()
  net.tick(2)
  t.same(net.node('c').restored.map(dec), [STATE])
})

t.test('a follower that already has the entries fast-forwards instead of installing', async t => {
  const net = new Network(['a', 'b'])
  net.campaign('a')
  net.propose('a', 'x')
  const b = net.node('b')
  const snap = { meta: { index: 2, term: 1, conf: { voters: ['a', 'b'], learners: [] } }, data: enc('s') }
  b.raft.raftLog.committed = 1 // as if the commit had not reached b yet
  b.rn.step({ type: 'Snap', from: 'a', to: 'b', term: 1, logTerm: 0, index: 0, commit: 0, entries: [], reject: false, rejectHint: 0, snapshot: snap, offset: 0, total: 1, done: true })
  t.equal(b.raft.raftLog.committed, 2, 'commit moved to the snapshot index')
  t.notOk(b.raft.raftLog.hasPendingSnapshot(), 'nothing to install')
})

t.test('a restarted node starts from its snapshot and the entries after it', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  for (let i = 0; i < 5; i++) net.propose('a', `x${i}`)
  const b = net.node('b')
  b.compact(enc('b-state'), 0)
  net.propose('a', 'y')
  b.restart()
  t.equal(b.raft.raftLog.firstIndex(), 7)
  t.equal(b.raft.raftLog.applied, 6, 'applied starts at the snapshot index')
  net.tick(2)
  t.same(appliedData(b), ['y'], 're-applies only what follows the snapshot')
})

t.test('a snapshot that arrives while a Ready is being handled supersedes that Ready', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.propose('a', 'x')
  net.cut.add('a->b')
  for (let i = 0; i < 5; i++) net.propose('a', `y${i}`)
  const a = net.node('a')
  a.compact(enc('S'))
  const b = net.node('b')
  const term = a.raft.term
  // b gets index 3 committed and starts handling that Ready...
  b.rn.step({ type: 'App', from: 'a', to: 'b', term, logTerm: 1, index: 2, commit: 3, entries: [{ index: 3, term, type: 0, data: enc('y0') }], reject: false, rejectHint: 0 })
  const rd = b.rn.ready()
  t.equal(rd.committedEntries.length, 1)
  b.storage.append(rd.entries)
  // ...when the leader's snapshot (index 7) arrives.
  const snap = a.storage.snapshot()
  b.rn.step({ type: 'Snap', from: 'a', to: 'b', term, logTerm: 0, index: 0, commit: 0, entries: [], reject: false, rejectHint: 0, snapshot: snap, offset: 0, total: snap.data.byteLength, done: true })
  b.rn.advance(rd)
  b.handleReady()
  t.same(b.restored.map(dec), ['S'])
  t.equal(b.raft.raftLog.applied, snap.meta.index)
  t.equal(b.storage.firstIndex(), snap.meta.index + 1)
  net.heal()
  net.propose('a', 'z')
  t.same(appliedData(b).slice(-1), ['z'], 'b carries on after the snapshot')
})
