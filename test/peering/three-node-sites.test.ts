/**
 * Two sites of 3 nodes each (issue 11, "Tests"): a docker push at A is pulled at B after
 * replication; then the member of A that is streaming a large image to B is killed with
 * kill -9 mid-stream, and B finishes from another member of A: every image arrives, each
 * change applied once. Each member of A advertises its own userspace proxy (capped at
 * 4 MiB/s) to other sites, so the stream takes seconds and the proxies show which member of A
 * is serving it.
 */
import t from 'tap'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { removeTree } from '../helpers/cleanup.js'
import { startDocker } from '../helpers/docker.js'
import { busyboxImage, dockerArchive } from '../helpers/images.js'
import { checkImage, pushHttp, startTestCluster, waitFor } from '../helpers/cluster.js'
import { blob, descriptor, image, sha256, OCI_CONFIG, OCI_MANIFEST, type Image } from '../helpers/oci.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'
import { caughtUp, siteList, sitePeer, siteStatus, siteToken } from '../helpers/sites.js'
import { requireTool } from '../helpers/tools.js'

t.test('3-node sites: docker push at A, pull at B; A\'s shipping member killed mid-stream', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker')) return
  const proxies = await Promise.all([0, 1, 2].map(async () => await startTcpProxy({ target: { host: '127.0.0.1', port: 0 }, bytesPerSecond: 4 << 20 })))
  t.teardown(async () => { await Promise.all(proxies.map(async (p) => await p.close())) })
  const proxyOf = (name: string): typeof proxies[number] => proxies[Number(name.slice(1)) - 1]!
  const [ar, br, er] = await Promise.allSettled([
    startTestCluster(t, { size: 3, envOf: (name) => ({ FLOTILLA_SITES_ADVERTISE: `127.0.0.1:${proxyOf(name).port}` }) }),
    startTestCluster(t, { size: 3 }),
    startDocker(t),
  ])
  for (const r of [ar, br, er]) if (r.status === 'rejected') throw r.reason
  const a = (ar as PromiseFulfilledResult<Awaited<ReturnType<typeof startTestCluster>>>).value
  const b = (br as PromiseFulfilledResult<Awaited<ReturnType<typeof startTestCluster>>>).value
  const engine = (er as PromiseFulfilledResult<Awaited<ReturnType<typeof startDocker>>>).value
  for (const n of a.nodes) proxyOf(n.name).retarget({ host: '127.0.0.1', port: n.p2pPort })

  t.equal((await sitePeer(b, a.nodes[1]!.url, await siteToken(a, a.nodes[2]!), 'site-a')).code, 0, 'B peers with A')
  t.equal((await siteStatus(b, 'site-a')).members.length, 3, 'B pinned the 3 members of A')

  // docker push at A, docker pull at B.
  const work = await mkdtemp(join(tmpdir(), 'fl-sites3-'))
  t.teardown(async () => { await removeTree(work) })
  const built = busyboxImage({ randomLayerSizes: [1 << 20] })
  const pushRef = `${a.nodes[0]!.host}/geo/app:1`
  await writeFile(join(work, 'img.tar'), dockerArchive(built, [pushRef]))
  await engine.login(a.nodes[0]!.host, a.credentials)
  await engine.login(b.nodes[2]!.host, b.credentials)
  await engine.dockerOk(['load', '-i', join(work, 'img.tar')])
  const push = await engine.dockerOk(['push', pushRef], { timeoutMs: 120_000 })
  const digest = /digest: (sha256:[0-9a-f]{64})/.exec(push.stdout)?.[1]
  t.match(digest, /^sha256:/, 'docker push at A printed a digest')
  await caughtUp(b, 'site-a', a, 90_000)
  const pull = await engine.dockerOk(['pull', `${b.nodes[2]!.host}/geo/app:1`], { timeoutMs: 120_000 })
  t.match(pull.stdout, new RegExp(`Digest: ${digest}`), 'docker pull at B gets the digest pushed at A')
  const info = JSON.parse((await engine.dockerOk(['image', 'inspect', `${b.nodes[2]!.host}/geo/app:1`])).stdout) as Array<{ Id: string }>
  t.equal(info[0]?.Id, built.configDigest, 'the same image')

  // A large image (24 MiB: 6 s through a proxy), then small ones behind it.
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', seed: `big-${Date.now()}` }), OCI_CONFIG)
  const layers = [blob(randomBytes(8 << 20)), blob(randomBytes(8 << 20)), blob(randomBytes(8 << 20))]
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: layers.map(descriptor) }))
  const big: Image = { config, layers, manifest, digest: sha256(manifest), mediaType: OCI_MANIFEST }
  const before = proxies.map((p) => p.bytes())
  t.equal((await pushHttp(a.nodes[0]!.url, a.credentials, 'geo/big', big, 'v1', 60_000)).outcome, 'ok', 'large image pushed at A')
  const smalls = [image({ seed: `s1-${Date.now()}` }), image({ seed: `s2-${Date.now()}` })]
  for (const [i, img] of smalls.entries()) t.equal((await pushHttp(a.nodes[1]!.url, a.credentials, 'geo/small', img, `v${i}`)).outcome, 'ok', `small image ${i} pushed at A`)

  // The member whose proxy carries the stream is the one shipping it: kill it mid-stream.
  const serving = await waitFor('a member of A to be streaming the large image', async () => {
    const i = proxies.findIndex((p, k) => p.bytes() - before[k]! > 4 << 20)
    return i >= 0 ? a.nodes[i]! : undefined
  }, 60_000, 50)
  const total = proxies.reduce((s, p, k) => s + p.bytes() - before[k]!, 0)
  t.ok(total < 24 << 20, `killed mid-stream (${(total / 1048576).toFixed(1)} of 24 MiB through)`)
  await serving.kill('SIGKILL')
  t.comment(`killed ${serving.name}, which was serving the stream`)

  const rest = a.live()
  await waitFor('B to apply everything A acknowledged', async () => {
    const head = (await siteList(a, rest[0]!)).head
    const st = await siteStatus(b, 'site-a')
    return st.cursor !== null && st.cursor.seq >= head ? st : undefined
  }, 120_000, 250)
  const head = (await siteList(a, rest[0]!)).head
  const st = await siteStatus(b, 'site-a')
  // Four image changes (the docker push, the large image, two small ones): the rest of A's feed is its own access changes, which this peering does not ship.
  t.equal(st.cursor!.applied, 4, `each of A's 4 image changes applied once at B (feed head ${head})`)
  t.ok(proxies.some((p, k) => a.nodes[k] !== serving && p.bytes() - before[k]! > 0), 'the rest came from another member of A')
  for (const n of b.nodes) t.same(await checkImage(n.url, b.credentials, 'geo/big', big, 'v1'), [], `the large image is whole at B's ${n.name}`)
  for (const [i, img] of smalls.entries()) t.same(await checkImage(b.nodes[0]!.url, b.credentials, 'geo/small', img, `v${i}`), [], `small image ${i} at B`)
})
