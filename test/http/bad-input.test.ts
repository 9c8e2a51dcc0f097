/**
 * Bad input, as a table: every request here is malformed or hostile, and each must get the
 * spec's status and error code, never a 500, and leave the registry serving and intact.
 */
import t from 'tap'
import { request } from 'node:http'
import { startInProcess, OPEN_ANONYMOUS, type InProcessNode } from '../helpers/inproc.js'
import { blob, descriptor, image, pushBlob, pushImage, sha256, OCI_INDEX, OCI_MANIFEST } from '../helpers/oci.js'

let node: InProcessNode
let base: string
const good = image({ seed: 'bad-input' })
t.before(async () => {
  // Protocol tests, not access control (test/auth/ covers that): anonymous may do everything.
  node = await startInProcess({ auth: { anonymous: OPEN_ANONYMOUS } })
  base = node.url
  await pushImage(base, 'ok/repo', good, 'v1')
})
t.teardown(async () => { await node.stop() })

async function rawRequest (method: string, path: string, headers: Record<string, string>, body?: string | Buffer): Promise<{ status: number; text: string }> {
  const url = new URL(base)
  return await new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

interface Case {
  name: string
  method: string
  path: string | (() => Promise<string>)
  headers?: Record<string, string>
  body?: string | Buffer
  status: number
  code?: string
}

const hex = 'a'.repeat(64)
const manifestPut = (body: string | Buffer, contentType = OCI_MANIFEST): Pick<Case, 'method' | 'headers' | 'body'> => ({ method: 'PUT', headers: { 'Content-Type': contentType }, body })
async function newUpload (): Promise<string> {
  const r = await fetch(`${base}/v2/ok/repo/blobs/uploads/`, { method: 'POST' })
  return r.headers.get('location')!
}

const cases: Case[] = [
  // Names and path tricks
  { name: 'uppercase name', method: 'GET', path: '/v2/Bad/Repo/tags/list', status: 400, code: 'NAME_INVALID' },
  { name: 'dot-dot component', method: 'GET', path: '/v2/a/../b/tags/list', status: 400, code: 'NAME_INVALID' },
  { name: 'percent-encoded dot-dot', method: 'GET', path: '/v2/a/%2e%2e/b/manifests/latest', status: 400, code: 'NAME_INVALID' },
  { name: 'percent-encoded slash dot-dot', method: 'GET', path: '/v2/a%2f..%2f..%2fetc/blobs/sha256:' + hex, status: 400, code: 'NAME_INVALID' },
  { name: 'leading separator', method: 'GET', path: '/v2/-abc/tags/list', status: 400, code: 'NAME_INVALID' },
  { name: 'trailing separator', method: 'GET', path: '/v2/abc-/tags/list', status: 400, code: 'NAME_INVALID' },
  { name: 'empty component', method: 'GET', path: '/v2/a//b/tags/list', status: 400, code: 'NAME_INVALID' },
  { name: 'name too long', method: 'GET', path: `/v2/${'a'.repeat(256)}/tags/list`, status: 400, code: 'NAME_INVALID' },
  { name: 'invalid percent-encoding', method: 'GET', path: '/v2/a%zz/tags/list', status: 400, code: 'NAME_INVALID' },
  { name: 'NUL in name', method: 'GET', path: '/v2/a%00b/tags/list', status: 400, code: 'NAME_INVALID' },
  // Issue 10: %2F must never become a path separator (it named ok/repo here, past checks on the raw path).
  { name: 'percent-encoded slash in a name (ok%2Frepo)', method: 'GET', path: '/v2/ok%2Frepo/manifests/v1', status: 400, code: 'NAME_INVALID' },
  { name: 'percent-encoded slash in a name, lowercase (ok%2frepo)', path: '/v2/ok%2frepo/manifests/v9', ...manifestPut(good.manifest), status: 400, code: 'NAME_INVALID' },
  { name: 'unknown endpoint', method: 'GET', path: '/v2/ok/repo/nothing/here', status: 404 },
  { name: 'unsupported method on manifests', method: 'POST', path: '/v2/ok/repo/manifests/v1', status: 405, code: 'UNSUPPORTED' },
  { name: 'unsupported method on blobs', method: 'PUT', path: `/v2/ok/repo/blobs/sha256:${hex}`, status: 405, code: 'UNSUPPORTED' },
  // Digests
  { name: 'blob digest without algorithm', method: 'GET', path: `/v2/ok/repo/blobs/${hex}`, status: 400, code: 'DIGEST_INVALID' },
  { name: 'blob digest with short hex', method: 'GET', path: '/v2/ok/repo/blobs/sha256:abc', status: 400, code: 'DIGEST_INVALID' },
  { name: 'blob digest with uppercase hex', method: 'GET', path: `/v2/ok/repo/blobs/sha256:${'A'.repeat(64)}`, status: 400, code: 'DIGEST_INVALID' },
  { name: 'unsupported digest algorithm', method: 'GET', path: `/v2/ok/repo/blobs/md5:${'a'.repeat(32)}`, status: 400, code: 'DIGEST_INVALID' },
  { name: 'manifest digest malformed', method: 'GET', path: '/v2/ok/repo/manifests/sha256:bad', status: 400, code: 'DIGEST_INVALID' },
  { name: 'manifest HEAD digest malformed', method: 'HEAD', path: '/v2/ok/repo/manifests/sha256:zz', status: 400 },
  // The conformance suite's .INVALID_MANIFEST_NAME: no manifest has such a name, so 404 (as the CNCF registry answers).
  { name: 'invalid tag (conformance: .INVALID_MANIFEST_NAME)', method: 'GET', path: '/v2/ok/repo/manifests/.INVALID_MANIFEST_NAME', status: 404, code: 'MANIFEST_UNKNOWN' },
  { name: 'invalid tag, HEAD', method: 'HEAD', path: '/v2/ok/repo/manifests/-tag', status: 404 },
  { name: 'tag too long', method: 'GET', path: `/v2/ok/repo/manifests/${'t'.repeat(129)}`, status: 404, code: 'MANIFEST_UNKNOWN' },
  { name: 'invalid tag on PUT stays 400', method: 'PUT', path: '/v2/ok/repo/manifests/-tag', status: 400, code: 'MANIFEST_INVALID' },
  { name: 'monolithic upload with malformed digest', method: 'POST', path: '/v2/ok/repo/blobs/uploads/?digest=sha256:nothex', body: 'x', status: 400, code: 'DIGEST_INVALID' },
  { name: 'monolithic upload whose content does not match', method: 'POST', path: `/v2/ok/repo/blobs/uploads/?digest=${sha256('expected')}`, body: 'actual', status: 400, code: 'DIGEST_INVALID' },
  { name: 'mount with malformed digest', method: 'POST', path: '/v2/ok/repo/blobs/uploads/?mount=nope&from=ok/repo', status: 400, code: 'DIGEST_INVALID' },
  { name: 'mount from invalid name', method: 'POST', path: `/v2/ok/repo/blobs/uploads/?mount=sha256:${hex}&from=../x`, status: 400, code: 'NAME_INVALID' },
  { name: 'unsupported digest-algorithm', method: 'POST', path: '/v2/ok/repo/blobs/uploads/?digest-algorithm=md5', status: 400, code: 'DIGEST_INVALID' },
  { name: 'PUT upload with malformed digest', method: 'PUT', path: async () => `${await newUpload()}?digest=sha256:123`, status: 400, code: 'DIGEST_INVALID' },
  { name: 'PUT upload whose content does not match', method: 'PUT', path: async () => `${await newUpload()}?digest=${sha256('other')}`, body: 'content', status: 400, code: 'DIGEST_INVALID' },
  // Upload sessions and ranges
  { name: 'unknown upload id', method: 'PATCH', path: '/v2/ok/repo/blobs/uploads/abcdefgh12345678', body: 'x', status: 404, code: 'BLOB_UPLOAD_UNKNOWN' },
  { name: 'upload id with path tricks', method: 'GET', path: '/v2/ok/repo/blobs/uploads/..%2F..%2Fmeta', status: 404, code: 'BLOB_UPLOAD_UNKNOWN' },
  { name: 'Content-Range not starting at 0', method: 'PATCH', path: newUpload, headers: { 'Content-Range': '5-9' }, body: '12345', status: 416 },
  { name: 'Content-Range malformed', method: 'PATCH', path: newUpload, headers: { 'Content-Range': 'bytes=zero-ten' }, body: '12345', status: 416 },
  { name: 'Content-Range backwards', method: 'PATCH', path: newUpload, headers: { 'Content-Range': '9-0' }, body: '12345', status: 416 },
  { name: 'Content-Range disagrees with the body length', method: 'PATCH', path: newUpload, headers: { 'Content-Range': '0-99' }, body: '12345', status: 400, code: 'SIZE_INVALID' },
  { name: 'blob Range past the end', method: 'GET', path: `/v2/ok/repo/blobs/${good.config.digest}`, headers: { Range: 'bytes=999999-' }, status: 416 },
  // Manifests
  { name: 'manifest that is not JSON', path: '/v2/ok/repo/manifests/bad', ...manifestPut('{not json'), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'manifest that is a JSON array', path: '/v2/ok/repo/manifests/bad', ...manifestPut('[]'), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'empty manifest body', path: '/v2/ok/repo/manifests/bad', ...manifestPut(''), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'manifest with schemaVersion 1', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }), 'application/vnd.docker.distribution.manifest.v1+prettyjws'), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'manifest with unknown media type', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: 'application/x-unknown', config: descriptor(good.config), layers: [] }), 'application/x-unknown'), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'manifest without config', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] })), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'manifest with a malformed layer digest', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(good.config), layers: [{ mediaType: 'x', digest: 'sha256:1', size: 1 }] })), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'manifest with a negative size', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...descriptor(good.config), size: -1 }, layers: [] })), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'manifest referencing a missing blob', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(good.config), layers: [descriptor(blob('never pushed'))] })), status: 400, code: 'MANIFEST_BLOB_UNKNOWN' },
  { name: 'index referencing a missing manifest', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256('x'), size: 1 }] }), OCI_INDEX), status: 400, code: 'MANIFEST_BLOB_UNKNOWN' },
  { name: 'body mediaType contradicts Content-Type', path: '/v2/ok/repo/manifests/bad', ...manifestPut(good.manifest, OCI_INDEX), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'manifest over 4 MiB', path: '/v2/ok/repo/manifests/bad', ...manifestPut(Buffer.alloc(4 * 1024 * 1024 + 10, 0x20)), status: 413, code: 'SIZE_INVALID' },
  { name: 'manifest PUT by a digest that does not match', path: `/v2/ok/repo/manifests/${sha256('other')}`, ...manifestPut(good.manifest), status: 400, code: 'DIGEST_INVALID' },
  { name: 'manifest PUT with an invalid extra tag', path: '/v2/ok/repo/manifests/v2?tag=-bad', ...manifestPut(good.manifest), status: 400, code: 'MANIFEST_INVALID' },
  // Issue 10: manifest hygiene.
  { name: 'a descriptor whose size differs from the stored blob', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...descriptor(good.config), size: good.config.size + 1 }, layers: good.layers.map(descriptor) })), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'two descriptors of one blob with different sizes', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(good.config), layers: [descriptor(good.layers[0]!), { ...descriptor(good.layers[0]!), size: 1 }] })), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'an index whose child descriptor has the wrong size', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: good.digest, size: good.manifest.length + 7 }] }), OCI_INDEX), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'a Content-Type that is no manifest type (application/json)', path: '/v2/ok/repo/manifests/bad', ...manifestPut(good.manifest, 'application/json'), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'no mediaType in the body and a Content-Type that is no manifest type', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, config: descriptor(good.config), layers: good.layers.map(descriptor) }), 'text/plain'), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'neither a mediaType in the body nor a Content-Type', path: '/v2/ok/repo/manifests/bad', method: 'PUT', body: JSON.stringify({ schemaVersion: 2, config: descriptor(good.config), layers: good.layers.map(descriptor) }), status: 400, code: 'MANIFEST_INVALID' },
  { name: 'manifest with a non-string annotation', path: '/v2/ok/repo/manifests/bad', ...manifestPut(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(good.config), layers: [], annotations: { a: 1 } })), status: 400, code: 'MANIFEST_INVALID' },
  // Listings
  { name: 'tag list with n not a number', method: 'GET', path: '/v2/ok/repo/tags/list?n=abc', status: 400 },
  { name: 'catalog with a negative n', method: 'GET', path: '/v2/_catalog?n=-5', status: 400 },
  { name: 'referrers of a malformed digest', method: 'GET', path: '/v2/ok/repo/referrers/sha256:short', status: 400, code: 'DIGEST_INVALID' },
  { name: 'catalog POST', method: 'POST', path: '/v2/_catalog', status: 405 },
]

