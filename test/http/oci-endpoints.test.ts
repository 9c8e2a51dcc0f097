/**
 * The OCI Distribution endpoints, one group per spec ID (end-1 … end-13), plus the catalog,
 * upload cancel and what docker relies on. Each runs against an in-process node over real HTTP.
 */
import t from 'tap'
import { startInProcess, OPEN_ANONYMOUS, type InProcessNode } from '../helpers/inproc.js'
import {
  blob, descriptor, errorCode, image, pushBlob, pushImage, sha256, sha512,
  DOCKER_LIST, DOCKER_MANIFEST, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST,
} from '../helpers/oci.js'

let node: InProcessNode
let base: string
// These tests exercise the protocol, not access control (test/auth/ does): anonymous may do everything.
t.before(async () => { node = await startInProcess({ auth: { anonymous: OPEN_ANONYMOUS } }); base = node.url })
t.teardown(async () => { await node.stop() })

t.test('end-1 GET /v2/ answers 200 with the API version header (401 and a challenge without credentials)', async (t) => {
  const anon = await fetch(`${base}/v2/`)
  await anon.arrayBuffer()
  t.equal(anon.status, 401, 'without credentials: challenged, even on a node open to anonymous callers')
  t.match(anon.headers.get('www-authenticate') ?? '', /^Bearer realm=/)
  const token = (await (await fetch(`${base}/token?service=flotilla`)).json() as { token: string }).token
  const res = await fetch(`${base}/v2/`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 200)
  t.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0')
  t.same(await res.json(), {})
})

t.test('end-2 blob GET and HEAD', async (t) => {
  const b = blob('hello blob')
  await pushBlob(base, 'e2/repo', b)
  const get = await fetch(`${base}/v2/e2/repo/blobs/${b.digest}`)
  t.equal(get.status, 200)
  t.equal(get.headers.get('docker-content-digest'), b.digest)
  t.equal(get.headers.get('content-length'), String(b.size))
  t.equal(Buffer.from(await get.arrayBuffer()).toString(), 'hello blob')
  const head = await fetch(`${base}/v2/e2/repo/blobs/${b.digest}`, { method: 'HEAD' })
  t.equal(head.status, 200)
  for (const h of ['docker-content-digest', 'content-length', 'content-type', 'etag']) t.equal(head.headers.get(h), get.headers.get(h), `HEAD ${h} equals GET's`)
  t.equal((await head.arrayBuffer()).byteLength, 0)

  t.test('Range gives 206 with Content-Range', async (t) => {
    const r = await fetch(`${base}/v2/e2/repo/blobs/${b.digest}`, { headers: { Range: 'bytes=1-4' } })
    t.equal(r.status, 206)
    t.equal(r.headers.get('content-range'), `bytes 1-4/${b.size}`)
    t.equal(await r.text(), 'ello')
    const suffix = await fetch(`${base}/v2/e2/repo/blobs/${b.digest}`, { headers: { Range: 'bytes=-4' } })
    t.equal(suffix.status, 206)
    t.equal(await suffix.text(), 'blob')
    const open = await fetch(`${base}/v2/e2/repo/blobs/${b.digest}`, { headers: { Range: 'bytes=6-' } })
    t.equal(await open.text(), 'blob')
    const bad = await fetch(`${base}/v2/e2/repo/blobs/${b.digest}`, { headers: { Range: 'bytes=100-200' } })
    t.equal(bad.status, 416)
    t.equal(bad.headers.get('content-range'), `bytes */${b.size}`)
    await bad.arrayBuffer()
  })

  t.test('a blob not linked in the repository is BLOB_UNKNOWN there', async (t) => {
    const res = await fetch(`${base}/v2/e2/other/blobs/${b.digest}`)
    t.equal(res.status, 404)
    t.equal(await errorCode(res), 'BLOB_UNKNOWN')
    const missing = await fetch(`${base}/v2/e2/repo/blobs/${sha256('nope')}`)
    t.equal(missing.status, 404)
    t.equal(await errorCode(missing), 'BLOB_UNKNOWN')
    const head = await fetch(`${base}/v2/e2/repo/blobs/${sha256('nope')}`, { method: 'HEAD' })
    t.equal(head.status, 404)
  })
})

