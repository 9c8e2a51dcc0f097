/**
 * A node partitioned for 30 s catches up after the heal (issue 4). Unlike pause.test.ts
 * (SIGSTOP), the cut-off node keeps running and serving its clients: the cut is made with
 * the test-only fault-injection hook (FLOTILLA_FAULT_INJECTION=1, src/http/debug.ts), set
 * on all three nodes, which closes the libp2p connections between the two sides, has the
 * gater refuse new ones, and refuses node-to-node HTTP both ways.
 *   1. A follower is cut off: pushes to node 1 go on; the cut-off node is not ready, and a
 *      push or a linearizable tag read there fails instead of answering stale data; after
 *      the heal it serves every acknowledged image; its term did not move while it was cut
 *      off (PreVote), and the cluster's grew by at most one.
 *   2. The leader is cut off: the other two elect a new one within seconds and take pushes;
 *      the old leader steps down (CheckQuorum) and refuses writes and linearizable reads;
 *      after the heal it follows the new leader and serves every acknowledged image.
 */
import t, { type Test } from 'tap'
import {
  authFetch, checkImage, cutOff, healAll, pushHttp, pushWorkload, sleep, startTestCluster, waitFor,
  type ClusterNode, type PushRecord, type TestCluster,
} from '../helpers/cluster.js'
import { image, type Image } from '../helpers/oci.js'

const CUT_MS = 30_000
/** Longer than the node's own deadline for a commit or a ReadIndex round (15 s, cluster/metadata/raft-applier.ts). */
const CUT_REQUEST_TIMEOUT_MS = 25_000

const c = await startTestCluster(t, { size: 3, env: { FLOTILLA_FAULT_INJECTION: '1' } })

async function readyz (node: ClusterNode): Promise<number> {
  const res = await fetch(`${node.url}/readyz`, { signal: AbortSignal.timeout(3000) })
  await res.arrayBuffer()
  return res.status
}

/** GET a manifest by tag: its status and digest, or the error (timeout, connection) when none came. */
async function readTag (node: ClusterNode, repo: string, tag: string, timeoutMs: number): Promise<{ status?: number; digest?: string | null; error?: string; ms: number }> {
  const start = Date.now()
  try {
    const res = await authFetch(`${node.url}/v2/${repo}/manifests/${tag}`, c.credentials, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } }, timeoutMs)
    const body = await res.text()
    return { status: res.status, digest: res.headers.get('docker-content-digest'), ms: Date.now() - start, ...(res.status !== 200 ? { error: body.slice(0, 300) } : {}) }
  } catch (err) {
    return { error: (err as Error).message, ms: Date.now() - start }
  }
}

async function servesAll (node: ClusterNode, acked: Array<{ repo: string; img: Image; tag: string }>): Promise<string[]> {
  const problems: string[] = []
  for (let i = 0; i < acked.length; i += 8) {
    const batch = await Promise.all(acked.slice(i, i + 8).map(async (r) => await checkImage(node.url, c.credentials, r.repo, r.img, r.tag)))
    problems.push(...batch.flat())
  }
  return problems
}

/**
 * While `node` is cut off, what it answers: not ready; a push, and a read of a tag that
 * moved from `before` to another image (pushed through `via`) during the cut, both fail.
 */
