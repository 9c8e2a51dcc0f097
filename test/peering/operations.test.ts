/**
 * Operating a peering (issue 11: rules per peering, visibility, `site explain`): two
 * single-node sites, A behind a userspace TCP proxy it advertises to other sites
 * (test/helpers/tcp-proxy.ts), B peered with A through a libp2p multiaddr (the proxy's, without
 * /p2p/: the token's members are tried). One set of processes for every subtest, in order:
 * the rules changed with `site set` at either site land at both (and when the link is cut,
 * once it heals); `site explain` for each state; users, groups and grants replicating with
 * --access (a user created at A logs in at B; a user that exists at both stays the local one);
 * the --bandwidth cap measured on the proxy's byte count over time; hostile input.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { authFetch, pushHttp, runCli, startTestCluster, waitFor, type TestCluster } from '../helpers/cluster.js'
import { blob, descriptor, image, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256, type Image } from '../helpers/oci.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'
import { caughtUp, manifestAt, sitePeer, siteList, siteStatus, type SiteStatusDoc } from '../helpers/sites.js'
import { SITE_HANDSHAKE_PROTOCOL, SITE_OPS_PROTOCOL, type ExplainDoc } from '../../cluster/peering/ops.js'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../../net/host.js'
import { sendRequest } from '../../net/request-response.js'

const proxy = await startTcpProxy({ target: { host: '127.0.0.1', port: 0 } })
t.teardown(async () => { await proxy.close() })
const a = await startTestCluster(t, { size: 1, env: { FLOTILLA_SITES_ADVERTISE: `127.0.0.1:${proxy.port}` } })
proxy.retarget({ host: '127.0.0.1', port: a.nodes[0]!.p2pPort })
const b = await startTestCluster(t, { size: 1 })
const A = a.nodes[0]!
const B = b.nodes[0]!
const admin = (c: TestCluster): string => `admin:${c.credentials.password}`
/** A's name for B, learnt once peered. */
let bAtA = ''

async function cli (c: TestCluster, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return await runCli([...args, '--node', c.nodes[0]!.url, '--user', admin(c)])
}

/** GET /api/v1/sites/NAME/explain (the CLI is run once, for its table and --json). */
async function explain (c: TestCluster, name: string, ref: string): Promise<ExplainDoc> {
  const at = ref.lastIndexOf(':')
  const res = await api(c, 'GET', `/api/v1/sites/${name}/explain?repo=${encodeURIComponent(ref.slice(0, at))}&tag=${encodeURIComponent(ref.slice(at + 1))}`)
  if (res.status !== 200) throw new Error(`explain answered ${res.status}: ${JSON.stringify(res.doc).slice(0, 300)}`)
  return res.doc as ExplainDoc
}

async function api (c: TestCluster, method: string, path: string, body?: unknown): Promise<{ status: number; doc: any }> {
  const res = await authFetch(`${c.nodes[0]!.url}${path}`, c.credentials, { method, ...(body !== undefined ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) } : {}) })
  const text = await res.text()
  let doc: unknown
  try { doc = JSON.parse(text) } catch { doc = text }
  return { status: res.status, doc }
}

/** An image with one layer of `size` random bytes. */
function bigImage (size: number): Image {
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', seed: Math.random() }), OCI_CONFIG)
  const layer = blob(randomBytes(size), OCI_LAYER)
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: [descriptor(layer)] }))
  return { config, layers: [layer], manifest, digest: sha256(manifest), mediaType: OCI_MANIFEST }
}

async function metric (c: TestCluster, re: RegExp): Promise<number | undefined> {
  const text = await (await fetch(`${c.nodes[0]!.url}/metrics`)).text()
  const m = re.exec(text)
  return m === null ? undefined : Number(m[1])
}

