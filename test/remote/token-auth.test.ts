/**
 * Issue 13, remote repositories: an upstream with Docker token auth, as Docker Hub uses it.
 * The upstream is the reference registry (docker-registry 2.8.2) trusting a small token issuer
 * run by this test, which checks Basic credentials. The remote's credentials go in through
 * `flotilla remote add --username U --password-stdin`, are stored encrypted with the cluster
 * key (never in clear in the node's data, never shown by list), and get the pull its tokens.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { startFlotilla, ROOT } from '../../scripts/lib/procs.js'
import { CLI, authFetch } from '../helpers/cluster.js'
import { startUpstream } from '../helpers/upstream.js'
import { requireTool } from '../helpers/tools.js'
import { image as smallImage } from '../helpers/oci.js'

const ACCEPT = 'application/vnd.oci.image.manifest.v1+json'

/** Run the CLI with `input` on its standard input (runCli gives it none). */
async function cliWithStdin (args: string[], input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return await new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (b: Buffer) => { stdout += b.toString() })
    p.stderr.on('data', (b: Buffer) => { stderr += b.toString() })
    p.on('error', reject)
    p.on('close', (code) => resolve({ code, stdout, stderr }))
    p.stdin.end(input + '\n')
  })
}

/** Every file under `dir`, recursively. */
async function files (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...await files(p))
    else if ((await stat(p)).size < 64 << 20) out.push(p)
  }
  return out
}

t.test('an upstream with Docker token auth', async (t) => {
  if (!requireTool(t, 'docker-registry')) return
  const account = { username: 'puller', password: `upstream-secret-${Date.now()}` }
  const [ur, nr] = await Promise.allSettled([startUpstream(t, { token: account }), startFlotilla()])
  if (nr.status === 'fulfilled') t.teardown(async () => { await nr.value.stop() })
  if (ur.status === 'rejected') throw ur.reason
  if (nr.status === 'rejected') throw nr.reason
  const up = ur.value
  const node = nr.value
  const creds = node.credentials!
  const img = smallImage({ layers: 2, seed: 'token-auth' })
  await up.push('team/app', '1', [[img.config.digest, img.config.data], ...img.layers.map((l): [string, Buffer] => [l.digest, l.data])], img.manifest, img.mediaType)
  const issuedForPush = up.tokensIssued

  const add = await cliWithStdin(['remote', 'add', 'private', '--prefix', 'private/', '--upstream', up.url, '--username', account.username, '--password-stdin', '--node', node.url, '--user', `${creds.username}:${creds.password}`], account.password)
  t.equal(add.code, 0, `remote add: ${add.stderr}`)
  t.match(add.stdout, /as puller/)

  await t.test('the password is never shown and never stored in clear', async (t) => {
    const res = await authFetch(`${node.url}/api/v1/remotes`, creds)
    const text = await res.text()
    t.equal(res.status, 200)
    t.notOk(text.includes(account.password), 'the API does not hand it back')
    const doc = JSON.parse(text) as { remotes: Array<{ name: string; username: string; hasPassword: boolean; password?: string }> }
    t.same(doc.remotes.map((r) => [r.name, r.username, r.hasPassword, r.password]), [['private', 'puller', true, undefined]])
    // The Raft log and the metadata store hold the command: ciphertext only.
    let found = ''
    for (const f of await files(node.dataDir)) if ((await readFile(f)).includes(account.password)) found = f
    t.equal(found, '', 'no file in the node\'s data dir holds the password in clear')
  })

  await t.test('a pull through the remote logs in upstream with a token', async (t) => {
    const m = await authFetch(`${node.url}/v2/private/team/app/manifests/1`, creds, { headers: { accept: ACCEPT } })
    t.equal(m.status, 200)
    t.equal(m.headers.get('docker-content-digest'), img.digest)
    for (const b of [img.config, ...img.layers]) {
      const res = await authFetch(`${node.url}/v2/private/team/app/blobs/${b.digest}`, creds)
      t.same(Buffer.from(await res.arrayBuffer()), b.data, `blob ${b.digest.slice(0, 19)} intact`)
    }
    t.ok(up.tokensIssued > issuedForPush, `tokens came from the issuer (${up.tokensIssued - issuedForPush})`)
  })

  await t.test('wrong or missing credentials: a clear error naming them', async (t) => {
    for (const [name, body] of [['wrong', { prefix: 'wrong/', upstream: up.url, username: 'puller', password: 'not-the-password' }], ['anon', { prefix: 'anon/', upstream: up.url }]] as const) {
      const put = await authFetch(`${node.url}/api/v1/remotes/${name}`, creds, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
      t.equal(put.status, 200, await put.text())
      const res = await authFetch(`${node.url}/v2/${name}/team/app/manifests/1`, creds, { headers: { accept: ACCEPT } })
      t.equal(res.status, 502, `${name}: bad gateway`)
      t.match(await res.text(), /credentials/, `${name}: the message names the credentials`)
    }
  })

  await t.test('flotilla remote rm', async (t) => {
    const rm = await cliWithStdin(['remote', 'rm', 'wrong', '--node', node.url, '--user', `${creds.username}:${creds.password}`], '')
    t.equal(rm.code, 0, rm.stderr)
    const doc = await (await authFetch(`${node.url}/api/v1/remotes`, creds)).json() as { remotes: Array<{ name: string }> }
    t.same(doc.remotes.map((r) => r.name), ['anon', 'private'])
  })
})
