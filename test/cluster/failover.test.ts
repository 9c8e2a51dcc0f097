/**
 * kill -9 of the leader while four clients push concurrently: every acknowledged push stays
 * pullable, with the right digests, from every surviving node, and pushes succeed again
 * within 3 s of the kill. Then the killed node restarts on its data dir (flotilla serve),
 * comes back under the same identity and serves every image too. Last, the leader is killed
 * and restarted a few more times under load: it must come back every time.
 *
 * Each push is a small image: a config and one layer (two blob commits) and a manifest.
 */
import t, { type Test } from 'tap'
import { checkImage, clusterStatus, pushWorkload, sleep, startTestCluster, waitFor, type ClusterNode, type PushRecord, type TestCluster } from '../helpers/cluster.js'

/** The target of the issue (the benchmark's is 2 s). */
const RECOVERY_LIMIT_MS = 3000

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? NaN
}

async function checkAll (t: Test, nodes: ClusterNode[], acked: PushRecord[], creds: { username: string; password: string }): Promise<void> {
  for (const n of nodes) {
    const problems: string[] = []
    // A few at a time: enough to be quick, few enough not to swamp two cores.
    for (let i = 0; i < acked.length; i += 8) {
      const batch = await Promise.all(acked.slice(i, i + 8).map(async (r) => await checkImage(n.url, creds, r.repo, r.img, r.tag)))
      problems.push(...batch.flat())
    }
    t.same(problems.slice(0, 20), [], `${n.name} serves all ${acked.length} acknowledged images with the right digests and bytes`)
  }
}

// One cluster for the file, torn down when the file ends.
const top = t
let cluster: TestCluster | undefined

t.test('kill -9 the leader while 4 clients push: nothing acknowledged is lost, pushes resume within 3 s', async (t) => {
  const c = await startTestCluster(top, { size: 3 })
  cluster = c
  const leader = await c.leader()
  const before = await c.status(leader)
  t.comment(`leader ${leader.name} at term ${before.term}`)
  const load = pushWorkload({ clients: 4, creds: c.credentials, targets: () => c.live().map((n) => ({ url: n.url, name: n.name })), repoPrefix: 'failover', timeoutMs: 8000, layers: 1 })
  t.teardown(async () => { await load.stop() })

  // Let pushes flow to all three nodes first.
  await waitFor('some acknowledged pushes before the kill', async () => load.records.filter((r) => r.result.outcome === 'ok').length >= 12 ? true : undefined, 60_000)
  const killedAt = Date.now()
  await leader.kill('SIGKILL')
  // When did a survivor first name a new leader? Separates the election from the commit path.
  let electedMs: number | undefined
  const survivorsNow = c.live()
  void (async () => {
    for (let i = 0; i < 300 && electedMs === undefined; i++) {
      for (const n of survivorsNow) {
        const st = await clusterStatus(n.url, c.credentials, 1000).catch(() => undefined)
        if (st !== undefined && st.leader !== null && st.leader !== leader.peerId && electedMs === undefined) electedMs = Date.now() - killedAt
      }
      await sleep(50)
    }
  })()
  const ackedBefore = load.records.filter((r) => r.result.outcome === 'ok' && r.end <= killedAt).length

  // Keep pushing to the survivors for a while after the kill.
  await waitFor('pushes acknowledged after the kill', async () => load.records.filter((r) => r.result.outcome === 'ok' && r.start >= killedAt).length >= 12 ? true : undefined, 60_000)
  await sleep(1000)
  await load.stop()

  const records = load.records
  const acked = records.filter((r) => r.result.outcome === 'ok')
  const firstAfter = records.filter((r) => r.result.outcome === 'ok' && r.start >= killedAt).sort((a, b) => a.end - b.end)[0]
  const firstCommit = records.filter((r) => r.result.outcome === 'ok' && r.end > killedAt).sort((a, b) => a.end - b.end)[0]
  const recoveryMs = firstAfter === undefined ? Infinity : firstAfter.end - killedAt
  const errors = records.filter((r) => r.result.outcome !== 'ok')
  t.comment(`${acked.length} pushes acknowledged (${ackedBefore} before the kill), ${errors.length} failed or unknown; ` +
    `a survivor named a new leader ${electedMs ?? '?'} ms after the kill; the first push started after the kill was acknowledged ${recoveryMs} ms after it ` +
    `(first acknowledgement of any push: ${firstCommit === undefined ? '-' : firstCommit.end - killedAt} ms); pushes took ${median(acked.map((r) => r.end - r.start))} ms (median)`)
  for (const e of errors.slice(0, 8)) t.comment(`  ${e.node} ${e.repo}:${e.tag} ${e.result.outcome} ${e.result.status ?? ''} ${e.result.error ?? ''} (${e.start - killedAt} ms .. ${e.end - killedAt} ms)`)
  t.ok(ackedBefore > 0, 'pushes were acknowledged before the kill')
  t.ok(recoveryMs <= RECOVERY_LIMIT_MS, `pushes succeed again within ${RECOVERY_LIMIT_MS} ms of the kill (took ${recoveryMs} ms)`)

  const survivors = c.live()
  t.equal(survivors.length, 2, 'two nodes survive')
  const newLeader = await c.leader()
  t.not(newLeader.peerId, leader.peerId, 'a new leader was elected')
  t.ok((await c.status(newLeader)).term > before.term, 'in a later term')
  await checkAll(t, survivors, acked, c.credentials)

  // The killed node comes back on its data dir, under the same identity, and catches up.
  const back = await c.restart(leader)
  t.equal(back.peerId, leader.peerId, 'the restarted node keeps its identity')
  await c.converged({ voters: 3, timeoutMs: 60_000 })
  await checkAll(t, [back], acked, c.credentials)
})

t.test('a leader killed with -9 under load restarts on its data dir, every time', async (t) => {
  const c = cluster
  if (c === undefined) { t.fail('no cluster from the previous test'); return }
  for (const n of c.nodes.filter((x) => !x.alive())) {
    const r = await c.restart(n).then(() => 'ok', (err: Error) => err.message)
    if (r !== 'ok') { t.fail(`${n.name}, killed in the previous test, cannot restart: ${r.split('\n').slice(-3).join(' | ')}`); return }
  }
  const load = pushWorkload({ clients: 2, creds: c.credentials, targets: () => c.live().map((n) => ({ url: n.url, name: n.name })), repoPrefix: 'restart', timeoutMs: 8000, layers: 1 })
  t.teardown(async () => { await load.stop() })
  for (let round = 1; round <= 3; round++) {
    await c.converged({ voters: 3, timeoutMs: 60_000 })
    const leader = await c.leader()
    const acked = load.records.length
    await waitFor('pushes flowing', async () => load.records.length >= acked + 4 ? true : undefined, 30_000)
    await leader.kill('SIGKILL')
    const outcome = await c.restart(leader).then(() => 'restarted', (err: Error) => err.message)
    t.equal(outcome, 'restarted', `round ${round}: ${leader.name}, killed as leader, restarts on its data dir`)
    if (outcome !== 'restarted') break
  }
  await load.stop()
  const acked = load.records.filter((r) => r.result.outcome === 'ok')
  await c.converged({ voters: 3, timeoutMs: 60_000 }).catch(() => {})
  for (const n of c.live()) await checkAll(t, [n], acked, c.credentials)
})
