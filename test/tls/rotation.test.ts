/**
 * Issue 16, certificate rotation while clients pull: the node reloads its certificate files
 * when they change, without a restart, the way ACME clients replace them. Three kinds of
 * replacement, one after the other, while clients keep pulling on fresh connections (a full
 * handshake each):
 *   1. a Kubernetes-style symlink swap (`..data` pointed at a new directory: fs.watch sees no
 *      change to the file name itself; the stat poll does),
 *   2. an in-place rewrite (certificate, then key: for a moment they do not match),
 *   3. a rename over the files (write elsewhere, then rename into place).
 * Then a broken pair (a key that belongs to another certificate): logged and counted, the old
 * certificate keeps serving. No request may fail, and each new certificate (by serial) is served afterwards.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdir, readFile, rename, rm, symlink, writeFile, copyFile } from 'node:fs/promises'
import { request } from 'node:https'
import { dirname, join } from 'node:path'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { removeTree } from '../helpers/cleanup.js'
import { busyboxImage, writeOciLayout } from '../helpers/images.js'
import { containersEnv } from '../helpers/podman.js'
import { httpsGet, installCertsD, makePki, sameSerial } from '../helpers/tls.js'
import { missingTools, requireTool } from '../helpers/tools.js'
import { startFlotilla } from '../../scripts/lib/procs.js'

const pki = await makePki(t, 'localhost,127.0.0.1')
// certs/tls.crt -> ..data/tls.crt, certs/..data -> v0: what a Kubernetes secret volume looks like.
const certs = join(pki.dir, 'certs')
await mkdir(join(pki.dir, 'v0'))
await copyFile(pki.cert, join(pki.dir, 'v0', 'tls.crt'))
await copyFile(pki.key, join(pki.dir, 'v0', 'tls.key'))
await mkdir(certs)
await symlink('../v0', join(certs, '..data'))
await symlink('..data/tls.crt', join(certs, 'tls.crt'))
await symlink('..data/tls.key', join(certs, 'tls.key'))
const certFile = join(certs, 'tls.crt')
const keyFile = join(certs, 'tls.key')

const node = await startFlotilla({ tls: { certificate: certFile, key: keyFile, ca: pki.caFile }, anonymous: 'rot/**=read,write' })
t.teardown(async () => {
  await node.stop()
  if (!t.passing()) t.comment((await readFile(join(dirname(node.dataDir), `node-${node.host.split(':').at(-1)}.log`), 'utf8').catch(() => '')).split('\n').slice(-40).join('\n'))
  await rm(dirname(node.dataDir), { recursive: true, force: true })
})
const port = Number(node.host.split(':').at(-1))
const work = await mkdtemp(join(tmpdir(), 'fl-rotation-'))
t.teardown(async () => { await removeTree(work) })

/** Push a blob with a monolithic upload (anonymous write on rot/**). */
async function pushBlob (data: Buffer): Promise<string> {
  const digest = 'sha256:' + createHash('sha256').update(data).digest('hex')
  const post = await send('POST', '/v2/rot/blob/blobs/uploads/')
  if (post.status !== 202) throw new Error(`POST uploads: ${post.status}`)
  const loc = new URL(post.location!, node.url)
  loc.searchParams.set('digest', digest)
  const put = await send('PUT', loc.pathname + loc.search, data)
  if (put.status !== 201) throw new Error(`PUT upload: ${put.status}`)
  return digest
}

interface Answer { status: number; location?: string; sha256?: string; serial?: string }

/** One request on a new connection (a full TLS handshake), verifying the node against the CA. */
async function send (method: string, path: string, body?: Buffer): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = request(`${node.url}${path}`, { method, ca: pki.caPem, agent: false, timeout: 60_000, headers: body !== undefined ? { 'content-length': body.length, 'content-type': 'application/octet-stream' } : { 'content-length': 0 } }, (res) => {
      const serial = (res.socket as import('node:tls').TLSSocket).getPeerCertificate().serialNumber
      const hash = createHash('sha256')
      res.on('data', (b: Buffer) => hash.update(b))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ...(typeof res.headers.location === 'string' ? { location: res.headers.location } : {}), sha256: 'sha256:' + hash.digest('hex'), serial }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end(body)
  })
}

const blob = Buffer.alloc(512 * 1024, 7)
const digest = await pushBlob(blob)

/** Clients pulling until told to stop: every failure and every serial seen is kept. */
function pullLoop (): { stop: () => Promise<void>; ok: number; failures: string[]; serials: Set<string> } {
  const state = { ok: 0, failures: [] as string[], serials: new Set<string>(), stop: async () => {} }
  let running = true
  const loop = (async () => {
    while (running) {
      try {
        const a = await send('GET', `/v2/rot/blob/blobs/${digest}`)
        if (a.status !== 200 || a.sha256 !== digest) state.failures.push(`status ${a.status}, ${a.sha256 ?? ''}`)
        else state.ok++
        if (a.serial !== undefined) state.serials.add(a.serial)
      } catch (err) {
        state.failures.push((err as NodeJS.ErrnoException).code ?? (err as Error).message)
      }
    }
  })()
  state.stop = async () => { running = false; await loop }
  return state
}

/** Wait until the node presents the certificate with this serial (generous: a loaded machine). */
async function waitForSerial (serial: string, what: string): Promise<boolean> {
  const deadline = Date.now() + 60_000
  for (;;) {
    const a = await send('GET', '/v2/').catch(() => undefined)
    if (a?.serial !== undefined && sameSerial(a.serial, serial)) return true
    if (Date.now() > deadline) { t.comment(`${what}: still serving ${a?.serial ?? '?'}, not ${serial}`); return false }
    await new Promise((r) => setTimeout(r, 200))
  }
}