async function probeCutOff (t: Test, node: ClusterNode, via: ClusterNode, repo: string, before: Image): Promise<{ after: Image }> {
  await waitFor(`${node.name}'s /readyz to report not ready`, async () => await readyz(node) === 503 ? true : undefined, 10_000, 100)
  t.pass(`${node.name} reports not ready (503 on /readyz) while cut off`)
  const after = image({ layers: 1, seed: `${repo}-after-${Math.random()}` })
  const moved = await pushHttp(via.url, c.credentials, repo, after, 'latest', 20_000)
  t.equal(moved.outcome, 'ok', `the tag ${repo}:latest moved to a new image through ${via.name} during the cut (${moved.status ?? ''} ${moved.error ?? ''})`)
  const [read, push] = await Promise.all([
    readTag(node, repo, 'latest', CUT_REQUEST_TIMEOUT_MS),
    pushHttp(node.url, c.credentials, `${repo}-cut`, image({ layers: 1, seed: `${repo}-cut-${Math.random()}` }), 'latest', CUT_REQUEST_TIMEOUT_MS),
  ])
  t.comment(`read of ${repo}:latest on ${node.name}: ${read.status ?? 'no answer'} after ${read.ms} ms (${(read.error ?? '').slice(0, 160)})`)
  t.not(read.status, 200, `${node.name} refuses the linearizable tag read instead of answering ${read.digest === before.digest ? 'the stale image' : read.digest ?? ''}`)
  t.ok(read.status === 503 || read.status === undefined, 'with 503 UNAVAILABLE (or no answer at all)')
  t.comment(`push to ${node.name}: ${push.outcome} ${push.status ?? ''} ${(push.error ?? '').slice(0, 160)}`)
  t.not(push.outcome, 'ok', `a push to ${node.name} is not acknowledged while it is cut off`)
  return { after }
}

/** Cut `node` off for CUT_MS while 3 clients push to `targets`; `during` runs meanwhile. */
async function pushWhileCut (c: TestCluster, node: ClusterNode, targets: ClusterNode[], prefix: string, during: (cutAt: number) => Promise<void>): Promise<{ records: PushRecord[]; cutAt: number }> {
  const load = pushWorkload({ clients: 3, creds: c.credentials, targets: () => targets.map((n) => ({ url: n.url, name: n.name })), repoPrefix: prefix, timeoutMs: 20_000, pauseMs: 200 })
  const cutAt = Date.now()
  try {
    await cutOff(c, node)
    await Promise.all([during(cutAt), sleep(CUT_MS)])
  } finally {
    await load.stop()
  }
  return { records: load.records, cutAt }
}

t.test('a follower cut off for 30 s catches up after the heal without disturbing the leader', async (t) => {
  const leader = await c.leader()
  const cut = [...c.live()].reverse().find((n) => n !== leader)!
  const pushTo = c.live().find((n) => n !== cut)!
  const termBefore = (await c.status(leader)).term
  t.teardown(async () => await healAll(c).catch(() => {}))

  const repo = 'partition/follower-probe'
  const before = image({ layers: 1, seed: `${repo}-before-${Math.random()}` })
  t.equal((await pushHttp(pushTo.url, c.credentials, repo, before, 'latest')).outcome, 'ok', 'a probe tag pushed before the cut')
  t.same(await checkImage(cut.url, c.credentials, repo, before, 'latest'), [], `${cut.name} serves it before the cut`)

  let probe: { after: Image } | undefined
  const { records } = await pushWhileCut(c, cut, [pushTo], 'partition/follower', async () => {
    probe = await probeCutOff(t, cut, pushTo, repo, before)
    const st = await c.status(cut)
    t.equal(st.leader, null, `${cut.name} knows no leader while cut off`)
    t.equal(st.term, termBefore, 'and did not bump its term (PreVote)')
    const lag = (await c.status(leader)).members.find((m) => m.peerId === cut.peerId)?.lag
    t.ok(lag !== null && lag !== undefined && lag > 0, `the leader sees ${cut.name} lag behind (${lag} entries)`)
  })
  const acked = records.filter((r) => r.result.outcome === 'ok')
  const failed = records.filter((r) => r.result.outcome !== 'ok')
  t.ok(acked.length >= 20, `${acked.length} pushes to ${pushTo.name} acknowledged during the cut`)
  for (const f of failed.slice(0, 5)) t.comment(`  not acknowledged: ${f.node} ${f.repo}:${f.tag} ${f.result.status ?? ''} ${f.result.error ?? ''}`)
  t.equal(failed.length, 0, `every push to ${pushTo.name} succeeded while ${cut.name} was cut off`)

  const healedAt = Date.now()
  await healAll(c)
  await c.converged({ voters: 3, timeoutMs: 30_000 })
  t.comment(`${cut.name} caught up ${Date.now() - healedAt} ms after the heal`)
  await waitFor(`${cut.name} ready again`, async () => await readyz(cut) === 200 ? true : undefined, 10_000)
  const after = await c.status(leader)
  t.comment(`after the heal: leader ${c.nodes.find((n) => n.peerId === after.leader)?.name ?? after.leader}, term ${termBefore} → ${after.term}`)
  // PreVote keeps the returning node from deposing the leader; a leader starved of CPU for
  // longer than an election timeout (a loaded machine) may still lose it once.
  t.ok(after.term - termBefore <= 1, `the term did not explode (${termBefore} → ${after.term})`)
  t.same((await servesAll(cut, acked)).slice(0, 20), [], `${cut.name} serves all ${acked.length} images acknowledged during the cut`)
  if (probe !== undefined) t.same(await checkImage(cut.url, c.credentials, repo, probe.after, 'latest'), [], `${cut.name} serves ${repo}:latest as moved during the cut`)
})

