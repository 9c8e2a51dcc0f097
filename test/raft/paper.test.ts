// Paper tests: one per rule of the Raft paper (Ongaro & Ousterhout, "In Search of an
// Understandable Consensus Algorithm"), named after its section, after etcd's raft_paper_test.go.
import t from 'tap'
import { Network, TestNode, appliedData, enc, msg } from './network.js'
import { MemoryLogDisk } from '../../storage/raftlog/memory-log-storage.js'
import { ENTRY_NORMAL, type Entry, type Message } from '../../cluster/raft/types.js'

const ids = ['a', 'b', 'c']

/** A lone core over a disk with the given log and voters; its Ready is not processed. */
function core (id: string, voters: string[], opts: { term?: number, log?: Array<[number, number]>, preVote?: boolean, checkQuorum?: boolean, seed?: number } = {}): TestNode {
  const disk = new MemoryLogDisk()
  disk.snap = { meta: { index: 0, term: 0, conf: { voters, learners: [] } }, data: new Uint8Array(0) }
  disk.live = (opts.log ?? []).map(([index, term]) => ({ index, term, type: ENTRY_NORMAL, data: enc(`${index}/${term}`) }))
  disk.hardState = { term: opts.term ?? 0, vote: null, commit: 0 }
  return new TestNode(id, disk, { preVote: opts.preVote ?? false, checkQuorum: opts.checkQuorum ?? false }, opts.seed ?? 1)
}

/** Persist and apply the node's Ready; return the messages it would send. */
function take (n: TestNode): Message[] {
  return n.handleReady()
}

function ents (...pairs: Array<[number, number]>): Entry[] {
  return pairs.map(([index, term]) => ({ index, term, type: ENTRY_NORMAL, data: enc(`${index}/${term}`) }))
}

t.test('§5.1 a node that sees a higher term adopts it and becomes a follower', async t => {
  for (const role of ['follower', 'candidate', 'leader'] as const) {
    const n = core('a', ids)
    if (role === 'candidate') n.rn.campaign()
    if (role === 'leader') {
      n.rn.campaign()
      n.rn.step(msg({ type: 'VoteResp', from: 'b', to: 'a', term: 1 }))
    }
    t.equal(n.raft.role, role)
    n.rn.step(msg({ type: 'App', from: 'b', to: 'a', term: 5 }))
    t.equal(n.raft.term, 5, `${role} adopts the term`)
    t.equal(n.raft.role, 'follower', `${role} becomes follower`)
    t.equal(n.raft.lead, 'b')
  }
})

t.test('§5.1 a node rejects a request with a stale term', async t => {
  const n = core('a', ids, { term: 3 })
  n.rn.step(msg({ type: 'App', from: 'b', to: 'a', term: 2, index: 0, logTerm: 0, entries: ents([1, 2]) }))
  t.equal(n.raft.raftLog.lastIndex(), 0, 'stale append ignored')
  t.equal(n.raft.term, 3)
  n.rn.step(msg({ type: 'Vote', from: 'b', to: 'a', term: 2, index: 5, logTerm: 2 }))
  t.equal(n.raft.vote, null, 'stale vote request ignored')
})

t.test('§5.2 a follower starts an election after its election timeout', async t => {
  const n = core('a', ids)
  const timeout = n.raft.randomizedElectionTimeout
  for (let i = 0; i < timeout - 1; i++) n.rn.tick()
  t.equal(n.raft.role, 'follower')
  n.rn.tick()
  t.equal(n.raft.role, 'candidate')
  t.equal(n.raft.term, 1, 'term incremented')
  t.equal(n.raft.vote, 'a', 'voted for itself')
  const votes = take(n).filter(m => m.type === 'Vote')
  t.same(votes.map(m => m.to).sort(), ['b', 'c'], 'asks every other voter')
  t.ok(votes.every(m => m.term === 1))
})