t.test('site peer with a libp2p multiaddr: the handshake goes over libp2p; a multiaddr of no member of the token\'s site is refused', async (t) => {
  const token = (await api(a, 'POST', '/api/v1/sites/tokens', {})).doc.token as string
  const wrong = await api(b, 'POST', '/api/v1/sites', { address: `/ip4/127.0.0.1/tcp/${proxy.port}/p2p/${B.peerId}`, token, name: 'site-a' })
  t.equal(wrong.status, 400)
  t.match(wrong.doc.errors[0].message, /is not a member of the site that made this token/, 'an identity the token does not name: refused before dialing')
  const garbage = await api(b, 'POST', '/api/v1/sites', { address: '/not/a/multiaddr', token, name: 'site-a' })
  t.equal(garbage.status, 400)
  t.match(garbage.doc.errors[0].message, /is not a valid multiaddr/)
  // The proxy's address, without /p2p/: the token's members are tried.
  const res = await sitePeer(b, `/ip4/127.0.0.1/tcp/${proxy.port}`, token, 'site-a', ['--access'])
  t.equal(res.code, 0, `flotilla site peer over libp2p succeeds: ${res.stderr}`)
  t.match(res.stdout, /peered with site [0-9a-f]{16} as site-a/)
  const atB = await siteStatus(b, 'site-a')
  t.same(atB.members.map((m) => m.peerId), [A.peerId], 'B pinned A\'s member')
  const atA = (await siteList(a)).peerings[0]!
  t.same(atA.members.map((m) => m.peerId), [B.peerId], 'A pinned B\'s member')
  t.equal(atA.rules.access, true, 'both record the rules')
  bAtA = atA.name
  const img = image()
  t.equal((await pushHttp(A.url, a.credentials, 'team/app', img, 'v1')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  t.equal((await manifestAt(b, B, 'team/app', 'v1')).digest, img.digest, 'images flow over the peering made through libp2p')
})

t.test('site set: the rules change at this site and at the other, in both directions of asking', async (t) => {
  const set = await cli(b, ['site', 'set', 'site-a', '--repos', 'team/**', '--repos', '!team/secret/**', '--tags', 'v*', '--deletes'])
  t.equal(set.code, 0, set.stderr)
  t.match(set.stdout, /the other site recorded the same rules/, 'the other site was told at once')
  const atB = await siteStatus(b, 'site-a')
  t.same(atB.rules, { repos: ['team/**', '!team/secret/**'], direction: 'pull', tags: 'v*', deletes: true, access: true }, 'recorded at B')
  t.equal(atB.rulesSynced, true)
  t.ok(atB.rulesAt !== null)
  t.same((await siteStatus(a, bAtA)).rules, atB.rules, 'and the same at A')
  // At A (not the initiator) a direction is as seen from A: push (A's images go to B) is B's pull.
  const fromA = await api(a, 'PATCH', `/api/v1/sites/${bAtA}`, { direction: 'push', tags: null })
  t.equal(fromA.status, 200, JSON.stringify(fromA.doc).slice(0, 300))
  t.equal(fromA.doc.told, true)
  t.same((await siteStatus(b, 'site-a')).rules, { repos: ['team/**', '!team/secret/**'], direction: 'pull', deletes: true, access: true }, 'A\'s change reached B: still pull as B sees it, tag glob cleared')
  const metrics = await (await fetch(`${A.url}/metrics`)).text()
  t.match(metrics, /flotilla_site_rules_changes_total\{site="[^"]+",from="here"\} 1/)
  // The tag glob again, for the subtests below.
  t.equal((await api(b, 'PATCH', '/api/v1/sites/site-a', { tags: 'v*' })).doc.told, true)
})

t.test('site explain: replicated, filtered (by which rule), absent, blocked (by which error), each way', async (t) => {
  const img = image()
  t.equal((await pushHttp(A.url, a.credentials, 'team/app', img, 'v2')).outcome, 'ok')
  t.equal((await pushHttp(A.url, a.credentials, 'other/x', image(), 'v1')).outcome, 'ok')
  t.equal((await pushHttp(A.url, a.credentials, 'team/app', image(), 'latest')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  let e = await explain(b, 'site-a', 'team/app:v2')
  t.match(e.directions, [{ direction: 'in', state: 'replicated', sourceDigest: img.digest, targetDigest: img.digest }], 'replicated, at B')
  t.ok(Date.parse(e.directions[0]!.replicatedAt!) > 0, 'with when')
  e = await explain(a, bAtA, 'team/app:v2')
  t.match(e.directions, [{ direction: 'out', state: 'replicated' }], 'and from A\'s side (it asks B)')
  t.match((await explain(b, 'site-a', 'other/x:v1')).directions, [{ state: 'filtered', rule: /^repos \(team\/\*\* !team\/secret\/\*\*\)/ }], 'filtered out by the repository patterns')
  t.match((await explain(b, 'site-a', 'team/app:latest')).directions, [{ state: 'filtered', rule: 'tags (v*)' }], 'filtered out by the tag glob')
  t.match((await explain(b, 'site-a', 'team/app:v404')).directions, [{ state: 'absent' }], 'no such tag at A')
  // Blocked: B keeps team/frozen immutable and A moves the tag.
  t.equal((await api(b, 'PUT', '/api/v1/immutable', { pattern: 'team/frozen' })).status, 200)
  t.equal((await pushHttp(A.url, a.credentials, 'team/frozen', image(), 'v1')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  const moved = image()
  t.equal((await pushHttp(A.url, a.credentials, 'team/frozen', moved, 'v1')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  e = await explain(b, 'site-a', 'team/frozen:v1')
  t.match(e.directions, [{ state: 'blocked', sourceDigest: moved.digest, error: { code: 'TAG_IMMUTABLE', message: /immutable/ } }], 'blocked, by which error')
  t.ok(Date.parse(e.directions[0]!.error!.at!) > 0, 'with its time')
  const table = await cli(b, ['site', 'explain', 'site-a', 'team/frozen:v1'])
  t.match(table.stdout, /to here\s+BLOCKED\s+blocked: this site could not apply it \(TAG_IMMUTABLE/, 'a table for people')
  const json = await cli(b, ['site', 'explain', 'site-a', 'team/app:v2', '--json'])
  t.match(JSON.parse(json.stdout), { repo: 'team/app', tag: 'v2', directions: [{ state: 'replicated' }] }, 'and --json for scripts')
})

t.test('--access: a user created at A logs in at B; grants and groups follow; a user that exists at both stays the local one; off: nothing flows', async (t) => {
  const login = async (c: TestCluster, user: string, password: string): Promise<number> => {
    const res = await fetch(`${c.nodes[0]!.url}/api/v1/me`, { headers: { authorization: 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64') } })
    await res.arrayBuffer()
    return res.status
  }
  // dave exists at B first (another person), then at A.
  t.equal((await api(b, 'POST', '/api/v1/users', { name: 'dave', password: 'dave-at-b-password' })).status, 201)
  t.equal((await api(a, 'POST', '/api/v1/users', { name: 'dave', password: 'dave-at-a-password' })).status, 201)
  t.equal((await api(a, 'POST', '/api/v1/users', { name: 'carol', password: 'carol-password-1' })).status, 201)
  t.equal((await api(a, 'POST', '/api/v1/groups', { name: 'readers', members: ['carol', 'dave'] })).status, 201)
  t.equal((await api(a, 'PUT', '/api/v1/permissions/team-read', { repositories: ['team/**'], groups: { readers: ['read'] }, users: { dave: ['write'] } })).status, 200)
  const st = await caughtUp(b, 'site-a', a)
  t.equal(await login(b, 'carol', 'carol-password-1'), 200, 'carol, created at A, logs in at B')
  const carol = { username: 'carol', password: 'carol-password-1' }
  const pull = await authFetch(`${B.url}/v2/team/app/manifests/v1`, carol, { headers: { accept: OCI_MANIFEST } })
  await pull.arrayBuffer()
  t.equal(pull.status, 200, 'and pulls there through the group grant that came with her')
  t.equal(await login(b, 'dave', 'dave-at-b-password'), 200, 'B\'s own dave is kept')
  t.equal(await login(b, 'dave', 'dave-at-a-password'), 401, 'A\'s dave does not log in as B\'s')
  const failures = st.failures.map((f) => `${f.ref} ${f.code}`)
  t.ok(failures.some((f) => /^user dave ALREADY_EXISTS/.test(f)), `the clash is recorded: ${failures.join('; ')}`)
  t.ok(failures.some((f) => /^member readers dave ALREADY_EXISTS/.test(f)), 'A\'s group membership is not given to B\'s dave')
  t.ok(failures.some((f) => /^perm team-read ALREADY_EXISTS/.test(f)), 'nor A\'s grant to its dave')
  const target = await api(b, 'GET', '/api/v1/permissions/team-read')
  t.same(target.doc.users, {}, 'the target arrived without the grant to the other dave')
  t.same(target.doc.groups, { readers: ['read'] })
  const users = await api(b, 'GET', '/api/v1/users')
  t.notOk(JSON.stringify(users.doc).includes('argon2'), 'no hash is shown by the API')

  // A password change at A: the new one works at B, the old one no longer.
  t.equal((await api(a, 'PUT', '/api/v1/users/carol/password', { password: 'carol-password-2' })).status, 200)
  await caughtUp(b, 'site-a', a)
  t.equal(await login(b, 'carol', 'carol-password-2'), 200, 'the new password works at B')
  t.equal(await login(b, 'carol', 'carol-password-1'), 401, 'the old one no longer')

  // access off: a user created at A stays at A.
  t.equal((await api(b, 'PATCH', '/api/v1/sites/site-a', { access: false })).status, 200)
  t.equal((await api(a, 'POST', '/api/v1/users', { name: 'erin', password: 'erin-password-1' })).status, 201)
  await caughtUp(b, 'site-a', a)
  t.equal(await login(b, 'erin', 'erin-password-1'), 401, 'without --access users do not replicate')
  t.equal((await api(b, 'GET', '/api/v1/users/erin')).status, 404)
  t.equal((await api(b, 'PATCH', '/api/v1/sites/site-a', { access: true })).status, 200)
  // Deleting carol at A (access on again) removes her at B.
  t.equal((await api(a, 'DELETE', '/api/v1/users/carol')).status, 200)
  await caughtUp(b, 'site-a', a)
  t.equal(await login(b, 'carol', 'carol-password-2'), 401, 'a user deleted at A is deleted at B')
})

t.test('--bandwidth: the cap holds on the link, measured as bytes over time through the proxy; status and metrics show backlog, throughput, explain shows the wait', async (t) => {
  const set = await api(b, 'PATCH', '/api/v1/sites/site-a', { bandwidth: 1 })
  t.equal(set.status, 200)
  await waitFor('A to hold the limit', async () => (await siteStatus(a, bAtA)).rules.bandwidth === 1 ? true : undefined, 30_000, 200)
  const img = bigImage(4 << 20)
  // Sample the proxy's byte count while the blob crosses it (the feed's small answers ride along).
  const samples: Array<[number, number]> = []
  let sawWaiting: ExplainDoc | undefined
  let sawBacklog: SiteStatusDoc | undefined
  // The first sample before the push: the bucket's burst may cross within the first 100 ms.
  samples.push([Date.now(), proxy.bytes()])
  const sampler = setInterval(() => { samples.push([Date.now(), proxy.bytes()]) }, 100)
  try {
    t.equal((await pushHttp(A.url, a.credentials, 'team/big', img, 'v1', 60_000)).outcome, 'ok')
    await waitFor('team/big:v1 at B', async () => {
      if (sawWaiting === undefined) {
        const e = await explain(b, 'site-a', 'team/big:v1').catch(() => undefined)
        if (e?.directions[0]?.state === 'waiting-for-blobs') sawWaiting = e
      }
      if (sawBacklog === undefined) {
        const s = await siteStatus(b, 'site-a')
        if ((s.backlogBytes ?? 0) > 0 && s.throughput.in > 0) sawBacklog = s
      }
      return (await manifestAt(b, B, 'team/big', 'v1')).status === 200 ? true : undefined
    }, 120_000, 250)
  } finally {
    clearInterval(sampler)
    // And one at the end: the last bytes may have crossed after the last tick.
    samples.push([Date.now(), proxy.bytes()])
  }
  // The rate over every 1.5 s window of the transfer: at most the cap plus the bucket's burst (1/4 s) and one frame, with room for timer jitter.
  const cap = 1 << 20
  let worst = 0
  for (let i = 0; i < samples.length; i++) {
    const j = samples.findIndex(([at]) => at >= samples[i]![0] + 1500)
    if (j < 0) break
    const rate = (samples[j]![1] - samples[i]![1]) * 1000 / (samples[j]![0] - samples[i]![0])
    worst = Math.max(worst, rate)
  }
  const moved = samples.at(-1)![1] - samples[0]![1]
  t.ok(moved >= 4 << 20, `the blob crossed the proxy (${moved} bytes)`)
  t.ok(worst > 0 && worst <= cap * 1.4, `the fastest 1.5 s window ran at ${(worst / cap).toFixed(2)} MiB/s, cap 1 MiB/s`)
  t.comment(`fastest 1.5 s window: ${(worst / cap).toFixed(2)} MiB/s; ${samples.length} samples`)
  t.ok(sawWaiting !== undefined, 'site explain showed it waiting for its blob meanwhile')
  const blob = sawWaiting?.directions[0]?.blobs.find((x) => x.digest === img.layers[0]!.digest)
  t.ok(blob !== undefined && blob.bytesLeft > 0 && blob.bytesLeft <= blob.size, `with the bytes left (${blob?.bytesLeft})`)
  t.ok(sawBacklog !== undefined, 'site status showed a backlog in bytes and a throughput meanwhile')
  t.ok((await metric(b, /flotilla_site_throttled_seconds_total\{site="site-a",direction="in"\} ([\d.e+-]+)/) ?? 0) > 0 || (await metric(a, /flotilla_site_throttled_seconds_total\{site="[^"]+",direction="out"\} ([\d.e+-]+)/) ?? 0) > 0, 'the token bucket made transfers wait')
  t.equal(await metric(b, /flotilla_site_bandwidth_limit_bytes_per_second\{site="site-a"\} (\d+)/), cap)
  t.ok((await metric(b, /flotilla_site_throughput_bytes_per_second\{site="site-a",direction="in"\} ([\d.e+-]+)/) ?? 0) > 0, 'the throughput metric')
  t.ok(await metric(b, /flotilla_site_backlog_bytes\{site="site-a"\} (\d+)/) !== undefined, 'the backlog metric')
  const text = await cli(b, ['site', 'status', 'site-a'])
  t.match(text.stdout, /backlog\s+\d/)
  t.match(text.stdout, /throughput\s+in [\d.]+ (B|KiB|MiB)\/s/)
  const off = await api(b, 'PATCH', '/api/v1/sites/site-a', { bandwidth: null })
  t.equal(off.status, 200)
  t.equal(off.doc.rules.bandwidth, undefined, 'null clears the limit')
})

t.test('hostile input on site set, site explain and the new libp2p protocols: clear 4xx, nothing changed', async (t) => {
  const before = (await siteStatus(b, 'site-a')).rules
  const cases: Array<[string, string, string, unknown, number, string]> = [
    ['set: empty', 'PATCH', '/api/v1/sites/site-a', {}, 400, 'BAD_REQUEST'],
    ['set: unknown rule', 'PATCH', '/api/v1/sites/site-a', { evil: true }, 400, 'BAD_REQUEST'],
    ['set: bad direction', 'PATCH', '/api/v1/sites/site-a', { direction: 'sideways' }, 400, 'BAD_REQUEST'],
    ['set: bad pattern', 'PATCH', '/api/v1/sites/site-a', { repos: ['UPPER/**'] }, 400, 'BAD_REQUEST'],
    ['set: bad glob', 'PATCH', '/api/v1/sites/site-a', { tags: 'a/b' }, 400, 'BAD_REQUEST'],
    ['set: negative bandwidth', 'PATCH', '/api/v1/sites/site-a', { bandwidth: -1 }, 400, 'BAD_REQUEST'],
    ['set: not JSON', 'PATCH', '/api/v1/sites/site-a', '{nope', 400, 'BAD_REQUEST'],
    ['set: unknown peering', 'PATCH', '/api/v1/sites/nope', { deletes: true }, 404, 'NOT_FOUND'],
    ['explain: no repo', 'GET', '/api/v1/sites/site-a/explain?tag=v1', undefined, 400, 'BAD_REQUEST'],
    ['explain: bad repo', 'GET', '/api/v1/sites/site-a/explain?repo=../../etc&tag=v1', undefined, 400, 'BAD_REQUEST'],
    ['explain: bad tag', 'GET', '/api/v1/sites/site-a/explain?repo=team/app&tag=%00', undefined, 400, 'BAD_REQUEST'],
    ['explain: two repos', 'GET', '/api/v1/sites/site-a/explain?repo=a&repo=b&tag=v1', undefined, 400, 'BAD_REQUEST'],
    ['explain: unknown peering', 'GET', '/api/v1/sites/nope/explain?repo=team/app&tag=v1', undefined, 404, 'NOT_FOUND'],
  ]
  for (const [what, method, path, body, status, code] of cases) {
    const res = await authFetch(`${B.url}${path}`, b.credentials, { method, ...(body !== undefined ? { headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) } : {}) })
    const doc = await res.json().catch(() => ({})) as { errors?: Array<{ code: string; message: string }> }
    t.equal(res.status, status, `${what}: ${status} (${doc.errors?.[0]?.message?.slice(0, 120) ?? ''})`)
    t.equal(doc.errors?.[0]?.code, code, `${what}: ${code}`)
  }
  const anon = await fetch(`${B.url}/api/v1/sites/site-a`, { method: 'PATCH', body: '{"deletes":false}' })
  t.equal(anon.status, 401, 'anonymous: 401')

  // The libp2p protocols: a stranger (let in on probation while A's peering token is valid) may
  // present a handshake and gets clear refusals; it may not use the operations protocol.
  const stranger = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], admit: () => true })
  t.teardown(async () => { await stranger.stop() })
  const at = multiaddr(`/ip4/127.0.0.1/tcp/${A.p2pPort}/p2p/${A.peerId}`)
  const send = async (protocol: string, body: string): Promise<any> => JSON.parse(new TextDecoder().decode(await sendRequest(stranger, at, protocol, new TextEncoder().encode(body), { timeoutMs: 10_000, maxAnswerBytes: 1 << 20 })))
  t.match(await send(SITE_HANDSHAKE_PROTOCOL, '{nope'), { error: { status: 400 } }, 'handshake, not JSON: 400')
  t.match(await send(SITE_HANDSHAKE_PROTOCOL, JSON.stringify({ token: 'a.b.c', site: '0123456789abcdef', members: [{ peerId: B.peerId, addrs: [] }], rules: { repos: [], direction: 'pull', deletes: false, access: false } })), { error: { status: 403, code: 'DENIED' } }, 'handshake, forged token: 403')
  const good = (await api(a, 'POST', '/api/v1/sites/tokens', {})).doc.token as string
  t.match(await send(SITE_HANDSHAKE_PROTOCOL, JSON.stringify({ token: good, site: '0123456789abcdef', members: [{ peerId: B.peerId, addrs: [] }], rules: { repos: [], direction: 'pull', deletes: false, access: false } })), { error: { status: 403, message: /not signed by a member/ } }, 'handshake naming members that are not the caller: 403')
  await t.rejects(send(SITE_OPS_PROTOCOL, JSON.stringify({ kind: 'rules', site: '0123456789abcdef' })), 'the operations protocol refuses a stranger')
  t.equal((await siteList(a)).peerings.length, 1, 'A recorded no other peering')
  t.same((await siteStatus(b, 'site-a')).rules, before, 'the rules did not change')
})

// Last: the link's reconnection backoff after the cut would slow the subtests after it.
t.test('site set while the link is cut: recorded here, shown unconfirmed, told to the other site once it heals', async (t) => {
  proxy.cut()
  const cut = await api(b, 'PATCH', '/api/v1/sites/site-a', { tags: 'x*' })
  t.equal(cut.status, 200)
  t.equal(cut.doc.told, false)
  t.match(cut.doc.message, /could not be told yet/, 'B says the other site was not told yet')
  t.equal((await siteStatus(b, 'site-a')).rulesSynced, false, 'and shows it unconfirmed')
  t.equal(await metric(b, /flotilla_site_rules_synced\{site="site-a"\} (\d)/), 0)
  t.equal((await siteStatus(a, bAtA)).rules.tags, 'v*', 'A still has the rules of before')
  proxy.heal()
  await waitFor('B\'s rules confirmed by A after the heal', async () => (await siteStatus(b, 'site-a')).rulesSynced ? true : undefined, 60_000, 200)
  t.equal((await siteStatus(a, bAtA)).rules.tags, 'x*', 'A recorded the change made while cut off')
})
