/**
 * Who may be in the cluster, on one three-node cluster of real processes:
 * - a libp2p peer with an unknown identity cannot use a member's Raft protocol and loses its
 *   connection (the join tokens issued to form the cluster are outstanding, so it is let in on
 *   probation; with none outstanding it cannot connect at all: join-multiaddr.test.ts), nor
 *   use its node-to-node HTTP routes;
 * - join tokens and removals need an administrator;
 * - a join with a forged or tampered token, and with an expired one, is refused;
 * - a fourth node joins while pushes run, becomes a voter, then serves every image;
 * - `flotilla remove` takes a member out, the cluster keeps serving, and the removed
 *   identity can neither come back on its data dir nor join again with a valid token.
 */
import t from 'tap'
import { copyFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { SignJWT, decodeJwt } from 'jose'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream } from '@libp2p/utils'
import { createHost, type Host } from '../../net/host.js'
import { loadOrCreateIdentity } from '../../net/identity.js'
import { signRequest } from '../../net/peer-auth.js'
import { RAFT_PROTOCOL } from '../../cluster/cluster.js'
import { image as smallImage } from '../helpers/oci.js'
import {
  basicAuth, checkImage, clusterStatus, issueToken, pushHttp, pushWorkload, runCli, sleep, startNode,
  startTestCluster, tryJoin, waitFor, type ClusterNode, type PushRecord,
} from '../helpers/cluster.js'

const c = await startTestCluster(t, { size: 3 })
const creds = c.credentials
const user = `${creds.username}:${creds.password}`
// Issued now, used last: a token lives at least 60 s, so it expires while the other tests run.
const shortLived = await issueToken(c.nodes[0]!.url, creds, 60)
/** Every image acknowledged so far, to check on each node that should serve it. */
const pushed: PushRecord[] = []

/** A libp2p host with a fresh identity nobody has heard of; stopped at teardown. */
async function strangerHost (tt: { teardown (fn: () => unknown): void }, privateKey?: Parameters<typeof createHost>[0]['privateKey']): Promise<Host> {
  const host = await createHost({ privateKey: privateKey ?? await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], admit: () => true })
  tt.teardown(async () => { await host.stop() })
  return host
}

/**
 * Dial a member's Raft protocol as `host` and send it a frame; resolves with the error message,
 * or 'connected' when the stream stays open.
 */
