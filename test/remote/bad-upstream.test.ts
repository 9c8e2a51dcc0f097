/**
 * Issue 13, remote repositories: bad upstream answers. A tiny in-test HTTP server plays a
 * registry that answers a manifest with garbage JSON, a blob with the wrong bytes, a blob
 * cut short, and a 404 for a blob its manifest names. Each gets the client a clear error, and
 * nothing corrupt is cached: the next pull asks the upstream again.
 */
import t from 'tap'
import { createServer } from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import { startFlotilla, tempDir } from '../../scripts/lib/procs.js'
import { authFetch, runCli, waitFor } from '../helpers/cluster.js'
import { rm } from 'node:fs/promises'

const sha = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'

t.test('bad upstream answers: clear errors, nothing corrupt cached', async (t) => {
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}')
  const good = randomBytes(300_000)
  const wrong = randomBytes(200_000) // served for a digest it does not have
  const wrongDigest = sha(randomBytes(200_000))
  const cut = randomBytes(1_000_000) // served half, then the connection is cut
  const missing = sha('never stored upstream')
  const ranged = randomBytes(3_000_000) // asked for by range before it is cached
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: [good, wrong, cut].map((b, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: i === 1 ? wrongDigest : sha(b), size: b.length }))
      .concat([{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: missing, size: 10 }]),
  }))
  const hits = new Map<string, number>()
  const upstream = createServer((req, res) => {
    const path = req.url ?? ''
    hits.set(path, (hits.get(path) ?? 0) + 1)
    if (path === '/v2/' || path === '/v2') { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{}'); return }
    if (path === '/v2/lib/garbage/manifests/1') { res.writeHead(200, { 'content-type': OCI_MANIFEST }); res.end('{"schemaVersion": 2, "layers": [oops'); return }
    if (path === '/v2/lib/app/manifests/1') {
      res.writeHead(200, { 'content-type': OCI_MANIFEST, 'docker-content-digest': sha(manifest), 'content-length': String(manifest.length) })
      res.end(req.method === 'HEAD' ? undefined : manifest)
      return
    }
    const blob = (b: Buffer): void => { res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(b.length) }); res.end(b) }
    if (path === `/v2/lib/app/blobs/${sha(config)}`) return blob(config)
    if (path === `/v2/lib/app/blobs/${sha(good)}`) return blob(good)
    if (path === `/v2/lib/app/blobs/${sha(ranged)}`) return blob(ranged)
    if (path === `/v2/lib/app/blobs/${wrongDigest}`) return blob(wrong)
    if (path === `/v2/lib/app/blobs/${sha(cut)}`) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(cut.length) })
      res.write(cut.subarray(0, cut.length / 2), () => { setTimeout(() => res.socket?.destroy(), 50) })
      return
    }
    res.writeHead(404, { 'content-type': 'application/json' })
    res.end('{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}')
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { upstream.close(); upstream.closeAllConnections() })
  const port = (upstream.address() as { port: number }).port

  const node = await startFlotilla()
  const base = await tempDir('bad-upstream-')
  t.teardown(async () => { await node.stop(); await rm(base, { recursive: true, force: true }) })
  const creds = node.credentials!
  const add = await runCli(['remote', 'add', 'bad', '--prefix', 'bad/', '--upstream', `http://127.0.0.1:${port}`, '--ttl', '1h', '--node', node.url, '--user', `${creds.username}:${creds.password}`])
  t.equal(add.code, 0, `remote add: ${add.stderr}`)
  const get = async (path: string, init: RequestInit = {}): Promise<Response> => await authFetch(`${node.url}${path}`, creds, { ...init, headers: { accept: OCI_MANIFEST, ...init.headers } }, 30_000)
  const errorOf = async (res: Response): Promise<{ code: string; message: string }> => ((await res.json()) as { errors: Array<{ code: string; message: string }> }).errors[0]!

  /**
   * A pull of a blob the upstream answers badly: a 502 naming the cause when the fill failed
   * before the first byte went out, else a 200 whose body breaks off before its end (the blob
   * streams while it arrives; its last byte waits for the digest check). Never the whole blob.
   */
  const pullBroken = async (path: string, size: number, why: RegExp): Promise<{ ok: boolean; what: string }> => {
    const res = await get(path)
    if (res.status === 200) {
      const body = await res.arrayBuffer().then((b) => Buffer.from(b), () => undefined)
      return { ok: body === undefined || body.length < size, what: `200, then the transfer breaks off (${body?.length ?? 'cut'} of ${size} bytes)` }
    }
    const e = await errorOf(res)
    return { ok: res.status === 502 && e.code === 'UNAVAILABLE' && why.test(e.message), what: `${res.status} ${e.code}: ${e.message}` }
  }

  await t.test('garbage JSON for a manifest: 502 naming the cause, nothing cached', async (t) => {
    for (let i = 0; i < 2; i++) {
      const res = await get('/v2/bad/lib/garbage/manifests/1')
      t.equal(res.status, 502, 'a bad gateway, not a 500')
      const e = await errorOf(res)
      t.match(e.message, /not a valid manifest/, `the message says why: ${e.message}`)
    }
    t.equal(hits.get('/v2/lib/garbage/manifests/1'), 2, 'nothing was cached: the second pull asked the upstream again')
  })

  await t.test('a good manifest and blob are cached and verified', async (t) => {
    const res = await get('/v2/bad/lib/app/manifests/1')
    t.equal(res.status, 200)
    t.equal(sha(Buffer.from(await res.arrayBuffer())), sha(manifest), 'the manifest as the upstream sent it')
    const b = await get(`/v2/bad/lib/app/blobs/${sha(good)}`)
    t.equal(b.status, 200)
    t.equal(sha(Buffer.from(await b.arrayBuffer())), sha(good), 'the blob bytes are intact')
    // Linked once verified (the fill records it right after the last byte): the next read is the cache's.
    await waitFor('the blob to be cached', async () => {
      const again = await get(`/v2/bad/lib/app/blobs/${sha(good)}`)
      await again.arrayBuffer()
      return again.status === 200 && hits.get(`/v2/lib/app/blobs/${sha(good)}`) === 1 ? true : undefined
    }, 10_000)
    t.equal(hits.get(`/v2/lib/app/blobs/${sha(good)}`), 1, 'one upstream download')
  })

  await t.test('a blob whose bytes do not match its digest: the transfer is cut, nothing cached', async (t) => {
    for (let i = 0; i < 2; i++) {
      const r = await pullBroken(`/v2/bad/lib/app/blobs/${wrongDigest}`, wrong.length, /do not match its digest/)
      t.ok(r.ok, r.what)
    }
    t.equal(hits.get(`/v2/lib/app/blobs/${wrongDigest}`), 2, 'nothing was cached: asked again')
  })

  await t.test('a blob cut short: the transfer breaks off, nothing cached', async (t) => {
    for (let i = 0; i < 2; i++) {
      const r = await pullBroken(`/v2/bad/lib/app/blobs/${sha(cut)}`, cut.length, /broke off|of the \d+ bytes/)
      t.ok(r.ok, r.what)
    }
    t.equal(hits.get(`/v2/lib/app/blobs/${sha(cut)}`), 2, 'nothing was cached: asked again')
  })

  await t.test('a blob the manifest names but the upstream lacks (404 mid-way through a pull): BLOB_UNKNOWN', async (t) => {
    const res = await get(`/v2/bad/lib/app/blobs/${missing}`)
    t.equal(res.status, 404)
    const e = await errorOf(res)
    t.equal(e.code, 'BLOB_UNKNOWN')
    t.match(e.message, /not found upstream/, e.message)
  })

  await t.test('fill errors are counted by cause', async (t) => {
    const m = await (await fetch(`${node.url}/metrics`)).text()
    t.match(m, /flotilla_remote_fill_errors_total\{remote="bad",cause="digest"\} 2/)
    t.match(m, /flotilla_remote_fill_errors_total\{remote="bad",cause="truncated"\} [12]/)
    t.match(m, /flotilla_remote_fill_errors_total\{remote="bad",cause="bad_answer"\} \d/)
    t.match(m, /flotilla_remote_fill_errors_total\{remote="bad",cause="not_found"\} 1/)
  })

  await t.test('a range of a blob not cached yet (a client resuming a pull): 206 with those bytes; a wrong blob never completes one', async (t) => {
    const res = await get(`/v2/bad/lib/app/blobs/${sha(ranged)}`, { headers: { range: 'bytes=1000000-1999999' } })
    const body = Buffer.from(await res.arrayBuffer())
    t.equal(res.status, 206, 'partial content, not a 503')
    t.equal(res.headers.get('content-range'), `bytes 1000000-1999999/${ranged.length}`)
    t.ok(body.equals(ranged.subarray(1_000_000, 2_000_000)), `exactly those bytes (${body.length})`)
    await waitFor('the whole blob to be cached by that fill', async () => {
      const again = await get(`/v2/bad/lib/app/blobs/${sha(ranged)}`, { headers: { range: 'bytes=0-9' } })
      const b = Buffer.from(await again.arrayBuffer())
      return again.status === 206 && b.equals(ranged.subarray(0, 10)) && hits.get(`/v2/lib/app/blobs/${sha(ranged)}`) === 1 ? true : undefined
    }, 10_000)
    t.equal(hits.get(`/v2/lib/app/blobs/${sha(ranged)}`), 1, 'one upstream download served the range and the cache')
    const wrongRange = await get(`/v2/bad/lib/app/blobs/${wrongDigest}`, { headers: { range: 'bytes=1000-1999' } })
    const got = await wrongRange.arrayBuffer().then((b) => Buffer.from(b), () => undefined)
    t.ok(wrongRange.status !== 206 || got === undefined || got.length < 1000, `a range of bytes that fail their digest is not answered whole (${wrongRange.status}, ${got?.length ?? 'cut'} bytes)`)
  })

  await t.test('pushes to a remote repository are refused', async (t) => {
    const res = await get('/v2/bad/lib/app/blobs/uploads/', { method: 'POST' })
    t.equal(res.status, 403)
    t.match((await errorOf(res)).message, /read-only cache .* pushes are refused/)
  })
})
