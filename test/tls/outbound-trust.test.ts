/**
 * tls.trust (FLOTILLA_TLS_TRUST, issue 16): a node trusts a private CA for its own outgoing
 * HTTPS without NODE_EXTRA_CA_CERTS. The CA is the one `flotilla cert` makes (test/helpers/tls.ts
 * runs the same code); everything else is real processes, single-node sites:
 *   - a webhook receiver over HTTPS with a certificate from that CA is reached by a node with
 *     the setting; a node without it is refused at the handshake, says so in its delivery log
 *     and its log, and retries;
 *   - `flotilla site peer https://…` to a site that serves TLS works from a site with the
 *     setting, and fails with the certificate's cause from a site without.
 */
import t from 'tap'
import { createServer } from 'node:https'
import { readFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { authFetch, pushHttp, runCli, startTestCluster, waitFor, type TestCluster } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'
import { makePki } from '../helpers/tls.js'
import { siteStatus, sitePeer } from '../helpers/sites.js'
import { startFlotilla } from '../../scripts/lib/procs.js'
import { loadConfig } from '../../src/config.js'
import { loadTrust } from '../../src/tls/trust.js'

const pki = await makePki(t, 'localhost,127.0.0.1')

// Site A serves its API over HTTPS with a certificate from the CA.
const a = await startFlotilla({ tls: { certificate: pki.cert, key: pki.key, ca: pki.caFile } })
t.teardown(async () => { await a.stop() })
// Two single-node sites: one trusts the CA (tls.trust), one does not.
const trusting = await startTestCluster(t, { size: 1, env: { FLOTILLA_TLS_TRUST: pki.caFile } })
const plain = await startTestCluster(t, { size: 1 })

// The webhook receiver, over HTTPS with another certificate from the same CA.
const hookCert = await pki.server('hook', '127.0.0.1')
const got: Array<{ delivery: string; repo: unknown }> = []
const receiver = createServer({ cert: await readFile(hookCert.cert), key: await readFile(hookCert.key) }, (req, res) => {
  const chunks: Buffer[] = []
  req.on('data', (b: Buffer) => chunks.push(b))
  req.on('end', () => {
    got.push({ delivery: String(req.headers['flotilla-delivery']), repo: (JSON.parse(Buffer.concat(chunks).toString()) as { repo?: unknown }).repo })
    res.writeHead(204).end()
  })
})
await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
t.teardown(() => { receiver.closeAllConnections(); receiver.close() })
const hookUrl = `https://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`

async function hookAndPush (c: TestCluster, repo: string): Promise<void> {
  const node = c.nodes[0]!
  const res = await authFetch(`${node.url}/api/v1/hooks/ci`, c.credentials, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: hookUrl, secret: 'webhook-secret-0123456789', events: ['push'], repositories: ['**'] }) })
  if (res.status !== 200) throw new Error(`PUT hook answered ${res.status}: ${await res.text()}`)
  const pushed = await pushHttp(node.url, c.credentials, repo, image(), 'v1')
  if (pushed.outcome !== 'ok') throw new Error(`push to ${repo}: ${JSON.stringify(pushed)}`)
}

interface Deliveries { queued: Array<{ attempts: number; lastError?: string }>; log: Array<{ id: string; outcome: string; attempts: number; lastError?: string }> }
async function deliveries (c: TestCluster): Promise<Deliveries> {
  return await (await authFetch(`${c.nodes[0]!.url}/api/v1/hooks/ci/deliveries`, c.credentials)).json() as Deliveries
}

t.test('a webhook over HTTPS from a private CA: delivered with tls.trust, refused and retried without', async (t) => {
  await hookAndPush(trusting, 'trust/app')
  await hookAndPush(plain, 'plain/app')
  await waitFor('the trusting node\'s push delivered', async () => got.some((g) => g.repo === 'trust/app') ? true : undefined, 60_000, 100)
  // Without the CA the handshake fails: the delivery stays queued, attempted again and again.
  const refused = await waitFor('two refused attempts from the node without tls.trust', async () => {
    const d = await deliveries(plain)
    const q = d.queued.find((x) => x.attempts >= 2)
    return q !== undefined ? { d, q } : undefined
  }, 60_000, 200)
  t.notOk(got.some((g) => g.repo === 'plain/app'), 'the receiver never got the untrusting node\'s delivery')
  t.match(JSON.stringify(refused.d), /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|CERT|certificate/i, 'the delivery log names the certificate problem')
  const log = await plain.logs(400)
  t.match(log, /webhook delivery failed; retried with backoff/, 'and the node logs it')
})

t.test('a site link to a site that serves TLS: works with tls.trust, refused without', async (t) => {
  const token = async (): Promise<string> => {
    const res = await runCli(['site', 'token', '--node', a.url, '--user', `${a.credentials!.username}:${a.credentials!.password}`], { env: { FLOTILLA_CA_CERT: pki.caFile } })
    if (res.code !== 0) throw new Error(`flotilla site token failed (${res.code}): ${res.stderr}`)
    return res.stdout.trimEnd().split('\n').at(-1)!
  }
  const refused = await sitePeer(plain, a.url, await token(), 'site-a')
  t.not(refused.code, 0, 'the site without the CA cannot peer')
  t.match(refused.stderr, /certificate/i, `it says why: ${refused.stderr.trim()}`)
  t.match(refused.stderr, /tls\.trust/, 'and names the fix')
  const ok = await sitePeer(trusting, a.url, await token(), 'site-a')
  t.equal(ok.code, 0, `the site with tls.trust peers over https (${ok.stderr.trim()})`)
  const st = await siteStatus(trusting, 'site-a')
  t.equal(st.name, 'site-a')
  await waitFor('the link to A up', async () => (await siteStatus(trusting, 'site-a')).connected ? true : undefined, 60_000, 200)
})

t.test('tls.trust: files from YAML, env (comma-separated) or flag; a bad file is refused with the fix', async (t) => {
  t.same((await loadConfig({}, { FLOTILLA_TLS_TRUST: `${pki.caFile}, /etc/other-ca.pem` })).tls.trust, [pki.caFile, '/etc/other-ca.pem'])
  t.same((await loadConfig({ tlsTrust: pki.caFile }, {})).tls.trust, [pki.caFile])
  t.equal((await loadConfig({}, {})).tls.trust, undefined, 'unset: the system\'s CAs only')
  t.match(loadTrust([pki.caFile])[0], /BEGIN CERTIFICATE/)
  t.throws(() => loadTrust(['/nonexistent/ca.crt']), /tls\.trust \(--tls-trust, FLOTILLA_TLS_TRUST\): cannot read \/nonexistent\/ca.crt: no such file/)
  t.throws(() => loadTrust([pki.cert.replace(/\.crt$/, '.key')]), /holds no PEM certificate.*private key/)
})
