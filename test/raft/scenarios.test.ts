// Scenario tests: short scripts of elections, partitions and crashes with expected outcomes.
import t from 'tap'
import { Network, appliedData, enc } from './network.js'
import { ErrProposalDropped, isRaftError } from '../../cluster/raft/errors.js'

t.test('split votes: no one wins the term, a later election resolves it', async t => {
  const net = new Network(['a', 'b', 'c', 'd'], { preVote: false, checkQuorum: false, seed: 7 })
  // a and b campaign at once; c only hears a, d only hears b: 2 votes each of 4.
  net.cut.add('a->d'); net.cut.add('b->c')
  net.node('a').rn.campaign()
  net.node('b').rn.campaign()
  net.settle()
  t.same(net.leaders(), [], 'split vote: no leader in term 1')
  t.equal(net.node('a').raft.role, 'candidate')
  t.equal(net.node('b').raft.role, 'candidate')
  net.heal()
  const leader = net.tickUntilLeader()
  t.ok(net.node(leader).raft.term >= 2, 'elected in a later term')
  t.equal(net.leaders().length, 1)
})

/**
 * Figure 8 of the paper, five servers S1..S5. Up to (c): S1 leads term 3 and copies its
 * term-1 entry at index 2 to a majority. Returns the network for the two endings.
 */
function figure8 () {
  const ids = ['s1', 's2', 's3', 's4', 's5']
  // One entry per append message, so the script can let one entry through and not the next.
  const net = new Network(ids, { preVote: false, checkQuorum: false, maxSizePerMsg: 0 })
  net.campaign('s1') // term 1, index 1 committed everywhere
  // (a) S1 copies 'A' (index 2, term 1) to S2 only.
  net.partition(['s1', 's2'], ['s3', 's4', 's5'])
  net.propose('s1', 'A')
  // (b) S1 crashes; S5 wins term 2 with S3, S4, S5 and appends index 2 (term 2) locally only.
  net.heal()
  net.isolate('s1')
  net.node('s1').restart()
  net.filter = m => !(m.from === 's5' && m.type === 'App')
  net.campaign('s5')
  net.node('s5').rn.propose(enc('B'))
  net.settle()
  // (c) S5 crashes; S1 wins term 3 and copies index 2 (term 1) to S3, but not its term-3 entry.
  net.heal()
  net.isolate('s5')
  net.node('s5').restart()
  net.rewrite = m => m.type === 'App' ? { ...m, entries: m.entries.filter(e => e.term !== 3) } : m
  net.campaign('s1') // term 2: lost, S3 and S4 voted for S5
  net.campaign('s1') // term 3
  return net
}

t.test('Figure 8: an old-term entry on a majority is not committed, and may be overwritten', async t => {
  const net = figure8()
  const s1 = net.node('s1')
  t.equal(s1.raft.role, 'leader')
  t.equal(s1.raft.term, 3)
  for (const id of ['s1', 's2', 's3']) t.equal(net.node(id).raft.raftLog.term(2), 1, `${id} stores index 2 of term 1`)
  t.equal(s1.raft.raftLog.committed, 1, '§5.4.2: stored on a majority but not committed')
  // (d) S1 crashes; S5 (last term 2) wins with S2, S3, S4 and overwrites index 2.
  net.heal()
  net.isolate('s1')
  net.node('s1').restart()
  net.campaign('s5') // term 3: rejected, they voted for S1
  if (net.node('s5').raft.role !== 'leader') net.campaign('s5')
  t.equal(net.node('s5').raft.role, 'leader')
  net.propose('s5', 'C')
  for (const id of ['s2', 's3', 's4', 's5']) {
    t.equal(net.node(id).raft.raftLog.term(2), 2, `${id}: index 2 overwritten with term 2`)
    t.same(appliedData(net.node(id)), ['B', 'C'], `${id}: 'A' was never applied`)
  }
})

