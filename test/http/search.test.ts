/**
 * Search and "latest" through a real node (issue 14): GET /api/v1/search with parameters and a
 * q expression, pages with the Link header, results filtered by the caller's read permission,
 * properties set through the API and checksums computed by the node, 400s naming the position,
 * GET /api/v1/latest/REPO, the metrics, and `flotilla search` / `flotilla latest`.
 * One in-process node serves every subtest.
 */
import t from 'tap'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { startInProcess, basic } from '../helpers/inproc.js'
import { run } from '../helpers/exec.js'
import { ROOT } from '../../scripts/lib/procs.js'
import { image, type Image } from '../helpers/oci.js'

const reg = await startInProcess()
t.teardown(async () => { await reg.stop() })
const alice = basic({ username: 'alice', password: 'alice-password-1' })

async function push (repo: string, img: Image, tag: string): Promise<void> {
  for (const b of [img.config, ...img.layers]) {
    const res = await reg.fetch(`${reg.url}/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: b.data })
    await res.arrayBuffer()
    if (res.status !== 201) throw new Error(`blob push to ${repo}: ${res.status}`)
  }
  const res = await reg.fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': img.mediaType }, body: img.manifest })
  await res.arrayBuffer()
  if (res.status !== 201) throw new Error(`manifest push to ${repo}: ${res.status}`)
}

async function api (path: string, init: RequestInit = {}, who?: string): Promise<{ status: number; body: any; res: Response }> {
  const res = await reg.fetch(`${reg.url}/api/v1${path}`, { ...init, headers: { 'content-type': 'application/json', ...(who !== undefined ? { authorization: who } : {}), ...init.headers as Record<string, string> } })
  const text = await res.text()
  let body: unknown = text
  try { body = JSON.parse(text) } catch {}
  return { status: res.status, body, res }
}

const names = (body: { items: Array<{ repo: string; tags: string[] }> }): string[] => body.items.map((h) => `${h.repo}:${[...h.tags].sort().join(',')}`)

// The world: a layer shared by a team repository and another one, versions, a property.
const shared = image({ seed: 'shared', layers: 1 })
const v1 = image({ seed: 'v1' })
const v2 = image({ seed: 'v2', extra: { annotations: { 'org.opencontainers.image.created': '2024-05-01T00:00:00Z' } } })
const rc = image({ seed: 'rc' })
await push('team/app', v1, 'v1.0.0')
await push('team/app', v2, 'v1.2.0')
await push('team/app', rc, 'v2.0.0-rc.1')
await push('team/web', shared, 'prod')
await push('other/tool', shared, '1.0.0')
let r = await api('/properties', { method: 'PUT', body: JSON.stringify({ image: 'team/app:v1.0.0', properties: [{ key: 'qa.status', value: 'approved' }] }) })
if (r.status !== 200) throw new Error(`PUT /properties: ${r.status} ${JSON.stringify(r.body)}`)
r = await api('/users', { method: 'POST', body: JSON.stringify({ name: 'alice', password: 'alice-password-1' }) })
if (r.status !== 201) throw new Error(`POST /users: ${r.status}`)
r = await api('/permissions/team', { method: 'PUT', body: JSON.stringify({ repositories: ['team/**'], users: { alice: ['read'] } }) })
if (r.status !== 200) throw new Error(`PUT /permissions: ${r.status} ${JSON.stringify(r.body)}`)

t.test('criteria as parameters and as q, ANDed; pages through the Link header', async (t) => {
  let r = await api('/search?name=team/*&tag=v1.*')
  t.equal(r.status, 200)
  t.same(names(r.body).sort(), ['team/app:v1.0.0', 'team/app:v1.2.0'])
  r = await api(`/search?q=${encodeURIComponent('name:team/* AND (prop:qa.status=approved OR created>=2024-01-01)')}`)
  t.same(names(r.body).sort(), ['team/app:v1.0.0', 'team/app:v1.2.0'], 'a property OR the created annotation')
  r = await api(`/search?name=team/app&q=${encodeURIComponent('NOT tag:v1.*')}`)
  t.same(names(r.body), ['team/app:v2.0.0-rc.1'])
  r = await api(`/search?digest=${v2.digest}&properties=true`)
  t.equal(r.body.items.length, 1)
  t.match(r.body.items[0], { repo: 'team/app', digest: v2.digest, mediaType: v2.mediaType, size: v2.manifest.length, createdAt: Date.parse('2024-05-01T00:00:00Z'), tags: ['v1.2.0'], properties: { 'org.opencontainers.image.created': ['2024-05-01T00:00:00Z'] } })
  r = await api(`/search?size=${encodeURIComponent(`<=${v1.manifest.length - 1}`)}&size=${encodeURIComponent('>=1')}&pushed=${encodeURIComponent('>=now-1h')}`)
  t.ok(r.body.items.every((h: { size: number }) => h.size < v1.manifest.length), 'repeated parameters are ANDed')

  // Pages of one: every match exactly once, following Link.
  const seen: string[] = []
  let next: string | undefined = '/search?tag=*&n=1'
  while (next !== undefined) {
    r = await api(next)
    t.equal(r.status, 200)
    seen.push(...names(r.body))
    const link = r.res.headers.get('link')
    t.equal(link === null, r.body.cursor === undefined, 'a Link header exactly when a cursor is given')
    next = link === null ? undefined : /^<\/api\/v1(.+)>; rel="next"$/.exec(link)![1]
  }
  t.same([...seen].sort(), ['other/tool:1.0.0', 'team/app:v1.0.0', 'team/app:v1.2.0', 'team/app:v2.0.0-rc.1', 'team/web:prod'], 'every tagged manifest, once')
  t.equal(seen[0], 'other/tool:1.0.0', 'in repository order')
})

t.test('checksums computed by the node find the manifests holding the blob, only where the caller may read', async (t) => {
  const layer = shared.layers[0]!
  const sha1 = createHash('sha1').update(layer.data).digest('hex')
  const md5 = createHash('md5').update(layer.data).digest('hex')
  // The node hashes blobs after their commit and records the sums in batches: wait for them.
  const deadline = Date.now() + 60_000
  let r = await api(`/search?sha1=${sha1}`)
  while (r.body.items?.length !== 2 && Date.now() < deadline) { await new Promise((resolve) => setTimeout(resolve, 200)); r = await api(`/search?sha1=${sha1}`) }
  t.same(names(r.body), ['other/tool:1.0.0', 'team/web:prod'], 'the admin sees both')
  r = await api(`/search?sha1=${sha1}`, {}, alice)
  t.same(names(r.body), ['team/web:prod'], 'alice reads team/** only')
  r = await api(`/search?md5=${md5}`, {}, alice)
  t.same(names(r.body), ['team/web:prod'])
  r = await api('/search?name=other/*', {}, alice)
  t.same(r.body.items, [], 'a repository alice may not read is never shown')
  r = await api(`/search?q=${encodeURIComponent('NOT name:team/*')}`, {}, alice)
  t.same(r.body.items, [])
  r = await api('/search?name=*', {}, 'Basic ' + Buffer.from('alice:wrong-password').toString('base64'))
  t.equal(r.status, 401)
})

t.test('latest by version, by push time, with a pattern and a property; unreadable is unknown', async (t) => {
  let r = await api('/latest/team/app')
  t.match(r.body, { repo: 'team/app', tag: 'v2.0.0-rc.1', digest: rc.digest, version: '2.0.0-rc.1' })
  r = await api('/latest/team/app?by=semver&match=v1.*')
  t.match(r.body, { tag: 'v1.2.0', digest: v2.digest })
  r = await api('/latest/team/app?prop=qa.status=approved')
  t.match(r.body, { tag: 'v1.0.0', digest: v1.digest })
  r = await api('/latest/team/app?by=time', {}, alice)
  t.match(r.body, { tag: 'v2.0.0-rc.1' })
  r = await api('/latest/other/tool', {}, alice)
  t.equal(r.status, 404)
  t.equal(r.body.errors[0].code, 'NAME_UNKNOWN')
  r = await api('/latest/team/app?match=nothing*')
  t.equal(r.status, 404)
  t.match(r.body.errors[0], { code: 'MANIFEST_UNKNOWN', message: /no tag of team\/app .*matches nothing\*/ })
  r = await api('/latest/team/app?by=size')
  t.equal(r.status, 400)
})

t.test('bad input: 400 naming the position or the parameter', async (t) => {
  let r = await api(`/search?q=${encodeURIComponent('name:team/* AND (tag:v1')}`)
  t.equal(r.status, 400)
  t.match(r.body.errors[0], { code: 'BAD_REQUEST', message: /position 24: expected \) to close the \( at position 17/ })
  r = await api('/search?size=huge')
  t.match(r.body.errors[0].message, /parameter size=huge: "huge" is not a size/)
  r = await api('/search?colour=red')
  t.match(r.body.errors[0].message, /unknown parameter "colour"/)
  r = await api('/search')
  t.match(r.body.errors[0].message, /give at least one criterion/)
  r = await api('/search?name=*&cursor=%%%')
  t.equal(r.status, 400)
  r = await api('/search?name=*&n=x')
  t.equal(r.status, 400)
  const metrics = await (await reg.fetch(`${reg.url}/metrics`)).text()
  t.match(metrics, /flotilla_search_requests_total\{kind="search",outcome="ok"\} \d+/)
  t.match(metrics, /flotilla_search_requests_total\{kind="latest",outcome="not_found"\} \d+/)
  t.match(metrics, /flotilla_search_duration_seconds_bucket\{le="0.05",kind="search"\} \d+/)
})

t.test('flotilla search and flotilla latest: tables for people, --json for scripts', async (t) => {
  const env = { ...process.env, FLOTILLA_NODE: reg.url, FLOTILLA_USER: `admin:${reg.credentials.password}` }
  const cli = async (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> => await run(process.execPath, [join(ROOT, 'bin', 'flotilla.mjs'), ...args], { env, timeoutMs: 60_000 })
  let r = await cli(['search', '--name', 'team/*', '--tag', 'v1.*', '--limit', '1', '--json'])
  t.equal(r.code, 0, r.stderr)
  const doc = JSON.parse(r.stdout) as { items: unknown[]; cursor?: string }
  t.equal(doc.items.length, 1)
  t.ok(doc.cursor !== undefined, 'more remain: the cursor to go on from')
  r = await cli(['search', '-q', 'name:team/app AND prop:qa.status=approved', '--properties'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^REPOSITORY\s+DIGEST\s+TAGS\s+TYPE\s+SIZE\s+PUSHED\s+PROPERTIES\n/)
  t.match(r.stdout, /team\/app\s+sha256:\S+\s+v1\.0\.0\s+oci\.image\.manifest\s+\d+ B\s+\d{4}-\d\d-\d\dT\S+\s+qa\.status=approved/)
  r = await cli(['latest', 'team/app', '--match', 'v1.*'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /team\/app:v1\.2\.0\s+sha256:[0-9a-f]{64}\s+1\.2\.0/)
})
