// Membership: learners, promotion, removal (including the leader), one change at a time.
import t from 'tap'
import { Network, appliedData, enc } from './network.js'
import { ErrConfChangeRejected } from '../../cluster/raft/errors.js'
import { RawNode } from '../../cluster/raft/raw-node.js'
import { SeededRand } from '../../cluster/raft/rand.js'

t.test('a learner is added, catches up without voting, then is promoted', async t => {
  const net = new Network(['a', 'b', 'c'], { bootstrap: true })
  net.campaign('a')
  for (let i = 0; i < 3; i++) net.propose('a', `x${i}`)
  const d = net.addEmpty('d')
  net.proposeConfChange('a', { type: 'addLearner', node: 'd' })
  net.tick(2)
  t.same(d.raft.confState().voters, ['a', 'b', 'c'], 'the learner replayed the founding entries')
  t.same(d.raft.confState().learners, ['d'])
  t.same(appliedData(d), ['x0', 'x1', 'x2'], 'caught up')
  t.same(net.node('a').raft.confState().learners, ['d'])
  // A learner never campaigns and its vote does not count.
  net.tick(50, ['d'])
  t.equal(d.raft.role, 'follower')
  t.equal(net.node('a').raft.role, 'leader')
  net.proposeConfChange('a', { type: 'promote', node: 'd' })
  for (const id of ['a', 'b', 'c', 'd']) t.same(net.node(id).raft.confState().voters, ['a', 'b', 'c', 'd'], `${id} sees d as voter`)
  // d now counts: with a and b down, c and d cannot commit alone (2 of 4), with b they can.
  net.isolate('c')
  net.propose('a', 'y')
  t.same(appliedData(d), ['x0', 'x1', 'x2', 'y'], 'd is part of the quorum')
})

t.test('a learner joining after compaction gets the configuration from a snapshot', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.propose('a', 'x')
  net.node('a').compact(enc('state'))
  const d = net.addEmpty('d')
  net.proposeConfChange('a', { type: 'addLearner', node: 'd' })
  net.tick(2)
  t.same(d.restored.length, 1, 'installed a snapshot')
  t.same(d.raft.confState(), { voters: ['a', 'b', 'c'], learners: ['d'] })
})

t.test('a learner that has not caught up is not promoted', async t => {
  const net = new Network(['a', 'b', 'c'], { bootstrap: true })
  net.campaign('a')
  net.addEmpty('d')
  net.isolate('d')
  net.proposeConfChange('a', { type: 'addLearner', node: 'd' })
  t.throws(() => net.node('a').rn.proposeConfChange({ type: 'promote', node: 'd' }), ErrConfChangeRejected)
})

t.test('one configuration change at a time', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.cut.add('b->a'); net.cut.add('c->a') // nothing commits
  net.proposeConfChange('a', { type: 'addLearner', node: 'd' })
  t.throws(() => net.node('a').rn.proposeConfChange({ type: 'addLearner', node: 'e' }), ErrConfChangeRejected, 'second change refused while the first is pending')
  net.heal()
  net.tick(1)
  t.same(net.node('a').raft.confState().learners, ['d'])
  net.proposeConfChange('a', { type: 'addLearner', node: 'e' })
  t.same(net.node('a').raft.confState().learners, ['d', 'e'], 'accepted once the first was applied')
})

t.test('the leader is removed: it steps down after committing its removal', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.propose('a', 'x')
  net.proposeConfChange('a', { type: 'remove', node: 'a' })
  const a = net.node('a')
  t.not(a.raft.role, 'leader', 'a stepped down')
  t.same(a.raft.confState().voters, ['b', 'c'])
  for (const id of ['b', 'c']) t.same(net.node(id).raft.confState().voters, ['b', 'c'], `${id} applied the removal`)
  const leader = net.tickUntilLeader(50, ['b', 'c'])
  t.ok(['b', 'c'].includes(leader), 'a remaining voter leads (handed over with TimeoutNow)')
  net.propose(leader, 'y')
  t.same(appliedData(net.node('b')), ['x', 'y'])
  t.same(appliedData(net.node('c')), ['x', 'y'])
  net.tick(100, ['a'])
  t.not(a.raft.role, 'leader', 'the removed node never campaigns')
  t.equal(net.leaders().length, 1)
})

t.test('a partitioned node is removed and cannot disrupt when it comes back', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.isolate('c')
  net.proposeConfChange('a', { type: 'remove', node: 'c' })
  t.same(net.node('a').raft.confState().voters, ['a', 'b'])
  net.propose('a', 'x')
  const term = net.node('a').raft.term
  net.tick(100, ['c'])
  net.heal()
  net.tick(100)
  t.same(net.leaders(), ['a'], 'a still leads')
  t.equal(net.node('a').raft.term, term, 'c did not raise anyone\'s term')
  t.same(appliedData(net.node('c')), [], 'c gets nothing more')
  t.throws(() => net.node('a').rn.proposeConfChange({ type: 'addLearner', node: 'c' }), ErrConfChangeRejected, 'a removed id is never accepted again')
  t.throws(() => net.node('a').rn.proposeConfChange({ type: 'addVoter', node: 'c' }), ErrConfChangeRejected)
})