t.test('§5.2 with PreVote a follower first asks for pre-votes without raising its term', async t => {
  const n = core('a', ids, { preVote: true })
  for (let i = 0; i < n.raft.randomizedElectionTimeout; i++) n.rn.tick()
  t.equal(n.raft.role, 'precandidate')
  t.equal(n.raft.term, 0, 'term unchanged')
  const pv = take(n).filter(m => m.type === 'PreVote')
  t.equal(pv.length, 2)
  t.ok(pv.every(m => m.term === 1), 'pre-vote names the next term')
  n.rn.step(msg({ type: 'PreVoteResp', from: 'b', to: 'a', term: 1 }))
  t.equal(n.raft.role, 'candidate', 'real election after a pre-vote quorum')
  t.equal(n.raft.term, 1)
})

t.test('§5.2 a leader sends heartbeats every heartbeat interval', async t => {
  const n = core('a', ids)
  n.rn.campaign()
  n.rn.step(msg({ type: 'VoteResp', from: 'b', to: 'a', term: 1 }))
  take(n)
  n.rn.tick()
  const hb = take(n).filter(m => m.type === 'Heartbeat')
  t.same(hb.map(m => m.to).sort(), ['b', 'c'])
  t.ok(hb.every(m => m.term === 1 && m.commit === 0))
})

t.test('§5.2 election outcomes: win, lose or stay candidate', async t => {
  const cases: Array<{ size: number, votes: Record<string, boolean>, role: string }> = [
    { size: 1, votes: {}, role: 'leader' },
    { size: 3, votes: { b: true, c: true }, role: 'leader' },
    { size: 3, votes: { b: true }, role: 'leader' },
    { size: 5, votes: { b: true, c: true }, role: 'leader' },
    { size: 5, votes: { b: true }, role: 'candidate' },
    { size: 5, votes: { b: false, c: false }, role: 'candidate' },
    { size: 3, votes: { b: false, c: false }, role: 'follower' },
    { size: 5, votes: { b: false, c: false, d: false }, role: 'follower' },
    { size: 3, votes: {}, role: 'candidate' }
  ]
  for (const c of cases) {
    const voters = ['a', 'b', 'c', 'd', 'e'].slice(0, c.size)
    const n = core('a', voters)
    n.rn.campaign()
    for (const [from, granted] of Object.entries(c.votes)) {
      n.rn.step(msg({ type: 'VoteResp', from, to: 'a', term: 1, reject: !granted }))
    }
    t.equal(n.raft.role, c.role, `${c.size} voters, ${JSON.stringify(c.votes)}`)
    t.equal(n.raft.term, 1)
  }
})

t.test('§5.2 a follower votes for at most one candidate per term, first come first served', async t => {
  const n = core('a', ids)
  n.rn.step(msg({ type: 'Vote', from: 'b', to: 'a', term: 1 }))
  n.rn.step(msg({ type: 'Vote', from: 'c', to: 'a', term: 1 }))
  n.rn.step(msg({ type: 'Vote', from: 'b', to: 'a', term: 1 }))
  const resps = take(n).filter(m => m.type === 'VoteResp')
  t.same(resps.map(m => [m.to, m.reject]), [['b', false], ['c', true], ['b', false]])
  t.equal(n.raft.vote, 'b')
})

t.test('§5.2 a candidate that hears from a leader of its term becomes a follower', async t => {
  const n = core('a', ids)
  n.rn.campaign()
  t.equal(n.raft.role, 'candidate')
  n.rn.step(msg({ type: 'App', from: 'b', to: 'a', term: 1 }))
  t.equal(n.raft.role, 'follower')
  t.equal(n.raft.lead, 'b')
  t.equal(n.raft.term, 1)
})

t.test('§5.2 election timeouts are randomized in [electionTick, 2*electionTick)', async t => {
  const seen = new Set<number>()
  for (let seed = 1; seed <= 200; seed++) {
    const n = core('a', ids, { seed })
    let ticks = 0
    while (n.raft.role === 'follower') { n.rn.tick(); ticks++ }
    t.ok(ticks >= 10 && ticks < 20, `timeout ${ticks} in range`)
    seen.add(ticks)
  }
  t.ok(seen.size >= 8, `timeouts are spread (${seen.size} distinct values)`)
})