async function dialRaft (host: Host, member: { peerId: string; p2p: string[] }): Promise<string> {
  const peer = peerIdFromString(member.peerId)
  await host.peerStore.merge(peer, { multiaddrs: member.p2p.map((a) => multiaddr(a.replace(/\/p2p\/[^/]+$/, ''))) })
  try {
    const stream = await host.dialProtocol(peer, RAFT_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    // A stranger on probation gets as far as the protocol; the member then resets the stream
    // and hangs up, which shows once bytes flow. A Raft member would just not answer.
    const lp = lpStream(stream)
    await lp.write(new TextEncoder().encode('{}'))
    const answered = await lp.read({ signal: AbortSignal.timeout(2000) }).then(() => true, (err: Error) => err.name === 'AbortError' || err.name === 'TimeoutError' ? true : err)
    if (answered !== true) throw answered
    try { await stream.close() } catch {}
    return 'connected'
  } catch (err) {
    // The remote gater's refusal surfaces as a DOM Event (the connection closing), not an Error.
    if (typeof Event !== 'undefined' && err instanceof Event) return `connection closed (event ${err.type})`
    const e = err as Error & { code?: string }
    const text = `${e.name ?? ''} ${e.code ?? ''} ${e.message ?? ''}`.trim()
    return text === '' ? String(err) : text
  }
}

t.test('a libp2p peer with an unknown identity cannot use Raft on a member, nor keep a connection', async (t) => {
  const target = c.nodes[1]!
  const st = await c.status(target)
  const me = st.members.find((m) => m.peerId === target.peerId)!
  t.ok(me.p2p.length > 0, `the member's multiaddr is in /api/v1/cluster: ${me.p2p.join(' ')}`)
  const stranger = await strangerHost(t)
  const result = await dialRaft(stranger, me)
  t.not(result, 'connected', `dialing ${RAFT_PROTOCOL} with an unknown identity fails: ${result}`)
  await sleep(300)
  t.equal(stranger.getConnections(peerIdFromString(me.peerId)).length, 0, 'the stranger holds no connection to the member')
  const again = await dialRaft(stranger, me)
  t.not(again, 'connected', `nor can it try again: ${again}`)

  // Nor does a signed request of the stranger get a blob over the node-to-node HTTP routes.
  const img = smallImage({ seed: 'stranger' })
  t.equal((await pushHttp(target.url, creds, 'members/stranger', img, 'v1')).outcome, 'ok', 'an image is pushed')
  const key = await generateKeyPair('Ed25519')
  const { peerIdFromPrivateKey } = await import('@libp2p/peer-id')
  const strangerId = peerIdFromPrivateKey(key).toString()
  const path = `/internal/v1/blobs/${img.layers[0]!.digest}`
  const res = await fetch(`${target.url}${path}`, { headers: { authorization: await signRequest(key, strangerId, 'GET', path) } })
  await res.arrayBuffer()
  t.equal(res.status, 403, 'a validly signed request from an unknown peer is refused on /internal/')
  const unsigned = await fetch(`${target.url}${path}`)
  await unsigned.arrayBuffer()
  t.equal(unsigned.status, 401, 'an unsigned one too')
})

t.test('join tokens, removals and the status need an administrator', async (t) => {
  const n = c.nodes[0]!
  const status = await fetch(`${n.url}/api/v1/cluster`)
  t.equal(status.status, 401, `no cluster status (peer ids, addresses) without credentials: ${await status.text()}`)
  const token = await fetch(`${n.url}/api/v1/cluster/tokens`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(token.status, 401, `no join token without credentials: ${await token.text()}`)
  const remove = await fetch(`${n.url}/api/v1/cluster/members/${c.nodes[2]!.peerId}`, { method: 'DELETE' })
  t.equal(remove.status, 401, `no removal without credentials: ${await remove.text()}`)
  // A signed-in user who is not an administrator is refused too.
  const created = await fetch(`${n.url}/api/v1/users`, { method: 'POST', headers: { authorization: basicAuth(creds), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'dev', password: 'dev-password-1' }) })
  t.equal(created.status, 201, `a plain user is created: ${await created.text()}`)
  const dev = basicAuth({ username: 'dev', password: 'dev-password-1' })
  const devToken = await fetch(`${n.url}/api/v1/cluster/tokens`, { method: 'POST', headers: { authorization: dev, 'content-type': 'application/json' }, body: '{}' })
  t.equal(devToken.status, 403, `no join token for a non-administrator: ${await devToken.text()}`)
  const devRemove = await fetch(`${n.url}/api/v1/cluster/members/${c.nodes[2]!.peerId}`, { method: 'DELETE', headers: { authorization: dev } })
  t.equal(devRemove.status, 403, `no removal by a non-administrator: ${await devRemove.text()}`)
  const devStatus = await fetch(`${n.url}/api/v1/cluster`, { headers: { authorization: dev } })
  t.equal(devStatus.status, 403, `no cluster status for a non-administrator: ${await devStatus.text()}`)
  t.equal((await c.status(n)).members.length, 3, 'still three members')
})

t.test('a join with a forged or tampered token is refused', async (t) => {
  const via = c.nodes[0]!
  const real = await c.token()
  const claims = decodeJwt(real)
  // Same claims (issuer = the cluster id, audience, purpose), signed with a key the cluster never had.
  const forged = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256' }).sign(randomBytes(32))
  const join1 = await tryJoin({ name: 'forged', base: c.base, adminPassword: creds.password, join: { url: via.url, token: forged } })
  t.notOk(join1.joined, 'the node with a forged token does not start')
  t.equal(join1.code, 1, 'flotilla join exits 1')
  t.match(join1.log, /refused the join \(401\).*join token refused/, 'and says the token was refused')
  join1.node && await join1.node.kill()

  // A valid token's signature over different claims: the payload pushed 10 years out.
  const [h, , s] = real.split('.') as [string, string, string]
  const later = Buffer.from(JSON.stringify({ ...claims, exp: (claims.exp ?? 0) + 10 * 365 * 86400 })).toString('base64url')
  const tampered = `${h}.${later}.${s}`
  const res = await fetch(`${via.url}/api/v1/cluster/join`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: tampered, peerId: (await loadOrCreateIdentity(join(c.base, 'tampered.key'))).peerId, p2p: ['/ip4/127.0.0.1/tcp/1'], http: 'http://127.0.0.1:1' }),
  })
  t.equal(res.status, 401, `a tampered token is refused over HTTP: ${await res.text()}`)
  await fetch(`${via.url}/api/v1/cluster/join`, { method: 'POST', body: 'garbage' }).then(async (r) => {
    t.equal(r.status, 400, `a join request that is not JSON is a 400: ${await r.text()}`)
  })
  const st = await c.status(via)
  t.equal(st.members.length, 3, 'no member was added by the refused joins')
})

