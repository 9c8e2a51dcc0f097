/**
 * Core bug found by the simulation (seeds 2, 4, 14, 30, 40 of `npm run sim` at the time; since
 * fixed in the core, so this stays as a regression test): a leader whose follower
 * is in replicate state with its inflight window full — because the appends filling it were
 * all lost — never sends that follower anything but heartbeats again. The follower stays
 * behind forever. etcd frees one inflight slot on a heartbeat response in this case
 * (raft.go, MsgHeartbeatResp: `if pr.State == StateReplicate && pr.Inflights.Full() {
 * pr.Inflights.FreeFirstOne() }`), so a lost window is retried once per heartbeat.
 */
import t from 'tap'
import { MemoryLogStorage } from '../../storage/raftlog/memory-log-storage.js'
import { RawNode } from '../../cluster/raft/raw-node.js'
import { SeededRand } from '../../cluster/raft/rand.js'
import type { Message } from '../../cluster/raft/types.js'

const ids = ['n1', 'n2', 'n3']

function cluster () {
  const nodes = new Map(ids.map((id, i) => {
    const storage = new MemoryLogStorage()
    const rn = new RawNode({ id, storage, rand: new SeededRand(i + 1), electionTick: 10, heartbeatTick: 1, maxInflightMsgs: 2 })
    rn.bootstrap(ids)
    return [id, { rn, storage }] as const
  }))
  /** Persist, advance, and deliver messages until quiet; `drop` decides which are lost. */
  const settle = (drop: (m: Message) => boolean = () => false): void => {
    for (let round = 0; round < 100; round++) {
      const out: Message[] = []
      for (const { rn, storage } of nodes.values()) {
        while (rn.hasReady()) {
          const rd = rn.ready()
          if (rd.snapshot !== undefined) storage.applySnapshot(rd.snapshot)
          storage.append(rd.entries)
          if (rd.hardState !== undefined) storage.setHardState(rd.hardState)
          storage.syncNow()
          out.push(...rd.messages)
          rn.advance(rd)
        }
      }
      if (out.length === 0) return
      for (const m of out) if (!drop(m)) nodes.get(m.to)!.rn.step(m)
    }
  }
  return { nodes, settle }
}

t.test('a follower whose whole inflight window of appends was lost catches up after the loss stops', async t => {
  const { nodes, settle } = cluster()
  const n1 = nodes.get('n1')!
  settle() // apply the bootstrap configuration first
  n1.rn.campaign()
  settle()
  t.equal(n1.rn.status().role, 'leader')
  n1.rn.propose(new Uint8Array([0]))
  settle() // n2 and n3 now in replicate state
  t.equal(n1.rn.status().progress?.get('n2')?.state, 'replicate')

  // Every append to n2 is lost while the leader fills its window of 2 (and more).
  for (let i = 1; i <= 3; i++) {
    n1.rn.propose(new Uint8Array([i]))
    settle(m => m.to === 'n2' && m.type === 'App')
  }
  const last = n1.rn.status().lastIndex
  t.equal(nodes.get('n3')!.storage.lastIndex(), last, 'n3 got everything')

  // The network is perfect from now on: heartbeats flow both ways for many ticks.
  for (let tick = 0; tick < 50; tick++) {
    n1.rn.tick()
    settle()
  }
  const pr = n1.rn.status().progress?.get('n2')
  t.equal(nodes.get('n2')!.storage.lastIndex(), last,
    `n2 caught up (leader sees n2: ${pr?.state} match ${pr?.match} next ${pr?.next} inflight ${pr?.inflight} paused ${pr?.paused})`)
})