t.test('end-3 manifest GET and HEAD by tag and by digest', async (t) => {
  const img = image()
  await pushImage(base, 'e3/repo', img, 'v1')
  for (const ref of ['v1', img.digest]) {
    const get = await fetch(`${base}/v2/e3/repo/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } })
    t.equal(get.status, 200)
    t.equal(get.headers.get('content-type'), OCI_MANIFEST)
    t.equal(get.headers.get('docker-content-digest'), img.digest)
    const body = Buffer.from(await get.arrayBuffer())
    t.ok(body.equals(img.manifest), 'bytes exactly as pushed')
    const head = await fetch(`${base}/v2/e3/repo/manifests/${ref}`, { method: 'HEAD' })
    t.equal(head.status, 200)
    t.equal(head.headers.get('content-length'), String(img.manifest.length))
    t.equal(head.headers.get('docker-content-digest'), img.digest)
    t.equal(head.headers.get('content-type'), OCI_MANIFEST)
  }
  const missing = await fetch(`${base}/v2/e3/repo/manifests/nope`)
  t.equal(missing.status, 404)
  t.equal(await errorCode(missing), 'MANIFEST_UNKNOWN')
  const missingHead = await fetch(`${base}/v2/e3/repo/manifests/${sha256('x')}`, { method: 'HEAD' })
  t.equal(missingHead.status, 404)
})

t.test('end-4a/end-6 POST then PUT a single chunk', async (t) => {
  const b = blob('two step upload')
  const post = await fetch(`${base}/v2/e4/repo/blobs/uploads/`, { method: 'POST' })
  t.equal(post.status, 202)
  const loc = post.headers.get('location')!
  t.match(loc, /^\/v2\/e4\/repo\/blobs\/uploads\/[A-Za-z0-9_-]+$/)
  t.ok(post.headers.get('docker-upload-uuid'))
  const put = await fetch(`${base}${loc}?digest=${b.digest}`, { method: 'PUT', headers: { 'Content-Type': 'application/octet-stream' }, body: b.data })
  t.equal(put.status, 201)
  t.equal(put.headers.get('location'), `/v2/e4/repo/blobs/${b.digest}`)
  t.equal(put.headers.get('docker-content-digest'), b.digest)
  const get = await fetch(`${base}/v2/e4/repo/blobs/${b.digest}`)
  t.equal(await get.text(), 'two step upload')
})

t.test('end-4b monolithic POST ?digest=', async (t) => {
  const b = blob('monolithic')
  const res = await pushBlob(base, 'e4b/repo', b)
  t.equal(res.status, 201)
  t.equal(res.headers.get('location'), `/v2/e4b/repo/blobs/${b.digest}`)
  const bad = await fetch(`${base}/v2/e4b/repo/blobs/uploads/?digest=${sha256('other')}`, { method: 'POST', body: 'monolithic' })
  t.equal(bad.status, 400)
  t.equal(await errorCode(bad), 'DIGEST_INVALID')
  const absent = await fetch(`${base}/v2/e4b/repo/blobs/${sha256('other')}`)
  t.equal(absent.status, 404, 'a mismatched upload leaves nothing behind')
})

t.test('end-5 chunked PATCH with Content-Range, 416 out of order, then end-6', async (t) => {
  const data = Buffer.from('0123456789abcdefghij')
  const digest = sha256(data)
  const post = await fetch(`${base}/v2/e5/repo/blobs/uploads/`, { method: 'POST' })
  let loc = post.headers.get('location')!
  const p1 = await fetch(`${base}${loc}`, { method: 'PATCH', headers: { 'Content-Range': '0-9', 'Content-Length': '10', 'Content-Type': 'application/octet-stream' }, body: data.subarray(0, 10) })
  t.equal(p1.status, 202)
  t.equal(p1.headers.get('range'), '0-9')
  loc = p1.headers.get('location')!
  const skip = await fetch(`${base}${loc}`, { method: 'PATCH', headers: { 'Content-Range': '15-19', 'Content-Length': '5' }, body: data.subarray(15) })
  t.equal(skip.status, 416, 'a chunk that skips bytes is out of order')
  await skip.arrayBuffer()
  const again = await fetch(`${base}${loc}`, { method: 'PATCH', headers: { 'Content-Range': '0-9', 'Content-Length': '10' }, body: data.subarray(0, 10) })
  t.equal(again.status, 416, 'a chunk that repeats bytes is out of order')
  await again.arrayBuffer()
  const p2 = await fetch(`${base}${loc}`, { method: 'PATCH', headers: { 'Content-Range': '10-19', 'Content-Length': '10' }, body: data.subarray(10) })
  t.equal(p2.status, 202)
  t.equal(p2.headers.get('range'), '0-19')
  const put = await fetch(`${base}${p2.headers.get('location')!}?digest=${digest}`, { method: 'PUT' })
  t.equal(put.status, 201)
  t.equal(await (await fetch(`${base}/v2/e5/repo/blobs/${digest}`)).text(), data.toString())
})

t.test('end-5 streamed PATCH without Content-Range (docker)', async (t) => {
  const data = Buffer.alloc(3 * 1024 * 1024, 7)
  const digest = sha256(data)
  const post = await fetch(`${base}/v2/e5s/repo/blobs/uploads/`, { method: 'POST' })
  const patch = await fetch(`${base}${post.headers.get('location')!}`, {
    method: 'PATCH',
    body: new ReadableStream({ start (c) { c.enqueue(data.subarray(0, 1_000_000)); c.enqueue(data.subarray(1_000_000)); c.close() } }),
    duplex: 'half',
  } as RequestInit)
  t.equal(patch.status, 202)
  t.equal(patch.headers.get('range'), `0-${data.length - 1}`)
  const put = await fetch(`${base}${patch.headers.get('location')!}?digest=${digest}`, { method: 'PUT' })
  t.equal(put.status, 201)
  const head = await fetch(`${base}/v2/e5s/repo/blobs/${digest}`, { method: 'HEAD' })
  t.equal(head.headers.get('content-length'), String(data.length))
})

t.test('end-6 PUT with the final chunk and with a wrong digest', async (t) => {
  const data = Buffer.from('first part, last part')
  const post = await fetch(`${base}/v2/e6/repo/blobs/uploads/`, { method: 'POST' })
  const p1 = await fetch(`${base}${post.headers.get('location')!}`, { method: 'PATCH', headers: { 'Content-Range': '0-10', 'Content-Length': '11' }, body: data.subarray(0, 11) })
  const loc = p1.headers.get('location')!
  const wrong = await fetch(`${base}${loc}?digest=${sha256('something else')}`, { method: 'PUT', headers: { 'Content-Range': '11-20', 'Content-Length': '10' }, body: data.subarray(11) })
  t.equal(wrong.status, 400)
  t.equal(await errorCode(wrong), 'DIGEST_INVALID')
  const status = await fetch(`${base}${loc}`)
  t.equal(status.status, 204, 'the upload survives a digest mismatch')
  t.equal(status.headers.get('range'), '0-20')
  const right = await fetch(`${base}${loc}?digest=${sha256(data)}`, { method: 'PUT' })
  t.equal(right.status, 201)
  const noDigest = await fetch(`${base}/v2/e6/repo/blobs/uploads/`, { method: 'POST' })
  const missing = await fetch(`${base}${noDigest.headers.get('location')!}`, { method: 'PUT' })
  t.equal(missing.status, 400)
  t.equal(await errorCode(missing), 'DIGEST_INVALID')
  const gone = await fetch(`${base}${loc}`)
  t.equal(gone.status, 404, 'a completed upload is gone')
  t.equal(await errorCode(gone), 'BLOB_UPLOAD_UNKNOWN')
})

t.test('end-6 sha512 uploads', async (t) => {
  const data = Buffer.from('hashed with sha512')
  const post = await fetch(`${base}/v2/e6/sha512/blobs/uploads/?digest-algorithm=sha512`, { method: 'POST' })
  t.equal(post.status, 202)
  const put = await fetch(`${base}${post.headers.get('location')!}?digest=${sha512(data)}`, { method: 'PUT', body: data })
  t.equal(put.status, 201)
  const get = await fetch(`${base}/v2/e6/sha512/blobs/${sha512(data)}`)
  t.equal(get.status, 200)
  t.equal(get.headers.get('docker-content-digest'), sha512(data))
  t.equal(await get.text(), data.toString())
})

t.test('end-7 manifest PUT: OCI, Docker schema 2, indexes, artifacts, podman bodies', async (t) => {
  const oci = image()
  const res = await pushImage(base, 'e7/repo', oci, 'latest')
  t.equal(res.headers.get('docker-content-digest'), oci.digest)
  t.equal(res.headers.get('location'), `/v2/e7/repo/manifests/${oci.digest}`)

  const dock = image({ mediaType: DOCKER_MANIFEST })
  await pushImage(base, 'e7/repo', dock, 'docker')
  t.equal((await fetch(`${base}/v2/e7/repo/manifests/docker`)).headers.get('content-type'), DOCKER_MANIFEST)

  for (const [mt, tag] of [[OCI_INDEX, 'index'], [DOCKER_LIST, 'list']] as const) {
    const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: mt, manifests: [{ ...descriptor({ mediaType: oci.mediaType, digest: oci.digest, size: oci.manifest.length }), platform: { architecture: 'amd64', os: 'linux' } }] }))
    const put = await fetch(`${base}/v2/e7/repo/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': mt }, body: idx })
    t.equal(put.status, 201, `${mt} accepted`)
    t.equal(put.headers.get('docker-content-digest'), sha256(idx))
  }

  // podman: no mediaType in the body, only in Content-Type.
  const bare = image({ seed: 'podman' })
  for (const b of [bare.config, ...bare.layers]) await pushBlob(base, 'e7/repo', b)
  const doc = JSON.parse(bare.manifest.toString()) as Record<string, unknown>
  delete doc.mediaType
  const body = Buffer.from(JSON.stringify(doc))
  const put = await fetch(`${base}/v2/e7/repo/manifests/podman`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body })
  t.equal(put.status, 201)
  const got = await fetch(`${base}/v2/e7/repo/manifests/podman`)
  t.equal(got.headers.get('content-type'), OCI_MANIFEST)
  t.ok(Buffer.from(await got.arrayBuffer()).equals(body), 'stored byte for byte')

  // An OCI 1.1 artifact with the empty config.
  const empty = blob('{}', OCI_EMPTY)
  await pushBlob(base, 'e7/repo', empty)
  const art = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.example.sbom', config: descriptor(empty), layers: [descriptor(empty)] }))
  const artPut = await fetch(`${base}/v2/e7/repo/manifests/${sha256(art)}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: art })
  t.equal(artPut.status, 201)

  t.test('several ?tag= on one PUT', async (t) => {
    const img = image()
    for (const b of [img.config, ...img.layers]) await pushBlob(base, 'e7/tags', b)
    const r = await fetch(`${base}/v2/e7/tags/manifests/${img.digest}?tag=a&tag=b`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: img.manifest })
    t.equal(r.status, 201)
    const list = await (await fetch(`${base}/v2/e7/tags/tags/list`)).json() as { tags: string[] }
    t.same(list.tags, ['a', 'b'])
  })

  t.test('a tag moves to a newer manifest', async (t) => {
    const a = image()
    const b = image()
    await pushImage(base, 'e7/move', a, 'v')
    await pushImage(base, 'e7/move', b, 'v')
    t.equal((await fetch(`${base}/v2/e7/move/manifests/v`, { method: 'HEAD' })).headers.get('docker-content-digest'), b.digest)
  })

  t.test('errors: missing blobs, missing children, wrong digest, too large', async (t) => {
    const img = image()
    await pushBlob(base, 'e7/err', img.config)
    const r = await fetch(`${base}/v2/e7/err/manifests/x`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: img.manifest })
    t.equal(r.status, 400)
    t.equal(await errorCode(r), 'MANIFEST_BLOB_UNKNOWN')
    const idx = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256('absent'), size: 10 }] })
    const ri = await fetch(`${base}/v2/e7/err/manifests/i`, { method: 'PUT', headers: { 'Content-Type': OCI_INDEX }, body: idx })
    t.equal(ri.status, 400)
    t.equal(await errorCode(ri), 'MANIFEST_BLOB_UNKNOWN')
    const rd = await fetch(`${base}/v2/e7/repo/manifests/${sha256('not this')}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: oci.manifest })
    t.equal(rd.status, 400)
    t.equal(await errorCode(rd), 'DIGEST_INVALID')
    const big = Buffer.alloc(4 * 1024 * 1024 + 1, 32)
    const rb = await fetch(`${base}/v2/e7/repo/manifests/big`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: big })
    t.equal(rb.status, 413)
    t.equal(await errorCode(rb), 'SIZE_INVALID')
  })

  t.test('a 4 MiB manifest is accepted', async (t) => {
    const img = image({ extra: { annotations: { pad: 'x'.repeat(4 * 1024 * 1024 - 2000) } } })
    t.ok(img.manifest.length <= 4 * 1024 * 1024)
    const r = await pushImage(base, 'e7/big', img, 'big')
    t.equal(r.status, 201)
  })
})

