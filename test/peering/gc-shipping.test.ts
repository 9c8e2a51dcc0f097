/**
 * Garbage collection and a shipment between sites (issue 12: "a blob is deleted only if no …
 * shipment to a peer site is using it"). B receives an image from A over a slow link (A
 * advertises a userspace proxy capped at 1 MiB/s): its small layer lands and is recorded held
 * at B seconds before the large one, and nothing links either until the batch applies. GC runs
 * at B with --grace 0s again and again meanwhile; the image still arrives whole, and every blob
 * is on B's disk afterwards.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { checkImage, hasBlobOnDisk, pushHttp, runCli, sleep, startTestCluster } from '../helpers/cluster.js'
import { blob, descriptor, sha256, OCI_CONFIG, OCI_MANIFEST, type Image } from '../helpers/oci.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'
import { caughtUp, sitePeer, siteToken } from '../helpers/sites.js'

t.test('gc --grace 0s at the receiving site while a batch is on its way keeps the batch\'s blobs', async (t) => {
  const proxy = await startTcpProxy({ target: { host: '127.0.0.1', port: 0 }, bytesPerSecond: 1 << 20 })
  t.teardown(async () => { await proxy.close() })
  const a = await startTestCluster(t, { size: 1, env: { FLOTILLA_SITES_ADVERTISE: `127.0.0.1:${proxy.port}` } })
  proxy.retarget({ host: '127.0.0.1', port: a.nodes[0]!.p2pPort })
  const b = await startTestCluster(t, { size: 1 })
  t.equal((await sitePeer(b, a.nodes[0]!.url, await siteToken(a), 'site-a')).code, 0, 'B peers with A')

  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', seed: `gc-ship-${Date.now()}` }), OCI_CONFIG)
  const layers = [blob(`small layer ${Date.now()}`), blob(randomBytes(4 << 20))]
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: layers.map(descriptor) }))
  const img: Image = { config, layers, manifest, digest: sha256(manifest), mediaType: OCI_MANIFEST }
  t.equal((await pushHttp(a.nodes[0]!.url, a.credentials, 'ship/app', img, 'v1')).outcome, 'ok', 'pushed at A')

  const user = `${b.credentials.username}:${b.credentials.password}`
  let runs = 0
  let arrived = false
  const collecting = (async () => {
    while (!arrived) {
      const r = await runCli(['gc', '--grace', '0s', '--node', b.nodes[0]!.url, '--user', user, '--json'], { timeoutMs: 60_000 })
      if (r.code === 0) runs++
      await sleep(300)
    }
  })()
  await caughtUp(b, 'site-a', a, 120_000)
  arrived = true
  await collecting
  t.ok(runs >= 2, `gc ran ${runs} times at B while the image was on its way`)
  t.same(await checkImage(b.nodes[0]!.url, b.credentials, 'ship/app', img, 'v1'), [], 'the image is whole at B')
  for (const x of [config, ...layers]) t.ok(await hasBlobOnDisk(b.nodes[0]!.dataDir, x.digest), `${x.digest.slice(0, 19)} is on B's disk`)
})
