/**
 * Two single-node sites on 127.0.0.1, peered with the real CLI (issue 11: peering, delivery,
 * visibility): the token exchange pins each site's identity at the other; wrong, expired and
 * unpinned are refused; an image skopeo pushes at A is pulled with skopeo at B, by tag and by
 * digest; a tag moved twice quickly at A brings every manifest to B by digest; a third site
 * with include/exclude patterns, a tag glob and deletes gets only what its rules let through.
 */
import t from 'tap'
import { mkdir, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../../net/host.js'
import { SITE_PROTOCOL } from '../../cluster/peering/protocol.js'
import { sendRequest } from '../../net/request-response.js'
import { removeTree } from '../helpers/cleanup.js'
import { authFetch, pushHttp, runCli, startTestCluster, waitFor, checkImage } from '../helpers/cluster.js'
import { busyboxImage, readOciLayout, writeOciLayout } from '../helpers/images.js'
import { image } from '../helpers/oci.js'
import { containersEnv } from '../helpers/podman.js'
import { requireTool } from '../helpers/tools.js'
import { caughtUp, manifestAt, sitePeer, siteList, siteStatus, siteToken } from '../helpers/sites.js'

const a = await startTestCluster(t, { size: 1 })
const b = await startTestCluster(t, { size: 1 })
const A = a.nodes[0]!
const B = b.nodes[0]!

t.test('site token and site peer: each site pins the other\'s identity, through its log', async (t) => {
  const token = await siteToken(a)
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'the last line of stdout is the token alone')
  const res = await sitePeer(b, A.url, token, 'site-a')
  t.equal(res.code, 0, `flotilla site peer succeeds: ${res.stderr}`)
  t.match(res.stdout, /peered with site [0-9a-f]{16} as site-a/)
  const atB = await siteStatus(b, 'site-a')
  const listA = await siteList(a)
  const listB = await siteList(b)
  t.equal(atB.site, listA.site, 'B recorded A\'s site id')
  t.same(atB.members.map((m) => m.peerId), [A.peerId], 'B pinned A\'s member')
  t.same([atB.receiving, atB.sending, atB.initiator], [true, false, true], 'pull: B receives')
  const atA = listA.peerings.find((p) => p.site === listB.site)
  t.ok(atA, 'A recorded B\'s site')
  t.same(atA?.members.map((m) => m.peerId), [B.peerId], 'A pinned B\'s member')
  t.same([atA?.receiving, atA?.sending], [false, true], 'pull: A sends')
  const again = await sitePeer(b, A.url, await siteToken(a), 'site-a2')
  t.not(again.code, 0, 'the same site cannot be peered twice')
  t.match(again.stderr, /peered already/)
  const audit = await (await authFetch(`${B.url}/api/v1/audit?action=PutSitePeering`, b.credentials)).json() as { entries: Array<{ user: string; outcome: string }> }
  t.match(audit.entries, [{ user: 'admin', outcome: 'ok' }], 'the peering is in B\'s audit log, with who made it')
  const json = await runJson(['site', 'list', '--json', '--node', B.url, '--user', `admin:${b.credentials.password}`])
  t.equal(json.peerings[0].name, 'site-a', 'site list --json prints the API document')
})

