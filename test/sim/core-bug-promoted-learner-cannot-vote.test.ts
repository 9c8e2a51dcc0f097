/**
 * Core bug found by the simulation (seeds 14 and 678 of `npm run sim`, node replacement; since
 * fixed in the core, so this stays as a regression test): a node refused to vote unless it was
 * a voter in its own configuration
 * (raft.ts, step(): `canVote && this.voters.has(this.id) && ...`). A learner that was promoted
 * while it was cut off (or crashed before persisting the promotion) does not know it is a
 * voter, yet the others count on its vote. Once the leader was gone, no quorum could form: the
 * cluster had no leader forever, and the learner could never learn its promotion.
 *
 * etcd lets learners vote (raft.go, MsgVote: "it turns out that learners must be allowed to
 * cast votes... in the situation in which a learner has been promoted (i.e. is now a voter)
 * but has not learned about this yet"), which is safe because ids are never reused (raft.md):
 * a wiped node rejoins under a new id, so it cannot vote twice in a term under the same one.
 * In the sim: n3 (leader) promotes n4 while n4 is down, then n3 removes itself; n1 and n4
 * remain, n1 needs n4's vote, and n4 (a learner in its own eyes) rejects every pre-vote.
 */
import t from 'tap'
import { MemoryLogStorage } from '../../storage/raftlog/memory-log-storage.js'
import { RawNode } from '../../cluster/raft/raw-node.js'
import { SeededRand } from '../../cluster/raft/rand.js'
import type { Message } from '../../cluster/raft/types.js'

const founders = ['n1', 'n2', 'n3']

t.test('a learner promoted while cut off votes, so the new configuration can elect a leader', async t => {
  const nodes = new Map<string, RawNode>()
  const add = (id: string, i: number, bootstrap: boolean): void => {
    const rn = new RawNode({ id, storage: new MemoryLogStorage(), rand: new SeededRand(i), electionTick: 10, heartbeatTick: 1 })
    if (bootstrap) rn.bootstrap(founders)
    nodes.set(id, rn)
  }
  founders.forEach((id, i) => add(id, i + 1, true))
  const down = new Set<string>()
  /** Persist, advance, and deliver until quiet; messages from or to a down node are lost. */
  const settle = (): void => {
    for (let round = 0; round < 100; round++) {
      const out: Message[] = []
      for (const [id, rn] of nodes) {
        const storage = (rn.raft.raftLog.storage as MemoryLogStorage)
        while (rn.hasReady()) {
          const rd = rn.ready()
          if (rd.snapshot !== undefined) storage.applySnapshot(rd.snapshot)
          storage.append(rd.entries)
          if (rd.hardState !== undefined) storage.setHardState(rd.hardState)
          storage.syncNow()
          if (!down.has(id)) out.push(...rd.messages)
          rn.advance(rd)
        }
      }
      if (out.length === 0) return
      for (const m of out) if (!down.has(m.to)) nodes.get(m.to)?.step(m)
    }
  }
  const run = (ticks: number): void => {
    for (let i = 0; i < ticks; i++) {
      for (const [id, rn] of nodes) if (!down.has(id)) rn.tick()
      settle()
    }
  }
  const n1 = nodes.get('n1')!
  settle()
  n1.campaign()
  settle()
  t.equal(n1.status().role, 'leader', 'n1 leads')

  add('n4', 4, false)
  n1.proposeConfChange({ type: 'addLearner', node: 'n4' })
  run(5)
  t.same(nodes.get('n4')!.raft.confState().learners, ['n4'], 'n4 caught up as a learner')

  down.add('n4')
  n1.proposeConfChange({ type: 'promote', node: 'n4' })
  run(3)
  t.same(n1.raft.confState().voters, ['n1', 'n2', 'n3', 'n4'], 'n4 promoted (committed by n1, n2, n3)')

  // n1 dies for good and n4 comes back: n2, n3, n4 are 3 of 4 voters, a quorum.
  down.add('n1')
  down.delete('n4')
  run(300)
  const leaders = ['n2', 'n3', 'n4'].filter(id => nodes.get(id)!.status().role === 'leader')
  t.equal(leaders.length, 1, `a leader among n2, n3, n4 (n4 thinks it is a ${nodes.get('n4')!.raft.confState().voters.includes('n4') ? 'voter' : 'learner'})`)
})
