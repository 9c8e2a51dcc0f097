/**
 * A node's lifecycle as a new user meets it (issue 10): joining a node to itself is refused
 * at once with a plain message (it used to crash with a TypeError and a 500).
 */
import t from 'tap'
import { join } from 'node:path'
import { mkdir } from 'node:fs/promises'
import { loadOrCreateIdentity } from '../../net/identity.js'
import { freePort } from '../../scripts/lib/procs.js'
import { runCli, startTestCluster } from '../helpers/cluster.js'

const c = await startTestCluster(t, { size: 1 })

t.test('joining a node to itself is refused at once, over HTTP and over libp2p', async (t) => {
  const token = await c.token()
  const port = await freePort()
  const p2p = await freePort()
  const started = Date.now()
  const viaHttp = await runCli(['join', `http://127.0.0.1:${port}`, '--token', token, '--data', join(c.base, 'self-http'), '--listen', `127.0.0.1:${port}`, '--p2p', `127.0.0.1:${p2p}`], { timeoutMs: 30_000 })
  t.not(viaHttp.code, 0, 'join exits non-zero')
  t.match(viaHttp.stderr, /cannot join itself/, `and says why: ${viaHttp.stderr.trim().split('\n').at(-1) ?? ''}`)
  t.notMatch(viaHttp.stderr, /TypeError|isLeader|500/, 'no crash')
  t.ok(Date.now() - started < 15_000, `at once (${Date.now() - started} ms)`)

  const dir = join(c.base, 'self-p2p')
  await mkdir(dir, { recursive: true })
  const me = await loadOrCreateIdentity(join(dir, 'p2p-key'))
  const p2p2 = await freePort()
  const viaP2p = await runCli(['join', `/ip4/127.0.0.1/tcp/${p2p2}/p2p/${me.peerId}`, '--token', token, '--data', dir, '--listen', `127.0.0.1:${await freePort()}`, '--p2p', `127.0.0.1:${p2p2}`], { timeoutMs: 30_000 })
  t.not(viaP2p.code, 0, 'join through its own multiaddr exits non-zero')
  t.match(viaP2p.stderr, /cannot join itself/, `and says why: ${viaP2p.stderr.trim().split('\n').at(-1) ?? ''}`)

  const st = await c.status(c.nodes[0]!)
  t.equal(st.members.length, 1, 'the cluster is untouched')
})