t.test('a fourth node joins while pushes run, becomes a voter and serves every image', async (t) => {
  const first = c.nodes.slice(0, 3)
  const load = pushWorkload({ clients: 3, creds, targets: () => first.map((n) => ({ url: n.url, name: n.name })), repoPrefix: 'members/joining', timeoutMs: 15_000 })
  t.teardown(async () => { await load.stop() })
  await waitFor('pushes under way', async () => load.records.length >= 6 ? true : undefined, 30_000)
  const joinedAt = Date.now()
  const n4 = await c.join({ via: c.nodes[2]! })
  t.comment(`node 4 joined and was ready after ${Date.now() - joinedAt} ms`)
  await sleep(2000) // pushes continue after the join
  await load.stop()
  const acked = load.records.filter((r) => r.result.outcome === 'ok')
  const failed = load.records.filter((r) => r.result.outcome !== 'ok')
  t.ok(acked.length >= 6, `${acked.length} pushes acknowledged while node 4 joined (${failed.length} not)`)
  for (const f of failed.slice(0, 5)) t.comment(`  not acknowledged: ${f.node} ${f.repo}:${f.tag} ${f.result.status ?? ''} ${f.result.error ?? ''}`)
  t.equal(failed.length, 0, 'a join does not make pushes fail')
  pushed.push(...acked)

  await c.converged({ voters: 4, timeoutMs: 60_000 })
  const st = await c.status(n4)
  t.equal(st.members.find((m) => m.peerId === n4.peerId)?.role, 'voter', 'node 4 was promoted to voter')
  const problems: string[] = []
  for (const r of acked) problems.push(...await checkImage(n4.url, creds, r.repo, r.img, r.tag))
  t.same(problems.slice(0, 20), [], `node 4 serves all ${acked.length} images pushed around its join`)
})

