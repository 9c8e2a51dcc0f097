/**
 * The access matrix: every OCI route and every admin-API route, called by each kind of caller,
 * with the exact status expected. Each call gets fresh fixtures made by the admin, so a
 * mutation by one caller never changes what the next one meets.
 *
 * Callers: anonymous; reader, writer, deleter (Basic, with those rights on team/**); admin;
 * a robot token scoped to other/** (elsewhere) and one with read on team/**; registry JWTs
 * (reader with pull+push asked, writer with only pull asked); and bad credentials: an
 * expired and a revoked access token, a tampered JWT, a JWT for another service, an expired JWT.
 */
import t from 'tap'
import { startInProcess, type InProcessNode } from '../helpers/inproc.js'
import { blob, image, descriptor, OCI_MANIFEST, OCI_EMPTY } from '../helpers/oci.js'
import { admin, bearer, call, createUser, forgeJwt, grant, jwtFor, pushBlobWith, pushImageWith, robotToken, tamper } from './fixtures.js'

const KINDS = [
  'anonymous', 'reader', 'writer', 'deleter', 'admin', 'robotElsewhere', 'robotReader',
  'readerJwt', 'writerPullJwt',
  'expiredToken', 'revokedToken', 'tamperedJwt', 'otherServiceJwt', 'expiredJwt',
] as const
type Kind = typeof KINDS[number]
const BAD: Kind[] = ['expiredToken', 'revokedToken', 'tamperedJwt', 'otherServiceJwt', 'expiredJwt']

const REPO = 'team/app'
let node: InProcessNode
const auth = {} as Record<Kind, string | undefined>
let seq = 0
const uniq = (p: string): string => `${p}${++seq}`

t.before(async () => {
  // Failures from the bad-credential callers all come from 127.0.0.1: keep the limiter out of the way here.
  node = await startInProcess({ auth: { rateLimit: { maxFailuresPerAddress: 100_000, maxFailuresPerUser: 100_000 } } })
  auth.anonymous = undefined
  auth.admin = node.authorization
  auth.reader = await createUser(node, 'reader')
  auth.writer = await createUser(node, 'writer')
  auth.deleter = await createUser(node, 'deleter')
  await createUser(node, 'victim')
  await grant(node, 'team', ['team/**'], { reader: ['read'], writer: ['read', 'write'], deleter: ['read', 'delete'] })
  auth.robotElsewhere = bearer((await robotToken(node, 'elsewhere', [{ repositories: ['other/**'], actions: ['read', 'write', 'delete'] }])).token)
  auth.robotReader = bearer((await robotToken(node, 'team-reader', [{ repositories: ['team/**'], actions: ['read'] }])).token)
  const expired = await robotToken(node, 'expired', [{ repositories: ['**'], actions: ['read'] }], { expiresInSeconds: 0.001 })
  auth.expiredToken = 'Basic ' + Buffer.from(`robot:${expired.token}`).toString('base64')
  const revoked = await robotToken(node, 'revoked', [{ repositories: ['**'], actions: ['manage'] }])
  await admin(node, 'DELETE', `/api/v1/tokens/${revoked.id}`)
  auth.revokedToken = bearer(revoked.token)
  const scope = `repository:${REPO}:pull,push,delete`
  auth.readerJwt = bearer((await jwtFor(node, auth.reader, [`repository:${REPO}:pull,push`])).token!)
  auth.writerPullJwt = bearer((await jwtFor(node, auth.writer, [`repository:${REPO}:pull`])).token!)
  auth.tamperedJwt = bearer(tamper((await jwtFor(node, auth.admin, [scope])).token!))
  auth.otherServiceJwt = bearer(await forgeJwt(node, { sub: 'admin', access: [{ type: 'repository', name: REPO, actions: ['pull', 'push', 'delete'] }], service: 'another-registry' }))
  auth.expiredJwt = bearer(await forgeJwt(node, { sub: 'admin', access: [{ type: 'repository', name: REPO, actions: ['pull', 'push', 'delete'] }], nowMs: Date.now() - 3600_000, ttl: 300 }))

  // What the readers find: an image tagged v1 with a referrer, and a repository elsewhere.
  const img = image({ seed: 'matrix' })
  await pushImageWith(node.fetch, node.url, REPO, img, 'v1')
  fixtures.img = img
  const empty = blob('{}', OCI_EMPTY)
  await pushBlobWith(node.fetch, node.url, REPO, empty)
  const sig = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.test.sig', config: descriptor(empty), layers: [descriptor(empty)], subject: { mediaType: OCI_MANIFEST, digest: img.digest, size: img.manifest.length } }))
  const res = await node.fetch(`${node.url}/v2/${REPO}/manifests/sha256:${(await import('node:crypto')).createHash('sha256').update(sig).digest('hex')}`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body: sig })
  if (res.status !== 201) throw new Error(`referrer push: ${res.status}`)
  await pushImageWith(node.fetch, node.url, 'other/thing', image({ seed: 'other' }), 'v1')
  await new Promise((resolve) => setTimeout(resolve, 20)) // let the expired token expire
})
t.teardown(async () => { await node.stop() })

