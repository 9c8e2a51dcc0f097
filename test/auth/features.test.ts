/**
 * Access-control features beyond the matrix: immutable tags, promotion (with referrers and
 * index children), the audit log, failed-login rate limiting, anonymous read-only grants,
 * annotate-only pushes, and the first-start admin password.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import { startInProcess, basic, type InProcessNode } from '../helpers/inproc.js'
import { blob, descriptor, image, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST } from '../helpers/oci.js'
import { ConfigSchema } from '../../src/config.js'
import { RegistryNode } from '../../src/node.js'
import { admin, call, createUser, grant, pushBlobWith, pushImageWith } from './fixtures.js'

const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

let node: InProcessNode
t.before(async () => { node = await startInProcess({ auth: { rateLimit: { maxFailuresPerUser: 3, maxFailuresPerAddress: 1000, windowSeconds: 60 } } }) })
t.teardown(async () => { await node.stop() })

/** Push a referrer (an artifact whose subject is `subject`) into repo; answers its digest. */
async function pushReferrer (repo: string, subject: { digest: string; size: number }, artifactType: string, f = node.fetch): Promise<string> {
  const empty = blob('{}', OCI_EMPTY)
  await pushBlobWith(node.fetch, node.url, repo, empty)
  const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType, config: descriptor(empty), layers: [descriptor(empty)], subject: { mediaType: OCI_MANIFEST, ...subject } }))
  const res = await f(`${node.url}/v2/${repo}/manifests/${sha(m)}`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: m })
  const text = await res.text()
  if (res.status !== 201) throw new Error(`referrer push: ${res.status} ${text}`)
  return sha(m)
}

t.test('immutable tags refuse both an overwrite and a delete', async (t) => {
  const img = image({ seed: 'imm-1' })
  await pushImageWith(node.fetch, node.url, 'frozen/app', img, 'v1')
  await admin(node, 'PUT', '/api/v1/immutable', { pattern: 'frozen/**' })
  t.same((await admin(node, 'GET', '/api/v1/immutable')).rules.map((r: { pattern: string }) => r.pattern), ['frozen/**'])
  const other = image({ seed: 'imm-2' })
  for (const b of [other.config, ...other.layers]) await pushBlobWith(node.fetch, node.url, 'frozen/app', b)
  const over = await node.fetch(`${node.url}/v2/frozen/app/manifests/v1`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: other.manifest })
  t.equal(over.status, 409, 'overwrite refused')
  t.match(await over.text(), /"code":"DENIED".*immutable/)
  const same = await node.fetch(`${node.url}/v2/frozen/app/manifests/v1`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: img.manifest })
  t.equal(same.status, 201, 're-pushing the same manifest under the tag is fine')
  await same.arrayBuffer()
  const newTag = await node.fetch(`${node.url}/v2/frozen/app/manifests/v2`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: other.manifest })
  t.equal(newTag.status, 201, 'a new tag is fine')
  await newTag.arrayBuffer()
  const delTag = await node.fetch(`${node.url}/v2/frozen/app/manifests/v1`, { method: 'DELETE' })
  t.equal(delTag.status, 409, 'tag delete refused')
  await delTag.arrayBuffer()
  const delManifest = await node.fetch(`${node.url}/v2/frozen/app/manifests/${img.digest}`, { method: 'DELETE' })
  t.equal(delManifest.status, 409, 'deleting the tagged manifest refused')
  await delManifest.arrayBuffer()
  const get = await node.fetch(`${node.url}/v2/frozen/app/manifests/v1`, { headers: { accept: OCI_MANIFEST } })
  t.equal(get.headers.get('docker-content-digest'), img.digest, 'v1 still points where it did')
  await get.arrayBuffer()
  const outside = await pushImageWith(node.fetch, node.url, 'thawed/app', image({ seed: 'imm-3' }), 'v1')
  t.ok(outside, 'other repositories are unaffected')
  await admin(node, 'DELETE', `/api/v1/immutable?pattern=${encodeURIComponent('frozen/**')}`)
  const after = await node.fetch(`${node.url}/v2/frozen/app/manifests/v1`, { method: 'DELETE' })
  t.equal(after.status, 202, 'once the rule is gone, the delete works')
  await after.arrayBuffer()
})