t.test('a leader cut off for 30 s is replaced and steps down; after the heal it follows', async (t) => {
  const leader = await c.leader()
  const others = c.live().filter((n) => n !== leader)
  const termBefore = (await c.status(leader)).term
  t.teardown(async () => await healAll(c).catch(() => {}))

  const repo = 'partition/leader-probe'
  const before = image({ layers: 1, seed: `${repo}-before-${Math.random()}` })
  t.equal((await pushHttp(leader.url, c.credentials, repo, before, 'latest')).outcome, 'ok', 'a probe tag pushed before the cut')

  let newLeader: ClusterNode | undefined
  let electedAt = 0
  let probe: { after: Image } | undefined
  const { records, cutAt } = await pushWhileCut(c, leader, others, 'partition/leader', async (cutAt) => {
    newLeader = await c.leader(10_000, others)
    electedAt = Date.now()
    t.not(newLeader, leader, `${newLeader.name} took over ${electedAt - cutAt} ms after the cut`)
    t.ok(electedAt - cutAt < 5000, 'within a few seconds')
    const stepped = await waitFor(`${leader.name} to step down`, async () => {
      const st = await c.status(leader)
      return st.role !== 'leader' ? st : undefined
    }, 5000, 50)
    t.pass(`the old leader ${leader.name} stepped down (CheckQuorum): ${stepped.role}, leader ${stepped.leader}, ${Date.now() - cutAt} ms after the cut`)
    probe = await probeCutOff(t, leader, newLeader, repo, before)
  })
  const acked = records.filter((r) => r.result.outcome === 'ok')
  const failed = records.filter((r) => r.result.outcome !== 'ok')
  t.ok(acked.length >= 20, `${acked.length} pushes through the followers acknowledged during the cut (${failed.length} not)`)
  for (const f of failed.slice(0, 5)) t.comment(`  not acknowledged: ${f.node} ${f.repo}:${f.tag} ${f.result.outcome} ${f.result.status ?? ''} ${f.result.error ?? ''} (started ${f.start - cutAt} ms after the cut)`)
  const late = failed.filter((r) => r.start > electedAt + 1000)
  t.same(late.map((r) => `${r.node} ${r.repo}:${r.tag} ${r.result.outcome} ${r.result.status ?? ''} ${r.result.error ?? ''}`), [], 'every push started once the new leader was in place succeeded')
  const termDuring = (await c.status(newLeader!)).term
  t.ok(termDuring > termBefore && termDuring - termBefore <= 3, `one election or so (term ${termBefore} → ${termDuring})`)

  const healedAt = Date.now()
  await healAll(c)
  await c.converged({ voters: 3, timeoutMs: 30_000 })
  t.comment(`${leader.name} caught up ${Date.now() - healedAt} ms after the heal`)
  const st = await c.status(leader)
  t.equal(st.leader, newLeader!.peerId, `the old leader follows ${newLeader!.name}`)
  t.equal(st.role, 'follower', 'as a follower')
  t.equal(st.term, termDuring, 'the returning old leader did not bump the term')
  t.same((await servesAll(leader, acked)).slice(0, 20), [], `${leader.name} serves all ${acked.length} images acknowledged during the cut`)
  if (probe !== undefined) t.same(await checkImage(leader.url, c.credentials, repo, probe.after, 'latest'), [], `${leader.name} serves ${repo}:latest as moved during the cut`)
})
