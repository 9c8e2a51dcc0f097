/**
 * A node's lifecycle as a new user meets it (issue 10): joining a node to itself is refused
 * at once with a plain message (it used to crash with a TypeError and a 500).
 */
import t from 'tap'
import { join } from 'node:path'
import { cp, mkdir, readFile } from 'node:fs/promises'
import { loadOrCreateIdentity } from '../../net/identity.js'
import { freePort } from '../../scripts/lib/procs.js'
import { runCli, startNode, startTestCluster } from '../helpers/cluster.js'

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

/** Wait for a node's process to exit by itself; its exit code. */
async function exitOf (node: { proc: import('node:child_process').ChildProcess; alive: () => boolean }, timeoutMs: number): Promise<number | null> {
  if (!node.alive()) return node.proc.exitCode
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still running after ${timeoutMs} ms`)), timeoutMs)
    node.proc.once('exit', (code) => { clearTimeout(timer); resolve(code) })
  })
}

// Issue 10, item 5: a removed node kept running (and `serve` on its identity never became ready).
t.test('a removed node stops and exits non-zero: after leave, after remove, on restart, and when removed while down', async (t) => {
  const n1 = c.nodes[0]!
  // Five voters: after two removals, three remain, so a third can be removed while it is down.
  const [n2, n3, n4, n5] = [await c.join(), await c.join(), await c.join(), await c.join()]
  await c.converged({ voters: 5 })
  const user = `${c.credentials.username}:${c.credentials.password}`

  const left = await runCli(['leave', '--node', n3.url, '--user', user])
  t.equal(left.code, 0, `flotilla leave answers: ${left.stderr.trim()}`)
  t.not(await exitOf(n3, 20_000), 0, 'the node that left exits by itself, non-zero')

  const removed = await runCli(['remove', n2.peerId, '--node', n1.url, '--user', user])
  t.equal(removed.code, 0, `flotilla remove answers: ${removed.stderr.trim()}`)
  t.not(await exitOf(n2, 20_000), 0, 'the removed node exits by itself, non-zero')
  t.match(await readFile(n2.logFile, 'utf8'), /this node was removed from the cluster/, 'and its log says why')

  const again = await tryJoinLike(() => c.restart(n2))
  t.equal(again.ok, false, 'serve on the removed identity does not start')
  t.match(again.message, /removed/, `it says it was removed: ${again.message.split('\n')[0] ?? ''}`)

  // Removed while it is down: it cannot hear of it from the log, so it asks a member.
  await n4.stop()
  const removedDown = await runCli(['remove', n4.peerId, '--node', n1.url, '--user', user])
  t.equal(removedDown.code, 0, 'a stopped member is removed')
  const back = await tryJoinLike(() => c.restart(n4), 40_000)
  t.equal(back.ok, false, 'restarted, it learns from a member that it was removed, and exits')
  t.match(back.message, /removed/)

  const st = await c.status(n1)
  t.same(st.members.filter((m) => m.role !== 'none').map((m) => m.peerId).sort(), [n1.peerId, n5.peerId].sort(), 'n1 and n5 are the members left')
})

// Issue 10, item 12: a copied data dir, whose identity is a running member, is refused; a
// restart right after kill -9 always starts (no lock file or marker decides).
t.test('a copy of a live node\'s data dir is refused; the node itself restarts at once after kill -9', async (t) => {
  const victim = c.live().find((n) => n !== c.nodes[0])!
  const copy = join(c.base, 'copy-of-' + victim.name)
  await cp(victim.dataDir, copy, { recursive: true })
  const started = await tryJoinLike(async () => await startNode({ name: 'copy', base: c.base, adminPassword: c.credentials.password, dataDir: copy }), 40_000)
  t.equal(started.ok, false, 'the copy does not start')
  t.match(started.message, /another process is running this node's identity/, `it says why: ${started.message.split('\n').find((l) => l.includes('identity')) ?? started.message.slice(0, 200)}`)
  t.ok(victim.alive(), 'the original keeps running')

  await victim.kill('SIGKILL')
  const again = await c.restart(victim)
  t.ok(again.alive(), 'restarted at once after kill -9, it starts')
  await c.converged()
})

async function tryJoinLike (start: () => Promise<unknown>, timeoutMs = 30_000): Promise<{ ok: boolean; message: string }> {
  try {
    await Promise.race([start(), new Promise((_resolve, reject) => setTimeout(() => reject(new Error('timed out')), timeoutMs))])
    return { ok: true, message: '' }
  } catch (err) {
    const e = err as Error & { log?: string }
    return { ok: false, message: `${e.message}\n${e.log ?? ''}` }
  }
}
