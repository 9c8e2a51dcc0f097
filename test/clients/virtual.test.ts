/**
 * Virtual repositories with a real client (issue 13, part 2): skopeo pulls and pushes through
 * the virtual name `dev/` over members `team-a/`, then `hub/` (default `team-a/`), on one node.
 *
 *   resolution order   dev/app:1 is team-a's (first member), dev/app:2 only hub has
 *   push redirection   a push to dev/app:3 lands in team-a/app, never in hub/app
 *   merged listing     tags of dev/app and the catalog merge both members, without duplicates
 *   permissions        read on the virtual name and on the member that serves; write on both to push
 *
 * `hub/` is a plain local namespace here: remote repositories (issue 13 part 1) plug into the
 * same per-repository GET handlers the virtual resolves through.
 */
import t from 'tap'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { removeTree } from '../helpers/cleanup.js'
import { busyboxImage, readOciLayout, writeOciLayout, type BuiltImage } from '../helpers/images.js'
import { containersEnv } from '../helpers/podman.js'
import { startTarget } from '../helpers/registry.js'
import { requireTool } from '../helpers/tools.js'
import { runCli } from '../helpers/cluster.js'

const reference = process.env.FLOTILLA_TEST_TARGET === 'reference'
const skip = reference ? 'virtual repositories are Flotilla\'s' : false