async function metric (name: string): Promise<string> {
  const m = await httpsGet(`${node.url}/metrics`, { ca: pki.caPem })
  return (m.body ?? '').split('\n').filter((l) => l.startsWith(name)).join('\n')
}

t.test('certificates rotate three ways, and a broken pair is refused, while clients pull: no failed request', async (t) => {
  const first = await send('GET', '/v2/')
  t.ok(first.serial !== undefined && sameSerial(first.serial, pki.serial), 'the node starts with the first certificate')
  const loops = [pullLoop(), pullLoop()]
  // A real client too, when skopeo is here: a new process (and handshake) per manifest fetch.
  let skopeoRuns = 0
  const skopeoFailures: string[] = []
  let skopeoRunning = missingTools('skopeo') === undefined
  let skopeoLoop: Promise<void> = Promise.resolve()
  if (skopeoRunning) {
    const ctr = await containersEnv(t, [])
    await installCertsD(t, '/etc/containers/certs.d', node.host, { 'ca.crt': pki.caPem })
    await writeOciLayout(join(work, 'img'), busyboxImage(), 'v1')
    await ctr.skopeoOk(['copy', `oci:${join(work, 'img')}:v1`, `docker://${node.host}/rot/app:v1`])
    skopeoLoop = (async () => {
      while (skopeoRunning) {
        const r = await ctr.skopeo(['inspect', '--raw', `docker://${node.host}/rot/app:v1`], { timeoutMs: 120_000 })
        skopeoRuns++
        if (r.code !== 0) skopeoFailures.push(r.stderr.trim())
      }
    })()
  } else if (process.env.CI === 'true') t.fail('skopeo is missing (apt-get install skopeo)')

  // 1. Symlink swap: ..data -> v1, by renaming a new link over the old one (atomic).
  const v1 = await pki.server('v1')
  await mkdir(join(pki.dir, 'v1'))
  await copyFile(v1.cert, join(pki.dir, 'v1', 'tls.crt'))
  await copyFile(v1.key, join(pki.dir, 'v1', 'tls.key'))
  await symlink('../v1', join(certs, '..data.new'))
  await rename(join(certs, '..data.new'), join(certs, '..data'))
  t.ok(await waitForSerial(v1.serial, 'symlink swap'), 'after the symlink swap the new certificate is served')

  // 2. In place: the certificate first, then (a moment later) its key; in between they do not match.
  const v2 = await pki.server('v2')
  await writeFile(certFile, await readFile(v2.cert))
  await new Promise((r) => setTimeout(r, 50))
  await writeFile(keyFile, await readFile(v2.key))
  t.ok(await waitForSerial(v2.serial, 'in-place rewrite'), 'after the in-place rewrite the new certificate is served')

  // 3. Rename over the files (replacing the symlinks with files).
  const v3 = await pki.server('v3')
  await copyFile(v3.cert, join(certs, '.tls.crt.tmp'))
  await copyFile(v3.key, join(certs, '.tls.key.tmp'))
  await rename(join(certs, '.tls.crt.tmp'), certFile)
  await rename(join(certs, '.tls.key.tmp'), keyFile)
  t.ok(await waitForSerial(v3.serial, 'rename'), 'after the rename the new certificate is served')

  // 4. A broken pair: v4's certificate with v3's key. Refused; v3 goes on serving.
  const failuresBefore = /result="failure"\} (\d+)/.exec(await metric('flotilla_tls_certificate_reloads_total'))?.[1]
  const v4 = await pki.server('v4')
  await copyFile(v4.cert, certFile)
  const deadline = Date.now() + 60_000
  let failures = failuresBefore
  while (failures === failuresBefore && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200))
    failures = /result="failure"\} (\d+)/.exec(await metric('flotilla_tls_certificate_reloads_total'))?.[1]
  }
  t.ok(Number(failures) > Number(failuresBefore), `the mismatched pair is counted as a failed reload (${failuresBefore ?? '?'} -> ${failures ?? '?'})`)
  const still = await send('GET', '/v2/')
  t.ok(still.serial !== undefined && sameSerial(still.serial, v3.serial), 'and the previous certificate is still served')
  // The key arrives: now the pair is good.
  await copyFile(v4.key, keyFile)
  t.ok(await waitForSerial(v4.serial, 'fixed pair'), 'once the key matches, the new certificate is served')

  for (const l of loops) await l.stop()
  skopeoRunning = false
  await skopeoLoop
  const ok = loops.reduce((n, l) => n + l.ok, 0)
  const failed = loops.flatMap((l) => l.failures)
  t.same(failed, [], `no failed pull among ${ok + failed.length}`)
  t.ok(ok > 20, `the clients kept pulling throughout (${ok} pulls)`)
  const seen = new Set(loops.flatMap((l) => [...l.serials]).map((s) => s.toLowerCase().replace(/^(00)+/, '')))
  t.ok(seen.size >= 4, `the pulls saw the certificates change (${seen.size} serials)`)
  if (requireTool(t, 'skopeo')) {
    t.same(skopeoFailures, [], `no failed skopeo inspect among ${skopeoRuns}`)
    t.ok(skopeoRuns > 0, 'skopeo ran during the rotations')
  }
  const m = await metric('flotilla_tls_certificate')
  t.match(m, /flotilla_tls_certificate_reloads_total\{result="success"\} ([4-9]|\d\d)/, `at least four successful reloads:\n${m}`)
  const expiry = Number(/flotilla_tls_certificate_expiry_seconds (\d+)/.exec(m)?.[1])
  const v4NotAfter = Math.floor(new Date(new (await import('node:crypto')).X509Certificate(await readFile(v4.cert)).validTo).getTime() / 1000)
  t.equal(expiry, v4NotAfter, 'flotilla_tls_certificate_expiry_seconds is the new certificate\'s notAfter')
})
