/**
 * Issue 16, client certificates (mTLS). With tls.clientAuth require, a client without a
 * certificate signed by tls.clientCA is refused at the handshake. A verified certificate whose
 * subject CN names an existing, enabled user signs the request in as that user (tls.clientCertUser
 * cn): an admin's certificate can use the admin API, a user's is held to their permissions, a
 * disabled or unknown user's is refused, and an Authorization header still wins. With optional,
 * clients without a certificate are anonymous. skopeo shows a real client using certs.d's
 * NAME.cert/NAME.key pair, and the CLI its FLOTILLA_CLIENT_CERT/KEY.
 */
import t from 'tap'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { removeTree } from '../helpers/cleanup.js'
import { run } from '../helpers/exec.js'
import { busyboxImage, writeOciLayout } from '../helpers/images.js'
import { containersEnv } from '../helpers/podman.js'
import { httpsGet, installCertsD, makePki, type Pki } from '../helpers/tls.js'
import { requireTool } from '../helpers/tools.js'
import { ROOT, startFlotilla, type RunningRegistry } from '../../scripts/lib/procs.js'

const pki = await makePki(t, 'localhost,127.0.0.1')
const stranger = await makePki(t, 'localhost,127.0.0.1')
const certs = {
  admin: await pki.client('admin'),
  alice: await pki.client('alice'),
  bob: await pki.client('bob'),
  ghost: await pki.client('ghost'),
  strangerAlice: await stranger.client('alice'),
}
const pem = async (c: { cert: string; key: string }): Promise<{ cert: string; key: string }> => ({ cert: await readFile(c.cert, 'utf8'), key: await readFile(c.key, 'utf8') })
const as = {
  admin: await pem(certs.admin),
  alice: await pem(certs.alice),
  bob: await pem(certs.bob),
  ghost: await pem(certs.ghost),
  strangerAlice: await pem(certs.strangerAlice),
}

async function startNode (p: Pki, clientAuth: 'optional' | 'require'): Promise<RunningRegistry> {
  const node = await startFlotilla({
    tls: { certificate: p.cert, key: p.key, ca: p.caFile, client: certs.admin },
    args: ['--tls-client-ca', p.caFile, '--tls-client-auth', clientAuth],
  })
  t.teardown(async () => {
    await node.stop()
    if (!t.passing()) t.comment((await readFile(join(dirname(node.dataDir), `node-${node.host.split(':').at(-1)}.log`), 'utf8').catch(() => '')).split('\n').slice(-30).join('\n'))
    await rm(dirname(node.dataDir), { recursive: true, force: true })
  })
  return node
}

const required = await startNode(pki, 'require')
const optional = await startNode(pki, 'optional')
const basic = (u: string, p: string): Record<string, string> => ({ authorization: 'Basic ' + Buffer.from(`${u}:${p}`).toString('base64') })

t.test('require: no certificate, or one from another CA, is refused at the handshake', async (t) => {
  const none = await httpsGet(`${required.url}/v2/`, { ca: pki.caPem, headers: basic('admin', required.credentials!.password) })
  t.equal(none.status, undefined, 'no HTTP answer without a client certificate, even with a valid password')
  t.ok(none.error, `the connection fails: ${none.error ?? ''}`)
  const foreign = await httpsGet(`${required.url}/v2/`, { ca: pki.caPem, ...as.strangerAlice })
  t.equal(foreign.status, undefined, 'a certificate from another CA (even for alice) is refused')
  t.ok(foreign.error, `the connection fails: ${foreign.error ?? ''}`)
  if (!requireTool(t, 'curl')) return
  const curl = await run('curl', ['-sS', '-o', '/dev/null', '--cacert', pki.caFile, `${required.url}/v2/`])
  t.not(curl.code, 0, `curl without --cert fails: ${curl.stderr.trim()}`)
  const metrics = await httpsGet(`${required.url}/metrics`, { ca: pki.caPem, ...as.admin })
  t.match(metrics.body, /flotilla_tls_handshake_failures_total\{reason="[A-Z_0-9]+"\} [1-9]/, 'refused handshakes are counted')
})

