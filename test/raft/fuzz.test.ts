// Randomized runs of the core alone (the full simulator lives elsewhere): messages are
// reordered, dropped and duplicated, links cut, nodes crash and restart, logs compact.
// After every step: one leader per term, committed entries never change, commit never
// goes back, every node applies the same entry at each index. After healing: progress.
import t from 'tap'
import { Network, TestNode, enc, dec } from './network.js'
import { SeededRand } from '../../cluster/raft/rand.js'
import type { Message } from '../../cluster/raft/types.js'

interface Committed { term: number, data: string }

function run (seed: number, steps: number, membership: boolean): string | undefined {
  const ids = ['a', 'b', 'c', 'd', 'e']
  const rnd = new SeededRand(seed)
  const net = new Network(ids, { seed, snapshotChunkSize: 3, maxSizePerMsg: 16, maxInflightMsgs: 4 })
  const pool: Message[] = []
  const leaderOfTerm = new Map<number, string>()
  const committed = new Map<number, Committed>()
  const appliedAt = new Map<number, string>()
  const lastCommit = new Map<string, number>()
  const appliedCount = new Map<string, number>()
  let proposals = 0
  let newIds = 0
  /** ReadIndex requests: context → the highest commit index anywhere when it was asked. */
  const reads = new Map<string, number>()
  const readsSeen = new Map<string, number>()
  const maxCommit = () => Math.max(...[...net.nodes.values()].map(x => x.raft.raftLog.committed))

  const collect = (n: TestNode) => { for (const m of n.handleReady()) pool.push(m) }
  const check = (): string | undefined => {
    for (const n of net.nodes.values()) {
      const r = n.raft
      if (r.role === 'leader') {
        const other = leaderOfTerm.get(r.term)
        if (other !== undefined && other !== n.id) return `two leaders in term ${r.term}: ${other}, ${n.id}`
        leaderOfTerm.set(r.term, n.id)
      }
      const c = r.raftLog.committed
      if (c < (lastCommit.get(n.id) ?? 0)) return `${n.id}: commit went back from ${lastCommit.get(n.id)} to ${c}`
      lastCommit.set(n.id, c)
      for (let i = Math.max(r.raftLog.firstIndex(), 1); i <= c; i++) {
        const e = r.raftLog.slice(i, i + 1)[0]!
        const seen = committed.get(i)
        const mine = { term: e.term, data: dec(e.data) }
        if (seen === undefined) committed.set(i, mine)
        else if (seen.term !== mine.term || seen.data !== mine.data) return `${n.id}: committed entry ${i} changed`
      }
      const start = appliedCount.get(n.id) ?? 0
      for (const e of n.applied.slice(start)) {
        const prev = appliedAt.get(e.index)
        if (prev !== undefined && prev !== dec(e.data)) return `${n.id}: applied a different entry at ${e.index}`
        appliedAt.set(e.index, dec(e.data))
      }
      appliedCount.set(n.id, n.applied.length)
      for (const rs of n.readStates.slice(readsSeen.get(n.id) ?? 0)) {
        const atRequest = reads.get(dec(rs.context))
        if (atRequest !== undefined && rs.index < atRequest) return `${n.id}: stale read ${dec(rs.context)} at ${rs.index} < ${atRequest}`
      }
      readsSeen.set(n.id, n.readStates.length)
    }
    return undefined
  }

  for (let step = 0; step < steps; step++) {
    const id = ids[rnd.intn(ids.length)]!
    const n = net.node(id)
    const roll = rnd.intn(100)
    if (roll < 20) {
      n.rn.tick()
    } else if (roll < 70 && pool.length > 0) {
      const m = pool.splice(rnd.intn(pool.length), 1)[0]!
      if (!net.cut.has(`${m.from}->${m.to}`)) {
        if (rnd.intn(20) === 0) pool.push(m) // duplicate
        net.node(m.to).rn.step(m)
        collect(net.node(m.to))
      }
    } else if (roll < 72 && pool.length > 0) {
      pool.splice(rnd.intn(pool.length), 1) // drop
    } else if (roll < 84) {
      try { n.rn.propose(enc(`p${proposals++}`)) } catch { /* no leader */ }
    } else if (roll < 85) {
      net.cut.clear()
      if (rnd.intn(2) === 0) net.partition(ids.filter(() => rnd.intn(2) === 0))
    } else if (roll < 87) {
      n.restart()
      appliedCount.set(id, 0)
    } else if (roll < 89) {
      const st = n.rn.status()
      if (st.applied > n.storage.firstIndex() + 2) n.compact(enc(`snap@${st.applied}`), 1)
    } else if (roll < 90) {
      const st = n.rn.status()
      if (st.role === 'leader') n.rn.transferLeader(ids[rnd.intn(ids.length)]!)
    } else if (roll < 93) {
      const ctx = `r${step}`
      reads.set(ctx, maxCommit())
      n.rn.readIndex(enc(ctx))
    } else if (membership) {
      const st = n.rn.status()
      if (st.role === 'leader') {
        const c = st.conf
        const kind = rnd.intn(3)
        try {
          if (kind === 0 && c.voters.length > 3) {
            n.rn.proposeConfChange({ type: 'remove', node: c.voters[rnd.intn(c.voters.length)]! })
          } else if (kind === 1 && c.learners.length > 0) {
            n.rn.proposeConfChange({ type: 'promote', node: c.learners[0]! })
          } else if (kind === 2 && c.learners.length === 0) {
            const nid = `n${newIds++}`
            net.addEmpty(nid)
            ids.push(nid)
            n.rn.proposeConfChange({ type: 'addLearner', node: nid })
          }
        } catch { /* another change pending, or learner not caught up */ }
      }
    }
    collect(n)
    const err = check()
    if (err !== undefined) return `step ${step}: ${err}`
  }

  // Heal, deliver everything in order, and require progress.
  net.heal()
  net.send(...pool.splice(0))
  let leader = net.tickUntilLeader(400)
  for (let i = 0; ; i++) {
    try {
      net.propose(leader, 'final')
      break
    } catch (err) {
      // A leadership transfer may be under way: it finishes or aborts within an election timeout.
      if (i > 50) return `no leader accepts proposals: ${String(err)}`
      net.tick(1)
      leader = net.tickUntilLeader(400)
    }
  }
  // Enough for a lost snapshot to be sent again (two election timeouts).
  net.tick(30)
  const members = new Set([...net.node(leader).raft.voters, ...net.node(leader).raft.learners])
  for (const n of net.nodes.values()) {
    if (!members.has(n.id)) continue
    if (!n.applied.some(e => dec(e.data) === 'final') && n.restored.length === 0) return `${n.id} did not apply the final entry`
    if (n.raft.raftLog.committed !== net.node(leader).raft.raftLog.committed) {
      return `${n.id} did not catch up: ${JSON.stringify({ me: n.rn.status(), pr: [...net.node(leader).rn.status().progress!.entries()] })}`
    }
  }
  if (process.env.RAFT_FUZZ_DEBUG !== undefined) process.stderr.write(`seed ${seed}: conf ${JSON.stringify(net.node(leader).raft.confState())} commit ${net.node(leader).raft.raftLog.committed} term ${net.node(leader).raft.term} reads ${[...net.nodes.values()].reduce((k, x) => k + x.readStates.length, 0)}\n`)
  return check()
}

t.test('randomized runs keep the safety invariants and make progress after healing', async t => {
  const seeds = Number(process.env.RAFT_FUZZ_SEEDS ?? 40)
  let failures = 0
  for (let seed = 1; seed <= seeds; seed++) {
    let err: string | undefined
    try {
      err = run(seed, 1500, seed % 2 === 0)
    } catch (e) {
      err = `threw ${String(e)}`
    }
    if (err !== undefined) {
      failures++
      t.fail(`seed ${seed}: ${err}`)
    }
  }
  t.equal(failures, 0, `${seeds} seeds`)
})