t.test('§5.2 randomized timeouts make simultaneous candidates unlikely', async t => {
  let together = 0
  for (let seed = 1; seed <= 100; seed++) {
    const net = new Network(['a', 'b'], { seed, preVote: false, checkQuorum: false })
    const [x, y] = [net.node('a').raft.randomizedElectionTimeout, net.node('b').raft.randomizedElectionTimeout]
    if (x === y) together++
  }
  t.ok(together < 30, `only ${together} of 100 pairs time out on the same tick`)
})

t.test('§5.3 the leader appends a proposal to its log and replicates it', async t => {
  const n = core('a', ids)
  n.rn.campaign()
  n.rn.step(msg({ type: 'VoteResp', from: 'b', to: 'a', term: 1 }))
  take(n)
  // The followers confirm the empty entry; their progress moves from probe to replicate.
  n.rn.step(msg({ type: 'AppResp', from: 'b', to: 'a', term: 1, index: 1 }))
  n.rn.step(msg({ type: 'AppResp', from: 'c', to: 'a', term: 1, index: 1 }))
  take(n)
  n.rn.propose(enc('x'))
  const apps = take(n).filter(m => m.type === 'App')
  t.same(apps.map(m => m.to).sort(), ['b', 'c'])
  for (const m of apps) {
    t.equal(m.entries.length, 1)
    t.equal(m.entries[0]!.index, 2)
    t.equal(m.entries[0]!.term, 1)
  }
  t.equal(n.raft.raftLog.lastIndex(), 2)
  t.equal(n.raft.raftLog.committed, 1, 'not committed before a quorum has it')
})

t.test('§5.3 the leader commits an entry once a majority stores it, and tells the followers', async t => {
  const net = new Network(ids, { preVote: false, checkQuorum: false })
  net.campaign('a')
  net.cut.add('a->c')
  net.propose('a', 'x')
  t.equal(net.node('a').raft.raftLog.committed, 2, 'a and b are a majority')
  t.same(appliedData(net.node('a')), ['x'])
  t.same(appliedData(net.node('b')), ['x'], 'b learns the commit index')
  t.same(appliedData(net.node('c')), [])
  net.cut.clear()
  net.tick(1)
  t.same(appliedData(net.node('c')), ['x'], 'c catches up')
})

t.test('§5.3 committing an entry commits all preceding entries, including those of earlier leaders', async t => {
  const net = new Network(ids, { preVote: false, checkQuorum: false })
  net.campaign('a')
  // b and c store 'p', but a never hears it: 'p' stays uncommitted in term 1.
  net.filter = m => !(m.type === 'AppResp' && m.to === 'a')
  net.node('a').rn.propose(enc('p'))
  net.settle()
  t.equal(net.node('a').raft.raftLog.committed, 1)
  net.heal()
  net.isolate('a')
  net.campaign('b')
  t.equal(net.node('b').raft.role, 'leader')
  t.equal(net.node('b').raft.term, 2)
  t.same(appliedData(net.node('b')), ['p'], 'the empty entry of term 2 commits p with it')
  t.same(appliedData(net.node('c')), ['p'])
})

t.test('§5.3 a follower applies committed entries in log order', async t => {
  const net = new Network(ids)
  net.campaign('a')
  for (const x of ['1', '2', '3', '4']) net.propose('a', x)
  for (const id of ids) t.same(appliedData(net.node(id)), ['1', '2', '3', '4'], id)
})

t.test('§5.3 a follower rejects an append whose previous entry does not match', async t => {
  const n = core('a', ids, { term: 2, log: [[1, 1], [2, 2]] })
  n.rn.step(msg({ type: 'App', from: 'b', to: 'a', term: 2, index: 2, logTerm: 3, entries: ents([3, 3]) }))
  const r = take(n).find(m => m.type === 'AppResp')!
  t.ok(r.reject, 'rejects on term mismatch')
  t.equal(n.raft.raftLog.lastIndex(), 2)
  n.rn.step(msg({ type: 'App', from: 'b', to: 'a', term: 2, index: 3, logTerm: 2, entries: ents([4, 2]) }))
  const r2 = take(n).find(m => m.type === 'AppResp')!
  t.ok(r2.reject, 'rejects a gap')
  t.equal(r2.rejectHint, 2, 'hints its last index')
  n.rn.step(msg({ type: 'App', from: 'b', to: 'a', term: 2, index: 2, logTerm: 2, entries: ents([3, 2]), commit: 3 }))
  const r3 = take(n).find(m => m.type === 'AppResp')!
  t.notOk(r3.reject)
  t.equal(r3.index, 3)
  t.equal(n.raft.raftLog.committed, 3)
})