t.test('promotion copies an index, its children and the referrers, without re-uploading', async (t) => {
  const a = image({ seed: 'promo-a' })
  const b = image({ seed: 'promo-b' })
  await pushImageWith(node.fetch, node.url, 'dev/app', a)
  await pushImageWith(node.fetch, node.url, 'dev/app', b)
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: a.digest, size: a.manifest.length }, { mediaType: OCI_MANIFEST, digest: b.digest, size: b.manifest.length }] }))
  const put = await node.fetch(`${node.url}/v2/dev/app/manifests/rc1`, { method: 'PUT', headers: { 'content-type': OCI_INDEX }, body: index })
  t.equal(put.status, 201)
  await put.arrayBuffer()
  const sig = await pushReferrer('dev/app', { digest: sha(index), size: index.length }, 'application/vnd.test.signature')
  const sbom = await pushReferrer('dev/app', { digest: a.digest, size: a.manifest.length }, 'application/vnd.test.sbom')
  const sigOfSig = await pushReferrer('dev/app', { digest: sig, size: 0 }, 'application/vnd.test.countersign')

  // QA may read dev/** and write prod/**; developers may not write prod/**.
  const qa = await createUser(node, 'qa-user')
  const dev = await createUser(node, 'dev-user')
  await grant(node, 'promo', ['dev/**'], { 'qa-user': ['read'], 'dev-user': ['read', 'write'] })
  await grant(node, 'prod', ['prod/**'], { 'qa-user': ['write'] })
  t.equal((await call(node, dev, 'POST', '/api/v1/promote', { from: 'dev/app:rc1', to: 'prod/app:1.0' })).status, 403, 'no write on the target')
  t.equal((await call(node, qa, 'POST', '/api/v1/promote', { from: 'dev/app:rc1', to: 'prod/app:1.0', move: true })).status, 403, 'moving needs delete on the source')
  const r = await call(node, qa, 'POST', '/api/v1/promote', { from: 'dev/app:rc1', to: 'prod/app:1.0' })
  t.equal(r.status, 200, JSON.stringify(r.body))
  t.equal(r.body.digest, sha(index))
  t.equal(r.body.referrers, 3)
  t.same(new Set(r.body.manifests), new Set([sha(index), a.digest, b.digest, sig, sbom, sigOfSig]))

  const get = await node.fetch(`${node.url}/v2/prod/app/manifests/1.0`, { headers: { accept: OCI_INDEX } })
  t.equal(get.status, 200)
  t.ok(Buffer.from(await get.arrayBuffer()).equals(index), 'the index, byte for byte')
  for (const d of [a.digest, b.digest]) {
    const child = await node.fetch(`${node.url}/v2/prod/app/manifests/${d}`, { method: 'HEAD' })
    t.equal(child.status, 200, `child ${d.slice(0, 15)} copied`)
  }
  for (const bl of [a.config, ...a.layers, b.config, ...b.layers]) {
    const res = await node.fetch(`${node.url}/v2/prod/app/blobs/${bl.digest}`)
    t.equal(res.status, 200, 'blob readable in the target')
    t.ok(Buffer.from(await res.arrayBuffer()).equals(bl.data))
  }
  const refs = await (await node.fetch(`${node.url}/v2/prod/app/referrers/${sha(index)}`)).json() as { manifests: Array<{ digest: string; artifactType: string }> }
  t.same(refs.manifests.map((m) => m.digest), [sig], 'the signature came along')
  const refsA = await (await node.fetch(`${node.url}/v2/prod/app/referrers/${a.digest}`)).json() as { manifests: Array<{ digest: string }> }
  t.same(refsA.manifests.map((m) => m.digest), [sbom], 'the SBOM of a child came along')
  const refsSig = await (await node.fetch(`${node.url}/v2/prod/app/referrers/${sig}`)).json() as { manifests: Array<{ digest: string }> }
  t.same(refsSig.manifests.map((m) => m.digest), [sigOfSig], 'referrers of referrers too')
  const src = await node.fetch(`${node.url}/v2/dev/app/manifests/rc1`, { method: 'HEAD' })
  t.equal(src.status, 200, 'a copy leaves the source alone')

  t.test('--move removes it from the source', async (t) => {
    const m = await call(node, node.authorization, 'POST', '/api/v1/promote', { from: 'dev/app:rc1', to: 'staging/app', move: true })
    t.equal(m.status, 200)
    t.equal((await node.fetch(`${node.url}/v2/staging/app/manifests/rc1`, { method: 'HEAD' })).status, 200, 'target tag defaults to the source tag')
    t.equal((await node.fetch(`${node.url}/v2/dev/app/manifests/rc1`, { method: 'HEAD' })).status, 404)
    t.equal((await node.fetch(`${node.url}/v2/dev/app/manifests/${sig}`, { method: 'HEAD' })).status, 404, 'its referrers moved too')
    const refs = await (await node.fetch(`${node.url}/v2/dev/app/referrers/${sha(index)}`)).json() as { manifests: unknown[] }
    t.same(refs.manifests, [])
  })

  t.test('promotion into an immutable tag is refused', async (t) => {
    await admin(node, 'PUT', '/api/v1/immutable', { pattern: 'prod/**' })
    const other = image({ seed: 'promo-c' })
    await pushImageWith(node.fetch, node.url, 'dev/other', other, 'x')
    const r = await call(node, node.authorization, 'POST', '/api/v1/promote', { from: 'dev/other:x', to: 'prod/app:1.0' })
    t.equal(r.status, 409)
    await admin(node, 'DELETE', '/api/v1/immutable?pattern=prod%2F**')
  })
})

