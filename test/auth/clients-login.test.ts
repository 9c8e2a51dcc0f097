/**
 * Real clients signing in to a node with access control on (started by startFlotilla) and
 * anonymous read on public/** (issue 10: anonymous read used to break every logged-in client,
 * because GET /v2/ answered 200): docker, skopeo and podman each `login` as a user who may
 * push to team/** and public/**, then push and pull through Docker token auth, and pull
 * public/** logged out. Also: a wrong password fails the login, docker keeps the offline token
 * instead of the password, a reader's push is denied, and a robot token works as a password.
 */
import t from 'tap'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { removeTree } from '../helpers/cleanup.js'
import { startDocker } from '../helpers/docker.js'
import { containersEnv } from '../helpers/podman.js'
import { busyboxImage, readOciLayout, rootfsTar, writeOciLayout } from '../helpers/images.js'
import { missingTools, requireTool } from '../helpers/tools.js'
import { startFlotilla, type RunningRegistry } from '../../scripts/lib/procs.js'

const reg: RunningRegistry = await startFlotilla()
t.teardown(async () => {
  await reg.stop()
  if (!t.passing()) {
    const log = await readFile(join(dirname(reg.dataDir), `node-${reg.host.split(':')[1]}.log`), 'utf8').catch(() => '')
    t.comment(`node log (last 30 lines):\n${log.split('\n').slice(-30).join('\n')}`)
  }
  await removeTree(dirname(reg.dataDir))
})
const work = await mkdtemp(join(tmpdir(), 'fl-login-'))
t.teardown(async () => { await removeTree(work) })

const adminAuth = 'Basic ' + Buffer.from(`${reg.credentials!.username}:${reg.credentials!.password}`).toString('base64')
async function api (method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${reg.url}/api/v1${path}`, { method, headers: { authorization: adminAuth, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`)
  return JSON.parse(text)
}

const dev = { username: 'dev', password: 'dev-password-1' }
const viewer = { username: 'viewer', password: 'viewer-password-1' }
await api('POST', '/users', { name: dev.username, password: dev.password })
await api('POST', '/users', { name: viewer.username, password: viewer.password })
await api('PUT', '/permissions/team', { repositories: ['team/**'], users: { dev: ['read', 'write'], viewer: ['read'] } })
await api('PUT', '/permissions/public', { repositories: ['public/**'], users: { dev: ['read', 'write'], anonymous: ['read'] } })
const robot = await api('POST', '/tokens', { name: 'ci', scopes: [{ repositories: ['team/**'], actions: ['read'] }] })

t.test('docker: login, push, pull; wrong password refused; reader cannot push', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker')) return
  const engine = await startDocker(t)
  const bad = await engine.docker(['login', '-u', dev.username, '--password-stdin', reg.host], { input: 'wrong-password' })
  t.not(bad.code, 0, 'a wrong password fails the login')
  t.match(bad.stderr, /unauthorized|incorrect/i)
  await engine.login(reg.host, dev)
  const cfg = JSON.parse(await readFile(join(engine.env.DOCKER_CONFIG!, 'config.json'), 'utf8')) as { auths: Record<string, { identitytoken?: string; auth?: string }> }
  const entry = cfg.auths[reg.host]
  t.match(entry?.identitytoken ?? '', /^flt_/, 'docker keeps the offline token, not the password')
  const tar = join(work, 'rootfs.tar')
  await writeFile(tar, rootfsTar())
  await engine.dockerOk(['import', tar, `${reg.host}/team/app:docker`])
  const push = await engine.dockerOk(['push', `${reg.host}/team/app:docker`], { timeoutMs: 120_000 })
  t.match(push.stdout, /digest: sha256:/, 'pushed as dev')
  await engine.dockerOk(['rmi', `${reg.host}/team/app:docker`])
  await engine.dockerOk(['pull', `${reg.host}/team/app:docker`], { timeoutMs: 120_000 })
  t.pass('pulled back')
  await engine.dockerOk(['tag', `${reg.host}/team/app:docker`, `${reg.host}/public/tool:docker`])
  await engine.dockerOk(['push', `${reg.host}/public/tool:docker`], { timeoutMs: 120_000 })
  await engine.dockerOk(['logout', reg.host])
  await engine.dockerOk(['rmi', `${reg.host}/public/tool:docker`, `${reg.host}/team/app:docker`])
  await engine.dockerOk(['pull', `${reg.host}/public/tool:docker`], { timeoutMs: 120_000 })
  t.pass('logged out: an anonymous pull of public/** works')
  const anonPrivate = await engine.docker(['pull', `${reg.host}/team/app:docker`], { timeoutMs: 120_000 })
  t.not(anonPrivate.code, 0, 'logged out: team/** is refused')
  await engine.login(reg.host, viewer)
  await engine.dockerOk(['tag', `${reg.host}/public/tool:docker`, `${reg.host}/team/app:viewer`])
  const denied = await engine.docker(['push', `${reg.host}/team/app:viewer`], { timeoutMs: 120_000 })
  t.not(denied.code, 0, 'viewer cannot push')
  t.match(denied.stderr + denied.stdout, /denied|unauthorized/i)
  const pull = await engine.docker(['pull', `${reg.host}/team/app:docker`], { timeoutMs: 120_000 })
  t.equal(pull.code, 0, 'but can pull')
  const tokens = await api('GET', '/tokens?owner=dev')
  t.ok(tokens.tokens.some((tk: { kind: string }) => tk.kind === 'login'), 'the offline token is listed, so it can be revoked')
})