t.test('end-8a/8b tag list with n, last and Link', async (t) => {
  const img = image()
  for (const b of [img.config, ...img.layers]) await pushBlob(base, 'e8/repo', b)
  const tags = ['b', 'a', 'c', 'E', '1.0', 'd']
  for (const tag of tags) {
    await fetch(`${base}/v2/e8/repo/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: img.manifest }).then(async (r) => await r.arrayBuffer())
  }
  const all = await fetch(`${base}/v2/e8/repo/tags/list`)
  t.equal(all.status, 200)
  t.same(await all.json(), { name: 'e8/repo', tags: [...tags].sort() })
  const p1 = await fetch(`${base}/v2/e8/repo/tags/list?n=2`)
  t.same((await p1.json() as { tags: string[] }).tags, ['1.0', 'E'])
  t.equal(p1.headers.get('link'), '</v2/e8/repo/tags/list?n=2&last=E>; rel="next"')
  const p2 = await fetch(`${base}/v2/e8/repo/tags/list?n=2&last=E`)
  t.same((await p2.json() as { tags: string[] }).tags, ['a', 'b'])
  const p4 = await fetch(`${base}/v2/e8/repo/tags/list?n=2&last=c`)
  t.same((await p4.json() as { tags: string[] }).tags, ['d'])
  t.equal(p4.headers.get('link'), null, 'no Link on the last page')
  const zero = await fetch(`${base}/v2/e8/repo/tags/list?n=0`)
  t.same((await zero.json() as { tags: string[] }).tags, [])
  const unknown = await fetch(`${base}/v2/e8/none/tags/list`)
  t.equal(unknown.status, 404)
  t.equal(await errorCode(unknown), 'NAME_UNKNOWN')
  const badN = await fetch(`${base}/v2/e8/repo/tags/list?n=-1`)
  t.equal(badN.status, 400)
})

t.test('end-9 DELETE manifests: by digest removes its tags, by tag removes the tag only', async (t) => {
  const img = image()
  await pushImage(base, 'e9/repo', img, 'one')
  await fetch(`${base}/v2/e9/repo/manifests/two`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: img.manifest }).then(async (r) => await r.arrayBuffer())
  const delTag = await fetch(`${base}/v2/e9/repo/manifests/one`, { method: 'DELETE' })
  t.equal(delTag.status, 202)
  t.equal((await fetch(`${base}/v2/e9/repo/manifests/one`)).status, 404)
  t.equal((await fetch(`${base}/v2/e9/repo/manifests/${img.digest}`)).status, 200, 'the manifest stays')
  const del = await fetch(`${base}/v2/e9/repo/manifests/${img.digest}`, { method: 'DELETE' })
  t.equal(del.status, 202)
  t.equal((await fetch(`${base}/v2/e9/repo/manifests/${img.digest}`)).status, 404)
  t.equal((await fetch(`${base}/v2/e9/repo/manifests/two`)).status, 404, 'its tags went with it')
  const again = await fetch(`${base}/v2/e9/repo/manifests/${img.digest}`, { method: 'DELETE' })
  t.equal(again.status, 404)
  t.equal(await errorCode(again), 'MANIFEST_UNKNOWN')
})

t.test('end-10 DELETE blob', async (t) => {
  const b = blob('delete me')
  await pushBlob(base, 'e10/repo', b)
  const del = await fetch(`${base}/v2/e10/repo/blobs/${b.digest}`, { method: 'DELETE' })
  t.equal(del.status, 202)
  t.equal((await fetch(`${base}/v2/e10/repo/blobs/${b.digest}`)).status, 404)
  const again = await fetch(`${base}/v2/e10/repo/blobs/${b.digest}`, { method: 'DELETE' })
  t.equal(again.status, 404)
  t.equal(await errorCode(again), 'BLOB_UNKNOWN')
})

t.test('end-11 cross-repository mount, with and without from', async (t) => {
  const b = blob('mount me')
  await pushBlob(base, 'e11/src', b)
  const m = await fetch(`${base}/v2/e11/dst/blobs/uploads/?mount=${b.digest}&from=e11/src`, { method: 'POST' })
  t.equal(m.status, 201)
  t.equal(m.headers.get('location'), `/v2/e11/dst/blobs/${b.digest}`)
  t.equal(await (await fetch(`${base}/v2/e11/dst/blobs/${b.digest}`)).text(), 'mount me')
  const nofrom = await fetch(`${base}/v2/e11/other/blobs/uploads/?mount=${b.digest}`, { method: 'POST' })
  t.equal(nofrom.status, 201, 'mount without from finds the blob anywhere')
  const wrongFrom = await fetch(`${base}/v2/e11/third/blobs/uploads/?mount=${b.digest}&from=e11/empty`, { method: 'POST' })
  t.equal(wrongFrom.status, 202, 'a blob not in from falls back to an upload session')
  t.match(wrongFrom.headers.get('location'), /\/v2\/e11\/third\/blobs\/uploads\//)
  const unknown = await fetch(`${base}/v2/e11/third/blobs/uploads/?mount=${sha256('absent')}&from=e11/src`, { method: 'POST' })
  t.equal(unknown.status, 202)
})

t.test('end-12a/12b referrers with the artifactType filter and OCI-Subject', async (t) => {
  const subject = image()
  await pushImage(base, 'e12/repo', subject, 'app')
  const empty = blob('{}', OCI_EMPTY)
  await pushBlob(base, 'e12/repo', empty)
  const mk = (artifactType: string, n: string): Buffer => Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType,
    config: descriptor(empty), layers: [descriptor(empty)],
    subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.manifest.length },
    annotations: { n },
  }))
  const sig = mk('application/vnd.example.signature', '1')
  const sbom = mk('application/vnd.example.sbom', '2')
  for (const body of [sig, sbom]) {
    const r = await fetch(`${base}/v2/e12/repo/manifests/${sha256(body)}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body })
    t.equal(r.status, 201)
    t.equal(r.headers.get('oci-subject'), subject.digest)
  }
  const all = await fetch(`${base}/v2/e12/repo/referrers/${subject.digest}`)
  t.equal(all.status, 200)
  t.equal(all.headers.get('content-type'), OCI_INDEX)
  const idx = await all.json() as { manifests: Array<{ digest: string; artifactType: string; annotations: Record<string, string>; size: number }> }
  t.equal(idx.manifests.length, 2)
  t.same(idx.manifests.map((m) => m.digest).sort(), [sha256(sig), sha256(sbom)].sort())
  const one = idx.manifests.find((m) => m.digest === sha256(sbom))!
  t.equal(one.artifactType, 'application/vnd.example.sbom')
  t.same(one.annotations, { n: '2' })
  t.equal(one.size, sbom.length)
  const filtered = await fetch(`${base}/v2/e12/repo/referrers/${subject.digest}?artifactType=application/vnd.example.sbom`)
  t.equal(filtered.headers.get('oci-filters-applied'), 'artifactType')
  t.same((await filtered.json() as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest), [sha256(sbom)])
  const none = await fetch(`${base}/v2/e12/repo/referrers/${sha256('nothing')}`)
  t.equal(none.status, 200)
  t.same((await none.json() as { manifests: unknown[] }).manifests, [])
  const bad = await fetch(`${base}/v2/e12/repo/referrers/sha256:xyz`)
  t.equal(bad.status, 400)
  t.equal(await errorCode(bad), 'DIGEST_INVALID')
  // Deleting a referrer removes it from the list.
  await fetch(`${base}/v2/e12/repo/manifests/${sha256(sig)}`, { method: 'DELETE' })
  const after = await (await fetch(`${base}/v2/e12/repo/referrers/${subject.digest}`)).json() as { manifests: unknown[] }
  t.equal(after.manifests.length, 1)
})