t.test('virtual repositories through skopeo', { skip }, async (t) => {
  if (!requireTool(t, 'skopeo')) return
  const reg = await startTarget(t)
  const ctr = await containersEnv(t, [reg.host])
  await ctr.login('skopeo', reg.host, reg.credentials)
  const work = await mkdtemp(join(tmpdir(), 'fl-virtual-'))
  t.teardown(async () => { await removeTree(work) })
  const admin = `${reg.credentials.username}:${reg.credentials.password}`
  const conn = ['--node', `http://${reg.host}`, '--user', admin]
  let n = 0

  /** skopeo copy of an image into repo:tag as `creds`. */
  async function push (image: BuiltImage, ref: string, creds = admin): Promise<{ code: number | null; stderr: string }> {
    const layout = join(work, `l${n++}`)
    await writeOciLayout(layout, image, 'v1')
    return await ctr.skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${reg.host}/${ref}`])
  }
  /** The digest skopeo sees for repo:tag as `creds` (undefined: it failed; stderr kept). */
  async function inspect (ref: string, creds = admin): Promise<{ digest?: string; stderr: string }> {
    const r = await ctr.skopeo(['inspect', '--tls-verify=false', '--creds', creds, `docker://${reg.host}/${ref}`])
    return r.code === 0 ? { digest: (JSON.parse(r.stdout) as { Digest: string }).Digest, stderr: r.stderr } : { stderr: r.stderr }
  }
  /** As the admin with a password (Basic): registry JWTs never carry administrator rights, nor the whole catalog. */
  const basic = { authorization: 'Basic ' + Buffer.from(admin).toString('base64') }
  const get = async (path: string, init: RequestInit = {}): Promise<Response> => await fetch(reg.url + path, { ...init, headers: { ...basic, ...init.headers as Record<string, string> } })
  async function adminApi (method: string, path: string, body: unknown): Promise<void> {
    const res = await get(`/api/v1${path}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`)
  }

  const a1 = busyboxImage({ randomLayerSizes: [2048] })
  const b1 = busyboxImage({ randomLayerSizes: [2048] })
  const b2 = busyboxImage({ randomLayerSizes: [2048] })
  for (const [img, ref] of [[a1, 'team-a/app:1'], [b1, 'hub/app:1'], [b2, 'hub/app:2'], [b2, 'hub/tool:1']] as const) {
    const r = await push(img, ref)
    t.equal(r.code, 0, `push ${ref}: ${r.stderr}`)
  }

  await t.test('created through the CLI, listed as a table; the API lists it as JSON', async (t) => {
    const add = await runCli(['virtual', 'add', 'dev', '--prefix', 'dev/', '--member', 'team-a/', '--member', 'hub', '--default', 'team-a/', ...conn])
    t.equal(add.code, 0, add.stderr)
    t.match(add.stdout, 'virtual repository dev created: dev/NAME resolves to team-a/NAME, then hub/NAME; pushes go to team-a/NAME')
    const list = await runCli(['virtual', 'list', ...conn])
    t.match(list.stdout, /NAME\s+PREFIX\s+MEMBERS \(IN ORDER\)\s+PUSHES TO\ndev\s+dev\/\s+team-a\/ hub\/\s+team-a\//)
    const json = await get('/api/v1/virtuals')
    t.same(await json.json(), { virtuals: [{ name: 'dev', prefix: 'dev/', members: ['team-a/', 'hub/'], defaultMember: 'team-a/' }] })
  })

  await t.test('resolution order: the first member that has the tag serves it, blobs included', async (t) => {
    t.equal((await inspect('dev/app:1')).digest, a1.manifestDigest, 'dev/app:1 is team-a/app:1, not hub/app:1')
    t.equal((await inspect('dev/app:2')).digest, b2.manifestDigest, 'dev/app:2 only hub has')
    t.equal((await inspect('dev/tool:1')).digest, b2.manifestDigest, 'dev/tool:1 from hub')
    // A real pull: manifest and every blob through the virtual name.
    const out = join(work, 'pulled')
    const pull = await ctr.skopeo(['copy', '--src-tls-verify=false', `docker://${reg.host}/dev/app:2`, `oci:${out}:x`])
    t.equal(pull.code, 0, pull.stderr)
    const got = await readOciLayout(out, 'x')
    t.equal(got.manifestDigest, b2.manifestDigest, 'the pulled image is hub\'s')
    const head = await reg.fetch('/v2/dev/app/manifests/1', { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })
    t.equal(head.headers.get('flotilla-resolved-repository'), 'team-a/app', 'the response names the member that served')
    // The random layer (the busybox layer is in every image): in hub/app, not in team-a/app.
    const blob = await reg.fetch(`/v2/dev/app/blobs/${b1.layers[b1.layers.length - 1]!.digest}`)
    t.equal(blob.status, 200, 'a blob by digest comes from the first member that links it (hub here)')
    t.equal(blob.headers.get('flotilla-resolved-repository'), 'hub/app')
    await blob.arrayBuffer()
    const bad = await reg.fetch('/v2/dev/app/blobs/sha256:nothex')
    t.equal(bad.status, 400, 'a malformed digest through the virtual name: 400')
    t.match(await bad.json(), { errors: [{ code: 'DIGEST_INVALID' }] })
    const miss = await inspect('dev/app:404')
    t.equal(miss.digest, undefined)
    t.match(miss.stderr, /manifest unknown/i, 'a tag no member has: MANIFEST_UNKNOWN')
  })

  await t.test('merged listing: tags and the catalog, without duplicates', async (t) => {
    const tags = await ctr.skopeo(['list-tags', '--tls-verify=false', `docker://${reg.host}/dev/app`])
    t.equal(tags.code, 0, tags.stderr)
    t.same((JSON.parse(tags.stdout) as { Tags: string[] }).Tags, ['1', '2'], 'team-a has 1, hub has 1 and 2')
    const page = await reg.fetch('/v2/dev/app/tags/list?n=1')
    t.same(await page.json(), { name: 'dev/app', tags: ['1'] })
    t.match(page.headers.get('link'), /last=1/, 'paged like any tag list')
    const cat = await (await get('/v2/_catalog')).json() as { repositories: string[] }
    t.same(cat.repositories, ['dev/app', 'dev/tool', 'hub/app', 'hub/tool', 'team-a/app'], 'each member repository once under dev/, beside the members themselves')
    // Referrers of one subject: a signature in both members (one entry), an SBOM in hub only.
    const empty = Buffer.from('{}')
    const emptyDigest = `sha256:${createHash('sha256').update(empty).digest('hex')}`
    const referrer = (kind: string): Buffer => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: kind, config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: emptyDigest, size: 2 }, layers: [{ mediaType: 'application/vnd.oci.empty.v1+json', digest: emptyDigest, size: 2 }], subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: a1.manifestDigest, size: a1.manifest.length } }))
    for (const [repo, kinds] of [['team-a/app', ['application/x-signature']], ['hub/app', ['application/x-signature', 'application/x-sbom']]] as const) {
      t.equal((await reg.fetch(`/v2/${repo}/blobs/uploads/?digest=${emptyDigest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: empty })).status, 201)
      for (const k of kinds) {
        const m = referrer(k)
        const put = await reg.fetch(`/v2/${repo}/manifests/sha256:${createHash('sha256').update(m).digest('hex')}`, { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: m })
        t.equal(put.status, 201, `${k} in ${repo}`)
      }
    }
    const refs = await (await reg.fetch(`/v2/dev/app/referrers/${a1.manifestDigest}`)).json() as { manifests: Array<{ artifactType: string }> }
    t.same(refs.manifests.map((d) => d.artifactType).sort(), ['application/x-sbom', 'application/x-signature'], 'referrers merged, each once')
  })

  await t.test('push redirection: a push through the virtual name lands in the default member', async (t) => {
    const a3 = busyboxImage({ randomLayerSizes: [2048] })
    const r = await push(a3, 'dev/app:3')
    t.equal(r.code, 0, r.stderr)
    t.equal((await inspect('team-a/app:3')).digest, a3.manifestDigest, 'in team-a/app')
    t.equal((await inspect('hub/app:3')).digest, undefined, 'not in hub/app')
    t.equal((await inspect('dev/app:3')).digest, a3.manifestDigest, 'and pulled back through dev/app')
    // b1's layers are all in hub/app: through dev/app skopeo sees them (HEAD 200) and uploads
    // none, so the push must link them into team-a/app from hub/app, as a mount would.
    const seen = await push(b1, 'dev/app:5')
    t.equal(seen.code, 0, `a push of blobs the client saw through the virtual name: ${seen.stderr}`)
    t.equal((await inspect('team-a/app:5')).digest, b1.manifestDigest, 'lands whole in team-a/app')
    const layer = await get(`/v2/team-a/app/blobs/${b1.layers[b1.layers.length - 1]!.digest}`, { method: 'HEAD' })
    t.equal(layer.status, 200, 'hub\'s layer is linked in team-a/app now')
    const fresh = await push(b1, 'dev/new:1')
    t.equal(fresh.code, 0, `a new repository through the virtual name: ${fresh.stderr}`)
    t.equal((await inspect('team-a/new:1')).digest, b1.manifestDigest, 'is created in team-a')
    const cat = await (await get('/v2/_catalog')).json() as { repositories: string[] }
    t.notOk(cat.repositories.some((r) => r.startsWith('dev/') && !['dev/app', 'dev/tool', 'dev/new'].includes(r)), 'nothing stored under dev/')
    const del = await reg.fetch(`/v2/dev/app/manifests/${a3.manifestDigest}`, { method: 'DELETE' })
    t.equal(del.status, 405, 'deletes name the member itself')
    t.match(await del.text(), /delete in the member repository itself/)
  })

  await t.test('permissions: the virtual name and the member that serves', async (t) => {
    const pw = 'a-long-test-password'
    for (const u of ['viaonly', 'hubreader', 'membersonly', 'pusher']) await adminApi('POST', '/users', { name: u, password: pw })
    await adminApi('PUT', '/permissions/dev-read', { repositories: ['dev/**'], users: { viaonly: ['read'], hubreader: ['read'], pusher: ['write', 'read'] } })
    await adminApi('PUT', '/permissions/hub-read', { repositories: ['hub/**'], users: { hubreader: ['read'], membersonly: ['read'], pusher: ['read'] } })
    await adminApi('PUT', '/permissions/team-a-read', { repositories: ['team-a/**'], users: { membersonly: ['read'], pusher: ['read'] } })
    const hub = await inspect('dev/app:1', `hubreader:${pw}`)
    t.equal(hub.digest, b1.manifestDigest, `a caller who may not read team-a is served by hub, the next member: ${hub.stderr}`)
    const none = await inspect('dev/app:1', `viaonly:${pw}`)
    t.equal(none.digest, undefined, 'read on the virtual name alone is not enough')
    t.match(none.stderr, /denied/i, none.stderr)
    const audit = await (await get('/api/v1/audit?user=viaonly&outcome=denied')).json() as { entries: Array<{ code?: string }> }
    t.ok(audit.entries.some((e) => e.code === 'DENIED'), 'the refusal is in the audit log')
    const noVirtual = await inspect('dev/app:1', `membersonly:${pw}`)
    t.equal(noVirtual.digest, undefined, 'read on the members alone is not enough either')
    t.match(noVirtual.stderr, /denied|unauthorized|authentication required/i, noVirtual.stderr)
    const refused = await push(busyboxImage({ randomLayerSizes: [512] }), 'dev/app:4', `pusher:${pw}`)
    t.not(refused.code, 0, 'write on dev/** without write on team-a: refused')
    t.match(refused.stderr, /denied/i, refused.stderr.slice(-300))
    t.equal((await inspect('team-a/app:4')).digest, undefined, 'and nothing landed')
  })

  await t.test('bad input: overlapping prefixes and virtual in virtual are refused with the fix', async (t) => {
    // One through the CLI (each run costs seconds here), the rest through the API it calls.
    const cycle = await runCli(['virtual', 'add', 'all', '--prefix', 'all/', '--member', 'dev/', ...conn])
    t.equal(cycle.code, 1)
    t.match(cycle.stderr, /a virtual cannot contain another virtual; list that one's members instead/)
    const putVirtual = async (name: string, body: unknown): Promise<{ status: number; doc: unknown }> => {
      const res = await get(`/api/v1/virtuals/${name}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
      return { status: res.status, doc: await res.json() }
    }
    t.match(await putVirtual('ta', { prefix: 'team-a/', members: ['x/'], defaultMember: 'x/' }), { status: 400, doc: { errors: [{ code: 'BAD_REQUEST', message: /virtual repository dev has member team-a\/, which overlaps team-a\// }] } }, 'a prefix that is a member of another virtual')
    const blob = Buffer.from('a blob in a local namespace')
    const up = await reg.fetch(`/v2/other/x/blobs/uploads/?digest=sha256:${createHash('sha256').update(blob).digest('hex')}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: blob })
    t.equal(up.status, 201, 'other/x exists')
    t.match(await putVirtual('o', { prefix: 'other/', members: ['x/'], defaultMember: 'x/' }), { status: 409, doc: { errors: [{ code: 'ALREADY_EXISTS', message: /repository other\/x is stored under other\// }] } }, 'a prefix over a local namespace')
    t.match(await putVirtual('d2', { prefix: 'dev/x/', members: ['x/'], defaultMember: 'x/' }), { status: 409, doc: { errors: [{ code: 'ALREADY_EXISTS', message: /overlaps dev\/ of virtual repository dev/ }] } })
    t.match(await putVirtual('y', { prefix: 'y', members: ['hub/'], defaultMember: 'hub/' }), { status: 400, doc: { errors: [{ code: 'BAD_REQUEST', message: /must be a repository namespace ending in "\/"/ }] } })
    const res = await get('/api/v1/virtuals/y', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '[1' })
    t.equal(res.status, 400, 'a body that is not JSON')
    const names = (await (await get('/api/v1/virtuals')).json() as { virtuals: Array<{ name: string }> }).virtuals.map((v) => v.name)
    t.same(names, ['dev'], 'none of them was recorded')
  })

  await t.test('metrics count resolutions by member and misses', async (t) => {
    const text = await (await get('/metrics')).text()
    t.match(text, /flotilla_virtual_resolutions_total\{virtual="dev",member="team-a\/"\} [1-9]/)
    t.match(text, /flotilla_virtual_resolutions_total\{virtual="dev",member="hub\/"\} [1-9]/)
    t.match(text, /flotilla_virtual_misses_total\{virtual="dev"\} [1-9]/)
  })

  await t.test('removed: the name resolves no more, the members keep their images', async (t) => {
    const rm = await get('/api/v1/virtuals/dev', { method: 'DELETE' })
    t.equal(rm.status, 200)
    t.equal((await get('/api/v1/virtuals/dev', { method: 'DELETE' })).status, 404, 'a second time: NOT_FOUND')
    t.equal((await inspect('dev/app:1')).digest, undefined)
    t.equal((await inspect('team-a/app:1')).digest, a1.manifestDigest)
  })
})