const fixtures = {} as { img: ReturnType<typeof image> }

interface Prepared { path: string; body?: Buffer | string; headers?: Record<string, string> }
interface Route {
  name: string
  method: string
  prepare: () => Promise<Prepared>
  expect: Record<Kind, number>
}

/** Expected statuses for an OCI route needing `action`, answering `ok` when allowed. */
function oci (action: 'read' | 'write' | 'delete', ok: number): Record<Kind, number> {
  const e = {} as Record<Kind, number>
  for (const k of KINDS) e[k] = 403
  for (const k of BAD) e[k] = 401
  e.anonymous = 401
  e.admin = ok
  if (action === 'read') {
    e.reader = e.writer = e.deleter = e.robotReader = e.readerJwt = e.writerPullJwt = ok
  } else if (action === 'write') {
    e.writer = ok
    // The writer may push, but this JWT was issued for pull only: 401 so the client asks for push.
    e.writerPullJwt = 401
  } else {
    e.deleter = ok
  }
  return e
}

/** Signed-in callers (any good credential) get `ok`; others 401. */
function signedIn (ok: number): Record<Kind, number> {
  const e = {} as Record<Kind, number>
  for (const k of KINDS) e[k] = ok
  for (const k of BAD) e[k] = 401
  e.anonymous = 401
  return e
}

/** Admin-only routes: the admin gets `ok`, other signed-in callers 403. */
function adminOnly (ok: number): Record<Kind, number> {
  const e = signedIn(403)
  e.admin = ok
  return e
}