t.test('Figure 8 (e): once an entry of the leader\'s term is on a majority, the old entry is committed', async t => {
  const net = figure8()
  net.rewrite = undefined
  net.isolate('s5')
  net.tick(1, ['s1'])
  const s1 = net.node('s1')
  t.equal(s1.raft.raftLog.committed, 3, 'term-3 entry commits, and index 2 with it')
  t.same(appliedData(s1), ['A'])
  net.heal()
  net.isolate('s1')
  net.node('s1').restart()
  for (let i = 0; i < 3; i++) net.campaign('s5')
  t.not(net.node('s5').raft.role, 'leader', 'S5 can no longer win: its log is behind a majority')
})

t.test('PreVote keeps a partitioned node from disrupting a healthy leader', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  const term = net.node('a').raft.term
  net.isolate('c')
  net.tick(100, ['c'])
  t.equal(net.node('c').raft.term, term, 'pre-votes fail, so c never raises its term')
  t.equal(net.node('c').raft.role, 'precandidate')
  net.heal()
  net.tick(5)
  t.same(net.leaders(), ['a'], 'a still leads')
  t.equal(net.node('a').raft.term, term, 'in the same term')
  t.equal(net.node('c').raft.lead, 'a', 'c rejoins as follower')
})

t.test('without PreVote the same partitioned node disrupts the leader', async t => {
  const net = new Network(['a', 'b', 'c'], { preVote: false, checkQuorum: false })
  net.campaign('a')
  const term = net.node('a').raft.term
  net.isolate('c')
  net.tick(100, ['c'])
  t.ok(net.node('c').raft.term > term + 3, 'c raised its term again and again')
  net.heal()
  net.tick(25)
  t.ok(net.node('a').raft.term > term + 3, 'everyone was dragged to the higher term')
  t.not(net.node('a').raft.term, term, 'the leader of the old term was deposed')
})

t.test('CheckQuorum: a leader cut off from the quorum steps down', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.isolate('a')
  const electionTick = net.node('a').raft.electionTimeout
  // The followers answered within the first timeout; the second check finds no one.
  net.tick(2 * electionTick, ['a'])
  t.equal(net.node('a').raft.role, 'follower', 'steps down within two election timeouts without a quorum')
  const leader = net.tickUntilLeader(200, ['b', 'c'])
  t.ok(['b', 'c'].includes(leader))
  t.throws(() => net.node('a').rn.propose(enc('x')), ErrProposalDropped, 'the cut-off node accepts no writes')
})

t.test('CheckQuorum: followers with a live leader ignore vote requests (leader lease)', async t => {
  const net = new Network(['a', 'b', 'c'], { preVote: false })
  net.campaign('a')
  const term = net.node('a').raft.term
  // c becomes a candidate directly (no pre-vote): b hears from a, so it ignores c.
  net.node('c').rn.campaign()
  net.settle()
  t.same(net.leaders(), ['a'])
  t.equal(net.node('b').raft.term, term, 'b did not adopt the disruptive term')
})

t.test('a partial partition leaves a stable leader (PreVote + CheckQuorum)', async t => {
  // Cloudflare, Nov 2020: b cannot reach a, everything else is fine.
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.cut.add('a->b'); net.cut.add('b->a')
  net.tick(200)
  const leaders = net.leaders()
  t.equal(leaders.length, 1, 'one leader')
  const terms = new Set([...net.nodes.values()].map(n => n.raft.term))
  t.ok(Math.max(...terms) <= net.node(leaders[0]!).raft.term + 1, 'terms do not run away')
  net.propose('c', 'x')
  t.same(appliedData(net.node('c')), ['x'], 'writes still commit')
})

t.test('ReadIndex on a new leader: no read is served until its first entry commits', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.dropTypes.add('App')
  net.campaign('a')
  const a = net.node('a')
  t.equal(a.raft.role, 'leader')
  t.equal(a.raft.raftLog.committed, 0, 'the empty entry is not committed')
  a.rn.readIndex(enc('r1'))
  net.tick(3)
  t.same(a.readStates, [], 'no read state while nothing of its term is committed')
  net.heal()
  net.tick(1)
  t.equal(a.raft.raftLog.committed, 1)
  t.equal(a.readStates.length, 1, 'released after the commit and a heartbeat quorum')
  t.same(a.readStates[0], { index: 1, context: enc('r1') })
})

