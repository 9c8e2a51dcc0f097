/**
 * The README's "Two sites" block, run as written with the real docker client: two single-node
 * sites, a peering token, `site peer`, docker push at A, docker pull at B, `site status`.
 * Two things are substituted: the block's ports (5101, 7101, 5201, 7201) by ports of the
 * range these tests may use, and `busybox:latest`, which a reader has and a private docker
 * engine has not, is imported from a busybox rootfs first.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ROOT, tempDir } from '../../scripts/lib/procs.js'
import { removeTree } from '../helpers/cleanup.js'
import { startDocker } from '../helpers/docker.js'
import { waitFor } from '../helpers/cluster.js'
import { rootfsTar } from '../helpers/images.js'
import { requireTool } from '../helpers/tools.js'

const PORTS: Record<string, string> = { 5101: '23101', 7101: '23102', 5201: '23201', 7201: '23202' }

async function readmeBlock (heading: string): Promise<string> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
  const at = readme.indexOf(heading)
  if (at < 0) throw new Error(`README.md has no heading ${heading}`)
  const m = /```sh\n([\s\S]*?)```/.exec(readme.slice(at))
  if (m === null) throw new Error(`no sh block after ${heading}`)
  return m[1]!
}

t.test('the README\'s two-site block works as written', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker')) return
  const engine = await startDocker(t)
  const dir = await tempDir('flotilla-readme-sites-')
  t.teardown(async () => { await removeTree(dir) })
  // A folder like a reader's checkout: `npx flotilla` finds this project's command.
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'readme-reader', private: true, dependencies: { flotilla: 'file:' + ROOT } }))
  await mkdir(join(dir, 'node_modules', '.bin'), { recursive: true })
  await symlink(ROOT, join(dir, 'node_modules', 'flotilla'))
  await symlink(join(ROOT, 'bin', 'flotilla.mjs'), join(dir, 'node_modules', '.bin', 'flotilla'))
  await writeFile(join(dir, 'rootfs.tar'), rootfsTar())
  await engine.dockerOk(['import', join(dir, 'rootfs.tar'), 'busybox:latest'])

  let script = await readmeBlock('## Two sites')
  t.match(script, /flotilla site token/)
  for (const [from, to] of Object.entries(PORTS)) script = script.replaceAll(`:${from}`, `:${to}`)
  const wrapped = `set -u\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n${script}\necho "BLOCK-DONE $?"\nsleep 120 & wait $!\n`
  const proc = spawn('bash', ['-c', wrapped], { cwd: dir, env: { ...engine.env, FLOTILLA_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  // Its own process group: the block's background nodes end with it.
  const killAll = (): void => { try { process.kill(-proc.pid!, 'SIGTERM') } catch { /* gone */ } }
  t.teardown(killAll)
  let out = ''
  let err = ''
  proc.stdout.on('data', (b: Buffer) => { out += b.toString() })
  proc.stderr.on('data', (b: Buffer) => { err += b.toString() })
  try {
    await waitFor('the block to finish', async () => out.includes('BLOCK-DONE') ? true : undefined, 240_000, 200)
  } finally {
    if (!out.includes('BLOCK-DONE')) t.comment(`stdout:\n${out}\nstderr:\n${err}`)
  }
  t.match(out, /peered with site [0-9a-f]{16} as site-a/, 'site peer said so')
  t.match(out, /127\.0\.0\.1:23201\/team\/app:1/, 'docker pulled the image at B')
  t.match(out, /state\s+connected/, 'site status shows the link up')
  t.match(out, /cursor\s+[1-9]/, 'and a cursor past the push')
  t.notMatch(err, /\b(401|403|500|503) [A-Z_]+:/, `no flotilla command failed: ${err.slice(0, 1500)}`)
  const run = await engine.dockerOk(['run', '--rm', '--network', 'none', '127.0.0.1:23201/team/app:1', '/bin/hello'])
  t.match(run.stdout, /hello from flotilla/, 'the image pulled at B runs')
  killAll()
})
