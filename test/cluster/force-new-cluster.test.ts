/**
 * Disaster recovery, issue 17: losing a majority for good. A 3-node cluster loses 2 nodes
 * (kill -9, data dirs deleted); `flotilla status --local` reads the survivor's applied index
 * offline; `serve --force-new-cluster` on it: every image it held is pullable, pushes work, two
 * new nodes join. Then the flag left on a restart: the force is refused while the cluster has
 * a reachable leader (checked within 10 s).
 */
import t from 'tap'
import { rm } from 'node:fs/promises'
import { checkImage, hasBlobOnDisk, pushHttp, runCli, startNode, startTestCluster, waitFor, type ClusterNode } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'

t.test('3 nodes lose 2 for good; --force-new-cluster on the survivor', async (t) => {
  const c = await startTestCluster(t, { size: 3 })
  const creds = c.credentials
  const [n1, n2, n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode]
  const images: Array<{ repo: string; tag: string; img: ReturnType<typeof image> }> = []
  for (let i = 0; i < 6; i++) {
    const img = image({ layers: 2, seed: `dr-${i}` })
    const r = await pushHttp(c.nodes[i % 3]!.url, creds, `dr/app${i % 2}`, img, `v${i}`)
    t.equal(r.outcome, 'ok', `push ${i}`)
    images.push({ repo: `dr/app${i % 2}`, tag: `v${i}`, img })
  }
  await c.converged({ voters: 3 })
  // The survivor holds every image: its metadata (converged) and its blobs (replicated to every node).
  await waitFor('every blob on n3', async () => {
    for (const { img } of images) for (const b of [img.config, ...img.layers]) if (!await hasBlobOnDisk(n3.dataDir, b.digest)) return undefined
    return true
  }, 60_000)

  t.test('the survivor forced into a cluster of its own', async (t) => {
    const survivor = n3
    for (const n of [n1, n2]) {
      await n.kill('SIGKILL')
      await rm(n.dataDir, { recursive: true, force: true })
    }
    await survivor.kill('SIGKILL')

    const local = await runCli(['status', '--local', '--data', survivor.dataDir, '--json'])
    t.equal(local.code, 0, local.stderr)
    const st = JSON.parse(local.stdout) as { node: string; applied: number; role: string; voters: string[] }
    t.equal(st.node, survivor.peerId)
    t.equal(st.role, 'voter')
    t.equal(st.voters.length, 3)
    t.ok(st.applied > 0, `applied index ${st.applied} read offline`)

    const forced = await startNode({ name: 'n3', base: c.base, adminPassword: creds.password, dataDir: survivor.dataDir, args: ['--force-new-cluster'], env: {} })
    c.nodes[2] = forced
    const status = await c.status(forced)
    t.same(status.members.map((m) => m.peerId), [forced.peerId], 'a single-node cluster')
    t.equal(status.leader, forced.peerId)
    const problems: string[] = []
    for (const i of images) problems.push(...await checkImage(forced.url, creds, i.repo, i.img, i.tag))
    t.same(problems, [], 'every image it held is pullable')
    const img = image({ layers: 1, seed: 'after-force' })
    t.equal((await pushHttp(forced.url, creds, 'dr/after', img, 'v1')).outcome, 'ok', 'pushes work')

    // Two new nodes join as usual and catch up.
    const n4 = await c.join({ via: forced })
    const n5 = await c.join({ via: forced })
    await c.converged({ voters: 3, among: [forced, n4, n5], timeoutMs: 60_000 })
    t.same(await checkImage(n5.url, creds, 'dr/after', img, 'v1'), [], 'a new node serves the push made after the force')
    t.same(await checkImage(n4.url, creds, images[0]!.repo, images[0]!.img, images[0]!.tag), [], 'and the images from before')

    // A restart with the flag left on must not remove the new members: the force is refused
    // while a member has a leader (n4 and n5 elect one without it), checked within 10 s.
    await forced.stop()
    const t0 = Date.now()
    const again = await runCli(['serve', '--force-new-cluster', '--data', forced.dataDir, '--listen', forced.host, '--p2p', `127.0.0.1:${forced.p2pPort}`], { env: { FLOTILLA_LOG_LEVEL: 'warn' }, timeoutMs: 60_000 })
    t.equal(again.code, 1, 'the node does not start')
    t.match(again.stderr, /refusing --force-new-cluster: the old cluster still has a leader, seen by/, 'it says why')
    t.match(again.stderr, /!!! flotilla serve --force-new-cluster !!!/, 'the loud warning')
    t.ok(Date.now() - t0 < 40_000, `the check did not hang (${Date.now() - t0} ms with the process start)`)
    // The refused start changed nothing: n4 and n5 go on as a cluster of three voters.
    await c.converged({ voters: 3, among: [n4, n5], timeoutMs: 30_000 })
  })
})
