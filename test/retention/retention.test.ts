/**
 * Retention policies end to end (issue 12, "Retention and cleanup") on a node of real processes,
 * through the CLI: a policy keeping the 2 newest versions and deleting untagged manifests, its
 * dry run, its run, an immutable repository left alone, and GC freeing what it deleted.
 */
import t from 'tap'
import { authFetch, checkImage, hasBlobOnDisk, pushHttp, runCli, startTestCluster } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'

const c = await startTestCluster(t, { size: 1 })
const creds = c.credentials
const user = `${creds.username}:${creds.password}`
const node = c.nodes[0]!

async function cli (...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; doc: any }> {
  const r = await runCli([...args, '--node', node.url, '--user', user], { timeoutMs: 120_000 })
  let doc: unknown
  try { doc = JSON.parse(r.stdout) } catch { doc = undefined }
  return { ...r, doc }
}

const versions = ['v1.0.0', 'v1.0.1', 'v1.0.2', 'v1.0.3', 'v1.0.4']
const imgs = new Map(versions.map((v) => [v, image({ layers: 1, seed: `retention-${v}-${Date.now()}` })]))
const latest = image({ layers: 1, seed: `retention-latest-${Date.now()}` })
const frozen = ['v1', 'v2', 'v3'].map((v) => [v, image({ layers: 1, seed: `frozen-${v}-${Date.now()}` })] as const)

t.test('a policy keeping the 2 newest versions deletes the older tags and their manifests, and GC frees them', async (t) => {
  for (const [v, img] of imgs) t.match(await pushHttp(node.url, creds, 'ci/app', img, v), { outcome: 'ok' }, `ci/app:${v}`)
  t.match(await pushHttp(node.url, creds, 'ci/app', latest, 'latest'), { outcome: 'ok' })
  for (const [v, img] of frozen) t.match(await pushHttp(node.url, creds, 'ci/frozen', img, v), { outcome: 'ok' })
  t.equal((await cli('immutable', 'add', 'ci/frozen')).code, 0, 'ci/frozen is immutable')

  const set = await cli('retention', 'set', 'ci', '--repos', 'ci/**', '--keep-last', '2', '--by', 'semver', '--untagged', '--untagged-after', '0s')
  t.equal(set.code, 0, `retention set: ${set.stderr}`)
  const list = await cli('retention', 'list', '--json')
  t.match(list.doc, { policies: [{ name: 'ci', repositories: ['ci/**'], keepLast: 2, by: 'semver', untagged: true, untaggedAfterHours: 0 }] })
  const table = await cli('retention', 'list')
  t.match(table.stdout, /ci\s+ci\/\*\*\s+keep last 2 by version, untagged after 0h/, `a table for people:\n${table.stdout}`)

  const dry = await cli('retention', 'run', '--dry-run', '--json')
  t.equal(dry.code, 0, dry.stderr)
  const p = dry.doc.policies[0]
  t.same(p.tags.map((x: { repo: string; tag: string }) => `${x.repo}:${x.tag}`).sort(), ['ci/app:v1.0.0', 'ci/app:v1.0.1', 'ci/app:v1.0.2'], 'the dry run names the three oldest versions (latest is no version; ci/frozen is immutable)')
  t.same(p.manifests.map((m: { digest: string }) => m.digest).sort(), ['v1.0.0', 'v1.0.1', 'v1.0.2'].map((v) => imgs.get(v)!.digest).sort(), 'and their manifests, untagged once the tags go')
  t.equal((await authFetch(`${node.url}/v2/ci/app/manifests/v1.0.0`, creds, { method: 'HEAD' })).status, 200, 'a dry run deletes nothing')

  const run = await cli('retention', 'run')
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, /deleted 3 tag\(s\) and 3 untagged manifest\(s\)/, run.stdout)
  const tags = await (await authFetch(`${node.url}/v2/ci/app/tags/list`, creds)).json() as { tags: string[] }
  t.same(tags.tags.sort(), ['latest', 'v1.0.3', 'v1.0.4'], 'ci/app keeps latest and the two newest versions')
  for (const v of ['v1.0.0', 'v1.0.1', 'v1.0.2']) t.equal((await authFetch(`${node.url}/v2/ci/app/manifests/${imgs.get(v)!.digest}`, creds, { method: 'HEAD' })).status, 404, `${v}'s manifest is gone`)
  for (const v of ['v1.0.3', 'v1.0.4']) t.same(await checkImage(node.url, creds, 'ci/app', imgs.get(v)!, v), [], `${v} is whole`)
  for (const [v, img] of frozen) t.same(await checkImage(node.url, creds, 'ci/frozen', img, v), [], `ci/frozen:${v} is untouched (immutable)`)

  const gc = await cli('gc', '--grace', '0s', '--json')
  t.equal(gc.code, 0, gc.stderr)
  const gone = ['v1.0.0', 'v1.0.1', 'v1.0.2'].flatMap((v) => [imgs.get(v)!.config.digest, imgs.get(v)!.layers[0]!.digest])
  t.same(gc.doc.blobs.map((b: { digest: string }) => b.digest).sort(), gone.sort(), 'GC collects the deleted images\' blobs')
  for (const dg of gone) t.notOk(await hasBlobOnDisk(node.dataDir, dg), `${dg.slice(0, 19)} is off the disk`)

  t.equal((await cli('retention', 'rm', 'ci')).code, 0)
  t.same((await cli('retention', 'list', '--json')).doc, { policies: [] }, 'the policy is removed')
})

t.test('bad policies get a clear 400 from the API and a one-line error from the CLI', async (t) => {
  const res = await authFetch(`${node.url}/api/v1/retention/bad`, creds, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ repositories: ['ci/**'] }) })
  t.equal(res.status, 400)
  t.match(await res.text(), /deletes nothing/)
  const r = await cli('retention', 'set', 'x', '--repos', 'ci/**', '--keep-last', 'many')
  t.equal(r.code, 1)
  t.match(r.stderr, /--keep-last takes a whole number/)
  const run = await cli('retention', 'run', '--policy', 'nope')
  t.equal(run.code, 1)
  t.match(run.stderr, /no retention policy named nope/)
})
