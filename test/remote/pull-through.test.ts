/**
 * Issue 13, remote repositories: Flotilla fronts a real upstream registry (Debian's
 * docker-registry 2.8.2, anonymous) on a cluster of three nodes. One set of processes serves
 * every scenario, in order: docker pulls an image that exists only upstream; a second pull
 * from another node makes no upstream request (counted in the upstream's access log); a tag
 * moved upstream is seen after the TTL; with the upstream stopped, pulls still succeed from
 * the cache; pushes are refused; 20 concurrent pulls of one uncached 100 MiB image over the
 * three nodes download each blob from the upstream exactly once.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { startDocker } from '../helpers/docker.js'
import { busyboxImage, textEntries, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP } from '../helpers/images.js'
import http from 'node:http'
import { authFetch, basicAuth, pushHttp, runCli, startTestCluster, waitFor, type ClusterNode, type Credentials } from '../helpers/cluster.js'
import { image as ociImage } from '../helpers/oci.js'
import { startUpstream } from '../helpers/upstream.js'
import { requireTool } from '../helpers/tools.js'

const sha = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'

/** Pull an image over HTTP (manifest by tag, then every blob, hashed as it streams). Answers the manifest digest. */
async function pullHttp (node: ClusterNode, creds: Credentials, repo: string, tag: string): Promise<{ digest: string; blobs: number }> {
  const res = await authFetch(`${node.url}/v2/${repo}/manifests/${tag}`, creds, { headers: { accept: ACCEPT } }, 60_000)
  const body = Buffer.from(await res.arrayBuffer())
  if (res.status !== 200) throw new Error(`${node.name}: manifest ${repo}:${tag} answered ${res.status}: ${body.toString().slice(0, 300)}`)
  const m = JSON.parse(body.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> }
  let blobs = 0
  for (const d of [m.config.digest, ...m.layers.map((l) => l.digest)]) {
    // node:http: a plain Readable, much cheaper per byte than fetch's web stream (20 × 100 MiB below).
    const got = await new Promise<{ status: number; hash: string; text: string }>((resolve, reject) => {
      const req = http.get(`${node.url}/v2/${repo}/blobs/${d}`, { headers: { authorization: basicAuth(creds) }, timeout: 120_000 }, (res) => {
        const h = createHash('sha256')
        const head: Buffer[] = []
        res.on('data', (c: Buffer) => { h.update(c); if (res.statusCode !== 200 && head.length < 4) head.push(c) })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, hash: `sha256:${h.digest('hex')}`, text: Buffer.concat(head).toString() }))
        res.on('error', reject)
      })
      req.on('timeout', () => req.destroy(new Error('no answer within 120 s')))
      req.on('error', reject)
    })
    if (got.status !== 200) throw new Error(`${node.name}: blob ${d} answered ${got.status}: ${got.text.slice(0, 300)}`)
    if (got.hash !== d) throw new Error(`${node.name}: blob ${d} arrived with other bytes`)
    blobs++
  }
  return { digest: sha(body), blobs }
}