t.test('end-13 GET upload status', async (t) => {
  const post = await fetch(`${base}/v2/e13/repo/blobs/uploads/`, { method: 'POST' })
  const loc = post.headers.get('location')!
  const s0 = await fetch(`${base}${loc}`)
  t.equal(s0.status, 204)
  t.equal(s0.headers.get('range'), '0-0')
  t.equal(s0.headers.get('location'), loc)
  await fetch(`${base}${loc}`, { method: 'PATCH', body: 'abcde' }).then(async (r) => await r.arrayBuffer())
  const s1 = await fetch(`${base}${loc}`)
  t.equal(s1.headers.get('range'), '0-4')
  const unknown = await fetch(`${base}/v2/e13/repo/blobs/uploads/doesnotexist123`)
  t.equal(unknown.status, 404)
  t.equal(await errorCode(unknown), 'BLOB_UPLOAD_UNKNOWN')
  const otherRepo = await fetch(`${base}/v2/e13/other/blobs/uploads/${loc.split('/').pop()!}`)
  t.equal(otherRepo.status, 404, 'an upload belongs to its repository')
})

t.test('DELETE of an upload session cancels it', async (t) => {
  const post = await fetch(`${base}/v2/cancel/repo/blobs/uploads/`, { method: 'POST' })
  const loc = post.headers.get('location')!
  await fetch(`${base}${loc}`, { method: 'PATCH', body: 'partial' }).then(async (r) => await r.arrayBuffer())
  const del = await fetch(`${base}${loc}`, { method: 'DELETE' })
  t.equal(del.status, 204)
  const after = await fetch(`${base}${loc}`)
  t.equal(after.status, 404)
  t.equal(await errorCode(after), 'BLOB_UPLOAD_UNKNOWN')
  const put = await fetch(`${base}${loc}?digest=${sha256('partial')}`, { method: 'PUT' })
  t.equal(put.status, 404)
})

t.test('GET /v2/_catalog with pagination', async (t) => {
  const res = await fetch(`${base}/v2/_catalog`)
  t.equal(res.status, 200)
  const { repositories } = await res.json() as { repositories: string[] }
  t.ok(repositories.includes('e3/repo'))
  t.same(repositories, [...repositories].sort(), 'lexical order')
  const p1 = await fetch(`${base}/v2/_catalog?n=3`)
  const first = (await p1.json() as { repositories: string[] }).repositories
  t.equal(first.length, 3)
  const link = p1.headers.get('link')!
  t.match(link, /^<\/v2\/_catalog\?n=3&last=[^>]+>; rel="next"$/)
  const next = await fetch(`${base}${link.slice(1, link.indexOf('>'))}`)
  const second = (await next.json() as { repositories: string[] }).repositories
  t.same(second, repositories.slice(3, 6))
})