t.test('a wrong token, an expired token and an unpinned identity are refused', async (t) => {
  const c = await startTestCluster(t, { size: 1 })
  const good = await siteToken(a)
  const [h, p, s] = good.split('.') as [string, string, string]
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>
  // Altered: another member list under A's signature. A checks the signature and refuses.
  const altered = `${h}.${Buffer.from(JSON.stringify({ ...claims, members: [{ peerId: B.peerId, addrs: [] }] })).toString('base64url')}.${s}`
  let res = await sitePeer(c, A.url, altered, 'site-a')
  t.not(res.code, 0)
  t.match(res.stderr, /403 DENIED: the site at .* refused the peering \(403\): peering refused: the peering token is not valid for this site/, 'an altered token: refused by the site that issued it')
  // Expired: the receiving side reads the expiry before it asks (the issuing side checks it again: token.test.ts).
  const expired = `${h}.${Buffer.from(JSON.stringify({ ...claims, exp: Math.floor(Date.now() / 1000) - 10 })).toString('base64url')}.${s}`
  res = await sitePeer(c, A.url, expired, 'site-a')
  t.match(res.stderr, /400 BAD_REQUEST: the peering token expired at \d{4}-/, 'an expired token: refused, naming when it expired')
  res = await sitePeer(c, A.url, 'not-a-token', 'site-a')
  t.match(res.stderr, /400 BAD_REQUEST: the peering token is malformed/)
  // A's own token presented to a site other than A (the address is C's own site): C is not the issuer.
  const cToken = await siteToken(c)
  res = await sitePeer(b, A.url, cToken, 'site-c')
  t.match(res.stderr, /refused the peering \(403\)/, 'a token of another site presented to A is refused')
  t.same((await siteList(c)).peerings, [], 'nothing was recorded at the refused site')
  t.equal((await siteList(a)).peerings.length, 1, 'nor at A')

  // An identity A has not pinned cannot pull A's feed: the gater refuses it, or (while a peering
  // token is outstanding, which lets strangers connect on probation for the handshake over
  // libp2p) the site protocol refuses the request and A hangs up on it.
  const stranger = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], admit: () => true })
  t.teardown(async () => { await stranger.stop() })
  const addr = (await siteList(b)).peerings[0]!.members[0]!.addrs[0]!
  const ask = { site: (await siteList(b)).site, after: 0, waitMs: 0, members: [] }
  await t.rejects(sendRequest(stranger, multiaddr(`${addr}/p2p/${A.peerId}`), SITE_PROTOCOL, new TextEncoder().encode(JSON.stringify(ask)), { timeoutMs: 10_000, maxAnswerBytes: 1 << 20 }), 'an unpinned identity is refused')
  await waitFor('A to hang up on the stranger', async () => stranger.getConnections().length === 0 ? true : undefined, 15_000, 100)
})

t.test('an image skopeo pushes at A is pulled with skopeo at B, by tag and by digest', async (t) => {
  if (!requireTool(t, 'skopeo')) return
  const ctr = await containersEnv(t, [A.host, B.host])
  await ctr.login('skopeo', A.host, a.credentials)
  await ctr.login('skopeo', B.host, b.credentials)
  const work = await mkdtemp(join(tmpdir(), 'fl-peering-'))
  t.teardown(async () => { await removeTree(work) })
  const img = busyboxImage({ randomLayerSizes: [2 << 20] })
  await writeOciLayout(join(work, 'src'), img, 'v1')
  await ctr.skopeoOk(['copy', '--dest-tls-verify=false', `oci:${join(work, 'src')}:v1`, `docker://${A.host}/team/app:v1`])
  // The lag target is seconds; the deadline only guards against a hang on a loaded machine.
  await waitFor('team/app:v1 at B', async () => (await manifestAt(b, B, 'team/app', 'v1')).status === 200 ? true : undefined, 60_000, 100)
  await mkdir(join(work, 'out'))
  await ctr.skopeoOk(['copy', '--src-tls-verify=false', `docker://${B.host}/team/app:v1`, `oci:${join(work, 'out', 'tag')}:v1`])
  const byTag = await readOciLayout(join(work, 'out', 'tag'), 'v1')
  t.equal(byTag.manifestDigest, img.manifestDigest, 'pulled by tag at B: the same manifest digest')
  for (const [d, bytes] of img.blobs) t.ok((await byTag.readBlob(d)).equals(bytes), `blob ${d.slice(0, 19)}… is byte-identical at B`)
  await ctr.skopeoOk(['copy', '--src-tls-verify=false', `docker://${B.host}/team/app@${img.manifestDigest}`, `oci:${join(work, 'out', 'digest')}:x`])
  t.equal((await readOciLayout(join(work, 'out', 'digest'), 'x')).manifestDigest, img.manifestDigest, 'pulled by digest at B')
  const st = await caughtUp(b, 'site-a', a)
  t.ok((st.bytesReceived ?? 0) >= 2 << 20, 'the blob bytes came over the site link')
  t.equal(st.lastError, null)
  const metrics = await (await fetch(`${B.url}/metrics`)).text()
  t.match(metrics, /flotilla_site_connected\{site="site-a"\} 1/)
  t.match(metrics, /flotilla_site_lag_entries\{site="site-a"\} 0/)
  t.match(metrics, /flotilla_site_bytes_received_total\{site="site-a"\} \d+/)
})

