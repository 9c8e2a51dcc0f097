/**
 * Delivery survives the receiving side's crashes (issue 11, delivery): the cursor is recorded
 * through the receiving site's log with the changes it covers, so
 *   - a single-node site B killed with kill -9 in the middle of a stream, and restarted,
 *     resumes from its cursor: every image arrives, each change applied once;
 *   - in a 3-node site B, killing the member that ships (its leader) with kill -9 in the
 *     middle of a stream hands the work to the next leader, from the recorded cursor.
 * "Each applied once" is the cursor's count of changes applied, which a second application
 * of the same (origin, sequence) would raise.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { checkImage, pushHttp, runCli, startTestCluster, waitFor, type ClusterNode, type TestCluster } from '../helpers/cluster.js'
import { blob, descriptor, sha256, OCI_CONFIG, OCI_MANIFEST, type Image } from '../helpers/oci.js'
import { caughtUp, sitePeer, siteList, siteStatus, siteToken, type SiteStatusDoc } from '../helpers/sites.js'

/** An image with one incompressible layer of `size` bytes: enough bytes that a stream takes a while. */
function bigImage (size: number): Image {
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', seed: randomBytes(8).toString('hex') }), OCI_CONFIG)
  const layer = blob(randomBytes(size))
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: [descriptor(layer)] }))
  return { config, layers: [layer], manifest, digest: sha256(manifest), mediaType: OCI_MANIFEST }
}

async function pushAll (a: TestCluster, repo: string, n: number, size: number): Promise<Image[]> {
  const imgs: Image[] = []
  for (let i = 0; i < n; i++) {
    const img = bigImage(size)
    const r = await pushHttp(a.nodes[0]!.url, a.credentials, repo, img, `t${i}`, 30_000)
    if (r.outcome !== 'ok') throw new Error(`push ${i} at A: ${JSON.stringify(r)}`)
    imgs.push(img)
  }
  return imgs
}

/**
 * Poll the shipping node's status until it has applied part of the stream and not all of it
 * (the source sends at most 8 MiB of blobs per batch, so a stream of 1 MiB images moves the
 * cursor several times).
 */
async function midStream (b: TestCluster, node: ClusterNode, name: string, head: number): Promise<SiteStatusDoc> {
  return await waitFor('the receiving site to be in the middle of the stream', async () => {
    const s = await siteStatus(b, name, node)
    return s.cursor !== null && s.cursor.seq > 0 && s.cursor.seq < head ? s : undefined
  }, 60_000, 20)
}

t.test('a single-node site killed with kill -9 mid-stream resumes from its cursor, without duplicates', async (t) => {
  const a = await startTestCluster(t, { size: 1 })
  const b = await startTestCluster(t, { size: 1 })
  t.equal((await sitePeer(b, a.nodes[0]!.url, await siteToken(a), 'site-a')).code, 0)
  // B is down while A takes the pushes: it has a backlog to stream when it comes back.
  await b.nodes[0]!.kill('SIGKILL')
  const imgs = await pushAll(a, 'crash/b', 40, 1 << 20)
  const head = (await siteList(a)).head
  const b1 = await b.restart(b.nodes[0]!)
  const at = await midStream(b, b1, 'site-a', head)
  await b1.kill('SIGKILL')
  t.comment(`killed B at cursor ${at.cursor!.seq} of ${head}, ${at.bytesReceived} bytes received in that run`)
  const b2 = await b.restart(b1)
  const st = await caughtUp(b, 'site-a', a, 120_000, b2)
  for (const [i, img] of imgs.entries()) t.same(await checkImage(b2.url, b.credentials, 'crash/b', img, `t${i}`), [], `crash/b:t${i} at B`)
  t.equal(st.cursor!.applied, imgs.length, 'each change applied exactly once, across the crash')
  t.same(st.failures, [], 'nothing was refused')
})

t.test('a 3-node site whose shipping leader is killed with kill -9 mid-stream: another member continues', async (t) => {
  const a = await startTestCluster(t, { size: 1 })
  // A's feed holds the backlog before B peers: B's leader streams it from cursor 0 at once.
  const imgs = await pushAll(a, 'crash/leader', 30, 1 << 20)
  const head = (await siteList(a)).head
  const b = await startTestCluster(t, { size: 3 })
  const leader = await b.leader()
  t.equal((await sitePeer(b, a.nodes[0]!.url, await siteToken(a), 'site-a', [], leader)).code, 0)
  const pinned = (await siteList(a)).peerings[0]!.members.map((m) => m.peerId).sort()
  t.same(pinned, b.nodes.map((n) => n.peerId).sort(), 'A pinned all three members of B')
  const at = await midStream(b, leader, 'site-a', head)
  t.equal(at.shipper, leader.peerId, 'the leader was the one shipping')
  await leader.kill('SIGKILL')
  t.comment(`killed the shipping leader at cursor ${at.cursor!.seq} of ${head}`)
  const next = await b.leader(30_000)
  t.not(next.peerId, leader.peerId, 'a new leader took over')
  const st = await caughtUp(b, 'site-a', a, 180_000, next)
  t.equal(st.shipper, next.peerId, 'the new leader ships now')
  for (const node of b.live()) {
    for (const [i, img] of imgs.entries()) t.same(await checkImage(node.url, b.credentials, 'crash/leader', img, `t${i}`), [], `${node.name}: crash/leader:t${i}`)
  }
  t.equal(st.cursor!.applied, imgs.length, 'each change applied exactly once, across the takeover')
  // Any member answers a status with the shipping leader's live view (it asks the leader).
  const follower = b.live().find((n) => n.peerId !== next.peerId)!
  const viaFollower = await siteStatus(b, 'site-a', follower)
  t.same([viaFollower.shipper, viaFollower.connected, viaFollower.lagEntries], [next.peerId, true, 0], 'a follower\'s answer is the leader\'s view')
  const cli = await runCli(['site', 'status', 'site-a', '--node', follower.url, '--user', `admin:${b.credentials.password}`])
  t.equal(cli.code, 0, cli.stderr)
  t.match(cli.stdout, /state\s+connected/)
  t.match(cli.stdout, new RegExp(`shipper\\s+${next.peerId}`))
  t.match(cli.stdout, /lag\s+0 entries/)
  t.same(st.failures, [], 'nothing was refused')
})
