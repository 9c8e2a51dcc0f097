/**
 * What is on its way to a peered site is in use (issue 12: "a blob is deleted only if no …
 * shipment to a peer site is using it"; issue 11: "every manifest acknowledged at the source
 * reaches the peer, by digest, even if its tag moved on before it was shipped"). Two
 * single-node sites; B receives from A through a userspace proxy A advertises:
 *   - capped at 1 MiB/s: B gets an image's small layer seconds before its large one, and
 *     nothing links either until the batch applies; gc --grace 0s runs at B again and again
 *     meanwhile, and the image still arrives whole;
 *   - cut: a tag moves at A, and a retention policy that deletes untagged manifests keeps the
 *     one B has not received, saying why; after the heal B gets it by digest, and the next run
 *     at A deletes it.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { authFetch, checkImage, hasBlobOnDisk, pushHttp, sleep, startTestCluster, waitFor } from '../helpers/cluster.js'
import { blob, descriptor, image, sha256, OCI_CONFIG, OCI_MANIFEST, type Image } from '../helpers/oci.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'
import { caughtUp, manifestAt, sitePeer, siteToken } from '../helpers/sites.js'

const proxy = await startTcpProxy({ target: { host: '127.0.0.1', port: 0 }, bytesPerSecond: 1 << 20 })
t.teardown(async () => { await proxy.close() })
const a = await startTestCluster(t, { size: 1, env: { FLOTILLA_SITES_ADVERTISE: `127.0.0.1:${proxy.port}` } })
proxy.retarget({ host: '127.0.0.1', port: a.nodes[0]!.p2pPort })
const b = await startTestCluster(t, { size: 1 })

t.test('B peers with A', async (t) => {
  t.equal((await sitePeer(b, a.nodes[0]!.url, await siteToken(a), 'site-a')).code, 0)
})

t.test('gc --grace 0s at the receiving site while a batch is on its way keeps the batch\'s blobs', async (t) => {
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', seed: `gc-ship-${Date.now()}` }), OCI_CONFIG)
  const layers = [blob(`small layer ${Date.now()}`), blob(randomBytes(4 << 20))]
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: layers.map(descriptor) }))
  const img: Image = { config, layers, manifest, digest: sha256(manifest), mediaType: OCI_MANIFEST }
  t.equal((await pushHttp(a.nodes[0]!.url, a.credentials, 'ship/app', img, 'v1')).outcome, 'ok', 'pushed at A')

  // Through the API rather than the CLI: no process start between runs.
  let runs = 0
  let arrived = false
  const collecting = (async () => {
    while (!arrived) {
      const r = await authFetch(`${b.nodes[0]!.url}/api/v1/gc`, b.credentials, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ graceSeconds: 0 }) })
      await r.arrayBuffer()
      if (r.status === 200) runs++
      await sleep(200)
    }
  })()
  await caughtUp(b, 'site-a', a, 120_000)
  arrived = true
  await collecting
  t.ok(runs >= 2, `gc ran ${runs} times at B while the image was on its way`)
  t.same(await checkImage(b.nodes[0]!.url, b.credentials, 'ship/app', img, 'v1'), [], 'the image is whole at B')
  for (const x of [config, ...layers]) t.ok(await hasBlobOnDisk(b.nodes[0]!.dataDir, x.digest), `${x.digest.slice(0, 19)} is on B's disk`)
})

t.test('retention at A keeps an untagged manifest B has not received, and deletes it once B has it', async (t) => {
  const api = async (method: string, path: string, body?: unknown): Promise<any> => {
    const res = await authFetch(`${a.nodes[0]!.url}/api/v1${path}`, a.credentials, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
    const text = await res.text()
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${text}`)
    return JSON.parse(text)
  }
  await api('PUT', '/retention/untagged', { repositories: ['keep/**'], untagged: true, untaggedAfterHours: 0 })
  proxy.cut()
  const first = image({ seed: `keep-1-${Date.now()}` })
  const second = image({ seed: `keep-2-${Date.now()}` })
  t.equal((await pushHttp(a.nodes[0]!.url, a.credentials, 'keep/app', first, 'v1')).outcome, 'ok', 'v1 pushed at A while the link is cut')
  t.equal((await pushHttp(a.nodes[0]!.url, a.credentials, 'keep/app', second, 'v1')).outcome, 'ok', 'and moved to another manifest')

  const run = await api('POST', '/retention/run', { dryRun: false })
  const policy = run.policies.find((p: { name: string }) => p.name === 'untagged')
  t.same(policy.manifests, [], 'retention deletes nothing B lacks')
  t.match(policy.kept, [{ repo: 'keep/app', digest: first.digest, why: /not yet shipped to site/ }], 'and says why it keeps the untagged manifest')
  t.equal((await manifestAt(a, a.nodes[0]!, 'keep/app', first.digest)).status, 200, 'still at A by digest')

  proxy.heal()
  await caughtUp(b, 'site-a', a, 90_000)
  t.equal((await manifestAt(b, b.nodes[0]!, 'keep/app', first.digest)).status, 200, 'B received the first manifest by digest, though its tag had moved on')
  t.equal((await manifestAt(b, b.nodes[0]!, 'keep/app', 'v1')).digest, second.digest, 'and v1 where A has it')

  // B's acknowledgement reaches A's log with its next pull: then the policy deletes it.
  const after = await waitFor('retention at A to delete the shipped manifest', async () => {
    const r = await api('POST', '/retention/run', { dryRun: false })
    return r.deleted.manifests === 1 ? r : undefined
  }, 30_000, 1000)
  t.equal(after.deleted.manifests, 1, 'deleted once B has it')
  t.equal((await manifestAt(a, a.nodes[0]!, 'keep/app', first.digest)).status, 404, 'gone at A')
  t.equal((await manifestAt(b, b.nodes[0]!, 'keep/app', first.digest)).status, 200, 'still at B (deletes do not replicate here)')
})