for (const c of cases) {
  t.test(c.name, async (t) => {
    const path = typeof c.path === 'function' ? await c.path() : c.path
    // node:http sends the path as written; fetch would normalize `..` away.
    const res = await rawRequest(c.method, path, c.headers ?? {}, c.body)
    const text = res.text
    t.equal(res.status, c.status, `${c.method} ${path.slice(0, 80)} → ${res.status} ${text.slice(0, 200)}`)
    if (c.code !== undefined) {
      const body = JSON.parse(text) as { errors: Array<{ code: string; message: string }> }
      t.equal(body.errors[0]?.code, c.code)
      t.ok((body.errors[0]?.message ?? '').length > 0, 'the error has a message')
    }
  })
}

t.test('after all of that the registry still serves the good image intact', async (t) => {
  const res = await fetch(`${base}/v2/ok/repo/manifests/v1`)
  t.equal(res.status, 200)
  t.ok(Buffer.from(await res.arrayBuffer()).equals(good.manifest))
  const tags = await (await fetch(`${base}/v2/ok/repo/tags/list`)).json() as { tags: string[] }
  t.same(tags.tags, ['v1'], 'no bad PUT created a tag')
  for (const b of [good.config, ...good.layers]) {
    const r = await fetch(`${base}/v2/ok/repo/blobs/${b.digest}`)
    t.ok(Buffer.from(await r.arrayBuffer()).equals(b.data))
  }
})

