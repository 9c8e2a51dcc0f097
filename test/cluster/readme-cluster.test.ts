/**
 * The README's "A cluster on one machine" block, run as written (issue 10, item 3): a reader
 * pastes it into a shell right after `npm install`. Only what a reader fills in is
 * substituted: the peer id they copy from `flotilla status` (known here in advance, since the
 * test creates node 1's identity first). Its `flotilla token` runs right after `serve &`, and
 * its last `status` asks a node that is still joining: both must wait for the node, not fail.
 *
 * The block's own ports (5001-5003, 7001-7003) are used; the test fails at once, naming them,
 * when one is taken.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { loadOrCreateIdentity } from '../../net/identity.js'
import { ROOT, tempDir } from '../../scripts/lib/procs.js'
import { removeTree } from '../helpers/cleanup.js'
import { clusterStatus, waitFor } from '../helpers/cluster.js'

const PORTS = [5001, 5002, 5003, 7001, 7002, 7003]

async function free (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

/** The README's shell block that follows the heading. */
async function readmeBlock (heading: string): Promise<string> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
  const at = readme.indexOf(heading)
  if (at < 0) throw new Error(`README.md has no heading ${heading}`)
  const m = /```sh\n([\s\S]*?)```/.exec(readme.slice(at))
  if (m === null) throw new Error(`no sh block after ${heading}`)
  return m[1]!
}

t.test('the README\'s three-node block works as written', async (t) => {
  const taken = []
  for (const p of PORTS) if (!await free(p)) taken.push(p)
  if (taken.length > 0) throw new Error(`the README's ports ${taken.join(', ')} are in use on this machine: free them to run this test`)

  // A folder like a reader's checkout: `npx flotilla` finds this project's command.
  const dir = await tempDir('flotilla-readme-')
  t.teardown(async () => { await removeTree(dir) })
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'readme-reader', private: true, dependencies: { flotilla: 'file:' + ROOT } }))
  await mkdir(join(dir, 'node_modules', '.bin'), { recursive: true })
  await symlink(ROOT, join(dir, 'node_modules', 'flotilla'))
  await symlink(join(ROOT, 'bin', 'flotilla.mjs'), join(dir, 'node_modules', '.bin', 'flotilla'))
  await mkdir(join(dir, 'n1'))
  const n1 = await loadOrCreateIdentity(join(dir, 'n1', 'p2p-key'))

  const block = await readmeBlock('## A cluster on one machine')
  t.match(block, /12D3Koo…/, 'the block has the placeholder a reader fills in')
  const script = block.replaceAll('12D3Koo…', n1.peerId)
  // Background jobs die with the test, whatever happens.
  const wrapped = `set -u\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n${script}\necho "BLOCK-DONE $?"\n# keep the nodes up while the test checks them (wait: a signal ends it at once)\nsleep 120 & wait $!\n`
  const proc = spawn('bash', ['-c', wrapped], { cwd: dir, env: { ...process.env, FLOTILLA_LOG_LEVEL: 'warn', PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  // Its own process group: the block's background nodes (and npx between) end with it.
  const killAll = (): void => { try { process.kill(-proc.pid!, 'SIGTERM') } catch { /* gone */ } }
  let out = ''
  let err = ''
  proc.stdout.on('data', (b: Buffer) => { out += b.toString() })
  proc.stderr.on('data', (b: Buffer) => { err += b.toString() })
  t.teardown(async () => {
    killAll()
    // Should one have left the group: end the block's nodes by their command lines.
    await new Promise((resolve) => spawn('pkill', ['-f', '--', '--listen 127.0.0.1:500[123]']).on('close', resolve))
  })
  try {
    await waitFor('the block to finish', async () => out.includes('BLOCK-DONE') ? true : undefined, 150_000, 200)
  } finally {
    if (!out.includes('BLOCK-DONE')) t.comment(`stdout:\n${out}\nstderr:\n${err}`)
  }
  t.notMatch(err, /failed with 401|failed with 503|Error|error:/i, `no command failed: ${err.slice(0, 1500)}`)
  // Table heads (PEER  ROLE …); the PEER PORT column says PEER too.
  const statuses = (out.match(/^PEER\s+ROLE\s/gm) ?? []).length
  t.equal(statuses, 2, 'both status commands printed their table')
  t.match(out, new RegExp(`/ip4/127\\.0\\.0\\.1/tcp/7001/p2p/${n1.peerId}`), 'the first status shows node 1\'s full multiaddr, as the README says')

  const creds = { username: 'admin', password: 'change-me-please' }
  const st = await waitFor('three voters', async () => {
    const s = await clusterStatus('http://127.0.0.1:5001', creds)
    return s.members.filter((m) => m.role === 'voter').length === 3 ? s : undefined
  }, 60_000, 250)
  t.equal(st.members.length, 3, 'the cluster has the three nodes of the block')
  for (const port of [5002, 5003]) {
    const res = await waitFor(`node on ${port} ready`, async () => { const r = await fetch(`http://127.0.0.1:${port}/readyz`); await r.arrayBuffer(); return r.status === 200 ? r : undefined }, 60_000, 250)
    t.equal(res.status, 200, `the node on ${port} serves`)
  }
  killAll()
})
