/**
 * Issue 16, client-facing TLS: the real Docker engine, skopeo and podman push and pull against
 * a node serving HTTPS, with its CA installed where their docs say (Docker:
 * /etc/docker/certs.d/HOST:PORT/ca.crt; containers/image: /etc/containers/certs.d/HOST:PORT/ca.crt).
 * Before the CA is installed, every client refuses the node: TLS verification really happens.
 *
 * The node listens on this machine's non-loopback address: the Docker engine treats all of
 * 127.0.0.0/8 as an insecure registry and would skip verification there. The certs.d
 * directories are named after that fresh port, so nothing else uses them; teardown removes them.
 */
import t from 'tap'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { removeTree } from '../helpers/cleanup.js'
import { run } from '../helpers/exec.js'
import { startDocker, type DockerEngine } from '../helpers/docker.js'
import { busyboxImage, dockerArchive, rootfsTar, textEntries, writeOciLayout } from '../helpers/images.js'
import { containersEnv } from '../helpers/podman.js'
import { installCertsD, makePki, nonLoopbackIPv4, httpsGet } from '../helpers/tls.js'
import { missingTools, requireTool } from '../helpers/tools.js'
import { startFlotilla } from '../../scripts/lib/procs.js'

const ip = nonLoopbackIPv4()
const pki = await makePki(t, `localhost,127.0.0.1${ip !== undefined ? `,${ip}` : ''}`)
const node = await startFlotilla({ tls: { certificate: pki.cert, key: pki.key, ca: pki.caFile }, ...(ip !== undefined ? { listenHost: ip } : {}) })
t.teardown(async () => {
  await node.stop()
  if (!t.passing()) t.comment((await readFile(join(dirname(node.dataDir), `node-${node.host.split(':').at(-1)}.log`), 'utf8').catch(() => '')).split('\n').slice(-30).join('\n'))
  await rm(dirname(node.dataDir), { recursive: true, force: true })
})
const host = node.host
const creds = node.credentials!
const work = await mkdtemp(join(tmpdir(), 'fl-tls-clients-'))
t.teardown(async () => { await removeTree(work) })
// No insecure registries: every containers/image client verifies TLS for this host.
const ctr = await containersEnv(t, [])
const engine: DockerEngine | undefined = missingTools('dockerd', 'docker') === undefined ? await startDocker(t) : undefined

t.test('the node serves HTTPS only: TLS 1.2+ with the CA, nothing without it', async (t) => {
  const trusted = await httpsGet(`https://${host}/v2/`, { ca: pki.caPem })
  t.equal(trusted.status, 401, 'with the CA: the handshake succeeds and /v2/ asks for credentials')
  const untrusted = await httpsGet(`https://${host}/v2/`)
  t.match(untrusted.error, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/, `without the CA: refused (${untrusted.error ?? ''})`)
  const plain = await fetch(`http://${host}/v2/`).then((r) => `status ${r.status}`, (err: Error & { cause?: { code?: string } }) => err.cause?.code ?? err.message)
  t.notMatch(plain, /^status/, `plain HTTP gets no answer (${plain}): no second listener, no redirect`)
  if (!requireTool(t, 'curl')) return
  const curlNoCa = await run('curl', ['-sS', '-o', '/dev/null', `https://${host}/v2/`])
  t.equal(curlNoCa.code, 60, `curl without --cacert: exit 60, certificate problem (${curlNoCa.stderr.trim()})`)
  const curlOld = await run('curl', ['-sS', '-o', '/dev/null', '--cacert', pki.caFile, '--tls-max', '1.1', `https://${host}/v2/`])
  t.not(curlOld.code, 0, `TLS 1.1 is refused (${curlOld.stderr.trim()})`)
  const curlOk = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{ssl_verify_result}', '--cacert', pki.caFile, `https://${host}/v2/`])
  t.equal(curlOk.stdout, '401 0', 'curl --cacert: verified (0) and answered 401')
})

t.test('clients without the CA are refused: skopeo, podman and docker', async (t) => {
  // Nothing for this host in certs.d yet (a fresh port), and no insecure-registry setting.
  if (requireTool(t, 'skopeo')) {
    const r = await ctr.skopeo(['inspect', '--tls-verify=true', '--creds', `${creds.username}:${creds.password}`, `docker://${host}/tls/none:1`], { timeoutMs: 120_000 })
    t.not(r.code, 0, 'skopeo inspect fails')
    t.match(r.stderr, /x509: certificate signed by unknown authority/, 'because the CA is unknown')
  }
  if (requireTool(t, 'podman')) {
    const r = await ctr.podman(['login', '-u', creds.username, '--password-stdin', host], { input: creds.password, timeoutMs: 120_000 })
    t.not(r.code, 0, 'podman login fails')
    t.match(r.stderr, /x509: certificate signed by unknown authority/, 'because the CA is unknown')
  }
  if (ip === undefined) {
    // Only a non-loopback address shows Docker verifying: a missing one is a broken setup in CI.
    if (process.env.CI === 'true') t.fail('no non-loopback IPv4 address: cannot show the Docker engine verifying TLS')
    else t.comment('skipped the Docker refusal: this machine has no non-loopback IPv4 address')
    return
  }
  if (!requireTool(t, 'dockerd', 'docker') || engine === undefined) return
  const r = await engine.docker(['login', '-u', creds.username, '--password-stdin', host], { input: creds.password, timeoutMs: 120_000 })
  t.not(r.code, 0, 'docker login fails')
  t.match(r.stderr, /x509: certificate signed by unknown authority/, 'because the CA is unknown')
})