t.test('two Host headers get 400', async (t) => {
  const net = await import('node:net')
  const port = Number(new URL(base).port)
  const answer = await new Promise<string>((resolve) => {
    let got = ''
    const s = net.connect(port, '127.0.0.1', () => s.end('GET /v2/ok/repo/manifests/v1 HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n'))
    s.on('data', (c: Buffer) => { got += c.toString() })
    s.on('close', () => resolve(got))
    s.on('error', () => resolve(got))
  })
  t.match(answer, /^HTTP\/1\.1 400 /, answer.split('\r\n')[0] ?? '')
  t.match(answer, /more than one Host header/)
})

t.test('podman\'s manifests without a mediaType in the body are still taken by their Content-Type', async (t) => {
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, config: descriptor(good.config), layers: good.layers.map(descriptor) }))
  const res = await rawRequest('PUT', '/v2/ok/repo/manifests/podman', { 'Content-Type': OCI_MANIFEST }, body)
  t.equal(res.status, 201, res.text)
})

t.test('a raw request with a broken request line or headers does not crash the node', async (t) => {
  const net = await import('node:net')
  const port = Number(new URL(base).port)
  for (const raw of ['GARBAGE\r\n\r\n', 'GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 'PATCH /v2/ok/repo/blobs/uploads/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n']) {
    await new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.end(raw))
      s.on('data', () => {})
      s.on('close', () => resolve())
      s.on('error', () => resolve())
    })
  }
  const res = await fetch(`${base}/v2/_catalog`)
  t.equal(res.status, 200)
})