async function startUpload (repo = REPO): Promise<string> {
  const res = await node.fetch(`${node.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' })
  await res.arrayBuffer()
  if (res.status !== 202) throw new Error(`upload start: ${res.status}`)
  return res.headers.get('location')!
}

const fixed = (path: string) => async (): Promise<Prepared> => ({ path })

const OCI_ROUTES: Route[] = [
  { name: 'end-1 GET /v2/', method: 'GET', prepare: fixed('/v2/'), expect: signedIn(200) },
  { name: 'GET /v2/_catalog', method: 'GET', prepare: fixed('/v2/_catalog'), expect: signedIn(200) },
  { name: 'end-2 GET blob', method: 'GET', prepare: async () => ({ path: `/v2/${REPO}/blobs/${fixtures.img.config.digest}` }), expect: oci('read', 200) },
  { name: 'end-2 HEAD blob', method: 'HEAD', prepare: async () => ({ path: `/v2/${REPO}/blobs/${fixtures.img.config.digest}` }), expect: oci('read', 200) },
  { name: 'end-3 GET manifest by tag', method: 'GET', prepare: fixed(`/v2/${REPO}/manifests/v1`), expect: oci('read', 200) },
  { name: 'end-3 HEAD manifest by digest', method: 'HEAD', prepare: async () => ({ path: `/v2/${REPO}/manifests/${fixtures.img.digest}` }), expect: oci('read', 200) },
  { name: 'end-8a GET tags/list', method: 'GET', prepare: fixed(`/v2/${REPO}/tags/list`), expect: oci('read', 200) },
  { name: 'end-12a GET referrers', method: 'GET', prepare: async () => ({ path: `/v2/${REPO}/referrers/${fixtures.img.digest}` }), expect: oci('read', 200) },
  { name: 'end-4a POST upload', method: 'POST', prepare: fixed(`/v2/${REPO}/blobs/uploads/`), expect: oci('write', 202) },
  {
    name: 'end-4b POST monolithic',
    method: 'POST',
    prepare: async () => { const b = blob(uniq('mono')); return { path: `/v2/${REPO}/blobs/uploads/?digest=${b.digest}`, body: b.data, headers: { 'content-type': 'application/octet-stream' } } },
    expect: oci('write', 201),
  },
  { name: 'end-11 POST mount from the same team', method: 'POST', prepare: async () => ({ path: `/v2/team/${uniq('mnt')}/blobs/uploads/?mount=${fixtures.img.config.digest}&from=${REPO}` }), expect: oci('write', 201) },
  {
    name: 'end-5 PATCH upload',
    method: 'PATCH',
    prepare: async () => ({ path: await startUpload(), body: 'chunk', headers: { 'content-type': 'application/octet-stream', 'content-range': '0-4' } }),
    expect: oci('write', 202),
  },
  {
    name: 'end-6 PUT upload',
    method: 'PUT',
    prepare: async () => { const b = blob(uniq('put')); return { path: `${await startUpload()}?digest=${b.digest}`, body: b.data, headers: { 'content-type': 'application/octet-stream' } } },
    expect: oci('write', 201),
  },
  { name: 'end-13 GET upload', method: 'GET', prepare: async () => ({ path: await startUpload() }), expect: oci('write', 204) },
  { name: 'DELETE upload (cancel)', method: 'DELETE', prepare: async () => ({ path: await startUpload() }), expect: oci('write', 204) },
  {
    name: 'end-7 PUT manifest',
    method: 'PUT',
    prepare: async () => {
      const img = image({ seed: uniq('put-manifest') })
      for (const b of [img.config, ...img.layers]) await pushBlobWith(node.fetch, node.url, REPO, b)
      return { path: `/v2/${REPO}/manifests/${uniq('tag')}`, body: img.manifest, headers: { 'content-type': OCI_MANIFEST } }
    },
    expect: oci('write', 201),
  },
  {
    name: 'end-9 DELETE manifest by digest',
    method: 'DELETE',
    prepare: async () => ({ path: `/v2/${REPO}/manifests/${await pushImageWith(node.fetch, node.url, REPO, image({ seed: uniq('del') }))}` }),
    expect: oci('delete', 202),
  },
  {
    name: 'end-9 DELETE tag',
    method: 'DELETE',
    prepare: async () => { const tag = uniq('deltag'); await pushImageWith(node.fetch, node.url, REPO, image({ seed: tag }), tag); return { path: `/v2/${REPO}/manifests/${tag}` } },
    expect: oci('delete', 202),
  },
  {
    name: 'end-10 DELETE blob',
    method: 'DELETE',
    prepare: async () => { const b = blob(uniq('delblob')); await pushBlobWith(node.fetch, node.url, REPO, b); return { path: `/v2/${REPO}/blobs/${b.digest}` } },
    expect: oci('delete', 202),
  },
]

async function run (r: Route, kind: Kind): Promise<{ status: number; headers: Headers; text: string }> {
  const p = await r.prepare()
  const headers: Record<string, string> = { ...p.headers }
  if (auth[kind] !== undefined) headers.authorization = auth[kind]!
  const init: RequestInit = { method: r.method, headers }
  if (p.body !== undefined) init.body = p.body
  const res = await fetch(node.url + p.path, init)
  return { status: res.status, headers: res.headers, text: await res.text() }
}

t.test('OCI routes × callers', async (t) => {
  for (const r of OCI_ROUTES) {
    await t.test(r.name, async (t) => {
      for (const kind of KINDS) {
        const res = await run(r, kind)
        t.equal(res.status, r.expect[kind], `${r.method} ${r.name} as ${kind}${res.status !== r.expect[kind] ? `: ${res.text.slice(0, 200)}` : ''}`)
        if (res.status === 401) t.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token",service="flotilla"/, `${r.name} as ${kind}: challenge`)
        if (res.status === 403 && r.method !== 'HEAD') t.match(res.text, /"code":"DENIED"/, `${r.name} as ${kind}: DENIED`)
      }
    })
  }
})

const ADMIN_ROUTES: Route[] = [
  { name: 'GET /me', method: 'GET', prepare: fixed('/api/v1/me'), expect: signedIn(200) },
  { name: 'GET /users', method: 'GET', prepare: fixed('/api/v1/users'), expect: adminOnly(200) },
  { name: 'POST /users', method: 'POST', prepare: async () => ({ path: '/api/v1/users', body: JSON.stringify({ name: uniq('new-user'), password: 'a-long-password' }) }), expect: adminOnly(201) },
  { name: 'GET /users/victim', method: 'GET', prepare: fixed('/api/v1/users/victim'), expect: adminOnly(200) },
  { name: 'PATCH /users/victim', method: 'PATCH', prepare: async () => ({ path: '/api/v1/users/victim', body: JSON.stringify({ disabled: false }) }), expect: adminOnly(200) },
  { name: 'PUT /users/victim/password', method: 'PUT', prepare: async () => ({ path: '/api/v1/users/victim/password', body: JSON.stringify({ password: 'victim-password' }) }), expect: adminOnly(200) },
  { name: 'DELETE /users/:name', method: 'DELETE', prepare: async () => { const n = uniq('doomed'); await admin(node, 'POST', '/api/v1/users', { name: n, password: 'a-long-password' }); return { path: `/api/v1/users/${n}` } }, expect: adminOnly(200) },
  { name: 'GET /groups', method: 'GET', prepare: fixed('/api/v1/groups'), expect: adminOnly(200) },
  { name: 'POST /groups', method: 'POST', prepare: async () => ({ path: '/api/v1/groups', body: JSON.stringify({ name: uniq('group') }) }), expect: adminOnly(201) },
  { name: 'GET /groups/:name', method: 'GET', prepare: async () => { const g = uniq('g'); await admin(node, 'POST', '/api/v1/groups', { name: g }); return { path: `/api/v1/groups/${g}` } }, expect: adminOnly(200) },
  { name: 'PUT /groups/:name/members/:user', method: 'PUT', prepare: async () => { const g = uniq('g'); await admin(node, 'POST', '/api/v1/groups', { name: g }); return { path: `/api/v1/groups/${g}/members/victim` } }, expect: adminOnly(200) },
  { name: 'DELETE /groups/:name/members/:user', method: 'DELETE', prepare: async () => { const g = uniq('g'); await admin(node, 'POST', '/api/v1/groups', { name: g, members: ['victim'] }); return { path: `/api/v1/groups/${g}/members/victim` } }, expect: adminOnly(200) },
  { name: 'DELETE /groups/:name', method: 'DELETE', prepare: async () => { const g = uniq('g'); await admin(node, 'POST', '/api/v1/groups', { name: g }); return { path: `/api/v1/groups/${g}` } }, expect: adminOnly(200) },
  { name: 'GET /permissions', method: 'GET', prepare: fixed('/api/v1/permissions'), expect: adminOnly(200) },
  { name: 'GET /permissions/:name', method: 'GET', prepare: fixed('/api/v1/permissions/team'), expect: adminOnly(200) },
  { name: 'PUT /permissions/:name', method: 'PUT', prepare: async () => ({ path: `/api/v1/permissions/${uniq('p')}`, body: JSON.stringify({ repositories: ['nowhere/**'], users: { victim: ['read'] } }) }), expect: adminOnly(200) },
  { name: 'DELETE /permissions/:name', method: 'DELETE', prepare: async () => { const p = uniq('p'); await grant(node, p, ['nowhere/**'], { victim: ['read'] }); return { path: `/api/v1/permissions/${p}` } }, expect: adminOnly(200) },
  { name: 'GET /tokens', method: 'GET', prepare: fixed('/api/v1/tokens'), expect: signedIn(200) },
  {
    name: 'POST /tokens',
    method: 'POST',
    prepare: async () => ({ path: '/api/v1/tokens', body: JSON.stringify({ name: uniq('ci'), scopes: [{ repositories: ['team/**'], actions: ['read'] }] }) }),
    // Minting needs a password sign-in: tokens and JWTs cannot mint tokens.
    expect: { ...signedIn(403), reader: 201, writer: 201, deleter: 201, admin: 201 },
  },
  {
    name: 'DELETE /tokens/:id (the admin\'s)',
    method: 'DELETE',
    prepare: async () => ({ path: `/api/v1/tokens/${(await robotToken(node, uniq('t'), [{ repositories: ['x'], actions: ['read'] }])).id}` }),
    expect: adminOnly(200),
  },
  { name: 'GET /immutable', method: 'GET', prepare: fixed('/api/v1/immutable'), expect: signedIn(200) },
  { name: 'PUT /immutable', method: 'PUT', prepare: async () => ({ path: '/api/v1/immutable', body: JSON.stringify({ pattern: `nowhere/${uniq('i')}` }) }), expect: adminOnly(200) },
  { name: 'DELETE /immutable', method: 'DELETE', prepare: async () => { const p = `nowhere/${uniq('i')}`; await admin(node, 'PUT', '/api/v1/immutable', { pattern: p }); return { path: `/api/v1/immutable?pattern=${encodeURIComponent(p)}` } }, expect: adminOnly(200) },
  {
    name: 'POST /promote',
    method: 'POST',
    prepare: async () => ({ path: '/api/v1/promote', body: JSON.stringify({ from: `${REPO}:v1`, to: `team/${uniq('prod')}:v1` }) }),
    // read on the source and write on the target: only the writer and the admin.
    expect: { ...adminOnly(200), writer: 200 },
  },
  { name: 'GET /audit', method: 'GET', prepare: fixed('/api/v1/audit'), expect: adminOnly(200) },
]

t.test('admin API routes × callers', async (t) => {
  for (const r of ADMIN_ROUTES) {
    await t.test(r.name, async (t) => {
      for (const kind of KINDS) {
        const p = await r.prepare()
        const res = await run({ ...r, prepare: async () => ({ ...p, headers: { 'content-type': 'application/json' } }) }, kind)
        t.equal(res.status, r.expect[kind], `${r.method} ${r.name} as ${kind}${res.status !== r.expect[kind] ? `: ${res.text.slice(0, 200)}` : ''}`)
        if (res.status === 401) t.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm=/, `${r.name} as ${kind}: challenge`)
      }
    })
  }
})

t.test('users may read and change their own record', async (t) => {
  t.equal((await call(node, auth.reader, 'GET', '/api/v1/users/reader')).status, 200)
  t.equal((await call(node, auth.reader, 'GET', '/api/v1/users/writer')).status, 403)
  t.equal((await call(node, auth.deleter, 'PUT', '/api/v1/users/deleter/password', { password: 'deleter-password' })).status, 200, 'own password')
  t.equal((await call(node, auth.deleter, 'PUT', '/api/v1/users/reader/password', { password: 'whatever-else' })).status, 403, 'not someone else\'s')
  t.equal((await call(node, auth.robotReader, 'PUT', '/api/v1/users/admin/password', { password: 'whatever-else' })).status, 403, 'not with a token')
})

t.test('the 401 challenge names the scope the route needs', async (t) => {
  const get = await fetch(`${node.url}/v2/${REPO}/manifests/v1`)
  t.equal(get.status, 401)
  t.equal(get.headers.get('www-authenticate'), `Bearer realm="${node.url}/token",service="flotilla",scope="repository:${REPO}:pull"`)
  const post = await fetch(`${node.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST' })
  t.equal(post.headers.get('www-authenticate'), `Bearer realm="${node.url}/token",service="flotilla",scope="repository:${REPO}:pull,push"`)
  // end-11: a mount with `from` needs pull there too, named in the first challenge (one token serves the mount).
  const mount = await fetch(`${node.url}/v2/${REPO}/blobs/uploads/?mount=${fixtures.img.config.digest}&from=other/thing`, { method: 'POST' })
  t.equal(mount.headers.get('www-authenticate'), `Bearer realm="${node.url}/token",service="flotilla",scope="repository:${REPO}:pull,push repository:other/thing:pull"`)
  const del = await fetch(`${node.url}/v2/${REPO}/manifests/v1`, { method: 'DELETE' })
  t.equal(del.headers.get('www-authenticate'), `Bearer realm="${node.url}/token",service="flotilla",scope="repository:${REPO}:delete"`)
  const cat = await fetch(`${node.url}/v2/_catalog`)
  t.equal(cat.headers.get('www-authenticate'), `Bearer realm="${node.url}/token",service="flotilla",scope="registry:catalog:*"`)
  const base = await fetch(`${node.url}/v2/`)
  t.equal(base.headers.get('www-authenticate'), `Bearer realm="${node.url}/token",service="flotilla"`)
  const scoped = await fetch(`${node.url}/v2/${REPO}/blobs/uploads/`, { method: 'POST', headers: { authorization: auth.writerPullJwt! } })
  t.equal(scoped.status, 401)
  t.match(scoped.headers.get('www-authenticate') ?? '', /scope="repository:team\/app:pull,push",error="insufficient_scope"/)
  const bad = await fetch(`${node.url}/v2/`, { headers: { authorization: auth.tamperedJwt! } })
  t.match(bad.headers.get('www-authenticate') ?? '', /error="invalid_token"/)
  await Promise.all([get, post, mount, del, cat, base, scoped, bad].map(async (r) => await r.arrayBuffer()))
})

t.test('_catalog lists only what the caller may read', async (t) => {
  const list = async (a: string | undefined): Promise<string[]> => (await call(node, a, 'GET', '/v2/_catalog')).body.repositories
  const all = await list(auth.admin)
  t.ok(all.includes('other/thing') && all.includes(REPO))
  t.notOk((await list(auth.reader)).includes('other/thing'), 'reader: no other/**')
  t.ok((await list(auth.reader)).every((r: string) => r.startsWith('team/')))
  t.same(await list(auth.robotElsewhere), ['other/thing'], 'robot scoped to other/**')
  const paged = await call(node, auth.robotReader, 'GET', '/v2/_catalog?n=1')
  t.equal(paged.body.repositories.length, 1)
  t.match(paged.headers.get('link') ?? '', /rel="next"/)
})

t.test('mount only from a repository the caller may read', async (t) => {
  await createUser(node, 'mounter')
  await grant(node, 'mounter', ['mnt/**'], { mounter: ['read', 'write'] })
  const m = await call(node, (await import('../helpers/inproc.js')).basic({ username: 'mounter', password: 'mounter-password' }), 'POST', `/v2/mnt/x/blobs/uploads/?mount=${fixtures.img.config.digest}&from=${REPO}`)
  t.equal(m.status, 202, 'from a repository it cannot read: an upload session instead of a mount')
  const blind = await call(node, (await import('../helpers/inproc.js')).basic({ username: 'mounter', password: 'mounter-password' }), 'POST', `/v2/mnt/x/blobs/uploads/?mount=${fixtures.img.config.digest}`)
  t.equal(blind.status, 202, 'no from: no mount of a blob it cannot read anywhere')
  const head = await call(node, (await import('../helpers/inproc.js')).basic({ username: 'mounter', password: 'mounter-password' }), 'HEAD', `/v2/mnt/x/blobs/${fixtures.img.config.digest}`)
  t.equal(head.status, 404, 'nothing was linked')
  const ok = await call(node, auth.writer, 'POST', `/v2/team/y/blobs/uploads/?mount=${fixtures.img.config.digest}`)
  t.equal(ok.status, 201, 'no from, but readable in team/app: mounted')
})

t.test('an access token is refused at once after revocation, and with a bad secret', async (t) => {
  const tok = await robotToken(node, 'short-lived', [{ repositories: ['team/**'], actions: ['read'] }])
  t.equal((await call(node, bearer(tok.token), 'GET', `/v2/${REPO}/tags/list`)).status, 200)
  const viaJwt = await jwtFor(node, 'Basic ' + Buffer.from(`ci:${tok.token}`).toString('base64'), [`repository:${REPO}:pull`])
  t.equal(viaJwt.status, 200, 'exchanged for a JWT at /token')
  t.equal((await call(node, bearer(viaJwt.token!), 'GET', `/v2/${REPO}/tags/list`)).status, 200)
  await admin(node, 'DELETE', `/api/v1/tokens/${tok.id}`)
  t.equal((await call(node, bearer(tok.token), 'GET', `/v2/${REPO}/tags/list`)).status, 401, 'token revoked')
  t.equal((await call(node, bearer(viaJwt.token!), 'GET', `/v2/${REPO}/tags/list`)).status, 401, 'the JWT it was exchanged for dies with it')
  t.equal((await call(node, bearer(tok.token.slice(0, -2) + 'xx'), 'GET', `/v2/${REPO}/tags/list`)).status, 401, 'wrong secret')
})

t.test('a password change kills the JWTs issued before it', async (t) => {
  await createUser(node, 'changer')
  await grant(node, 'changer', ['team/**'], { changer: ['read'] })
  const b = (await import('../helpers/inproc.js')).basic({ username: 'changer', password: 'changer-password' })
  const jwt = await jwtFor(node, b, [`repository:${REPO}:pull`])
  t.equal((await call(node, bearer(jwt.token!), 'GET', `/v2/${REPO}/tags/list`)).status, 200)
  await admin(node, 'PUT', '/api/v1/users/changer/password', { password: 'changed-password' })
  t.equal((await call(node, bearer(jwt.token!), 'GET', `/v2/${REPO}/tags/list`)).status, 401)
  t.equal((await call(node, b, 'GET', `/v2/${REPO}/tags/list`)).status, 401, 'the old password (cached a moment ago) no longer works')
})

t.test('the token endpoint refuses another service and bad credentials', async (t) => {
  t.equal((await jwtFor(node, auth.reader, [`repository:${REPO}:pull`], 'another-registry')).status, 400)
  t.equal((await jwtFor(node, 'Basic ' + Buffer.from('reader:wrong-password').toString('base64'), [`repository:${REPO}:pull`])).status, 401)
  // Anonymous callers get a token that grants only what anonymous may do: nothing here.
  const anon = await jwtFor(node, undefined, [`repository:${REPO}:pull`])
  t.equal(anon.status, 200, 'anonymous, with anonymous access off, gets a token')
  t.same(JSON.parse(Buffer.from(anon.token!.split('.')[1]!, 'base64url').toString()).access, [{ type: 'repository', name: REPO, actions: [] }], 'that grants nothing')
  const granted = await jwtFor(node, auth.reader, [`repository:${REPO}:pull,push,delete`, 'repository:other/thing:pull'])
  const claims = JSON.parse(Buffer.from(granted.token!.split('.')[1]!, 'base64url').toString())
  t.same(claims.access, [{ type: 'repository', name: REPO, actions: ['pull'] }, { type: 'repository', name: 'other/thing', actions: [] }], 'only what the reader may do')
  t.equal(claims.aud, 'flotilla')
  t.equal(claims.iss, 'flotilla')
  t.equal(claims.sub, 'reader')
})