/** A metric's value summed over its label sets matching `labels` (a substring of the label text). */
async function metric (node: ClusterNode, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${node.url}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? ([0-9.e+]+)$`, 'gm'))) if ((m[1] ?? '').includes(labels)) sum += Number(m[2])
  return sum
}

t.test('remote repositories on three nodes in front of a real registry', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker', 'docker-registry')) return
  const [cr, er, ur] = await Promise.allSettled([startTestCluster(t, { size: 3 }), startDocker(t), startUpstream(t)])
  for (const r of [cr, er, ur]) if (r.status === 'rejected') throw r.reason
  if (cr.status !== 'fulfilled' || er.status !== 'fulfilled' || ur.status !== 'fulfilled') return
  const c = cr.value
  const engine = er.value
  const up = ur.value
  const [n1, n2, n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode]
  const creds = c.credentials
  const user = `${creds.username}:${creds.password}`
  /** Every node done filling (the last blob's link applied everywhere): what follows is the cache's. */
  const settled = async (): Promise<void> => {
    await waitFor('every fill to finish', async () => (await Promise.all(c.nodes.map(async (n) => await metric(n, 'flotilla_remote_fills_active')))).every((v) => v === 0) ? true : undefined, 60_000)
    await c.converged()
  }

  const image = busyboxImage({ extraLayers: [textEntries({ 'etc/motd': 'only upstream\n' })] })
  await up.push('library/busybox', '1', image.blobs, image.manifest, OCI_MANIFEST)

  await t.test('flotilla remote add, list: recorded through Raft, seen by every node', async (t) => {
    const add = await runCli(['remote', 'add', 'hub', '--prefix', 'hub/', '--upstream', up.url, '--ttl', '1h', '--node', n1.url, '--user', user])
    t.equal(add.code, 0, add.stderr)
    t.match(add.stdout, /hub\/NAME pulls NAME from http:\/\/127\.0\.0\.1:\d+ anonymously/)
    // The same upstream behind a short TTL, where moved tags and stale-if-error are watched
    // (through the API the CLI calls: a CLI process costs seconds on a loaded machine).
    const put = async (node: ClusterNode, name: string, body: unknown): Promise<Response> => await authFetch(`${node.url}/api/v1/remotes/${name}`, creds, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const quick = await put(n2, 'quick', { prefix: 'quick/', upstream: up.url, ttlSeconds: 1 })
    t.equal(quick.status, 200, await quick.text())
    const bad = await put(n1, 'clash', { prefix: 'hub/library/', upstream: up.url })
    t.equal(bad.status, 409, 'a prefix inside another remote\'s is refused')
    t.match(await bad.text(), /overlaps remote hub/)
    const list = await runCli(['remote', 'list', '--json', '--node', n3.url, '--user', user])
    const doc = JSON.parse(list.stdout) as { remotes: Array<{ name: string; prefix: string; ttlSeconds: number }> }
    t.same(doc.remotes.map((r) => [r.name, r.prefix, r.ttlSeconds]), [['hub', 'hub/', 3600], ['quick', 'quick/', 1]], 'node 3 lists both')
  })

  await t.test('docker pull through Flotilla of an image that exists only upstream', async (t) => {
    await engine.login(n1.host, creds)
    const ref = `${n1.host}/hub/library/busybox:1`
    const pull = await engine.dockerOk(['pull', ref], { timeoutMs: 120_000 })
    t.match(pull.stdout, new RegExp(`Digest: ${image.manifestDigest}`), 'the digest is the upstream\'s')
    const run = await engine.docker(['run', '--rm', '--network', 'none', ref, 'cat', '/etc/motd'])
    t.equal(run.stdout, 'only upstream\n', `the image runs: ${run.stderr}`)
    const fetched = (await up.requests()).filter((r) => r.method === 'GET' && r.path.includes('/blobs/'))
    t.equal(fetched.length, image.blobs.size, 'each blob downloaded from the upstream once')
  })

  await t.test('a second pull, from another node, makes no upstream request', async (t) => {
    await settled()
    const before = (await up.requests()).length
    const got = await pullHttp(n2, creds, 'hub/library/busybox', '1')
    t.equal(got.digest, image.manifestDigest)
    t.equal(got.blobs, image.blobs.size)
    const byDigest = await pullHttp(n3, creds, `hub/library/busybox`, image.manifestDigest)
    t.equal(byDigest.digest, image.manifestDigest, 'a pull by digest from node 3 too')
    t.equal((await up.requests()).length, before, 'the upstream\'s log has no new request')
    t.ok(await metric(n2, 'flotilla_remote_cache_total', 'result="hit"') > 0, 'counted as cache hits')
  })

  await t.test('pushes to a remote repository are refused with a clear error', async (t) => {
    const res = await authFetch(`${n2.url}/v2/hub/library/busybox/manifests/2`, creds, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: image.manifest })
    t.equal(res.status, 403)
    t.match(await res.text(), /remote repository hub, a read-only cache of .*pushes are refused/)
  })

  await t.test('a virtual repository over a local namespace and the remote: resolution in order, merged tags', async (t) => {
    const put = await authFetch(`${n1.url}/api/v1/virtuals/dev`, creds, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prefix: 'dev/', members: ['team/', 'hub/'], defaultMember: 'team/' }) })
    t.equal(put.status, 201, await put.text())
    const refused = await authFetch(`${n1.url}/api/v1/virtuals/cache`, creds, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prefix: 'pull/', members: ['hub/'], defaultMember: 'hub/' }) })
    t.equal(refused.status, 400, 'a remote as the default member (where pushes go) is refused')
    const local = ociImage({ layers: 1, seed: 'virtual-local' })
    t.equal((await pushHttp(n1.url, creds, 'team/library/busybox', local, 'local')).outcome, 'ok', 'a local image in team/')
    const before = (await up.requests()).length
    const fromHub = await authFetch(`${n2.url}/v2/dev/library/busybox/manifests/1`, creds, { headers: { accept: ACCEPT } })
    t.equal(fromHub.status, 200, 'dev/library/busybox:1 resolves')
    t.equal(fromHub.headers.get('flotilla-resolved-repository'), 'hub/library/busybox', 'through the remote member, team/ having no tag 1')
    t.equal(fromHub.headers.get('docker-content-digest'), image.manifestDigest)
    await fromHub.arrayBuffer()
    t.equal((await pullHttp(n3, creds, 'dev/library/busybox', '1')).digest, image.manifestDigest, 'pulled whole through the virtual name, from the cache')
    t.equal((await pullHttp(n3, creds, 'dev/library/busybox', 'local')).digest, local.digest, 'the local member first for its own tag')
    t.equal((await up.requests()).filter((r) => r.method === 'GET' && r.path.includes('/blobs/')).length, (await up.requests()).slice(0, before).filter((r) => r.method === 'GET' && r.path.includes('/blobs/')).length, 'no blob downloaded again')
    const tags = await authFetch(`${n2.url}/v2/dev/library/busybox/tags/list`, creds)
    t.equal(tags.status, 200)
    const doc = await tags.json() as { tags: string[] }
    t.ok(doc.tags.includes('1') && doc.tags.includes('local'), `the tag list merges the upstream's and the local one: ${JSON.stringify(doc.tags)}`)
    t.equal(new Set(doc.tags).size, doc.tags.length, 'without duplicates')
  })

  let moved = ''
  await t.test('a tag moved upstream is seen after the TTL', async (t) => {
    const first = await pullHttp(n3, creds, 'quick/library/busybox', '1')
    t.equal(first.digest, image.manifestDigest)
    const next = busyboxImage({ extraLayers: [textEntries({ 'etc/motd': 'moved upstream\n' })] })
    moved = await up.push('library/busybox', '1', next.blobs, next.manifest, OCI_MANIFEST)
    t.equal(moved, next.manifestDigest)
    const seen = await waitFor('the moved tag', async () => {
      const res = await authFetch(`${n3.url}/v2/quick/library/busybox/manifests/1`, creds, { method: 'HEAD', headers: { accept: ACCEPT } })
      return res.headers.get('docker-content-digest') === moved ? true : undefined
    }, 30_000, 300)
    t.ok(seen, 'node 3 serves the new digest')
    t.ok((await up.requests()).some((r) => r.method === 'HEAD' && r.path === '/v2/library/busybox/manifests/1'), 'checked upstream with a HEAD')
    const tags = await authFetch(`${n1.url}/v2/quick/library/busybox/tags/list`, creds)
    t.same(await tags.json(), { name: 'quick/library/busybox', tags: ['1'] }, 'the tag list is the upstream\'s')
    // hub/ trusts its tags for an hour: it still serves the first image.
    const hub = await authFetch(`${n1.url}/v2/hub/library/busybox/manifests/1`, creds, { method: 'HEAD', headers: { accept: ACCEPT } })
    t.equal(hub.headers.get('docker-content-digest'), image.manifestDigest, 'within its TTL, hub/ serves what it cached')
  })

  await t.test('with the upstream stopped, pulls still succeed from the cache', async (t) => {
    await pullHttp(n1, creds, 'quick/library/busybox', '1')
    await engine.login(n2.host, creds)
    await settled()
    await up.stop()
    const hub = await pullHttp(n3, creds, 'hub/library/busybox', '1')
    t.equal(hub.digest, image.manifestDigest, 'hub/: within its TTL, from the cache')
    // quick/'s TTL (1 s) is over: the HEAD fails, the cached tag is served anyway (stale-if-error).
    await new Promise((resolve) => setTimeout(resolve, 1100))
    const quick = await pullHttp(n2, creds, 'quick/library/busybox', '1')
    t.equal(quick.digest, moved, 'quick/: past its TTL, the cached copy')
    t.ok(await metric(n2, 'flotilla_remote_stale_served_total', 'remote="quick"') >= 1, 'stale-if-error is counted')
    const docker = await engine.docker(['pull', `${n2.host}/hub/library/busybox:1`], { timeoutMs: 120_000 })
    t.equal(docker.code, 0, `docker pull from node 2 with the upstream down: ${docker.stderr}`)
    const missing = await authFetch(`${n1.url}/v2/hub/library/other/manifests/1`, creds, { headers: { accept: ACCEPT } })
    t.equal(missing.status, 503, 'something never cached: 503')
    t.match(await missing.text(), /cannot be reached.*nothing is cached for it/)
    await up.start()
  })

  await t.test('20 concurrent pulls of one uncached 100 MiB image over 3 nodes: one upstream download per blob', async (t) => {
    const layer = randomBytes(100 << 20)
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha(randomBytes(8))] } }))
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: OCI_CONFIG, digest: sha(config), size: config.length }, layers: [{ mediaType: OCI_LAYER_GZIP, digest: sha(layer), size: layer.length }] }))
    await up.push('library/big', '1', new Map([[sha(config), config], [sha(layer), layer]]), manifest, OCI_MANIFEST)
    const results = await Promise.all(Array.from({ length: 20 }, async (_, i) => await pullHttp(c.nodes[i % 3]!, creds, 'hub/library/big', '1')))
    t.ok(results.every((r) => r.digest === sha(manifest) && r.blobs === 2), 'all 20 pulls got the image, every blob verified')
    const gets = (await up.requests()).filter((r) => r.method === 'GET')
    t.equal(gets.filter((r) => r.path === `/v2/library/big/blobs/${sha(layer)}`).length, 1, 'the 100 MiB layer came from the upstream once')
    t.equal(gets.filter((r) => r.path === `/v2/library/big/blobs/${sha(config)}`).length, 1, 'the config once')
    const streamed = (await Promise.all(c.nodes.map(async (n) => await metric(n, 'flotilla_remote_peer_streams_total')))).reduce((a, b) => a + b, 0)
    t.ok(streamed > 0, `nodes that do not fill a blob stream it from the one that does (${streamed} streams)`)
  })
})