t.test('the audit log holds who did what, from where, and the outcome', async (t) => {
  const auditor = await createUser(node, 'auditee')
  await grant(node, 'audit', ['audited/**'], { auditee: ['read', 'write'] })
  const img = image({ seed: 'audit' })
  const f = async (u: string, init?: RequestInit): Promise<Response> => await fetch(u, { ...init, headers: { ...(init?.headers as Record<string, string>), authorization: auditor } })
  await pushImageWith(f, node.url, 'audited/app', img, 'v1')
  const denied = await call(node, auditor, 'DELETE', `/v2/audited/app/manifests/${img.digest}`)
  t.equal(denied.status, 403)
  const badLogin = await call(node, basic({ username: 'auditee', password: 'not-the-password' }), 'GET', '/v2/')
  t.equal(badLogin.status, 401)

  const entries = (await admin(node, 'GET', '/api/v1/audit?user=auditee&limit=50')).entries as Array<Record<string, any>>
  const put = entries.find((e) => e.action === 'PutManifest')
  t.ok(put, 'the manifest push')
  t.match(put, { user: 'auditee', repo: 'audited/app', outcome: 'ok', address: /127\.0\.0\.1/, method: 'PUT', path: '/v2/audited/app/manifests/v1', detail: { digest: img.digest, tags: ['v1'] } })
  t.type(put!.at, 'number')
  t.equal(entries.filter((e) => e.action === 'LinkBlob' && e.outcome === 'ok').length, 2, 'both blobs')
  t.match(entries.find((e) => e.action === 'denied'), { user: 'auditee', outcome: 'denied', code: 'DENIED', repo: 'audited/app', method: 'DELETE' })
  t.match(entries.find((e) => e.action === 'login'), { user: 'auditee', outcome: 'failed', code: 'UNAUTHORIZED' })
  t.ok(entries.every((e, i) => i === 0 || entries[i - 1]!.seq > e.seq), 'newest first')

  const admins = (await admin(node, 'GET', '/api/v1/audit?action=CreateUser')).entries as Array<Record<string, any>>
  const created = admins.find((e) => e.detail?.name === 'auditee')
  t.match(created, { user: 'admin', outcome: 'ok' })
  t.notOk(JSON.stringify(admins).includes('argon2'), 'no password hash in the log')
  const tokens = (await admin(node, 'GET', '/api/v1/audit?action=PutPermission&limit=1')).entries
  t.equal(tokens.length, 1, 'limit')
  const failed = (await admin(node, 'GET', '/api/v1/audit?outcome=failed&repo=frozen/**')).entries as Array<Record<string, any>>
  t.ok(failed.some((e) => e.code === 'TAG_IMMUTABLE'), 'refused commands are recorded with their code')
  const none = (await admin(node, 'GET', `/api/v1/audit?since=${Date.now() + 60_000}`)).entries
  t.same(none, [], 'since')
})