t.test('§5.3 follower truncates conflicting entries', async t => {
  const n = core('a', ids, { term: 3, log: [[1, 1], [2, 2], [3, 2], [4, 2]] })
  n.rn.step(msg({ type: 'App', from: 'b', to: 'a', term: 3, index: 2, logTerm: 2, entries: ents([3, 3], [4, 3], [5, 3]) }))
  take(n)
  t.same(n.raft.raftLog.allEntries().map(e => [e.index, e.term]), [[1, 1], [2, 2], [3, 3], [4, 3], [5, 3]])
  // A delayed, shorter append that matches must not truncate what came after it.
  n.rn.step(msg({ type: 'App', from: 'b', to: 'a', term: 3, index: 2, logTerm: 2, entries: ents([3, 3]) }))
  take(n)
  t.equal(n.raft.raftLog.lastIndex(), 5, 'matching prefix kept, nothing truncated')
})

t.test('§5.3 the leader brings every follower log into agreement (Figure 7)', async t => {
  // Figure 7: the leader at term 8 and followers (a)-(f). X holds the leader's log and votes for it.
  const leaderLog: Array<[number, number]> = [[1, 1], [2, 1], [3, 1], [4, 4], [5, 4], [6, 5], [7, 5], [8, 6], [9, 6], [10, 6]]
  const followers: Array<Array<[number, number]>> = [
    [[1, 1], [2, 1], [3, 1], [4, 4], [5, 4], [6, 5], [7, 5], [8, 6], [9, 6]],
    [[1, 1], [2, 1], [3, 1], [4, 4]],
    [[1, 1], [2, 1], [3, 1], [4, 4], [5, 4], [6, 5], [7, 5], [8, 6], [9, 6], [10, 6], [11, 6]],
    [[1, 1], [2, 1], [3, 1], [4, 4], [5, 4], [6, 5], [7, 5], [8, 6], [9, 6], [10, 6], [11, 7], [12, 7]],
    [[1, 1], [2, 1], [3, 1], [4, 4], [5, 4], [6, 4], [7, 4]],
    [[1, 1], [2, 1], [3, 1], [4, 2], [5, 2], [6, 2], [7, 3], [8, 3], [9, 3], [10, 3], [11, 3]]
  ]
  for (const [i, flog] of followers.entries()) {
    const net = new Network([], { preVote: false, checkQuorum: false })
    const voters = ['L', 'F', 'X']
    net.nodes.set('L', core('L', voters, { term: 7, log: leaderLog }))
    net.nodes.set('X', core('X', voters, { term: 7, log: leaderLog }))
    const F = core('F', voters, { term: 7, log: flog })
    net.nodes.set('F', F)
    const L = net.node('L')
    L.rn.campaign() // term 8
    net.settle()
    t.equal(L.raft.role, 'leader', `case ${i}: leader elected`)
    net.propose('L', 'x')
    const want = L.raft.raftLog.allEntries().map(e => [e.index, e.term])
    t.same(F.raft.raftLog.allEntries().map(e => [e.index, e.term]), want, `case ${i}: follower matches`)
  }
})

t.test('§5.3 fast backtracking skips a whole conflicting term per round trip', async t => {
  const leaderLog: Array<[number, number]> = [[1, 1], [2, 1], [3, 1], [4, 4], [5, 4], [6, 5], [7, 5], [8, 6], [9, 6], [10, 6]]
  // Case (f): 7 conflicting entries of terms 2 and 3.
  const flog: Array<[number, number]> = [[1, 1], [2, 1], [3, 1], [4, 2], [5, 2], [6, 2], [7, 3], [8, 3], [9, 3], [10, 3], [11, 3]]
  const net = new Network(['L', 'F'], { preVote: false, checkQuorum: false })
  net.nodes.set('L', core('L', ['L', 'F'], { term: 7, log: leaderLog }))
  net.nodes.set('F', core('F', ['L', 'F'], { term: 7, log: flog }))
  net.node('L').rn.campaign()
  net.trace = []
  net.settle()
  const rejects = net.trace.filter(m => m.type === 'AppResp' && m.reject).length
  t.ok(rejects <= 3, `converged after ${rejects} rejections (one per term, not one per entry)`)
  t.same(net.node('F').raft.raftLog.allEntries().map(e => e.term), net.node('L').raft.raftLog.allEntries().map(e => e.term))
})