t.test('flotilla remove takes a member out; the cluster keeps serving; the identity cannot rejoin', async (t) => {
  const leader = await c.leader()
  // Remove a follower (not the node we ask), through the CLI, from another follower.
  const followers = c.live().filter((n) => n !== leader)
  const victim = followers[0]!
  const askVia = followers[1]!
  const out = await runCli(['remove', victim.peerId, '--node', askVia.url, '--user', user])
  t.equal(out.code, 0, `flotilla remove exits 0: ${out.stderr}`)
  t.match(out.stdout, new RegExp(`removed ${victim.peerId}`), 'and says which node it removed')

  const rest = c.live().filter((n) => n !== victim)
  await c.converged({ voters: rest.length, among: rest, timeoutMs: 30_000 })
  for (const n of rest) {
    const st = await c.status(n)
    t.notOk(st.members.some((m) => m.peerId === victim.peerId && m.role !== 'none'), `${n.name} no longer counts ${victim.name} as a member`)
  }
  // The cluster keeps serving: new pushes on every remaining node, old images everywhere.
  for (const n of rest) {
    const img = smallImage({ layers: 2, seed: `after-remove-${n.name}` })
    const r = await pushHttp(n.url, creds, 'members/after-remove', img, n.name, 30_000)
    t.equal(r.outcome, 'ok', `a push to ${n.name} after the removal is acknowledged ${r.error ?? ''}`)
    if (r.outcome === 'ok') pushed.push({ client: -1, repo: 'members/after-remove', tag: n.name, img, node: n.name, start: 0, end: 0, result: r })
  }
  for (const n of rest) {
    const problems: string[] = []
    for (const r of pushed) problems.push(...await checkImage(n.url, creds, r.repo, r.img, r.tag))
    t.same(problems.slice(0, 20), [], `${n.name} serves all ${pushed.length} images`)
  }

  // The removed node itself stops serving and exits (issue 10, item 5): it is in no configuration any more.
  const exited = await waitFor('the removed node to exit', async () => victim.alive() ? undefined : victim.proc.exitCode, 20_000).catch((err: Error) => err.message)
  t.not(exited, 0, `${victim.name} exits by itself, non-zero, once it is removed (${String(exited)})`)
  t.type(exited, 'number', 'with an exit code')

  // The removed node, restarted on its own data dir (same identity), is not let back in.
  await victim.stop()
  const dataDir = victim.dataDir
  let again: ClusterNode | undefined
  const restart = startNode({ name: `${victim.name}-again`, base: c.base, adminPassword: creds.password, dataDir, readyTimeoutMs: 15_000 })
    .then((n) => { again = n; return 'ready' }, (err: Error) => err.message)
  const outcome = await restart
  t.not(outcome, 'ready', `the removed node restarted on its data dir never becomes ready: ${outcome.split('\n')[0]}`)
  t.teardown(async () => { await again?.kill() })
  for (const n of rest) {
    const st = await c.status(n)
    t.notOk(st.members.some((m) => m.peerId === victim.peerId && m.role !== 'none'), `${n.name} did not take it back`)
  }

  // Its identity, with a valid token and a fresh data dir, is refused by the cluster.
  const fresh = join(c.base, 'rejoin', 'data')
  await mkdir(fresh, { recursive: true })
  await copyFile(join(dataDir, 'p2p-key'), join(fresh, 'p2p-key'))
  const token = await c.token({ via: rest[0]! })
  const rejoin = await tryJoin({ name: 'rejoin', base: c.base, adminPassword: creds.password, dataDir: fresh, join: { url: rest[0]!.url, token } })
  t.notOk(rejoin.joined, 'the removed identity cannot join again')
  t.match(rejoin.log, /refused the join \(403\).*was removed/, 'the cluster says it was removed')
  rejoin.node && await rejoin.node.kill()

  // Nor can it hold a libp2p connection to a member.
  const id = await loadOrCreateIdentity(join(dataDir, 'p2p-key'))
  t.equal(id.peerId, victim.peerId, 'the key on disk is the removed identity')
  const host = await strangerHost(t, id.privateKey)
  const target = (await c.status(rest[0]!)).members.find((m) => m.peerId === rest[0]!.peerId)!
  const dial = await dialRaft(host, target)
  t.not(dial, 'connected', `the removed identity cannot dial ${RAFT_PROTOCOL}: ${dial}`)
})

t.test('a join with an expired token is refused', async (t) => {
  const via = c.live()[0]!
  const wait = Date.parse(shortLived.expiresAt) + 1500 - Date.now()
  if (wait > 0) { t.comment(`waiting ${wait} ms for the 60 s token to expire`); await sleep(wait) }
  const res = await tryJoin({ name: 'expired', base: c.base, adminPassword: creds.password, join: { url: via.url, token: shortLived.token } })
  t.notOk(res.joined, 'the node with an expired token does not start')
  t.match(res.log, /the join token expired at \d{4}-\d\d-\d\dT[\d:.]+Z: ask a member for a new one with flotilla token/, 'flotilla join says when the token expired, before it asks')
  // A joiner that asks anyway (an older CLI, a script) is refused by the member, which names the expiry.
  const asked = await fetch(`${via.url}/api/v1/cluster/join`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: shortLived.token, peerId: (await loadOrCreateIdentity(join(c.base, 'expired.key'))).peerId, p2p: ['/ip4/127.0.0.1/tcp/1'], http: 'http://127.0.0.1:1' }),
  })
  t.equal(asked.status, 401, 'the member refuses the expired token')
  t.match(await asked.text(), /join token refused: it expired at \d{4}-\d\d-\d\dT[\d:.]+Z\. Ask an admin for a new one with flotilla token/, 'in words, with the time')
  res.node && await res.node.kill()
  // The CLI refuses to make a token shorter than 60 s, so nobody can mint one that is expired at birth.
  const cli = await runCli(['token', '--node', via.url, '--user', user, '--ttl', '1'])
  t.not(cli.code, 0, `flotilla token --ttl 1 is refused: ${cli.stderr.trim()}`)
  const st = await clusterStatus(via.url, creds)
  t.notOk(st.members.some((m) => m.role === 'learner'), 'no learner was left behind by refused joins')
})