t.test('failed logins are rate-limited per user, with Retry-After', async (t) => {
  const victim = await createUser(node, 'limited')
  const wrong = basic({ username: 'limited', password: 'wrong-password' })
  for (let i = 0; i < 3; i++) t.equal((await call(node, wrong, 'GET', '/v2/')).status, 401, `failure ${i + 1}`)
  const limited = await call(node, wrong, 'GET', '/v2/')
  t.equal(limited.status, 429)
  t.equal(limited.body.errors[0].code, 'TOOMANYREQUESTS')
  t.ok(Number(limited.headers.get('retry-after')) > 0, 'Retry-After')
  t.equal((await call(node, victim, 'GET', '/v2/')).status, 429, 'even the right password waits')
  t.equal((await call(node, victim, 'GET', '/token?service=flotilla')).status, 429, 'the token endpoint too')
  t.equal((await call(node, node.authorization, 'GET', '/v2/')).status, 200, 'other users are not affected')
})

t.test('failed logins are rate-limited per address', async (t) => {
  const n = await startInProcess({ auth: { rateLimit: { maxFailuresPerUser: 1000, maxFailuresPerAddress: 4, windowSeconds: 60 } } })
  t.teardown(async () => { await n.stop() })
  for (let i = 0; i < 4; i++) await call(n, basic({ username: `nobody${i}`, password: 'wrong-password' }), 'GET', '/v2/')
  const r = await call(n, basic({ username: 'someone-else', password: 'wrong-password' }), 'GET', '/v2/')
  t.equal(r.status, 429)
  t.ok(r.headers.get('retry-after'))
  const tok = await call(n, 'Bearer flt_0000000000000000_' + 'a'.repeat(43), 'GET', '/v2/')
  t.equal(tok.status, 429, 'token guessing from the address too')
})

t.test('anonymous read-only access per pattern, stored like any permission', async (t) => {
  await pushImageWith(node.fetch, node.url, 'public/tool', image({ seed: 'pub' }), 'v1')
  t.equal((await call(node, undefined, 'GET', '/v2/public/tool/manifests/v1')).status, 401, 'off by default')
  const bad = await call(node, node.authorization, 'PUT', '/api/v1/permissions/public', { repositories: ['public/**'], users: { anonymous: ['read', 'write'] } })
  t.equal(bad.status, 400, 'anonymous can only read')
  await grant(node, 'public', ['public/**'], { anonymous: ['read'] })
  // The version check still challenges a caller without credentials (issue 10): clients that
  // saw 200 there would never send the credentials they have.
  const ping = await call(node, undefined, 'GET', '/v2/')
  t.equal(ping.status, 401, 'GET /v2/ without credentials is challenged even with anonymous read on')
  // The token flow, as docker does it: an anonymous token grants what anonymous may do.
  const anonToken = await fetch(`${node.url}/token?service=flotilla&scope=repository:public/tool:pull`)
  const jwt = (await anonToken.json() as { token: string }).token
  t.equal((await call(node, `Bearer ${jwt}`, 'GET', '/v2/')).status, 200, 'an anonymous registry JWT passes the version check')
  t.equal((await call(node, `Bearer ${jwt}`, 'GET', '/v2/public/tool/manifests/v1')).status, 200, 'and pulls the public repository')
  t.equal((await call(node, undefined, 'GET', '/v2/public/tool/manifests/v1')).status, 200)
  t.same((await call(node, undefined, 'GET', '/v2/_catalog')).body.repositories, ['public/tool'])
  t.equal((await call(node, undefined, 'GET', '/v2/dev/app/tags/list')).status, 401, 'elsewhere still needs a sign-in')
  t.equal((await call(node, undefined, 'DELETE', '/v2/public/tool/manifests/v1')).status, 401)
  const anon = await call(node, undefined, 'GET', '/token?service=flotilla&scope=repository:public/tool:pull,push')
  t.equal(anon.status, 200, 'anonymous token')
  const claims = JSON.parse(Buffer.from(anon.body.token.split('.')[1], 'base64url').toString())
  t.same(claims.access, [{ type: 'repository', name: 'public/tool', actions: ['pull'] }])
  await admin(node, 'DELETE', '/api/v1/permissions/public')
  t.equal((await call(node, undefined, 'GET', '/v2/public/tool/manifests/v1')).status, 401, 'and off again at once')
})

