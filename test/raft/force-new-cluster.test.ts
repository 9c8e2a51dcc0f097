/**
 * (Raft cores in the test network, test/raft/network.ts) cluster/force-new-cluster.ts on a
 * survivor's log: a 3-voter cluster where the survivor lags and holds an entry it never learned
 * was committed; the force appends one removal per other member and commits them; restarted,
 * the survivor applies them, is the only voter, elects itself and commits alone, keeps every
 * entry it held, and drops the old members' messages for good. A second force changes nothing;
 * a non-voter cannot be forced; a marker whose entries never reached the log is told apart.
 */
import t from 'tap'
import { Network, appliedData } from './network.js'
import { confAtEnd, forceNewCluster, landed } from '../../cluster/force-new-cluster.js'

function survivorScenario (): Network {
  const net = new Network(['a', 'b', 'c'], { bootstrap: true })
  net.campaign('a')
  net.propose('a', 'x1')
  net.propose('a', 'x2')
  // c gets the next entry but never hears that it was committed: commit-only appends and
  // heartbeats to c are lost, then c is cut off while a and b go on.
  net.filter = (m) => !(m.to === 'c' && (m.type === 'Heartbeat' || (m.type === 'App' && m.entries.length === 0)))
  net.propose('a', 'tail')
  net.filter = undefined
  net.isolate('c')
  net.propose('a', 'x3')
  return net
}

t.test('the survivor alone: its entries kept and committed, the others removed for good', async (t) => {
  const net = survivorScenario()
  const c = net.node('c')
  const last = c.storage.lastIndex()
  t.ok(c.storage.initialState().hardState.commit < last, 'c holds an entry it never learned was committed')
  t.same(confAtEnd(c.storage).voters, ['a', 'b', 'c'])

  const r = await forceNewCluster(c.storage, 'c')
  t.same(r.removed, ['a', 'b'])
  t.equal(r.index, last + 1)
  t.equal(c.storage.lastIndex(), last + 2, 'one configuration entry per removed member')
  t.equal(c.storage.initialState().hardState.commit, last + 2, 'committed up to them')
  t.same(confAtEnd(c.storage).voters, ['c'])
  t.ok(landed(c.storage, { at: '', term: r.term, index: r.index, removed: r.removed, recorded: false }))

  // A restart (what `serve` does next): the core applies the removals and leads alone.
  c.restart()
  c.handleReady()
  t.same(c.rn.status().conf.voters, ['c'], 'the only voter once applied')
  t.same(c.rn.status().conf.removed, ['a', 'b'], 'the others are removed for good')
  t.same(appliedData(c), ['x1', 'x2', 'tail'], 'every entry it held is applied, the uncommitted one too')
  net.tick(30, ['c'])
  t.equal(c.rn.status().role, 'leader', 'it elects itself')
  net.propose('c', 'after')
  t.same(appliedData(c).slice(-1), ['after'], 'and commits alone')

  // The old leader comes back (it should not exist; its messages are dropped anyway).
  net.heal()
  net.propose('a', 'from-the-old-cluster')
  t.notOk(appliedData(c).includes('from-the-old-cluster'), 'nothing from a removed member is accepted')
  t.equal(c.rn.status().role, 'leader')

  // Forcing again (the flag left on a restart) finds a cluster of one: nothing is written.
  const before = c.storage.lastIndex()
  const again = await forceNewCluster(c.storage, 'c')
  t.same(again.removed, [])
  t.equal(c.storage.lastIndex(), before)
  c.restart()
  c.handleReady()
  t.same(c.rn.status().conf.voters, ['c'], 'a restart after the force re-applies nothing else')
})

t.test('refused on a node that is not a voter; an interrupted force is told apart', async (t) => {
  const net = survivorScenario()
  const c = net.node('c')
  await t.rejects(forceNewCluster(c.storage, 'z'), /is not a voter of its cluster's configuration/)
  const last = c.storage.lastIndex()
  t.notOk(landed(c.storage, { at: '', term: 1, index: last + 1, removed: ['a', 'b'], recorded: false }), 'a marker written, the log not: nothing was forced')
})