t.test('a tag moved twice quickly at A: every manifest reaches B by digest, the tag ends on the last', async (t) => {
  const imgs = [image({ layers: 1 }), image({ layers: 2 }), image({ layers: 1 })]
  for (const img of imgs) t.equal((await pushHttp(A.url, a.credentials, 'team/moving', img, 'latest')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  for (const img of imgs) t.same(await checkImage(B.url, b.credentials, 'team/moving', img, img.digest), [], `manifest ${img.digest.slice(0, 19)}… and its blobs are at B by digest`)
  t.equal((await manifestAt(b, B, 'team/moving', 'latest')).digest, imgs[2]!.digest, 'the tag points where it points at A')
})

t.test('user properties set and removed at A reach B with the manifest they describe', async (t) => {
  const img = image({ layers: 1 })
  t.equal((await pushHttp(A.url, a.credentials, 'team/props', img, 'v1')).outcome, 'ok')
  const set = await authFetch(`${A.url}/api/v1/properties`, a.credentials, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ image: 'team/props:v1', properties: [{ key: 'qa', value: 'passed' }, { key: 'ticket', value: 'OPS-7' }] }) })
  t.equal(set.status, 200, await set.text())
  const at = async (): Promise<Array<{ key: string; values: string[] }>> => {
    const r = await authFetch(`${B.url}/api/v1/properties?image=${encodeURIComponent('team/props@' + img.digest)}`, b.credentials)
    return r.status === 200 ? ((await r.json()) as { properties: Array<{ key: string; values: string[] }> }).properties : []
  }
  await caughtUp(b, 'site-a', a)
  t.match(await at(), [{ key: 'qa', values: ['passed'] }, { key: 'ticket', values: ['OPS-7'] }], 'B shows A\'s properties')
  const rm = await authFetch(`${A.url}/api/v1/properties?image=team/props:v1&property=ticket`, a.credentials, { method: 'DELETE' })
  t.equal(rm.status, 200, await rm.text())
  await caughtUp(b, 'site-a', a)
  t.same((await at()).map((p) => p.key), ['qa'], 'a property removed at A is gone at B')
})

t.test('a tag move B refuses (an immutable tag there): the manifest comes by digest, the refusal is shown with its cause, the rest flows on', async (t) => {
  const put = await authFetch(`${B.url}/api/v1/immutable`, b.credentials, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ pattern: 'frozen/**' }) })
  await put.arrayBuffer()
  t.equal(put.status, 200)
  const [first, second, after] = [image(), image(), image()]
  t.equal((await pushHttp(A.url, a.credentials, 'frozen/app', first, 'v1')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  // A moves the tag; B's rule forbids it there.
  t.equal((await pushHttp(A.url, a.credentials, 'frozen/app', second, 'v1')).outcome, 'ok')
  t.equal((await pushHttp(A.url, a.credentials, 'team/after-frozen', after, 'v1')).outcome, 'ok')
  const st = await caughtUp(b, 'site-a', a)
  t.equal((await manifestAt(b, B, 'frozen/app', 'v1')).digest, first.digest, 'B kept its immutable tag')
  t.same(await checkImage(B.url, b.credentials, 'frozen/app', second, second.digest), [], 'the manifest A acknowledged still reached B, by digest')
  t.same(await checkImage(B.url, b.credentials, 'team/after-frozen', after, 'v1'), [], 'what came after the refused change arrived')
  t.match(st.failures, [{ op: 'put', repo: 'frozen/app', ref: second.digest, code: 'TAG_IMMUTABLE' }], 'the refusal is in the status, with its cause')
  const cli = await runCli(['site', 'status', 'site-a', '--node', B.url, '--user', `admin:${b.credentials.password}`])
  t.match(cli.stdout, /changes that could not be applied here[\s\S]*frozen\/app[\s\S]*TAG_IMMUTABLE/, 'flotilla site status lists it')
})