t.test('ReadIndex: the leader confirms with a heartbeat quorum; followers forward to it', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.propose('a', 'x')
  const a = net.node('a')
  a.rn.readIndex(enc('r2'))
  net.settle()
  t.same(a.readStates.map(r => r.index), [2], 'leader: read at its commit index')
  const c = net.node('c')
  c.rn.readIndex(enc('r3'))
  net.settle()
  t.equal(c.readStates.length, 1, 'follower: read state from the leader')
  t.equal(c.readStates[0]!.index, 2)
  t.same(c.readStates[0]!.context, enc('r3'))
})

t.test('ReadIndex: a partitioned old leader serves no stale read', async t => {
  const net = new Network(['a', 'b', 'c'], { checkQuorum: false })
  net.campaign('a')
  net.partition(['a'], ['b', 'c'])
  net.campaign('b')
  net.propose('b', 'new')
  const a = net.node('a')
  t.equal(a.raft.role, 'leader', 'a still believes it leads (CheckQuorum off)')
  a.rn.readIndex(enc('stale'))
  net.tick(5, ['a'])
  t.same(a.readStates, [], 'no quorum answers its heartbeats: no read')
})

t.test('ReadIndex on a single-voter cluster is answered at once', async t => {
  const net = new Network(['a'])
  net.campaign('a')
  net.propose('a', 'x')
  net.node('a').rn.readIndex(enc('r'))
  net.settle()
  t.same(net.node('a').readStates.map(r => r.index), [2])
})

t.test('proposal forwarding: a follower forwards to the leader; without a leader it drops', async t => {
  const net = new Network(['a', 'b', 'c'])
  const c = net.node('c')
  t.throws(() => c.rn.propose(enc('lost')), ErrProposalDropped, 'no leader: dropped')
  t.equal(c.rn.status().droppedProposals, 1, 'and counted')
  net.campaign('a')
  net.propose('c', 'y')
  for (const id of ['a', 'b', 'c']) t.same(appliedData(net.node(id)), ['y'], `${id} applied the forwarded proposal`)
  // A forwarded proposal that the leader refuses (transfer in progress) is counted there.
  net.cut.add('a->b')
  net.node('a').rn.transferLeader('b')
  net.settle()
  net.propose('c', 'z')
  t.equal(net.node('a').rn.status().droppedProposals, 1, 'leader dropped the forwarded proposal')
  try {
    net.node('a').rn.propose(enc('z'))
    t.fail('should throw')
  } catch (err) {
    t.ok(isRaftError(err, 'RAFT_PROPOSAL_DROPPED'))
  }
})

t.test('a leader that crashes and restarts rejoins as follower with its log', async t => {
  const net = new Network(['a', 'b', 'c'])
  net.campaign('a')
  net.propose('a', 'x')
  net.isolate('a')
  net.node('a').restart()
  const leader = net.tickUntilLeader(200, ['b', 'c'])
  net.propose(leader, 'y')
  net.heal()
  net.tick(3)
  t.same(appliedData(net.node('a')), ['x', 'y'])
  t.equal(net.node('a').raft.lead, leader)
})

t.test('a node whose disk was wiped and that rejoins under its old id does not vote', async t => {
  // RethinkDB 2.2.3: a wiped node forgot its vote and could elect a second leader in a term.
  const net = new Network(['a', 'b', 'c'], { preVote: false, checkQuorum: false })
  net.campaign('a')
  net.propose('a', 'x')
  net.isolate('c')
  const wiped = net.addEmpty('c') // same id, empty disk, no configuration
  net.heal()
  wiped.rn.step({ type: 'Vote', from: 'b', to: 'c', term: 9, logTerm: 1, index: 2, commit: 0, entries: [], reject: false, rejectHint: 0 })
  const resp = wiped.handleReady().find(m => m.type === 'VoteResp')
  t.ok(resp?.reject, 'refuses to vote without a configuration of its own')
  net.tick(5, ['a', 'b'])
  t.same(net.leaders(), ['a'])
  t.same(appliedData(net.node('a')), ['x'])
})