t.test('leader crash in the middle of a configuration change', async t => {
  const net = new Network(['a', 'b', 'c', 'd'])
  net.campaign('a')
  net.propose('a', 'x')
  // a appends "remove d" and b stores it, but no ack reaches a: not committed.
  net.filter = m => !(m.to === 'a' && m.type === 'AppResp') && !(m.from === 'a' && m.type === 'App' && m.to !== 'b')
  net.node('a').rn.proposeConfChange({ type: 'remove', node: 'd' })
  net.settle()
  t.equal(net.node('b').raft.raftLog.lastIndex(), 3, 'b has the conf entry')
  t.same(net.node('a').raft.confState().voters, ['a', 'b', 'c', 'd'], 'not yet applied')
  // a crashes. b (with the pending entry) becomes leader; until its own entry commits it
  // refuses any other change (Ongaro's single-server change bug).
  net.heal()
  net.isolate('a')
  net.node('a').restart()
  net.filter = m => !(m.to === 'b' && m.type === 'AppResp')
  // Only b can win: its log is longer than c's and d's.
  t.equal(net.tickUntilLeader(200, ['b', 'c', 'd']), 'b')
  const b = net.node('b')
  t.equal(b.raft.role, 'leader')
  t.throws(() => b.rn.proposeConfChange({ type: 'remove', node: 'c' }), ErrConfChangeRejected, 'no change before an entry of its term commits')
  net.filter = undefined
  net.tick(2, ['b', 'c', 'd'])
  for (const id of ['b', 'c']) t.same(net.node(id).raft.confState().voters, ['a', 'b', 'c'], `${id}: the inherited change committed`)
  b.rn.proposeConfChange({ type: 'addLearner', node: 'e' })
  net.settle()
  t.same(b.raft.confState().learners, ['e'], 'and then a new change goes through')
  net.heal()
  net.tick(3)
  t.same(net.node('a').raft.confState().voters, ['a', 'b', 'c'], 'the restarted old leader converges')
  t.same(appliedData(net.node('a')), ['x'])
})

t.test('leader crash mid change: an uncommitted change only the old leader had is discarded', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.isolate('a')
  net.node('a').rn.proposeConfChange({ type: 'remove', node: 'c' })
  net.settle()
  net.node('a').restart()
  const leader = net.tickUntilLeader(200, ['b', 'c'])
  net.propose(leader, 'y')
  net.heal()
  net.tick(3)
  for (const id of ['a', 'b', 'c']) {
    t.same(net.node(id).raft.confState().voters, ['a', 'b', 'c'], `${id}: the change never happened`)
    t.same(appliedData(net.node(id)), ['y'], `${id}: logs agree`)
  }
})

t.test('a node restarted with an applied index replays the conf changes it will not re-apply', async t => {
  const net = new Network(['a', 'b', 'c'], { bootstrap: true })
  net.campaign('a')
  net.addEmpty('d')
  net.proposeConfChange('a', { type: 'addLearner', node: 'd' })
  net.propose('a', 'x')
  const b = net.node('b')
  const applied = b.rn.status().applied
  const rn = new RawNode({ id: 'b', storage: b.storage, rand: new SeededRand(1), applied })
  t.same(rn.status().conf, { voters: ['a', 'b', 'c'], learners: ['d'] })
  t.equal(rn.status().applied, applied)
})

t.test('a learner promoted while cut off still votes, so the new quorum can elect', async t => {
  // Found by the simulation (test/sim/core-bug-promoted-learner-cannot-vote.test.ts).
  const net = new Network(['a', 'b', 'c'], { bootstrap: true })
  net.campaign('a')
  net.addEmpty('d')
  net.proposeConfChange('a', { type: 'addLearner', node: 'd' })
  net.tick(2)
  net.isolate('d')
  net.proposeConfChange('a', { type: 'promote', node: 'd' })
  t.same(net.node('a').raft.confState().voters, ['a', 'b', 'c', 'd'])
  t.same(net.node('d').raft.confState().voters, ['a', 'b', 'c'], 'd does not know')
  // a dies and d comes back: b, c, d are 3 of 4 voters, and any leader needs d's vote.
  net.heal()
  net.isolate('a')
  const leader = net.tickUntilLeader(400, ['b', 'c', 'd'])
  t.ok(['b', 'c'].includes(leader), `${leader} won, with d's vote`)
})