t.test('annotate: push signatures and SBOMs, but not images or tags', async (t) => {
  const img = image({ seed: 'annotate' })
  await pushImageWith(node.fetch, node.url, 'signed/app', img, 'v1')
  const signer = await createUser(node, 'signer')
  await grant(node, 'signer', ['signed/**'], { signer: ['read', 'annotate'] })
  const f = async (u: string, init?: RequestInit): Promise<Response> => await fetch(u, { ...init, headers: { ...(init?.headers as Record<string, string>), authorization: signer } })
  const d = await pushReferrer('signed/app', { digest: img.digest, size: img.manifest.length }, 'application/vnd.test.sig', f)
  t.ok(d, 'a referrer push works')
  const other = image({ seed: 'annotate-2' })
  for (const b of [other.config, ...other.layers]) await pushBlobWith(f, node.url, 'signed/app', b)
  const res = await f(`${node.url}/v2/signed/app/manifests/v1`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: other.manifest })
  t.equal(res.status, 403, 'no plain image push')
  await res.arrayBuffer()
})

t.test('first start: a random admin password, printed once and kept in DATA/initial-admin-password (0600)', async (t) => {
  const dir = t.testdir()
  const lines: string[] = []
  const log = pino({ level: 'info' }, { write: (s: string) => { lines.push(s) } })
  const config = ConfigSchema.parse({ data: join(dir, 'data'), listen: '127.0.0.1:0' })
  const n = await RegistryNode.open(config, log)
  await n.start()
  try {
    const file = join(dir, 'data', 'initial-admin-password')
    const password = (await readFile(file, 'utf8')).trim()
    t.equal((await stat(file)).mode & 0o777, 0o600)
    t.ok(password.length >= 16)
    t.equal(lines.filter((l) => l.includes(password)).length, 1, 'printed once')
    const url = `http://127.0.0.1:${n.address!.port}`
    const r = await fetch(`${url}/api/v1/me`, { headers: { authorization: basic({ username: 'admin', password }) } })
    t.equal(r.status, 200)
    t.match(await r.json(), { user: 'admin', admin: true })
    t.equal((await fetch(`${url}/v2/`)).status, 401, 'anonymous access is off')
  } finally {
    await n.stop()
  }
  const again = await RegistryNode.open(config, log)
  const before = lines.length
  await again.start()
  await again.stop()
  t.notOk(lines.slice(before).some((l) => l.includes('random password')), 'not on the next start')
})

