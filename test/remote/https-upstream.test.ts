/**
 * Issue 13, remote repositories: an https:// upstream (Debian's docker-registry 2.8.2 serving
 * TLS with a certificate from a private CA). A node given that CA with tls.trust
 * (--tls-trust) pulls through it; a node without it is refused by the TLS check, and the
 * client is told the cause and the fix, with nothing cached. The remote's allow and block
 * patterns refuse other names before the upstream is asked.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { startFlotilla, tempDir, type RunningRegistry } from '../../scripts/lib/procs.js'
import { authFetch } from '../helpers/cluster.js'
import { makePki } from '../helpers/tls.js'
import { startUpstream } from '../helpers/upstream.js'
import { requireTool } from '../helpers/tools.js'

const sha = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'

t.test('an https:// upstream with a private CA: pulled through with tls.trust, refused without it', async (t) => {
  if (!requireTool(t, 'docker-registry')) return
  const pki = await makePki(t, '127.0.0.1,localhost')
  const up = await startUpstream(t, { tls: { certificate: pki.cert, key: pki.key, ca: pki.caFile } })
  t.match(up.url, /^https:\/\//, 'the upstream serves https')

  const config = Buffer.from('{"architecture":"amd64","os":"linux"}')
  const layer = randomBytes(3 * 1024 * 1024)
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.length }],
  }))
  await up.push('library/app', '1', new Map([[sha(config), config], [sha(layer), layer]]), manifest, OCI_MANIFEST)

  const base = await tempDir('https-upstream-')
  const nodes: RunningRegistry[] = []
  t.teardown(async () => { await Promise.all(nodes.map(async (n) => await n.stop())); await rm(base, { recursive: true, force: true }) })
  const [trusting, plain] = await Promise.all([
    startFlotilla({ dataDir: `${base}/trusting`, args: ['--tls-trust', pki.caFile] }),
    startFlotilla({ dataDir: `${base}/plain` }),
  ])
  nodes.push(trusting, plain)
  for (const n of [trusting, plain]) {
    const put = await authFetch(`${n.url}/api/v1/remotes/corp`, n.credentials!, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prefix: 'corp/', upstream: up.url, allow: ['library/**'], block: ['library/internal-*'] }) })
    t.equal(put.status, 200, `remote corp/ -> ${up.url} on ${n.url}: ${await put.clone().text()}`)
    await put.arrayBuffer()
  }

  await t.test('the node with tls.trust pulls the image through the https upstream', async (t) => {
    const creds = trusting.credentials!
    const m = await authFetch(`${trusting.url}/v2/corp/library/app/manifests/1`, creds, { headers: { accept: OCI_MANIFEST } })
    const body = Buffer.from(await m.arrayBuffer())
    t.equal(m.status, 200, body.toString().slice(0, 300))
    t.equal(sha(body), sha(manifest), 'the upstream\'s manifest, byte for byte')
    for (const [digest, bytes] of [[sha(config), config], [sha(layer), layer]] as const) {
      const b = await authFetch(`${trusting.url}/v2/corp/library/app/blobs/${digest}`, creds)
      const got = Buffer.from(await b.arrayBuffer())
      t.equal(b.status, 200, `blob ${digest.slice(0, 19)}`)
      t.equal(sha(got), digest, `${bytes.length} bytes with the right digest`)
    }
    const blobGets = (await up.requests()).filter((r) => r.method === 'GET' && r.path.includes('/blobs/'))
    t.equal(blobGets.length, 2, 'each blob came over TLS from the upstream once')
  })

  await t.test('allow and block patterns: a name outside them is refused before the upstream is asked', async (t) => {
    const creds = trusting.credentials!
    const before = (await up.requests()).length
    for (const name of ['corp/library/internal-tools', 'corp/other/app']) {
      const res = await authFetch(`${trusting.url}/v2/${name}/manifests/1`, creds, { headers: { accept: OCI_MANIFEST } })
      const text = await res.text()
      t.equal(res.status, 403, `${name}: ${text}`)
      t.match(text, /"code":"DENIED".*not allowed by remote corp \(its allow and block patterns exclude /, 'in words')
    }
    t.equal((await up.requests()).length, before, 'the upstream was not asked')
  })

  await t.test('a node without the CA is refused by the TLS check: the client is told why and what to do', async (t) => {
    const creds = plain.credentials!
    const before = (await up.requests()).length
    const m = await authFetch(`${plain.url}/v2/corp/library/app/manifests/1`, creds, { headers: { accept: OCI_MANIFEST } })
    const text = await m.text()
    t.equal(m.status, 503, 'unavailable, not a 500')
    const err = (JSON.parse(text) as { errors: Array<{ code: string; message: string }> }).errors[0]!
    t.equal(err.code, 'UNAVAILABLE', text)
    t.match(err.message, /cannot be reached: .*(certificate|self.signed)/i, 'the cause: the certificate')
    t.match(err.message, /tls\.trust: --tls-trust FILE, FLOTILLA_TLS_TRUST\)/, 'and the fix')
    t.equal((await up.requests()).length, before, 'no request reached the upstream\'s HTTP layer')
    const again = await authFetch(`${plain.url}/v2/corp/library/app/blobs/${sha(config)}`, creds)
    await again.arrayBuffer()
    t.not(again.status, 200, 'and nothing was cached')
  })
})
