/**
 * Issue 14, properties and checksums, on real nodes (a 2-node cluster, reused by every subtest):
 * `flotilla prop set|ls|rm` on REPO:TAG and REPO@DIGEST, the `annotate` permission, an image's
 * annotations and config labels as read-only properties, and a pushed layer's SHA-1 and MD5,
 * equal to what sha1sum and md5sum print, recorded within seconds on both nodes.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { authFetch, pushHttp, runCli, startTestCluster, waitFor, type Credentials } from '../helpers/cluster.js'
import { blob, descriptor, sha256, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, type Image } from '../helpers/oci.js'
import { runOk } from '../helpers/exec.js'

const c = await startTestCluster(t, { size: 2 })
const [n1, n2] = c.nodes as [typeof c.nodes[0], typeof c.nodes[0]]
const admin = `${c.credentials.username}:${c.credentials.password}`

/** `flotilla ARGS --node n1 --user U`; the result, whatever the exit code. */
async function cli (args: string[], user = admin, node = n1.url): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return await runCli([...args, '--node', node, '--user', user], { timeoutMs: 60_000 })
}
async function cliOk (args: string[], user = admin, node = n1.url): Promise<string> {
  const r = await cli(args, user, node)
  if (r.code !== 0) throw new Error(`flotilla ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
  return r.stdout
}

/** An image whose manifest has annotations and whose config has labels, with one random 1 MiB layer. */
function annotatedImage (): Image {
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Labels: { maintainer: 'team-a', 'org.opencontainers.image.version': '1.4.2' } }, rootfs: { type: 'layers', diff_ids: [] } }), OCI_CONFIG)
  const layer = blob(randomBytes(1024 * 1024), OCI_LAYER)
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: descriptor(config),
    layers: [descriptor(layer)],
    annotations: { 'org.opencontainers.image.source': 'https://git.example.com/app', 'org.opencontainers.image.revision': 'abc123' },
  }))
  return { config, layers: [layer], manifest, digest: sha256(manifest), mediaType: OCI_MANIFEST }
}

/** The admin API as `creds` (the admin by default): status and JSON body. */
async function apiCall (method: string, path: string, body?: unknown, creds: Credentials = c.credentials): Promise<{ status: number; doc: any }> {
  const res = await authFetch(`${n1.url}/api/v1${path}`, creds, { method, ...(body !== undefined ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) } : {}) }, 30_000)
  return { status: res.status, doc: await res.json() }
}
const reader: Credentials = { username: 'reader', password: 'reader-password-1' }
const tagger: Credentials = { username: 'tagger', password: 'tagger-password-1' }
const userProps = (doc: { properties: Array<{ key: string; values: string[]; readOnly: boolean }> }): Array<{ key: string; values: string[] }> =>
  doc.properties.filter((p) => !p.readOnly).map((p) => ({ key: p.key, values: p.values }))

const img = annotatedImage()
const pushed = await pushHttp(n1.url, c.credentials, 'team/app', img, '1.4.2', 30_000)
if (pushed.outcome !== 'ok') throw new Error(`push failed: ${JSON.stringify(pushed)}`)
const pushedAt = Date.now()

t.test('a pushed layer\'s SHA-1 and MD5 equal sha1sum and md5sum, recorded within seconds on both nodes', async (t) => {
  const layer = img.layers[0]!
  const file = join(c.base, 'layer.bin')
  await writeFile(file, layer.data)
  const sha1 = (await runOk('sha1sum', [file])).stdout.split(' ')[0]
  const md5 = (await runOk('md5sum', [file])).stdout.split(' ')[0]
  for (const node of [n1, n2]) {
    // Generous deadline for a loaded CI machine; the benchmark measures the real delay.
    const doc = await waitFor(`checksums of the layer on ${node.name}`, async () => {
      const res = await authFetch(`${node.url}/api/v1/checksums/${layer.digest}`, c.credentials)
      return res.status === 200 ? await res.json() as { sha1: string; md5: string } : (await res.arrayBuffer(), undefined)
    }, 60_000, 100)
    t.same(doc, { digest: layer.digest, sha1, md5 }, `${node.name}: as sha1sum and md5sum print them`)
    t.comment(`${node.name}: searchable ${Date.now() - pushedAt} ms after the push answered`)
  }
  const res = await authFetch(`${n1.url}/api/v1/checksums/sha256:${'0'.repeat(64)}`, c.credentials)
  t.equal(res.status, 404, 'an unknown blob: 404')
  t.match(await res.json(), { errors: [{ message: /is unknown/ }] })

  // Users for the subtests below: one who may only read team/**, one who may annotate it.
  for (const u of [reader, tagger]) t.equal((await apiCall('POST', '/users', { name: u.username, password: u.password })).status, 201)
  t.equal((await apiCall('PUT', '/permissions/team', { repositories: ['team/**'], users: { reader: ['read'], tagger: ['read', 'annotate'] } })).status, 200)
})

t.test('annotations and config labels are read-only properties of every tag of the manifest', async (t) => {
  const { doc } = await apiCall('GET', '/properties?image=team/app:1.4.2', undefined, reader)
  t.equal(doc.digest, img.digest)
  t.same(doc.properties, [
    { key: 'maintainer', values: ['team-a'], readOnly: true },
    { key: 'org.opencontainers.image.revision', values: ['abc123'], readOnly: true },
    { key: 'org.opencontainers.image.source', values: ['https://git.example.com/app'], readOnly: true },
    { key: 'org.opencontainers.image.version', values: ['1.4.2'], readOnly: true },
  ])
  const table = await cliOk(['prop', 'ls', `team/app@${img.digest}`])
  t.match(table, /KEY\s+VALUE\s+READ-ONLY/, 'a table for people')
  t.match(table, /maintainer\s+team-a\s+yes/)
  const rm = await cli(['prop', 'rm', 'team/app:1.4.2', 'maintainer'])
  t.not(rm.code, 0, 'removing a read-only property fails')
  t.match(rm.stderr, /read-only/, 'and says why')
})

t.test('prop set, ls and rm on REPO:TAG and REPO@DIGEST, multi-valued, seen from the other node', async (t) => {
  t.match(await cliOk(['prop', 'set', 'team/app:1.4.2', 'qa=passed', 'env=staging', 'env=prod'], 'tagger:tagger-password-1'), /3 properties set/)
  // Properties belong to the manifest: a second tag of it shows them.
  const tagged = await authFetch(`${n1.url}/v2/team/app/manifests/stable`, c.credentials, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: img.manifest })
  t.equal(tagged.status, 201)
  const doc = JSON.parse(await cliOk(['prop', 'ls', 'team/app:stable', '--json'], 'reader:reader-password-1', n2.url))
  t.same(userProps(doc), [{ key: 'env', values: ['prod', 'staging'] }, { key: 'qa', values: ['passed'] }], 'through the other tag, on the other node')

  t.equal((await apiCall('PUT', '/properties', { image: `team/app@${img.digest}`, properties: [{ key: 'env', value: 'dev' }], replace: true }, tagger)).status, 200)
  t.match(await cliOk(['prop', 'rm', `team/app@${img.digest}`, 'qa']), /1 property removed/)
  const after = await apiCall('GET', '/properties?image=team/app:1.4.2', undefined, reader)
  t.same(userProps(after.doc), [{ key: 'env', values: ['dev'] }], 'replace swapped the values; rm took the key')

  const audit = await apiCall('GET', '/audit?user=tagger')
  t.ok((audit.doc.entries as Array<{ action: string }>).some((e) => e.action === 'SetProperties'), 'changes are in the audit log')
})

t.test('permission refusals: read is not annotate; an unknown image is 404', async (t) => {
  const denied = await cli(['prop', 'set', 'team/app:1.4.2', 'qa=failed'], 'reader:reader-password-1')
  t.not(denied.code, 0)
  t.match(denied.stderr, /denied: annotate on team\/app/)
  const rm = await apiCall('DELETE', '/properties?image=team/app:1.4.2&property=env', undefined, reader)
  t.match(rm, { status: 403, doc: { errors: [{ code: 'DENIED', message: /annotate on team\/app/ }] } })
  t.match(await apiCall('GET', '/properties?image=other/app:1', undefined, tagger), { status: 403, doc: { errors: [{ message: /read on other\/app/ }] } })
  t.match(await apiCall('GET', '/properties?image=team/app:nope'), { status: 404, doc: { errors: [{ code: 'MANIFEST_UNKNOWN', message: /team\/app:nope is unknown/ }] } })
  t.match(await apiCall('PUT', '/properties', { image: 'team/app:1.4.2', properties: [{ key: 'a\u0001', value: 'x' }] }, tagger), { status: 400, doc: { errors: [{ message: /control characters/ }] } })
  t.match(await apiCall('PUT', '/properties', { image: 'team/app', properties: [{ key: 'a', value: 'x' }] }, tagger), { status: 400, doc: { errors: [{ message: /names no manifest/ }] } })
})

t.test('promotion carries user properties unless told not to', async (t) => {
  const p = await apiCall('POST', '/promote', { from: 'team/app:1.4.2', to: 'team/prod' })
  t.match(p, { status: 200, doc: { properties: 1 } }, 'by default (properties.promote)')
  const prod = await apiCall('GET', '/properties?image=team/prod:1.4.2')
  t.same(userProps(prod.doc), [{ key: 'env', values: ['dev'] }])
  t.ok(prod.doc.properties.some((x: { key: string; readOnly: boolean }) => x.key === 'maintainer' && x.readOnly), 'read-only ones follow the image')
  t.equal(await cliOk(['promote', 'team/app:1.4.2', 'team/bare', '--no-properties']), `promoted team/app:1.4.2 to team/bare (${img.digest}): 1 manifest(s), 2 blob(s), 0 referrer(s)\n`, 'no user property to mention')
  const bare = await apiCall('GET', '/properties?image=team/bare:1.4.2')
  t.ok(bare.doc.properties.length > 0 && bare.doc.properties.every((x: { readOnly: boolean }) => x.readOnly), '--no-properties: only the read-only ones')
})