t.test('rules: repository include and exclude patterns, a tag glob, deletes; a third site gets only what its rules let through', async (t) => {
  const c = await startTestCluster(t, { size: 1 })
  const C = c.nodes[0]!
  const res = await sitePeer(c, A.url, await siteToken(a), 'site-a', ['--repos', 'team/**', '--repos', '!team/secret/**', '--tags', 'v*', '--deletes', '--as', 'filtered-c'])
  t.equal(res.code, 0, res.stderr)
  const pushed = { ok: image(), secret: image(), other: image() }
  t.equal((await pushHttp(A.url, a.credentials, 'team/filtered', pushed.ok, 'v1')).outcome, 'ok')
  t.equal((await pushHttp(A.url, a.credentials, 'team/secret/x', pushed.secret, 'v1')).outcome, 'ok')
  t.equal((await pushHttp(A.url, a.credentials, 'other/y', pushed.other, 'v1')).outcome, 'ok')
  const st = await caughtUp(c, 'site-a', a)
  t.same(await checkImage(C.url, c.credentials, 'team/filtered', pushed.ok, 'v1'), [], 'team/** is replicated (what A had before the peering too)')
  t.equal((await manifestAt(c, C, 'team/app', 'v1')).status, 200, 'an image pushed before the peering came too')
  t.equal((await manifestAt(c, C, 'team/secret/x', 'v1')).status, 404, '!team/secret/** is excluded')
  t.equal((await manifestAt(c, C, 'other/y', 'v1')).status, 404, 'a repository no pattern includes is left out')
  t.equal((await waitFor('lag 0', async () => (await siteStatus(c, 'site-a')).lagEntries === 0 ? true : undefined)), true, 'the cursor passed the filtered entries: no lag')
  t.same(st.rules.repos, ['team/**', '!team/secret/**'])
  const atA = (await siteList(a)).peerings.find((p) => p.name === 'filtered-c')
  t.same(atA?.rules.repos, ['team/**', '!team/secret/**'], 'A holds the same rules, and filters at the source')
  const r = await authFetch(`${C.url}/v2/team/secret/x/blobs/${pushed.secret.layers[0]!.digest}`, c.credentials)
  await r.arrayBuffer()
  t.equal(r.status, 404, 'nor did its blobs')
  t.equal((await manifestAt(c, C, 'team/moving', 'latest')).status, 404, 'a tag the glob v* does not match is left out')

  // Deletes: C has --deletes, B has not.
  const del = await authFetch(`${A.url}/v2/team/filtered/manifests/v1`, a.credentials, { method: 'DELETE' })
  await del.arrayBuffer()
  t.equal(del.status, 202)
  await caughtUp(c, 'site-a', a)
  await caughtUp(b, 'site-a', a)
  t.equal((await manifestAt(c, C, 'team/filtered', 'v1')).status, 404, 'the tag deleted at A is deleted at C (deletes on)')
  t.equal((await manifestAt(c, C, 'team/filtered', pushed.ok.digest)).status, 200, 'its manifest stays, by digest (only the tag was deleted)')
  t.equal((await manifestAt(b, B, 'team/filtered', 'v1')).status, 200, 'and kept at B (deletes off)')
})