// Issue 10, conformance (end-11) under token auth: a JWT names only the target repository.
t.test('end-11 cross-repository mount with registry JWTs: a challenge naming both scopes, then 201; discovery without from', async (t) => {
  const mover = await createUser(node, 'mover')
  const outsider = await createUser(node, 'outsider')
  await grant(node, 'mount-src', ['msrc/**'], { mover: ['read'] })
  await grant(node, 'mount-dst', ['mdst/**'], { mover: ['read', 'write'], outsider: ['read', 'write'] })
  const b = blob(`mount me ${Math.random()}`)
  await pushBlobWith(node.fetch, node.url, 'msrc/app', b)
  const jwtFor = async (who: string, scopes: string[]): Promise<string> => {
    const q = scopes.map((s) => `scope=${encodeURIComponent(s)}`).join('&')
    const r = await fetch(`${node.url}/token?service=flotilla&${q}`, { headers: { authorization: who } })
    return (await r.json() as { token: string }).token
  }
  const mount = async (bearer: string, repo: string, from?: string): Promise<Response> =>
    await fetch(`${node.url}/v2/${repo}/blobs/uploads/?mount=${b.digest}${from !== undefined ? `&from=${from}` : ''}`, { method: 'POST', headers: { authorization: `Bearer ${bearer}` } })

  // Before any mount: the blob is in msrc/app only, which the outsider may not read.
  const blind = await mount(await jwtFor(outsider, ['repository:mdst/d:pull,push']), 'mdst/d')
  await blind.arrayBuffer()
  t.equal(blind.status, 202, 'without from, a blob only in repositories the caller may not read is not mounted')

  const narrow = await jwtFor(mover, ['repository:mdst/a:pull,push'])
  const first = await mount(narrow, 'mdst/a', 'msrc/app')
  await first.arrayBuffer()
  t.equal(first.status, 401, 'a token without pull on from: 401, so the client asks for one that covers it')
  t.match(first.headers.get('www-authenticate') ?? '', /scope="repository:mdst\/a:pull,push repository:msrc\/app:pull"/, 'the challenge names both scopes')
  const both = await jwtFor(mover, ['repository:mdst/a:pull,push', 'repository:msrc/app:pull'])
  const second = await mount(both, 'mdst/a', 'msrc/app')
  await second.arrayBuffer()
  t.equal(second.status, 201, 'with both scopes the blob is mounted')

  const outsiderJwt = await jwtFor(outsider, ['repository:mdst/b:pull,push', 'repository:msrc/app:pull'])
  const refused = await mount(outsiderJwt, 'mdst/b', 'msrc/app')
  await refused.arrayBuffer()
  t.equal(refused.status, 202, 'a caller who may not read from gets an upload session instead')

  const discovery = await mount(await jwtFor(mover, ['repository:mdst/c:pull,push']), 'mdst/c')
  await discovery.arrayBuffer()
  t.equal(discovery.status, 201, 'without from, the blob is found in a repository the caller may read (the JWT names only the target)')
})

// Issue 10, item 6: `group add qa --member bob` with an unknown bob created the group anyway.
t.test('a group with an unknown member is refused whole; a permission naming nobody says so', async (t) => {
  const refused = await admin(node, 'POST', '/api/v1/groups', { name: 'qa-team', members: ['ghost-user'] }).catch((err: Error) => err)
  t.match(String(refused), /404|no user named ghost-user/, 'refused, naming the unknown member')
  const after = await call(node, node.authorization, 'GET', '/api/v1/groups/qa-team')
  t.equal(after.status, 404, 'and the group was not created')
  await createUser(node, 'ghost-user')
  const retry = await call(node, node.authorization, 'POST', '/api/v1/groups', { name: 'qa-team', members: ['ghost-user'] })
  t.equal(retry.status, 201, 'the retry succeeds (no 409)')
  t.same(retry.body.members, ['ghost-user'])
  const perm = await call(node, node.authorization, 'PUT', '/api/v1/permissions/phantoms', { repositories: ['ph/**'], users: { nobody: ['read'], anonymous: ['read'] }, groups: { 'no-such-group': ['read'] } })
  t.equal(perm.status, 200, 'a permission may name principals that do not exist yet')
  t.equal(perm.body.warnings.length, 2, 'but each missing user or group is a warning (anonymous is not)')
  t.match(perm.body.warnings.join('\n'), /user nobody does not exist/)
  t.match(perm.body.warnings.join('\n'), /group no-such-group does not exist/)
})
