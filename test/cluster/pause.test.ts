/**
 * A node cut off for 30 s catches up after the heal. Without a fault-injection hook in the
 * product the cut is SIGSTOP/SIGCONT: the process is frozen (no timers, no sockets served),
 * which the others see as a partition of that node, while pushes go on elsewhere.
 *   1. A follower is frozen: the other two keep committing; after SIGCONT the follower
 *      applies everything, serves every image, gets every blob, and does not disturb the
 *      leader (PreVote: the term does not move).
 *   2. The leader is frozen: the other two elect a new one and keep committing; after
 *      SIGCONT the old leader steps down and catches up.
 */
import t from 'tap'
import {
  checkImage, hasBlobOnDisk, pushWorkload, sleep, startTestCluster, waitFor,
  type ClusterNode, type PushRecord, type TestCluster,
} from '../helpers/cluster.js'

const PAUSE_MS = 30_000

const c = await startTestCluster(t, { size: 3 })

/** Freeze `node` for PAUSE_MS while 3 clients push to the others; returns the acknowledged pushes. */
async function pushWhilePaused (c: TestCluster, node: ClusterNode, prefix: string): Promise<{ acked: PushRecord[]; failed: PushRecord[] }> {
  const others = c.live().filter((n) => n !== node)
  const load = pushWorkload({ clients: 3, creds: c.credentials, targets: () => others.map((n) => ({ url: n.url, name: n.name })), repoPrefix: prefix, timeoutMs: 20_000, pauseMs: 200 })
  node.pause()
  try {
    await sleep(PAUSE_MS)
  } finally {
    await load.stop()
  }
  return { acked: load.records.filter((r) => r.result.outcome === 'ok'), failed: load.records.filter((r) => r.result.outcome !== 'ok') }
}

async function servesAll (node: ClusterNode, acked: PushRecord[]): Promise<string[]> {
  const problems: string[] = []
  for (let i = 0; i < acked.length; i += 8) {
    const batch = await Promise.all(acked.slice(i, i + 8).map(async (r) => await checkImage(node.url, c.credentials, r.repo, r.img, r.tag)))
    problems.push(...batch.flat())
  }
  return problems
}

t.test('a follower frozen for 30 s catches up after SIGCONT without disturbing the leader', async (t) => {
  const leader = await c.leader()
  const follower = c.live().find((n) => n !== leader)!
  const termBefore = (await c.status(leader)).term
  t.teardown(() => { if (follower.paused) follower.resume() })

  const { acked, failed } = await pushWhilePaused(c, follower, 'pause/follower')
  t.ok(acked.length >= 10, `${acked.length} pushes acknowledged by the other two while ${follower.name} was frozen (${failed.length} not)`)
  for (const f of failed.slice(0, 5)) t.comment(`  not acknowledged: ${f.node} ${f.repo}:${f.tag} ${f.result.status ?? ''} ${f.result.error ?? ''}`)
  t.equal(failed.length, 0, 'a frozen follower does not make pushes fail')
  const lagging = await c.status(leader)
  const lag = lagging.members.find((m) => m.peerId === follower.peerId)?.lag
  t.ok(lag !== null && lag !== undefined && lag > 0, `the leader sees the frozen follower lag behind (${lag} entries)`)

  const resumedAt = Date.now()
  follower.resume()
  await c.converged({ voters: 3, timeoutMs: 60_000 })
  t.comment(`${follower.name} caught up ${Date.now() - resumedAt} ms after SIGCONT`)
  const after = await c.status(leader)
  t.equal(after.leader, leader.peerId, 'the leader is still the leader')
  t.equal(after.term, termBefore, 'and the term did not move (PreVote kept the returning node from disrupting it)')
  t.same((await servesAll(follower, acked)).slice(0, 20), [], `${follower.name} serves all ${acked.length} images pushed while it was frozen`)
  // Background replication brings every blob to its own disk.
  const digests = acked.flatMap((r) => [r.img.config.digest, ...r.img.layers.map((l) => l.digest)])
  const missing = await waitFor('every blob on the returning node\'s disk', async () => {
    const m: string[] = []
    for (const d of digests) if (!await hasBlobOnDisk(follower.dataDir, d)) m.push(d)
    return m.length === 0 ? m : undefined
  }, 60_000, 500).catch(async () => {
    const m: string[] = []
    for (const d of digests) if (!await hasBlobOnDisk(follower.dataDir, d)) m.push(d)
    return m
  })
  t.same(missing.slice(0, 5), [], `all ${digests.length} blobs were copied to ${follower.name}`)
})

t.test('a leader frozen for 30 s is replaced; after SIGCONT it steps down and catches up', async (t) => {
  const leader = await c.leader()
  const termBefore = (await c.status(leader)).term
  t.teardown(() => { if (leader.paused) leader.resume() })
  const others = c.live().filter((n) => n !== leader)

  const { acked, failed } = await pushWhilePaused(c, leader, 'pause/leader')
  t.ok(acked.length >= 10, `${acked.length} pushes acknowledged while the old leader ${leader.name} was frozen (${failed.length} not, during the election)`)
  const newLeader = await c.leader(15_000, others)
  t.not(newLeader, leader, `${newLeader.name} took over`)
  const termDuring = (await c.status(newLeader)).term
  t.ok(termDuring > termBefore, 'in a later term')

  const resumedAt = Date.now()
  leader.resume()
  await c.converged({ voters: 3, timeoutMs: 60_000 })
  t.comment(`${leader.name} caught up ${Date.now() - resumedAt} ms after SIGCONT`)
  const st = await c.status(leader)
  t.equal(st.leader, newLeader.peerId, 'the old leader follows the new one')
  t.equal(st.role, 'follower', 'as a follower')
  t.equal(st.term, termDuring, 'the returning old leader did not bump the term')
  t.same((await servesAll(leader, acked)).slice(0, 20), [], `${leader.name} serves all ${acked.length} images pushed while it was frozen`)
})