t.test('§5.4.1 a voter rejects a candidate whose log is less up to date', async t => {
  const cases: Array<{ index: number, logTerm: number, grant: boolean }> = [
    { index: 2, logTerm: 2, grant: true },
    { index: 3, logTerm: 2, grant: true },
    { index: 1, logTerm: 2, grant: false },
    { index: 5, logTerm: 1, grant: false },
    { index: 1, logTerm: 3, grant: true }
  ]
  for (const c of cases) {
    const n = core('a', ids, { term: 2, log: [[1, 1], [2, 2]] })
    n.rn.step(msg({ type: 'Vote', from: 'b', to: 'a', term: 3, index: c.index, logTerm: c.logTerm }))
    const r = take(n).find(m => m.type === 'VoteResp')!
    t.equal(!r.reject, c.grant, `candidate (${c.index}, ${c.logTerm})`)
  }
})

t.test('§5.4.1 a leader never overwrites or deletes its own entries', async t => {
  const n = core('a', ids, { term: 1, log: [[1, 1]] })
  n.rn.campaign()
  n.rn.step(msg({ type: 'VoteResp', from: 'b', to: 'a', term: 2 }))
  t.equal(n.raft.role, 'leader')
  const before = n.raft.raftLog.allEntries().map(e => [e.index, e.term])
  // An append at the leader's own term from someone else is ignored (it is the only leader).
  n.rn.step(msg({ type: 'AppResp', from: 'b', to: 'a', term: 2, index: 0, reject: true }))
  n.rn.propose(enc('x'))
  const after = n.raft.raftLog.allEntries().map(e => [e.index, e.term])
  t.same(after.slice(0, before.length), before)
  t.equal(after.length, before.length + 1)
})

t.test('§5.4.2 leader only commits entries from its current term', async t => {
  // The leader of term 3 holds an entry of term 1 that a majority stores: that alone is not
  // enough to commit it (Figure 8); it commits once an entry of term 3 reaches a majority.
  const n = core('a', ids, { term: 2, log: [[1, 1], [2, 1]] })
  n.rn.campaign()
  n.rn.step(msg({ type: 'VoteResp', from: 'b', to: 'a', term: 3 }))
  t.equal(n.raft.role, 'leader')
  take(n)
  n.rn.step(msg({ type: 'AppResp', from: 'b', to: 'a', term: 3, index: 2 }))
  t.equal(n.raft.raftLog.committed, 0, 'a majority holding index 2 (term 1) does not commit it')
  n.rn.step(msg({ type: 'AppResp', from: 'b', to: 'a', term: 3, index: 3 }))
  t.equal(n.raft.raftLog.committed, 3, 'the term-3 entry commits, and everything before it')
})

t.test('§5.4.2 a new leader appends an empty entry of its term', async t => {
  const net = new Network(ids)
  net.campaign('a')
  const log = net.node('a').raft.raftLog.allEntries()
  t.equal(log.length, 1)
  t.equal(log[0]!.term, net.node('a').raft.term)
  t.equal(log[0]!.data.byteLength, 0)
  t.equal(net.node('b').raft.raftLog.committed, 1, 'and commits it')
})

t.test('§5.5 a restarted follower keeps its term, vote and log', async t => {
  const net = new Network(ids)
  net.campaign('a')
  net.propose('a', 'x')
  const b = net.node('b')
  const before = { term: b.raft.term, vote: b.raft.vote, last: b.raft.raftLog.lastIndex() }
  b.restart()
  t.same({ term: b.raft.term, vote: b.raft.vote, last: b.raft.raftLog.lastIndex() }, before)
  net.propose('a', 'y')
  t.same(appliedData(b), ['x', 'y'], 're-applies from its disk, then continues')
})
