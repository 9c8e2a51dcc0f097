/**
 * Issue 16, `flotilla cert init|server|client` and the CLI against an https:// node.
 * cert init writes a CA and a node certificate (a SAN per host), refuses to overwrite without
 * --force, and prints commands that, run as printed, make skopeo trust the node. The CLI trusts
 * the CA given with --ca-cert / FLOTILLA_CA_CERT, and says what is wrong when a certificate fails:
 * an unknown CA, a name the certificate does not list, an expired certificate, plain HTTP.
 */
import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { copyFile, mkdtemp, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { run } from '../helpers/exec.js'
import { containersEnv } from '../helpers/podman.js'
import { sameSerial, servedCertificate } from '../helpers/tls.js'
import { requireTool } from '../helpers/tools.js'
import { ROOT, freePort, startFlotilla } from '../../scripts/lib/procs.js'
import { issueCertificate } from '../../src/tls/issue.js'

const dir = await mkdtemp(join(tmpdir(), 'fl-cert-cli-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
const flotilla = async (args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  await run(process.execPath, [join(ROOT, 'bin', 'flotilla.mjs'), ...args], { env: { ...process.env, FLOTILLA_CA_CERT: '', FLOTILLA_USER: '', ...env }, timeoutMs: 120_000 })

const port = await freePort()
const out = join(dir, 'certs')
interface InitDoc { files: { ca: string; caKey: string; cert: string; key: string }; serial: string; commands: { docker: string[]; containers: string[]; cli: string[]; serve: string } }
let init: InitDoc

t.test('cert init writes a CA and a node certificate for every host, keys private', async (t) => {
  const r = await flotilla(['cert', 'init', '--hosts', 'localhost,127.0.0.1,::1', '--out', out, '--port', String(port), '--json'])
  t.equal(r.code, 0, r.stderr)
  init = JSON.parse(r.stdout) as InitDoc
  const ca = new X509Certificate(await readFile(init.files.ca))
  const node = new X509Certificate(await readFile(init.files.cert))
  t.ok(ca.ca, 'ca.crt is a CA certificate')
  t.ok(node.checkIssued(ca) && node.verify(ca.publicKey), 'node.crt is signed by it')
  t.equal(node.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1', 'a subjectAltName for each host')
  t.match(node.keyUsage ?? [], ['1.3.6.1.5.5.7.3.1'], 'for server authentication')
  t.ok(sameSerial(node.serialNumber, init.serial), 'the JSON names its serial')
  for (const f of [init.files.caKey, init.files.key]) t.equal((await stat(f)).mode & 0o777, 0o600, `${f} is mode 0600`)
  t.match(init.commands.docker, [`mkdir -p /etc/docker/certs.d/localhost:${port} && cp ${init.files.ca} /etc/docker/certs.d/localhost:${port}/ca.crt`], 'Docker\'s certs.d, per host')
  t.match(init.commands.containers.join('\n'), `/etc/containers/certs.d/[::1]:${port}/ca.crt`, 'containers\' certs.d, IPv6 in brackets')
  t.equal(init.commands.serve, `flotilla serve --listen 0.0.0.0:${port} --tls-certificate ${init.files.cert} --tls-key ${init.files.key}`)
})

t.test('cert init refuses to overwrite without --force; bad hosts are named', async (t) => {
  const before = await readFile(init.files.ca, 'utf8')
  const again = await flotilla(['cert', 'init', '--hosts', 'localhost', '--out', out])
  t.equal(again.code, 1)
  t.match(again.stderr, /ca\.crt.*already exist.*pass --force to overwrite/)
  t.equal(await readFile(init.files.ca, 'utf8'), before, 'nothing was written')
  const forced = await flotilla(['cert', 'init', '--hosts', 'localhost', '--out', join(dir, 'forced')])
  t.equal(forced.code, 0)
  t.match(forced.stdout, /mkdir -p \/etc\/docker\/certs\.d\/localhost:5000 && cp .*ca\.crt/, 'the human form prints the commands too')
  t.equal((await flotilla(['cert', 'init', '--hosts', 'localhost', '--out', join(dir, 'forced'), '--force'])).code, 0, '--force overwrites')
  const bad = await flotilla(['cert', 'init', '--hosts', 'https://x:5000', '--out', join(dir, 'bad')])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /--hosts: "https:\/\/x:5000" is neither a DNS name nor an IP address/)
})

t.test('cert client issues a certificate whose CN is the user', async (t) => {
  const r = await flotilla(['cert', 'client', '--ca-dir', out, '--user', 'alice', '--registry', `localhost:${port}`])
  t.equal(r.code, 0, r.stderr)
  const c = new X509Certificate(await readFile(join(out, 'alice.crt')))
  t.equal(c.subject, 'CN=alice')
  t.match(c.keyUsage ?? [], ['1.3.6.1.5.5.7.3.2'], 'for client authentication')
  t.ok(c.verify(new X509Certificate(await readFile(init.files.ca)).publicKey), 'signed by the CA')
  t.match(r.stdout, `cp ${join(out, 'alice.crt')} /etc/containers/certs.d/localhost:${port}/alice.cert`, 'installed as NAME.cert next to NAME.key, as certs.d wants')
})

t.test('the printed commands make skopeo trust the node, and the CLI works with --ca-cert', async (t) => {
  const node = await startFlotilla({ port, tls: { certificate: init.files.cert, key: init.files.key, ca: init.files.ca } })
  t.teardown(async () => { await node.stop(); await rm(dirname(node.dataDir), { recursive: true, force: true }) })
  const creds = node.credentials!
  if (requireTool(t, 'skopeo')) {
    const ctr = await containersEnv(t, [])
    // Run the containers commands exactly as printed (as root), and undo them afterwards.
    const made: string[] = []
    for (const d of ['/etc/containers', '/etc/containers/certs.d']) if (!await stat(d).then(() => true, () => false)) made.unshift(d)
    t.teardown(async () => {
      for (const h of ['localhost', '127.0.0.1', '[::1]']) await rm(`/etc/containers/certs.d/${h}:${port}`, { recursive: true, force: true })
      for (const d of made) await rmdir(d).catch(() => {})
    })
    for (const cmd of init.commands.containers) await run('sh', ['-c', cmd]).then((r) => t.equal(r.code, 0, `${cmd} ${r.stderr}`))
    const inspect = await ctr.skopeo(['inspect', '--tls-verify=true', '--creds', `${creds.username}:${creds.password}`, `docker://localhost:${port}/none/here:1`])
    t.match(inspect.stderr, /manifest unknown|not found|MANIFEST_UNKNOWN|NAME_UNKNOWN/i, `skopeo reaches the node over verified TLS (it answers about the image, not the certificate): ${inspect.stderr.trim()}`)
    t.notMatch(inspect.stderr, /x509/)
  }
  const list = await flotilla(['user', 'list', '--node', `https://localhost:${port}`, '--user', `${creds.username}:${creds.password}`, '--ca-cert', init.files.ca])
  t.equal(list.code, 0, `flotilla user list --ca-cert: ${list.stderr}`)
  t.match(list.stdout, /^NAME\s+ADMIN/)
  const env = await flotilla(['status', '--node', `https://127.0.0.1:${port}`, '--user', `${creds.username}:${creds.password}`], { FLOTILLA_CA_CERT: init.files.ca })
  t.equal(env.code, 0, `FLOTILLA_CA_CERT works too: ${env.stderr}`)

  const untrusted = await flotilla(['user', 'list', '--node', `https://127.0.0.1:${port}`, '--user', `${creds.username}:${creds.password}`])
  t.equal(untrusted.code, 1)
  t.match(untrusted.stderr, /not signed by a CA this command trusts .*pass --ca-cert FILE \(or set FLOTILLA_CA_CERT\)/, `unknown CA: ${untrusted.stderr.trim()}`)
  const plain = await flotilla(['user', 'list', '--node', `http://127.0.0.1:${port}`, '--user', `${creds.username}:${creds.password}`])
  t.equal(plain.code, 1)
  t.match(plain.stderr, /If the node serves HTTPS \(--tls-certificate\), use --node https:\/\/127\.0\.0\.1:/, `plain HTTP: ${plain.stderr.trim()}`)

  // Swap in a certificate for another name, then an expired one: the node reloads each (rename into place).
  const swapTo = async (certPem: string, keyPem: string, serial: string): Promise<void> => {
    await writeFile(join(dir, 'next.crt'), certPem)
    await writeFile(join(dir, 'next.key'), keyPem)
    await copyFile(join(dir, 'next.key'), join(out, '.next.key'))
    await copyFile(join(dir, 'next.crt'), join(out, '.next.crt'))
    await rename(join(out, '.next.crt'), init.files.cert)
    await rename(join(out, '.next.key'), init.files.key)
    const deadline = Date.now() + 60_000
    while (!sameSerial((await servedCertificate('127.0.0.1', port)).serialNumber, serial)) {
      if (Date.now() > deadline) throw new Error(`the node did not reload to serial ${serial}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  }
  const ca = { certPem: await readFile(init.files.ca, 'utf8'), keyPem: await readFile(init.files.caKey, 'utf8') }
  const otherName = await issueCertificate(ca, { kind: 'server', hosts: { dns: ['registry.example'], ips: [] } })
  await swapTo(otherName.certPem, otherName.keyPem, otherName.serial)
  const mismatch = await flotilla(['user', 'list', '--node', `https://127.0.0.1:${port}`, '--user', `${creds.username}:${creds.password}`, '--ca-cert', init.files.ca])
  t.equal(mismatch.code, 1)
  t.match(mismatch.stderr, /TLS certificate is not for 127\.0\.0\.1:\d+ .*registry\.example.*use --node with a name or address the certificate lists/, `hostname mismatch: ${mismatch.stderr.trim()}`)
  const expired = await issueCertificate(ca, { kind: 'server', hosts: { dns: ['localhost'], ips: ['127.0.0.1'] }, notBefore: new Date(Date.now() - 10 * 86_400_000), days: 2 })
  await swapTo(expired.certPem, expired.keyPem, expired.serial)
  const old = await flotilla(['user', 'list', '--node', `https://127.0.0.1:${port}`, '--user', `${creds.username}:${creds.password}`, '--ca-cert', init.files.ca])
  t.equal(old.code, 1)
  t.match(old.stderr, /TLS certificate has expired .*renew the node's certificate files/, `expired: ${old.stderr.trim()}`)
})