t.test('Docker with the CA in /etc/docker/certs.d/HOST:PORT/ca.crt: login, push, pull and run', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker') || engine === undefined) return
  await installCertsD(t, '/etc/docker/certs.d', host, { 'ca.crt': pki.caPem })
  const d = engine
  // The engine reads certs.d on each request: no restart.
  await d.login(host, creds)
  const image = busyboxImage({ randomLayerSizes: [1 << 20], extraLayers: [textEntries({ 'etc/motd': 'over tls\n' })] })
  const archive = join(work, 'docker.tar')
  const ref = `${host}/tls/docker:1`
  await writeFile(archive, dockerArchive(image, [ref]))
  await d.dockerOk(['load', '-i', archive])
  const push = await d.dockerOk(['push', ref])
  const digest = /digest: (sha256:[0-9a-f]{64})/.exec(push.stdout)?.[1]
  t.ok(digest, `docker push printed a digest:\n${push.stdout}`)
  await d.dockerOk(['rmi', ref])
  const pull = await d.dockerOk(['pull', ref])
  t.match(pull.stdout, `Digest: ${digest ?? '?'}`, 'docker pull over TLS gets the pushed manifest')
  const motd = await d.docker(['run', '--rm', '--network', 'none', ref, 'cat', '/etc/motd'])
  t.equal(motd.stdout, 'over tls\n', 'and the image runs')
})

t.test('skopeo with the CA in /etc/containers/certs.d/HOST:PORT/ca.crt: push and pull, verifying', async (t) => {
  if (!requireTool(t, 'skopeo')) return
  await installCertsD(t, '/etc/containers/certs.d', host, { 'ca.crt': pki.caPem })
  await ctr.skopeoOk(['login', '--tls-verify=true', '-u', creds.username, '--password-stdin', host], { input: creds.password })
  const image = busyboxImage({ randomLayerSizes: [2 << 20] })
  const layout = join(work, 'skopeo-src')
  await writeOciLayout(layout, image, 'v1')
  const digestFile = join(work, 'skopeo.digest')
  await ctr.skopeoOk(['copy', '--dest-tls-verify=true', '--digestfile', digestFile, `oci:${layout}:v1`, `docker://${host}/tls/skopeo:v1`])
  t.equal((await readFile(digestFile, 'utf8')).trim(), image.manifestDigest, 'skopeo pushed the layout manifest unchanged')
  const out = join(work, 'skopeo-out')
  await ctr.skopeoOk(['copy', '--src-tls-verify=true', `docker://${host}/tls/skopeo:v1`, `oci:${out}:v1`])
  const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }
  t.equal(index.manifests[0]?.digest, image.manifestDigest, 'and pulled it back byte for byte')
})

t.test('podman with the CA in /etc/containers/certs.d: push and pull, verifying', async (t) => {
  if (!requireTool(t, 'podman')) return
  // The skopeo test's certs.d entry went with its teardown: install it again, as a podman user would.
  await installCertsD(t, '/etc/containers/certs.d', host, { 'ca.crt': pki.caPem })
  await ctr.podmanOk(['login', '--tls-verify=true', '-u', creds.username, '--password-stdin', host], { input: creds.password })
  const rootfs = join(work, 'podman-rootfs.tar')
  await writeFile(rootfs, rootfsTar(textEntries({ 'etc/podman': 'tls\n' })))
  await ctr.podmanOk(['import', rootfs, 'localhost/tls/podman:1'])
  const digestFile = join(work, 'podman.digest')
  await ctr.podmanOk(['push', '--tls-verify=true', '--digestfile', digestFile, 'localhost/tls/podman:1', `docker://${host}/tls/podman:1`])
  const digest = (await readFile(digestFile, 'utf8')).trim()
  t.match(digest, /^sha256:[0-9a-f]{64}$/, 'podman push wrote the digest')
  await ctr.podmanOk(['rmi', 'localhost/tls/podman:1'])
  await ctr.podmanOk(['pull', '--tls-verify=true', `${host}/tls/podman@${digest}`])
  const inspect = JSON.parse((await ctr.podmanOk(['image', 'inspect', `${host}/tls/podman@${digest}`])).stdout) as Array<{ Digest: string }>
  t.equal(inspect[0]?.Digest, digest, 'podman pulled the pushed manifest over TLS')
})
