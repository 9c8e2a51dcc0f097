// Flow control (after etcd's raft_flow_control_test.go): in-flight append messages and bytes
// per follower are bounded; probing sends one message at a time; proposals are batched.
import t from 'tap'
import { Network, enc, type NetworkOptions } from './network.js'
import { Inflights, Progress } from '../../cluster/raft/progress.js'

/** A leader 'a' whose follower 'b' is in replicate state and whose answers we then drop. */
function replicating (opts: NetworkOptions = {}) {
  const net = new Network(['a', 'b'], { checkQuorum: false, ...opts })
  net.campaign('a')
  net.propose('a', 'warm-up')
  t.equal(net.node('a').rn.status().progress!.get('b')!.state, 'replicate')
  net.dropTypes.add('AppResp')
  net.trace = []
  return net
}

const appsTo = (net: Network, to: string) => net.trace.filter(m => m.type === 'App' && m.to === to && m.entries.length > 0)

t.test('at most maxInflightMsgs appends are in flight to one follower', async t => {
  const net = replicating({ maxInflightMsgs: 3 })
  for (let i = 0; i < 10; i++) net.propose('a', `p${i}`)
  t.equal(appsTo(net, 'b').length, 3, 'three sent, the rest wait')
  const pr = net.node('a').rn.status().progress!.get('b')!
  t.equal(pr.inflight, 3)
  t.ok(pr.paused)
  // One acknowledgement frees the window: the waiting entries go in one message.
  net.dropTypes.clear()
  net.trace = []
  net.tick(1)
  t.equal(net.node('b').raft.raftLog.lastIndex(), net.node('a').raft.raftLog.lastIndex(), 'caught up')
  t.ok(appsTo(net, 'b').length <= 2, 'the backlog travels batched')
})

t.test('maxInflightBytes bounds the bytes in flight', async t => {
  const net = replicating({ maxInflightBytes: 25 })
  for (let i = 0; i < 10; i++) net.propose('a', enc('0123456789'))
  const apps = appsTo(net, 'b')
  t.equal(apps.length, 3, 'sending stops once 25 bytes are in flight (the third message crosses it)')
  t.equal(net.node('a').rn.status().progress!.get('b')!.inflightBytes, 30)
})

t.test('maxSizePerMsg bounds the entry bytes of one append (at least one entry goes)', async t => {
  const net = new Network(['a', 'b'], { maxSizePerMsg: 25 })
  net.campaign('a')
  net.cut.add('a->b')
  for (let i = 0; i < 10; i++) net.node('a').rn.propose(enc('0123456789'))
  net.settle()
  net.heal()
  net.trace = []
  net.tick(1)
  const apps = appsTo(net, 'b')
  t.ok(apps.length >= 5, `${apps.length} messages`)
  for (const m of apps) t.ok(m.entries.reduce((n, e) => n + e.data.byteLength, 0) <= 25, 'within the byte bound')
  t.equal(net.node('b').raft.raftLog.lastIndex(), 11)
  const big = new Network(['a', 'b'], { maxSizePerMsg: 5 })
  big.campaign('a')
  big.propose('a', enc('a-single-entry-larger-than-the-bound'))
  t.equal(big.node('b').raft.raftLog.lastIndex(), 2, 'an entry larger than the bound still goes, alone')
})

t.test('in probe state one append is in flight until the follower answers or a heartbeat', async t => {
  const net = new Network(['a', 'b'], { checkQuorum: false })
  net.campaign('a')
  net.cut.add('b->a')
  net.node('a').rn.reportUnreachable('b')
  t.equal(net.node('a').rn.status().progress!.get('b')!.state, 'probe')
  net.trace = []
  for (let i = 0; i < 5; i++) net.propose('a', `p${i}`)
  t.equal(appsTo(net, 'b').length, 1, 'one probe')
  net.trace = []
  net.tick(1)
  t.ok(appsTo(net, 'b').length === 0, 'no answer to the heartbeat: still paused')
  net.heal()
  net.tick(1)
  t.equal(net.node('a').rn.status().progress!.get('b')!.state, 'replicate', 'answer received: replicate')
  t.equal(net.node('b').raft.raftLog.lastIndex(), 6)
})

t.test('proposals made between two Readies travel in one append per follower', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.propose('a', 'warm-up')
  net.trace = []
  const a = net.node('a')
  for (let i = 0; i < 20; i++) a.rn.propose(enc(`p${i}`))
  a.rn.proposeBatch([enc('q1'), enc('q2')])
  net.settle()
  const apps = net.trace.filter(m => m.type === 'App' && m.entries.length > 0)
  t.equal(apps.length, 2, 'one message to each follower')
  t.ok(apps.every(m => m.entries.length === 22))
})

t.test('reportUnreachable drops a replicating follower back to probe', async t => {
  const net = replicating()
  net.node('a').rn.reportUnreachable('b')
  t.equal(net.node('a').rn.status().progress!.get('b')!.state, 'probe')
})

t.test('Inflights: bounded by count and bytes, freed in order', async t => {
  const inf = new Inflights(3, 100)
  inf.add(1, 10); inf.add(2, 10)
  t.notOk(inf.full())
  inf.add(5, 10)
  t.ok(inf.full(), 'full by count')
  inf.freeLE(2)
  t.equal(inf.count(), 1)
  t.equal(inf.bytes(), 10)
  inf.add(6, 95)
  t.ok(inf.full(), 'full by bytes')
  inf.freeLE(6)
  t.equal(inf.count(), 0)
  t.notOk(inf.full())
})

t.test('Progress: probe backtracks with the hint, replicate ignores stale rejections', async t => {
  const pr = new Progress(11, false, 10, 0)
  t.ok(pr.maybeDecrTo(10, 4), 'probe: jump to the hint')
  t.equal(pr.next, 5)
  t.notOk(pr.maybeDecrTo(10, 2), 'a second rejection of the same index is stale')
  pr.maybeUpdate(7)
  pr.becomeReplicate()
  t.equal(pr.next, 8)
  t.notOk(pr.maybeDecrTo(6, 0), 'replicate: rejection below match is stale')
  t.ok(pr.maybeDecrTo(9, 0))
  t.equal(pr.next, 8, 'back to match + 1')
})
