// Leadership transfer (thesis §3.10): TimeoutNow once the target is caught up; abort after an
// election timeout.
import t from 'tap'
import { Network, appliedData, enc } from './network.js'
import { ErrProposalDropped } from '../../cluster/raft/errors.js'

t.test('transfer to an up-to-date follower: it campaigns at once and wins', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.propose('a', 'x')
  const term = net.node('a').raft.term
  net.trace = []
  net.node('a').rn.transferLeader('b')
  net.settle()
  t.ok(net.trace.some(m => m.type === 'TimeoutNow' && m.to === 'b'), 'TimeoutNow sent')
  t.same(net.leaders(), ['b'])
  t.equal(net.node('b').raft.term, term + 1)
  t.equal(net.node('a').raft.lead, 'b')
  net.propose('b', 'y')
  t.same(appliedData(net.node('a')), ['x', 'y'])
})

t.test('transfer requested on a follower is forwarded to the leader', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.node('c').rn.transferLeader('c')
  net.settle()
  t.same(net.leaders(), ['c'])
})

t.test('transfer to a slow node: the leader first catches it up, then hands over', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.isolate('c')
  for (let i = 0; i < 5; i++) net.propose('a', `x${i}`)
  const a = net.node('a')
  t.ok(a.rn.status().progress!.get('c')!.match < a.raft.raftLog.lastIndex(), 'c is behind')
  net.heal()
  a.rn.transferLeader('c')
  t.equal(a.raft.leadTransferee, 'c')
  t.throws(() => a.rn.propose(enc('during')), ErrProposalDropped, 'proposals wait while leadership moves')
  net.settle()
  t.same(net.leaders(), ['c'], 'c caught up and took over')
  t.same(appliedData(net.node('c')), ['x0', 'x1', 'x2', 'x3', 'x4'])
})

t.test('transfer to an unreachable node times out after an election timeout', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.isolate('c')
  net.propose('a', 'x')
  const a = net.node('a')
  a.rn.transferLeader('c')
  net.settle()
  t.equal(a.raft.leadTransferee, 'c')
  net.tick(a.raft.electionTimeout - 1, ['a', 'b'])
  t.equal(a.raft.leadTransferee, 'c', 'still trying within the timeout')
  net.tick(1, ['a', 'b'])
  t.equal(a.raft.leadTransferee, null, 'aborted')
  t.same(net.leaders(), ['a'], 'a keeps leading')
  net.propose('a', 'y')
  t.same(appliedData(a), ['x', 'y'], 'and accepts proposals again')
})

t.test('transfer to a learner or to itself is ignored', async t => {
  const net = new Network(['a', 'b', 'c'], { bootstrap: true })
  net.campaign('a')
  net.addEmpty('d')
  net.proposeConfChange('a', { type: 'addLearner', node: 'd' })
  net.node('a').rn.transferLeader('d')
  t.equal(net.node('a').raft.leadTransferee, null)
  net.node('a').rn.transferLeader('a')
  net.settle()
  t.same(net.leaders(), ['a'])
})

t.test('a new transfer replaces a pending one', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.isolate('c')
  net.node('a').rn.transferLeader('c')
  net.settle()
  net.node('a').rn.transferLeader('b')
  net.settle()
  t.same(net.leaders(), ['b'])
})