t.test('require: a certificate naming a user signs in as that user, held to their rights', async (t) => {
  const me = await httpsGet(`${required.url}/api/v1/me`, { ca: pki.caPem, ...as.admin })
  t.equal(me.status, 200)
  t.match(JSON.parse(me.body ?? '{}'), { user: 'admin', admin: true, via: 'certificate' }, 'CN=admin is the admin, via certificate')
  // The admin's certificate is enough for the admin API: create alice (with rights on alice/**) and bob.
  for (const name of ['alice', 'bob']) {
    const created = await httpsGet(`${required.url}/api/v1/users`, { ca: pki.caPem, ...as.admin, method: 'POST', json: { name, password: `${name}-password-1` } })
    t.equal(created.status, 201, `admin (by certificate) creates ${name}: ${created.body ?? created.error ?? ''}`)
  }
  const perm = await httpsGet(`${required.url}/api/v1/permissions/alice`, { ca: pki.caPem, ...as.admin, method: 'PUT', json: { repositories: ['alice/**'], users: { alice: ['read', 'write'] } } })
  t.equal(perm.status, 200, 'and gives alice read and write on alice/**')

  const alice = await httpsGet(`${required.url}/api/v1/me`, { ca: pki.caPem, ...as.alice })
  t.match(JSON.parse(alice.body ?? '{}'), { user: 'alice', admin: false, via: 'certificate' }, 'CN=alice is alice')
  const notAdmin = await httpsGet(`${required.url}/api/v1/users`, { ca: pki.caPem, ...as.alice })
  t.equal(notAdmin.status, 403, 'alice\'s certificate gets no admin rights')
  t.equal((await httpsGet(`${required.url}/v2/`, { ca: pki.caPem, ...as.alice })).status, 200, '/v2/ answers 200: signed in')
  t.equal((await httpsGet(`${required.url}/v2/other/x/tags/list`, { ca: pki.caPem, ...as.alice })).status, 403, 'outside alice/**: 403 DENIED')
  const header = await httpsGet(`${required.url}/api/v1/me`, { ca: pki.caPem, ...as.alice, headers: basic('bob', 'bob-password-1') })
  t.match(JSON.parse(header.body ?? '{}'), { user: 'bob', via: 'password' }, 'an Authorization header wins over the certificate')

  const ghost = await httpsGet(`${required.url}/v2/`, { ca: pki.caPem, ...as.ghost })
  t.equal(ghost.status, 401, 'CN=ghost, not a user: 401')
  t.match(ghost.body, /ghost.*is not a user here/, 'saying why')

  const disable = await httpsGet(`${required.url}/api/v1/users/bob`, { ca: pki.caPem, ...as.admin, method: 'PATCH', json: { disabled: true } })
  t.equal(disable.status, 200, 'admin disables bob')
  const bob = await httpsGet(`${required.url}/v2/`, { ca: pki.caPem, ...as.bob })
  t.equal(bob.status, 401, 'a disabled user\'s certificate is refused')
  t.match(bob.body, /is disabled/)
  const audit = await httpsGet(`${required.url}/api/v1/audit?action=login&outcome=failed`, { ca: pki.caPem, ...as.admin })
  t.match(audit.body, /"via":"certificate"/, 'failed certificate sign-ins are in the audit log')
})

t.test('skopeo pushes with the client certificate from certs.d, as alice, without logging in', async (t) => {
  if (!requireTool(t, 'skopeo')) return
  const ctr = await containersEnv(t, [])
  // containers-certs.d(5): *.crt are CAs, NAME.cert with NAME.key a client pair.
  await installCertsD(t, '/etc/containers/certs.d', required.host, { 'ca.crt': pki.caPem, 'alice.cert': as.alice.cert, 'alice.key': as.alice.key })
  const work = await mkdtemp(join(tmpdir(), 'fl-mtls-'))
  t.teardown(async () => { await removeTree(work) })
  const image = busyboxImage({ randomLayerSizes: [1 << 20] })
  await writeOciLayout(join(work, 'src'), image, 'v1')
  await ctr.skopeoOk(['copy', '--dest-tls-verify=true', `oci:${join(work, 'src')}:v1`, `docker://${required.host}/alice/app:v1`])
  const tags = await httpsGet(`${required.url}/v2/alice/app/tags/list`, { ca: pki.caPem, ...as.alice })
  t.match(JSON.parse(tags.body ?? '{}'), { tags: ['v1'] }, 'the push landed, as alice')
  const denied = await ctr.skopeo(['copy', '--dest-tls-verify=true', `oci:${join(work, 'src')}:v1`, `docker://${required.host}/team/app:v1`])
  t.not(denied.code, 0, 'a push outside alice/** is refused')
  t.match(denied.stderr, /denied|403|forbidden/i, 'with 403')
})

t.test('the CLI shows its client certificate from FLOTILLA_CLIENT_CERT/KEY, and says what is missing', async (t) => {
  const cli = async (env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    await run(process.execPath, [join(ROOT, 'bin', 'flotilla.mjs'), 'user', 'list', '--node', required.url, '--json'], { env: { ...process.env, FLOTILLA_USER: '', FLOTILLA_CA_CERT: pki.caFile, ...env } })
  const ok = await cli({ FLOTILLA_CLIENT_CERT: certs.admin.cert, FLOTILLA_CLIENT_KEY: certs.admin.key })
  t.equal(ok.code, 0, `user list as the admin's certificate: ${ok.stderr}`)
  t.match(ok.stdout, /"alice"/, 'lists the users')
  const without = await cli({})
  t.equal(without.code, 1)
  t.match(without.stderr, /requires a TLS client certificate.*FLOTILLA_CLIENT_CERT/, `no certificate: the error says to set one (${without.stderr.trim()})`)
})

t.test('optional: no certificate is anonymous, a verified one signs in, an unverified one is ignored', async (t) => {
  const none = await httpsGet(`${optional.url}/v2/`, { ca: pki.caPem })
  t.equal(none.status, 401, 'no certificate: the handshake succeeds and /v2/ challenges')
  const admin = await httpsGet(`${optional.url}/api/v1/me`, { ca: pki.caPem, ...as.admin })
  t.match(JSON.parse(admin.body ?? '{}'), { user: 'admin', via: 'certificate' }, 'a verified certificate signs in')
  const foreign = await httpsGet(`${optional.url}/v2/`, { ca: pki.caPem, ...as.strangerAlice })
  t.equal(foreign.status, 401, 'a certificate from another CA names nobody: anonymous, challenged')
})