t.test('removing a peering stops the flow and unpins the other site', async (t) => {
  const c = await startTestCluster(t, { size: 1 })
  t.equal((await sitePeer(c, A.url, await siteToken(a), 'gone', ['--as', 'gone-c'])).code, 0)
  await caughtUp(c, 'gone', a)
  const rm = await runJson(['site', 'remove', 'gone', '--json', '--node', c.nodes[0]!.url, '--user', `admin:${c.credentials.password}`])
  t.same(rm, { removed: 'gone' })
  const img = image()
  t.equal((await pushHttp(A.url, a.credentials, 'team/after-remove', img, 'v1')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  t.equal((await manifestAt(c, c.nodes[0]!, 'team/after-remove', 'v1')).status, 404, 'nothing flows after the removal')
  const res = await authFetch(`${c.nodes[0]!.url}/api/v1/sites/gone`, c.credentials)
  t.equal(res.status, 404)
  t.match(await res.json(), { errors: [{ code: 'NOT_FOUND' }] })
})

async function runJson (args: string[]): Promise<any> {
  const res = await runCli(args)
  if (res.code !== 0) throw new Error(`flotilla ${args.slice(0, 2).join(' ')} failed: ${res.stderr}`)
  return JSON.parse(res.stdout)
}

t.test('hostile input on the sites routes gets clear 4xx errors, and changes nothing', async (t) => {
  const before = await siteList(a)
  const url = (p: string): string => `${A.url}/api/v1/sites${p}`
  const post = async (p: string, body: string | undefined, headers: Record<string, string> = {}): Promise<Response> => await authFetch(url(p), a.credentials, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, ...(body !== undefined ? { body } : {}) })
  const cases: Array<[string, () => Promise<Response>, number, string]> = [
    ['peer: not JSON', async () => await post('', '{nope'), 400, 'BAD_REQUEST'],
    ['peer: no token', async () => await post('', JSON.stringify({ address: B.url, name: 'x' })), 400, 'BAD_REQUEST'],
    ['peer: bad name', async () => await post('', JSON.stringify({ address: B.url, name: 'Bad/Name', token: 'x' })), 400, 'BAD_REQUEST'],
    ['peer: bad direction', async () => await post('', JSON.stringify({ address: B.url, name: 'x', token: 'x', direction: 'sideways' })), 400, 'BAD_REQUEST'],
    ['peer: bad pattern', async () => await post('', JSON.stringify({ address: B.url, name: 'x', token: await siteToken(b), repos: ['UPPER/**'] })), 400, 'BAD_REQUEST'],
    ['peer: unknown field', async () => await post('', JSON.stringify({ address: B.url, name: 'x', token: 'x', evil: true })), 400, 'BAD_REQUEST'],
    ['peer: an address that is not http', async () => await post('', JSON.stringify({ address: 'file:///etc/passwd', name: 'x', token: await siteToken(b) })), 400, 'BAD_REQUEST'],
    ['peer: own token', async () => await post('', JSON.stringify({ address: A.url, name: 'x', token: await siteToken(a) })), 400, 'BAD_REQUEST'],
    ['peer: huge body', async () => await post('', JSON.stringify({ address: B.url, name: 'x', token: 'x'.repeat(400_000) })), 413, 'BODY_TOO_LARGE'],
    ['token: ttl too short', async () => await post('/tokens', JSON.stringify({ ttlSeconds: 5 })), 400, 'BAD_REQUEST'],
    ['token: ttl not a number', async () => await post('/tokens', JSON.stringify({ ttlSeconds: '1h' })), 400, 'BAD_REQUEST'],
    ['handshake: empty', async () => await fetch(url('/handshake'), { method: 'POST', body: '{}' }), 400, 'BAD_REQUEST'],
    ['handshake: forged token, unsigned', async () => await fetch(url('/handshake'), { method: 'POST', body: JSON.stringify({ token: 'a.b.c', site: '0123456789abcdef', members: [{ peerId: B.peerId, addrs: [] }], rules: {} }) }), 403, 'DENIED'],
    ['handshake: good token, not signed by a member it names', async () => await fetch(url('/handshake'), { method: 'POST', body: JSON.stringify({ token: await siteToken(a), site: '0123456789abcdef', members: [{ peerId: B.peerId, addrs: [] }], rules: {} }) }), 403, 'DENIED'],
    ['handshake: good token, forged signature', async () => await fetch(url('/handshake'), { method: 'POST', headers: { authorization: `Flotilla-Peer ${B.peerId} ${Date.now()} AAAA` }, body: JSON.stringify({ token: await siteToken(a), site: '0123456789abcdef', members: [{ peerId: B.peerId, addrs: [] }], rules: {} }) }), 403, 'DENIED'],
    ['handshake: bad site id', async () => await fetch(url('/handshake'), { method: 'POST', body: JSON.stringify({ token: 'x', site: '../../etc', members: [], rules: {} }) }), 400, 'BAD_REQUEST'],
    ['status: unknown', async () => await authFetch(url('/nope'), a.credentials), 404, 'NOT_FOUND'],
    ['status: a name that is no name', async () => await authFetch(url('/%00%ff'), a.credentials), 404, 'NOT_FOUND'],
    ['remove: unknown', async () => await authFetch(url('/nope'), a.credentials, { method: 'DELETE' }), 404, 'NOT_FOUND'],
    ['list: anonymous', async () => await fetch(url('')), 401, 'UNAUTHORIZED'],
    ['token: anonymous', async () => await fetch(url('/tokens'), { method: 'POST', body: '{}' }), 401, 'UNAUTHORIZED'],
    ['remove: wrong password', async () => await fetch(url('/x'), { method: 'DELETE', headers: { authorization: 'Basic ' + Buffer.from('admin:wrong-password').toString('base64') } }), 401, 'UNAUTHORIZED'],
  ]
  for (const [what, call, status, code] of cases) {
    const res = await call()
    const doc = await res.json().catch(() => ({})) as { errors?: Array<{ code: string; message: string }> }
    t.equal(res.status, status, `${what}: ${status} (${doc.errors?.[0]?.message?.slice(0, 120) ?? ''})`)
    t.equal(doc.errors?.[0]?.code, code, `${what}: ${code}`)
  }
  // A signed-in user without the admin flag is refused on every node, not only the leader.
  t.equal((await authFetch(`${A.url}/api/v1/users`, a.credentials, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'alice', password: 'alice-password-1' }) })).status, 201)
  const alice = { username: 'alice', password: 'alice-password-1' }
  for (const [method, p] of [['GET', ''], ['POST', '/tokens'], ['GET', '/x'], ['DELETE', '/x']] as const) {
    const res = await authFetch(url(p), alice, { method, ...(method === 'POST' ? { body: '{}', headers: { 'content-type': 'application/json' } } : {}) })
    t.equal(res.status, 403, `${method} /api/v1/sites${p} as a non-admin: 403`)
  }
  t.same((await siteList(a)).peerings.map((p) => p.name), before.peerings.map((p) => p.name), 'no peering was added or removed')
})
