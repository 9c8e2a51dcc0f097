/**
 * A 3-node TLS cluster (issue 16, "a 3-node TLS cluster passes the cluster tests that exist
 * today"; the whole of test/cluster runs this way with `npm run test:cluster-tls`). Every node
 * serves its API over HTTPS with a certificate from a test CA made by `flotilla cert`'s code
 * (scripts/lib/test-tls.ts); joins go to https:// members and trust the CA through --ca-cert
 * or FLOTILLA_CA_CERT, never NODE_EXTRA_CA_CERTS. Then: a joiner that does not trust the CA is
 * refused saying how to fix it; a push at one node is pulled at all three and copied to every
 * disk over the peer ports; the leader is killed, a new one takes pushes, and the old one
 * restarts on its data dir and serves everything.
 */
import t from 'tap'
import { join } from 'node:path'
import { freePort } from '../../scripts/lib/procs.js'
import { image } from '../helpers/oci.js'
import { checkImage, hasBlobOnDisk, pushHttp, runCli, startNode, startTestCluster, testTls, waitFor, type ClusterNode } from '../helpers/cluster.js'

// The harness's switch: every node this file starts serves HTTPS.
process.env.FLOTILLA_TEST_TLS = '1'
const pki = await testTls()

// A single node first: the joins below are made here, each in its own way.
const c = await startTestCluster(t, { size: 1 })
const creds = c.credentials
const [n1] = c.nodes as [ClusterNode]

/** Join a new node through `via` with `flotilla join https://…`; `args`/`env` say how it trusts the CA. */
async function joinThrough (via: ClusterNode, how: { args?: string[]; env?: Record<string, string> }): Promise<ClusterNode> {
  const token = await c.token({ via })
  const node = await startNode({ name: `n${c.nodes.length + 1}`, base: c.base, adminPassword: creds.password, join: { url: via.url, token }, readyTimeoutMs: 90_000, ...how })
  c.nodes.push(node)
  return node
}

t.test('nodes join through https:// members, trusting the CA by --ca-cert or FLOTILLA_CA_CERT', async (t) => {
  t.match(n1.url, /^https:\/\//, 'the founder serves HTTPS')
  // --ca-cert alone: the harness's FLOTILLA_CA_CERT is emptied for this one.
  const n2 = await joinThrough(n1, { args: ['--ca-cert', pki.caFile], env: { FLOTILLA_CA_CERT: '' } })
  t.pass('n2 joined through the founder with --ca-cert')
  await c.converged({ voters: 2, timeoutMs: 60_000 })
  // Through a follower (it forwards the join to the leader over the peer port), with the env.
  const n3 = await joinThrough(n2, {})
  t.pass('n3 joined through a follower with FLOTILLA_CA_CERT')
  await c.converged({ voters: 3, timeoutMs: 60_000 })
  const st = await c.status(n3)
  t.same(st.members.map((m) => m.http).sort(), c.nodes.map((n) => n.url).sort(), 'every member record carries its https:// URL')
  t.ok(st.members.every((m) => m.peer?.startsWith('https://') === true), 'and its peer port')
})

t.test('a joiner that does not trust the CA is refused, and told to pass --ca-cert', async (t) => {
  const token = await c.token()
  const res = await runCli(['join', n1.url, '--token', token, '--data', join(c.base, 'untrusting'), '--listen', `127.0.0.1:${await freePort()}`, '--p2p', `127.0.0.1:${await freePort()}`], { env: { FLOTILLA_CA_CERT: '' }, timeoutMs: 60_000 })
  t.not(res.code, 0, 'flotilla join exits non-zero')
  t.match(res.stderr, /not signed by a CA this command trusts/, `it names the cause: ${res.stderr.trim().split('\n').at(-1) ?? ''}`)
  t.match(res.stderr, /--ca-cert/, 'and the fix')
  const missing = await runCli(['join', n1.url, '--token', token, '--ca-cert', join(c.base, 'no-such-ca.crt'), '--data', join(c.base, 'no-ca')], { timeoutMs: 30_000 })
  t.not(missing.code, 0, 'a --ca-cert that does not exist stops the join')
  t.match(missing.stderr, /cannot read the CA certificate .*no-such-ca\.crt: no such file/, 'naming the file')
  t.equal((await c.status(n1)).members.length, 3, 'neither became a member')
})

t.test('a push at one node is pulled at all three and copied to every disk', async (t) => {
  const img = image({ layers: 2, seed: 'cluster-tls-push' })
  t.equal((await pushHttp(n1.url, creds, 'tls/app', img, 'v1')).outcome, 'ok', 'pushed to n1 over HTTPS')
  for (const n of c.nodes) t.same(await checkImage(n.url, creds, 'tls/app', img, 'v1'), [], `${n.name} serves it over HTTPS`)
  for (const b of [img.config, ...img.layers]) {
    await waitFor(`${b.digest} on every disk`, async () => (await Promise.all(c.nodes.map(async (n) => await hasBlobOnDisk(n.dataDir, b.digest)))).every(Boolean) ? true : undefined, 30_000)
  }
  t.pass('every blob reached every node\'s disk over the peer ports')
  const status = await runCli(['status', '--node', c.nodes[2]!.url, '--user', `${creds.username}:${creds.password}`, '--json'])
  t.equal(status.code, 0, `flotilla status on an https:// node (FLOTILLA_CA_CERT) ${status.stderr}`)
})

t.test('the leader killed: a new one takes pushes; the old one restarts and serves everything', async (t) => {
  const leader = await c.leader()
  await leader.kill('SIGKILL')
  const survivors = c.live()
  const next = await c.leader(30_000, survivors)
  t.not(next.name, leader.name, `${next.name} leads after ${leader.name} was killed`)
  const img = image({ layers: 1, seed: 'cluster-tls-failover' })
  // The first push may meet the election's end: retry a refusal, not an acknowledged failure.
  const pushed = await waitFor('a push acknowledged by the survivors', async () => (await pushHttp(survivors.find((n) => n !== next)!.url, creds, 'tls/after', img, 'v1')).outcome === 'ok' ? true : undefined, 30_000, 250)
  t.ok(pushed, 'a push through the follower is acknowledged with one node down')
  for (const n of survivors) t.same(await checkImage(n.url, creds, 'tls/after', img, 'v1'), [], `${n.name} serves it`)
  const back = await c.restart(leader)
  t.match(back.url, /^https:\/\//, `${back.name} restarts on its data dir, over HTTPS`)
  await c.converged({ voters: 3, timeoutMs: 60_000 })
  t.same(await checkImage(back.url, creds, 'tls/after', img, 'v1'), [], `${back.name} serves the image pushed while it was down`)
  t.same(await checkImage(back.url, creds, 'tls/app', image({ layers: 2, seed: 'cluster-tls-push' }), 'v1'), [], 'and the one pushed before')
})
