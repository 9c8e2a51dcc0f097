/**
 * Three nodes, real clients: docker pushes to node 1, docker pulls from node 3 and skopeo
 * pulls from node 2. A push is acknowledged once its blobs are on a majority; a node that
 * lacks a blob streams it from a holder. Digests and bytes must survive end to end.
 */
import t from 'tap'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { removeTree } from '../helpers/cleanup.js'
import { startDocker } from '../helpers/docker.js'
import { busyboxImage, dockerArchive, textEntries } from '../helpers/images.js'
import { containersEnv } from '../helpers/podman.js'
import { sha256 } from '../helpers/registry.js'
import { authFetch, hasBlobOnDisk, startTestCluster, waitFor } from '../helpers/cluster.js'
import { requireTool } from '../helpers/tools.js'

t.test('three nodes: docker push to node 1, docker pull from node 3, skopeo pull from node 2', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker', 'skopeo')) return
  // Both start at once; allSettled so neither is left starting (and unowned) when the other fails.
  const [cr, er] = await Promise.allSettled([startTestCluster(t, { size: 3 }), startDocker(t)])
  if (cr.status === 'rejected') throw cr.reason
  if (er.status === 'rejected') throw er.reason
  const c = cr.value
  const engine = er.value
  const [n1, n2, n3] = c.nodes as [typeof c.nodes[0], typeof c.nodes[0], typeof c.nodes[0]]
  const ctr = await containersEnv(t, [n2.host])
  const work = await mkdtemp(join(tmpdir(), 'fl-cluster-clients-'))
  t.teardown(async () => { await removeTree(work) })
  const st = await c.status(n3)
  t.equal(st.members.filter((m) => m.role === 'voter').length, 3, 'three voters')

  await engine.login(n1.host, c.credentials)
  await engine.login(n3.host, c.credentials)
  await ctr.login('skopeo', n2.host, c.credentials)

  const image = busyboxImage({ randomLayerSizes: [3 << 20], extraLayers: [textEntries({ 'etc/motd': 'pushed to node 1\n' })] })
  const archive = join(work, 'img.tar')
  const ref1 = `${n1.host}/cluster/app:1`
  await writeFile(archive, dockerArchive(image, [ref1]))
  await engine.dockerOk(['load', '-i', archive])
  const push = await engine.dockerOk(['push', ref1], { timeoutMs: 120_000 })
  const digest = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(push.stdout)?.[1]
  t.match(digest, /^sha256:[0-9a-f]{64}$/, 'docker push printed a digest')
  if (digest === undefined) return
  await engine.dockerOk(['rmi', ref1])

  // Every node answers the tag with the pushed digest at once (linearizable reads).
  for (const n of [n1, n2, n3]) {
    const res = await authFetch(`${n.url}/v2/cluster/app/manifests/1`, c.credentials, { method: 'HEAD', headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } })
    t.equal(res.headers.get('docker-content-digest'), digest, `${n.name} serves the tag with the pushed digest right after the push`)
  }

  // docker pull from node 3.
  const ref3 = `${n3.host}/cluster/app:1`
  const pull = await engine.dockerOk(['pull', ref3], { timeoutMs: 120_000 })
  t.match(pull.stdout, new RegExp(`Digest: ${digest}`), 'docker pull from node 3 reports the pushed digest')
  const info = JSON.parse((await engine.dockerOk(['image', 'inspect', ref3])).stdout) as Array<{ Id: string; RepoDigests: string[] }>
  t.equal(info[0]?.Id, image.configDigest, 'the image pulled from node 3 has the original image id')
  t.same(info[0]?.RepoDigests, [`${n3.host}/cluster/app@${digest}`], 'RepoDigests is the digest pushed to node 1')
  const run = await engine.docker(['run', '--rm', '--network', 'none', ref3, 'cat', '/etc/motd'])
  t.equal(run.stdout, 'pushed to node 1\n', `the image runs: ${run.stderr}`)

  // skopeo pull from node 2 into a dir: layout, which keeps the manifest as served (oci: would convert it).
  const out = join(work, 'skopeo-dir')
  await ctr.skopeoOk(['copy', '--src-tls-verify=false', `docker://${n2.host}/cluster/app:1`, `dir:${out}`], { timeoutMs: 120_000 })
  const manifest = await readFile(join(out, 'manifest.json'))
  t.equal(sha256(manifest), digest, 'skopeo from node 2: the manifest hashes to the digest docker pushed to node 1')
  const parsed = JSON.parse(manifest.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> }
  t.equal(parsed.config.digest, image.configDigest, 'same config')
  t.equal(parsed.layers.length, image.layers.length, 'same number of layers')
  for (const [i, l] of parsed.layers.entries()) {
    const bytes = await readFile(join(out, l.digest.slice(7)))
    t.equal(sha256(bytes), l.digest, `layer ${i} hashes to its digest`)
    t.equal(sha256(gunzipSync(bytes)), image.layers[i]!.diffId, `layer ${i} uncompresses to the original diff_id`)
  }
  t.equal(sha256(await readFile(join(out, image.configDigest.slice(7)))), image.configDigest, 'config blob intact')
  const raw = await ctr.skopeoOk(['inspect', '--tls-verify=false', '--raw', `docker://${n2.host}/cluster/app:1`])
  t.equal(sha256(raw.stdout), digest, 'skopeo inspect --raw on node 2: same digest')

  // In the background every blob reaches every node: each ends up with its own copy.
  const digests = [parsed.config.digest, ...parsed.layers.map((l) => l.digest)]
  const everywhere = await waitFor('every blob on every node\'s disk', async () => {
    for (const n of [n1, n2, n3]) for (const d of digests) if (!await hasBlobOnDisk(n.dataDir, d)) return undefined
    return true
  }, 60_000, 250).catch((err: Error) => err.message)
  t.equal(everywhere, true, 'every blob was copied to every node')
})