t.test('skopeo: login, push, pull; wrong password refused; robot token as password', async (t) => {
  if (!requireTool(t, 'skopeo')) return
  const ctr = await containersEnv(t, [reg.host])
  const bad = await ctr.skopeo(['login', '--tls-verify=false', '-u', dev.username, '--password-stdin', reg.host], { input: 'wrong-password' })
  t.not(bad.code, 0, 'a wrong password fails the login')
  await ctr.login('skopeo', reg.host, dev)
  const image = busyboxImage({ randomLayerSizes: [1 << 20] })
  const layout = join(work, 'skopeo-src')
  await writeOciLayout(layout, image, 'v1')
  await ctr.skopeoOk(['copy', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${reg.host}/team/app:skopeo`], { timeoutMs: 120_000 })
  const out = join(work, 'skopeo-out')
  await ctr.skopeoOk(['copy', '--src-tls-verify=false', `docker://${reg.host}/team/app:skopeo`, `oci:${out}:v1`], { timeoutMs: 120_000 })
  const back = await readOciLayout(out, 'v1')
  t.ok(back.manifest.equals(image.manifest), 'pulled back byte for byte')
  await ctr.skopeoOk(['copy', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${reg.host}/public/tool:skopeo`], { timeoutMs: 120_000 })

  const anonEnv = await containersEnv(t, [reg.host])
  const anonOut = join(work, 'skopeo-anon')
  await anonEnv.skopeoOk(['copy', '--src-tls-verify=false', `docker://${reg.host}/public/tool:skopeo`, `oci:${anonOut}:v1`], { timeoutMs: 120_000 })
  t.ok((await readOciLayout(anonOut, 'v1')).manifest.equals(image.manifest), 'logged out: an anonymous pull of public/** works')
  const anonPrivate = await anonEnv.skopeo(['inspect', '--tls-verify=false', `docker://${reg.host}/team/app:skopeo`])
  t.not(anonPrivate.code, 0, 'logged out: team/** is refused')

  const robotEnv = await containersEnv(t, [reg.host])
  await robotEnv.login('skopeo', reg.host, { username: 'ci', password: robot.token })
  const inspect = await robotEnv.skopeo(['inspect', '--tls-verify=false', `docker://${reg.host}/team/app:skopeo`])
  t.equal(inspect.code, 0, 'the read-only robot token reads')
  const push = await robotEnv.skopeo(['copy', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${reg.host}/team/app:robot`], { timeoutMs: 60_000 })
  t.not(push.code, 0, 'but cannot push')
})

t.test('podman: login, push, pull', async (t) => {
  if (!requireTool(t, 'podman')) return
  const ctr = await containersEnv(t, [reg.host])
  const bad = await ctr.podman(['login', '--tls-verify=false', '-u', dev.username, '--password-stdin', reg.host], { input: 'wrong-password' })
  t.not(bad.code, 0, 'a wrong password fails the login')
  await ctr.login('podman', reg.host, dev)
  const tar = join(work, 'podman-rootfs.tar')
  await writeFile(tar, rootfsTar())
  await ctr.podmanOk(['import', tar, 'localhost/team/app:podman'])
  await ctr.podmanOk(['push', '--tls-verify=false', 'localhost/team/app:podman', `docker://${reg.host}/team/app:podman`], { timeoutMs: 120_000 })
  await ctr.podmanOk(['rmi', 'localhost/team/app:podman'])
  await ctr.podmanOk(['pull', '--tls-verify=false', `${reg.host}/team/app:podman`], { timeoutMs: 120_000 })
  t.pass('pushed and pulled as dev')
  await ctr.podmanOk(['push', '--tls-verify=false', `${reg.host}/team/app:podman`, `docker://${reg.host}/public/tool:podman`], { timeoutMs: 120_000 })
  const anon = await containersEnv(t, [reg.host])
  await anon.podmanOk(['pull', '--tls-verify=false', `${reg.host}/public/tool:podman`], { timeoutMs: 120_000 })
  t.pass('logged out: an anonymous pull of public/** works')
  const anonPrivate = await anon.podman(['pull', '--tls-verify=false', `${reg.host}/team/app:podman`], { timeoutMs: 120_000 })
  t.not(anonPrivate.code, 0, 'logged out: team/** is refused')
  const other = await ctr.podman(['push', '--tls-verify=false', `${reg.host}/team/app:podman`, `docker://${reg.host}/elsewhere/app:podman`], { timeoutMs: 60_000 })
  t.not(other.code, 0, 'no push outside team/**')
})

if (missingTools('dockerd', 'skopeo', 'podman') !== undefined) t.comment('some clients are missing; their tests were skipped or failed (CI)')
