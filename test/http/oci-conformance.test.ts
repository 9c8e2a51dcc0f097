/**
 * The OCI distribution-spec conformance suite (v1.1.x), ported from Go to tap, run logged in
 * against (a) a single node and (b) a follower of a 3-node cluster, both real processes.
 *
 * Ported from github.com/opencontainers/distribution-spec, folder conformance/, the last
 * revisions of the v1.1 layout (ginkgo v2, before the 2025 rewrite into 01_base_api_route_test.go …):
 *   setup.go                   b5f09ebe541c65857e8721d51a7a3d0e2f1d8749  (test data: configs, manifests, referrers)
 *   image.go                   3ec8a56d897bb89d482b41d4aac6ba01519f55f2  (JSON shapes, field order, omitempty)
 *   00_conformance_suite_test  81bb239e0c8eebab51ad43171bf99fc1a39fea6e  (order: Pull, Push, Discovery, Management)
 *   01_pull_test.go            47008ca930b575b3f1cd422414c00d3b0752a7cb
 *   02_push_test.go            11b8e3fba7d2d7329513d0cff53058243c334858
 *   03_discovery_test.go       b5f09ebe541c65857e8721d51a7a3d0e2f1d8749
 *   04_management_test.go      3c7a4ac8186fe1307bac6857bfdb48fc190ed57f
 * and the client the suite drives, github.com/bloodorangeio/reggie (client.go, auth.go, response.go).
 *
 * Names: every tap subtest is `<g.Context> › <g.Context> › <g.Specify>` exactly as in the Go
 * files ("Push › Blob Upload Chunked › Out-of-order blob upload should return 416"), under a
 * parent naming the target; `grep -n 'Out-of-order blob upload' conformance/02_push_test.go`
 * finds the original. The suite's knobs are set as a full run would set them:
 * OCI_TEST_PULL/PUSH/CONTENT_DISCOVERY/CONTENT_MANAGEMENT=1, OCI_AUTOMATIC_CROSSMOUNT=1
 * (Flotilla mounts without `from` from any repository the caller may read),
 * OCI_DELETE_MANIFEST_BEFORE_BLOBS default (true), one OCI_NAMESPACE for all four workflows and
 * a fresh OCI_CROSSMOUNT_NAMESPACE (conformance-<uuid>), OCI_USERNAME/OCI_PASSWORD a user that
 * may read, write and delete there (not the admin).
 *
 * Left out, as they never run in such a run: "Pull › Setup › Get tag name from environment"
 * (RunOnlyIfNot(runPullSetup)), "Content Discovery › Setup › Populate registry with test tags
 * (no push)" (RunOnlyIfNot(runContentDiscoverySetup)), "Push › Cross-Repository Blob Mount ›
 * Cross-mounting without from, and automatic content discovery disabled should return a 202"
 * (RunOnlyIfNot(automaticCrossmountEnabled)). The `if !deleteManifestBeforeBlobs` teardown
 * variants are the same specs at another place, not ported twice. Specs gated by an earlier
 * answer (RunOnlyIf(lastResponse.StatusCode() == 201), a 405 on blob delete) are skipped the
 * same way, with the reason printed.
 *
 * The client does what reggie does: every request goes out without credentials; on a 401 it
 * reads the challenge, asks the realm for a token with the challenge's service and scope
 * (Basic credentials), and sends the request once more with the Bearer token. No token is
 * reused. Requests go through node:http, which (unlike fetch, like Go) sends a GET with a body.
 * Differences from the Go run, none of which the assertions depend on: random blobs come from
 * crypto rather than Go's math/rand with the ginkgo seed; bodies are sent with a Content-Length.
 * Gomega's Warn (no-layer manifest refused, referrers filter not applied) prints a tap comment.
 */
import t, { type Test } from 'tap'
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { Agent, request, type IncomingHttpHeaders } from 'node:http'
import { dirname, join } from 'node:path'
import { readFile, readdir, rm } from 'node:fs/promises'
import { startFlotilla } from '../../scripts/lib/procs.js'
import { basicAuth, startTestCluster, type Credentials } from '../helpers/cluster.js'

// --- test data, built as setup.go builds it (image.go's field order and omitempty rules) ---

const digestOf = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
const goJson = (v: unknown): Buffer => Buffer.from(JSON.stringify(v, null, '\t'))

interface TestBlob { content: Buffer; contentLength: string; digest: string }
const testBlob = (content: Buffer): TestBlob => ({ content, contentLength: String(content.length), digest: digestOf(content) })

/** image.go `descriptor`: mediaType, digest, size, [annotations], [data], [artifactType], newUnspecifiedField (never omitted: null when unset). */
function descriptor (d: { mediaType: string; digest: string; size: number; annotations?: Record<string, string>; data?: Buffer; artifactType?: string; newUnspecifiedField?: Buffer }): Record<string, unknown> {
  const o: Record<string, unknown> = { mediaType: d.mediaType, digest: d.digest, size: d.size }
  if (d.annotations !== undefined) o.annotations = d.annotations
  if (d.data !== undefined) o.data = d.data.toString('base64')
  if (d.artifactType !== undefined) o.artifactType = d.artifactType
  o.newUnspecifiedField = d.newUnspecifiedField === undefined ? null : d.newUnspecifiedField.toString('base64')
  return o
}

/** image.go `manifest`: schemaVersion, [mediaType], [artifactType], config, layers, [subject], [annotations]. */
function manifest (m: { mediaType?: string; artifactType?: string; config: Record<string, unknown>; layers: Array<Record<string, unknown>>; subject?: Record<string, unknown>; annotations?: Record<string, string> }): Buffer {
  const o: Record<string, unknown> = { schemaVersion: 2 }
  if (m.mediaType !== undefined) o.mediaType = m.mediaType
  if (m.artifactType !== undefined) o.artifactType = m.artifactType
  o.config = m.config
  o.layers = m.layers
  if (m.subject !== undefined) o.subject = m.subject
  if (m.annotations !== undefined) o.annotations = m.annotations
  return goJson(o)
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
const testTagName = 'tagtest0'
const emptyLayerTestTag = 'emptylayer'
const nonexistentManifest = '.INVALID_MANIFEST_NAME'
const invalidManifestContent = Buffer.from('blablabla')
const dummyDigest = digestOf('hello world')
const artifactTypeFilter = 'artifactType'
const errorCodes = ['BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID', 'MANIFEST_UNKNOWN', 'MANIFEST_UNVERIFIED', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'TAG_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED']
// A gzipped tarball of one text file (setup.go's layerBase64String).
const layerBlob = testBlob(Buffer.from('H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0' +
  'WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD' +
  'jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA', 'base64'))

/** Everything setup.go's init() computes; one set per target, as one Go run makes one. */
function makeTestData () {
  const numWorkflows = 16 // `pull = 1 << iota … numWorkflows`: 1 << 4
  const letters = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-'
  const randomString = (n: number): string => Array.from(randomBytes(n), (b) => letters[b % letters.length]).join('')
  const configs: TestBlob[] = []
  for (let i = 0; i < numWorkflows; i++) {
    // A unique author per workflow gives each config (and so each manifest) its own digest.
    configs.push(testBlob(goJson({ author: randomString(16), architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } })))
  }
  const layers = [descriptor({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', size: layerBlob.content.length, digest: layerBlob.digest })]
  const configDescriptor = (c: TestBlob): Record<string, unknown> =>
    descriptor({ mediaType: 'application/vnd.oci.image.config.v1+json', digest: c.digest, size: c.content.length, data: c.content, newUnspecifiedField: Buffer.from('hello world') })
  const manifests = configs.map((c) => testBlob(manifest({ mediaType: OCI_MANIFEST, config: configDescriptor(c), layers })))
  const emptyLayerManifest = testBlob(manifest({ config: configDescriptor(configs[1]!), layers: [] }))

  const testBlobA = testBlob(randomBytes(42))
  const chunked = chunkedBlob(42)

  const emptyJSONBlob = Buffer.from('{}')
  const emptyJSONDescriptor = { mediaType: 'application/vnd.oci.empty.v1+json', size: emptyJSONBlob.length, digest: digestOf(emptyJSONBlob) }
  const testRefBlobA = testBlob(Buffer.from('NHL Peanut Butter on my NHL bagel'))
  const testRefArtifactTypeA = 'application/vnd.nhl.peanut.butter.bagel'
  const testRefBlobB = testBlob(Buffer.from('NBA Strawberry Jam on my NBA croissant'))
  const testRefArtifactTypeB = 'application/vnd.nba.strawberry.jam.croissant'
  const testRefArtifactTypeIndex = 'application/vnd.food.stand'
  const testAnnotationKey = 'org.opencontainers.conformance.test'
  const testAnnotationValues: Record<string, string> = {}
  const subjectOf = (m: TestBlob): Record<string, unknown> => descriptor({ mediaType: OCI_MANIFEST, size: m.content.length, digest: m.digest })
  const annotated = (content: Buffer, value: string | undefined): TestBlob => {
    const b = testBlob(content)
    if (value !== undefined) testAnnotationValues[b.digest] = value
    return b
  }
  // Artifacts whose subject is manifests[4]: artifactType as config.mediaType (A/B config), as artifactType with the empty config (A/B layer).
  const refsManifestAConfigArtifact = annotated(manifest({
    mediaType: OCI_MANIFEST,
    config: descriptor({ mediaType: testRefArtifactTypeA, size: testRefBlobA.content.length, digest: testRefBlobA.digest }),
    layers: [descriptor(emptyJSONDescriptor)],
    subject: subjectOf(manifests[4]!),
    annotations: { [testAnnotationKey]: 'test config a' },
  }), 'test config a')
  const refsManifestBConfigArtifact = annotated(manifest({
    mediaType: OCI_MANIFEST,
    config: descriptor({ mediaType: testRefArtifactTypeB, size: testRefBlobB.content.length, digest: testRefBlobB.digest }),
    layers: [descriptor(emptyJSONDescriptor)],
    subject: subjectOf(manifests[4]!),
    annotations: { [testAnnotationKey]: 'test config b' },
  }), 'test config b')
  const refsManifestALayerArtifact = annotated(manifest({
    mediaType: OCI_MANIFEST,
    artifactType: testRefArtifactTypeA,
    config: descriptor(emptyJSONDescriptor),
    layers: [descriptor({ mediaType: testRefArtifactTypeA, size: testRefBlobA.content.length, digest: testRefBlobA.digest })],
    subject: subjectOf(manifests[4]!),
    annotations: { [testAnnotationKey]: 'test layer a' },
  }), 'test layer a')
  const refsManifestBLayerArtifact = annotated(manifest({
    mediaType: OCI_MANIFEST,
    artifactType: testRefArtifactTypeB,
    config: descriptor(emptyJSONDescriptor),
    layers: [descriptor({ mediaType: testRefArtifactTypeB, size: testRefBlobB.content.length, digest: testRefBlobB.digest })],
    subject: subjectOf(manifests[4]!),
    annotations: { [testAnnotationKey]: 'test layer b' },
  }), 'test layer b')
  // The same as B layer, but its subject (manifests[3]) is not pushed when it is.
  const refsManifestCLayerArtifact = annotated(manifest({
    mediaType: OCI_MANIFEST,
    artifactType: testRefArtifactTypeB,
    config: descriptor(emptyJSONDescriptor),
    layers: [descriptor({ mediaType: testRefArtifactTypeB, size: testRefBlobB.content.length, digest: testRefBlobB.digest })],
    subject: subjectOf(manifests[3]!),
  }), undefined)
  const indexDoc: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    artifactType: testRefArtifactTypeIndex,
    manifests: [
      descriptor({ mediaType: OCI_MANIFEST, size: refsManifestAConfigArtifact.content.length, digest: refsManifestAConfigArtifact.digest }),
      descriptor({ mediaType: OCI_MANIFEST, size: refsManifestALayerArtifact.content.length, digest: refsManifestALayerArtifact.digest }),
    ],
    subject: subjectOf(manifests[4]!),
    annotations: { [testAnnotationKey]: 'test index' },
  }
  const refsIndexArtifact = annotated(goJson(indexDoc), 'test index')

  return {
    configs, manifests, emptyLayerManifest, testBlobA, chunked,
    emptyJSONBlob, emptyJSONDescriptor, testRefBlobA, testRefBlobB, testRefArtifactTypeA,
    testAnnotationKey, testAnnotationValues,
    refsManifestAConfigArtifact, refsManifestBConfigArtifact, refsManifestALayerArtifact, refsManifestBLayerArtifact, refsManifestCLayerArtifact, refsIndexArtifact,
  }
}

/** setupChunkedBlob(size): a random blob in two chunks, the first one byte past half. */
function chunkedBlob (size: number) {
  const blob = randomBytes(size)
  const half = Math.floor(size / 2) + 1
  const chunk1 = blob.subarray(0, half)
  const chunk2 = blob.subarray(half)
  return {
    digest: digestOf(blob),
    chunk1,
    chunk1Length: String(chunk1.length),
    chunk1Range: `0-${chunk1.length - 1}`,
    chunk2,
    chunk2Length: String(chunk2.length),
    chunk2Range: `${chunk1.length}-${blob.length - 1}`,
  }
}

// --- a reggie-like client ---

interface Response {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  header (name: string): string
  /** reggie GetRelativeLocation: the Location's path and query. */
  relativeLocation (): string
}

class Request {
  query: Array<[string, string]> = []
  headers: Record<string, string> = {}
  body: Buffer | undefined
  constructor (readonly method: string, readonly path: string) {}
  setHeader (k: string, v: string): this { this.headers[k] = v; return this }
  setQueryParam (k: string, v: string): this { this.query.push([k, v]); return this }
  setBody (b: Buffer): this { this.body = b; return this }
}

const agent = new Agent({ keepAlive: true })
t.teardown(() => { agent.destroy() })

async function send (url: URL, method: string, headers: Record<string, string>, body: Buffer | undefined): Promise<Response> {
  return await new Promise((resolve, reject) => {
    const h: Record<string, string> = { 'user-agent': 'distribution-spec-conformance-tests', ...headers }
    // As Go sends it: the body's own length, whatever Content-Length the test set (it sets the body's length or "0" with none).
    for (const k of Object.keys(h)) if (k.toLowerCase() === 'content-length') delete h[k]
    if (body !== undefined || ['POST', 'PUT', 'PATCH'].includes(method)) h['content-length'] = String(body?.length ?? 0)
    const req = request(url, { method, headers: h, agent, timeout: 60_000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const r: Response = {
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          header (name) { const v = res.headers[name.toLowerCase()]; return Array.isArray(v) ? v[0] ?? '' : v ?? '' },
          relativeLocation () {
            const loc = r.header('location')
            if (loc === '') return ''
            const u = new URL(loc, url)
            return u.pathname + u.search
          },
        }
        resolve(r)
      })
    })
    req.on('timeout', () => req.destroy(new Error(`${method} ${url.pathname} timed out`)))
    req.on('error', reject)
    req.end(body)
  })
}

class Client {
  constructor (readonly base: string, readonly defaultName: string, readonly creds: Credentials) {}

  /** reggie NewRequest: <name>, <reference>, <digest> substituted when given. */
  newRequest (method: string, path: string, opts: { name?: string; reference?: string; digest?: string } = {}): Request {
    const p = path.replaceAll('<name>', opts.name ?? this.defaultName)
      .replaceAll('<reference>', opts.reference ?? '<reference>')
      .replaceAll('<digest>', opts.digest ?? '<digest>')
    return new Request(method, p)
  }

  /** reggie Do: as is; on 401, one token from the challenge's realm/service/scope, then once more. */
  async do (req: Request): Promise<Response> {
    if (/<name>|<reference>|<digest>|<session_id>/.test(req.path) || req.path === '') throw new Error(`request is invalid: ${req.method} ${req.path}`)
    const url = new URL(req.path, this.base)
    // resty appends the query params to the URL's own query.
    const extra = new URLSearchParams(req.query).toString()
    if (extra !== '') url.search = url.search === '' ? extra : `${url.search.slice(1)}&${extra}`
    const first = await send(url, req.method, req.headers, req.body)
    if (first.status !== 401) return first
    const challenge = first.header('www-authenticate')
    if (challenge === '') return first
    if (/^\s*basic/i.test(challenge)) return await send(url, req.method, { ...req.headers, authorization: basicAuth(this.creds) }, req.body)
    const params: Record<string, string> = {}
    for (const m of challenge.matchAll(/([a-zA-Z]+)="(.+?)"/g)) params[m[1]!.toLowerCase()] = m[2]!
    const tokenUrl = new URL(params.realm ?? '')
    tokenUrl.searchParams.set('service', params.service ?? '')
    if (params.scope !== undefined) tokenUrl.searchParams.set('scope', params.scope)
    const tokenRes = await send(tokenUrl, 'GET', { accept: 'application/json', authorization: basicAuth(this.creds) }, undefined)
    const info = JSON.parse(tokenRes.body.toString() || '{}') as { token?: string; access_token?: string }
    const token = info.token !== undefined && info.token !== '' ? info.token : info.access_token ?? ''
    return await send(url, req.method, { ...req.headers, authorization: `Bearer ${token}` }, req.body)
  }
}

const is2xx = (s: number): boolean => s >= 200 && s < 300
const oneOf = (s: number, ...allowed: number[]): boolean => allowed.includes(s)
function errorsOf (r: Response): Array<{ code: string }> | undefined {
  try { return (JSON.parse(r.body.toString()) as { errors?: Array<{ code: string }> }).errors } catch { return undefined }
}
function tagsOf (r: Response): string[] {
  try { return (JSON.parse(r.body.toString()) as { tags?: string[] }).tags ?? [] } catch { return [] }
}
interface IndexDoc { manifests?: Array<{ digest: string; annotations?: Record<string, string> }> }
function indexOf (r: Response): IndexDoc | undefined {
  try { return JSON.parse(r.body.toString()) as IndexDoc } catch { return undefined }
}

// --- the suite ---

type Tap = Test

/** Run the four workflows, in the Go suite's order, against `base` as `creds`. */
async function conformance (t: Tap, base: string, creds: Credentials, namespace: string, crossmountNamespace: string): Promise<void> {
  const client = new Client(base, namespace, creds)
  const d = makeTestData()
  const { configs, manifests } = d
  const spec = async (name: string, fn: (t: Tap) => Promise<void>): Promise<void> => { await t.test(name, fn) }
  const status = (t: Tap, r: Response, ok: boolean, want: string): boolean =>
    t.ok(ok, `status ${r.status} is ${want}`, { body: r.body.toString().slice(0, 500) })
  /** Populate by POST then PUT ?digest= on the session (every Setup's blob push). */
  const populateBlob = async (t: Tap, b: TestBlob): Promise<void> => {
    const resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/'))
    const put = await client.do(client.newRequest('PUT', resp.relativeLocation())
      .setQueryParam('digest', b.digest).setHeader('Content-Type', 'application/octet-stream')
      .setHeader('Content-Length', b.contentLength).setBody(b.content))
    status(t, put, is2xx(put.status), '2xx')
  }
  const putManifest = async (ref: string, content: Buffer, contentType = OCI_MANIFEST): Promise<Response> =>
    await client.do(client.newRequest('PUT', '/v2/<name>/manifests/<reference>', { reference: ref }).setHeader('Content-Type', contentType).setBody(content))
  const deleteAllowed = async (t: Tap, path: string, opts: { digest?: string; reference?: string }, also: number[]): Promise<void> => {
    const resp = await client.do(client.newRequest('DELETE', path, opts))
    status(t, resp, is2xx(resp.status) || oneOf(resp.status, ...also), `2xx or ${also.join('/')}`)
  }

  // ---------------- 01_pull_test.go ----------------
  let tag = ''
  await spec('Pull › Setup › Populate registry with test blob', async (t) => { await populateBlob(t, configs[0]!) })
  await spec('Pull › Setup › Populate registry with test blob', async (t) => { await populateBlob(t, configs[1]!) })
  await spec('Pull › Setup › Populate registry with test layer', async (t) => { await populateBlob(t, layerBlob) })
  await spec('Pull › Setup › Populate registry with test manifest', async (t) => {
    tag = testTagName
    const resp = await putManifest(tag, manifests[0]!.content)
    status(t, resp, is2xx(resp.status), '2xx')
  })
  await spec('Pull › Setup › Populate registry with test manifest', async (t) => {
    const resp = await putManifest(manifests[1]!.digest, manifests[1]!.content)
    status(t, resp, is2xx(resp.status), '2xx')
  })
  await spec('Pull › Pull blobs › HEAD request to nonexistent blob should result in 404 response', async (t) => {
    const resp = await client.do(client.newRequest('HEAD', '/v2/<name>/blobs/<digest>', { digest: dummyDigest }))
    t.equal(resp.status, 404)
  })
  await spec('Pull › Pull blobs › HEAD request to existing blob should yield 200', async (t) => {
    const resp = await client.do(client.newRequest('HEAD', '/v2/<name>/blobs/<digest>', { digest: configs[0]!.digest }))
    t.equal(resp.status, 200)
    const h = resp.header('Docker-Content-Digest')
    if (h !== '') t.equal(h, configs[0]!.digest)
  })
  await spec('Pull › Pull blobs › GET nonexistent blob should result in 404 response', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/blobs/<digest>', { digest: dummyDigest }))
    t.equal(resp.status, 404)
  })
  await spec('Pull › Pull blobs › GET request to existing blob URL should yield 200', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/blobs/<digest>', { digest: configs[0]!.digest }))
    t.equal(resp.status, 200)
  })
  await spec('Pull › Pull manifests › HEAD request to nonexistent manifest should return 404', async (t) => {
    const resp = await client.do(client.newRequest('HEAD', '/v2/<name>/manifests/<reference>', { reference: nonexistentManifest }))
    t.equal(resp.status, 404)
  })
  for (const i of [0, 1]) {
    await spec(`Pull › Pull manifests › HEAD request to manifest[${i}] path (digest) should yield 200 response`, async (t) => {
      const resp = await client.do(client.newRequest('HEAD', '/v2/<name>/manifests/<digest>', { digest: manifests[i]!.digest }).setHeader('Accept', OCI_MANIFEST))
      t.equal(resp.status, 200)
      const h = resp.header('Docker-Content-Digest')
      if (h !== '') t.equal(h, manifests[i]!.digest)
    })
  }
  await spec('Pull › Pull manifests › HEAD request to manifest path (tag) should yield 200 response', async (t) => {
    if (!t.not(tag, '', 'tag is set')) return
    const resp = await client.do(client.newRequest('HEAD', '/v2/<name>/manifests/<reference>', { reference: tag }).setHeader('Accept', OCI_MANIFEST))
    t.equal(resp.status, 200)
    const h = resp.header('Docker-Content-Digest')
    if (h !== '') t.equal(h, manifests[0]!.digest)
  })
  await spec('Pull › Pull manifests › GET nonexistent manifest should return 404', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/manifests/<reference>', { reference: nonexistentManifest }))
    t.equal(resp.status, 404)
  })
  for (const i of [0, 1]) {
    await spec(`Pull › Pull manifests › GET request to manifest[${i}] path (digest) should yield 200 response`, async (t) => {
      const resp = await client.do(client.newRequest('GET', '/v2/<name>/manifests/<digest>', { digest: manifests[i]!.digest }).setHeader('Accept', OCI_MANIFEST))
      t.equal(resp.status, 200)
    })
  }
  await spec('Pull › Pull manifests › GET request to manifest path (tag) should yield 200 response', async (t) => {
    if (!t.not(tag, '', 'tag is set')) return
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/manifests/<reference>', { reference: tag }).setHeader('Accept', OCI_MANIFEST))
    t.equal(resp.status, 200)
  })
  await spec('Pull › Error codes › 400 response body should contain OCI-conforming JSON message', async (t) => {
    // A GET with a body, as the Go test sends it.
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/manifests/<reference>', { reference: 'sha256:totallywrong' })
      .setHeader('Content-Type', OCI_MANIFEST).setBody(invalidManifestContent))
    status(t, resp, oneOf(resp.status, 400, 404), '400 or 404')
    if (resp.status === 400) {
      const errs = errorsOf(resp)
      if (t.ok(errs !== undefined && errs.length > 0, 'an errors array')) t.ok(errorCodes.includes(errs![0]!.code), `${errs![0]!.code} is an OCI error code`)
    }
  })
  await spec('Pull › Teardown › Delete manifest[0] created in setup', async (t) => { await deleteAllowed(t, '/v2/<name>/manifests/<digest>', { digest: manifests[0]!.digest }, [405]) })
  await spec('Pull › Teardown › Delete manifest[1] created in setup', async (t) => { await deleteAllowed(t, '/v2/<name>/manifests/<digest>', { digest: manifests[1]!.digest }, [405]) })
  await spec('Pull › Teardown › Delete config[0] blob created in setup', async (t) => { await deleteAllowed(t, '/v2/<name>/blobs/<digest>', { digest: configs[0]!.digest }, [404, 405]) })
  await spec('Pull › Teardown › Delete config[1] blob created in setup', async (t) => { await deleteAllowed(t, '/v2/<name>/blobs/<digest>', { digest: configs[1]!.digest }, [404, 405]) })
  await spec('Pull › Teardown › Delete layer blob created in setup', async (t) => { await deleteAllowed(t, '/v2/<name>/blobs/<digest>', { digest: layerBlob.digest }, [404, 405]) })

  // ---------------- 02_push_test.go ----------------
  let lastResponse: Response | undefined
  let prevResponse: Response | undefined
  let emptyLayerManifestRef = ''
  let chunked = d.chunked
  await spec('Push › Blob Upload Streamed › PATCH request with blob in body should yield 202 response', async (t) => {
    let resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/'))
    if (!t.not(resp.header('Location'), '', 'Location')) return
    resp = await client.do(client.newRequest('PATCH', resp.relativeLocation()).setHeader('Content-Type', 'application/octet-stream').setBody(d.testBlobA.content))
    t.equal(resp.status, 202)
    lastResponse = resp
  })
  await spec('Push › Blob Upload Streamed › PUT request to session URL with digest should yield 201 response', async (t) => {
    if (!t.ok(lastResponse, 'a previous response')) return
    const resp = await client.do(client.newRequest('PUT', lastResponse!.relativeLocation()).setQueryParam('digest', d.testBlobA.digest)
      .setHeader('Content-Type', 'application/octet-stream').setHeader('Content-Length', d.testBlobA.contentLength))
    status(t, resp, resp.status === 201, '201')
    t.not(resp.header('Location'), '', 'Location')
  })
  await spec('Push › Blob Upload Monolithic › GET nonexistent blob should result in 404 response', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/blobs/<digest>', { digest: dummyDigest }))
    t.equal(resp.status, 404)
  })
  await spec('Push › Blob Upload Monolithic › POST request with digest and blob should yield a 201 or 202', async (t) => {
    const resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/')
      .setHeader('Content-Length', configs[1]!.contentLength).setHeader('Content-Type', 'application/octet-stream')
      .setQueryParam('digest', configs[1]!.digest).setBody(configs[1]!.content))
    t.not(resp.header('Location'), '', 'Location')
    status(t, resp, oneOf(resp.status, 201, 202), '201 or 202')
    lastResponse = resp
  })
  await spec('Push › Blob Upload Monolithic › GET request to blob URL from prior request should yield 200 or 404 based on response code', async (t) => {
    if (!t.ok(lastResponse, 'a previous response')) return
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/blobs/<digest>', { digest: configs[1]!.digest }))
    t.equal(resp.status, lastResponse!.status === 202 ? 404 : 200)
  })
  await spec('Push › Blob Upload Monolithic › POST request should yield a session ID', async (t) => {
    const resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/'))
    t.equal(resp.status, 202)
    lastResponse = resp
  })
  await spec('Push › Blob Upload Monolithic › PUT upload of a blob should yield a 201 Response', async (t) => {
    const resp = await client.do(client.newRequest('PUT', lastResponse!.relativeLocation())
      .setHeader('Content-Length', configs[1]!.contentLength).setHeader('Content-Type', 'application/octet-stream')
      .setQueryParam('digest', configs[1]!.digest).setBody(configs[1]!.content))
    t.not(resp.header('Location'), '', 'Location')
    status(t, resp, resp.status === 201, '201')
  })
  await spec('Push › Blob Upload Monolithic › GET request to existing blob should yield 200 response', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/blobs/<digest>', { digest: configs[1]!.digest }))
    t.equal(resp.status, 200)
  })
  await spec('Push › Blob Upload Monolithic › PUT upload of a layer blob should yield a 201 Response', async (t) => {
    let resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/'))
    resp = await client.do(client.newRequest('PUT', resp.relativeLocation())
      .setHeader('Content-Length', layerBlob.contentLength).setHeader('Content-Type', 'application/octet-stream')
      .setQueryParam('digest', layerBlob.digest).setBody(layerBlob.content))
    t.not(resp.header('Location'), '', 'Location')
    status(t, resp, resp.status === 201, '201')
  })
  await spec('Push › Blob Upload Monolithic › GET request to existing layer should yield 200 response', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/blobs/<digest>', { digest: layerBlob.digest }))
    t.equal(resp.status, 200)
  })
  await spec('Push › Blob Upload Chunked › Out-of-order blob upload should return 416', async (t) => {
    let resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/').setHeader('Content-Length', '0'))
    if (!t.not(resp.header('Location'), '', 'Location')) return
    // Rebuild the chunked blob when the registry's minimum chunk is larger than our first chunk.
    const minSize = resp.header('OCI-Chunk-Min-Length')
    if (minSize !== '') {
      if (!t.match(minSize, /^\d+$/, 'OCI-Chunk-Min-Length is a number')) return
      if (Number(minSize) > chunked.chunk1.length) chunked = chunkedBlob(Number(minSize) * 2 - 2)
    }
    resp = await client.do(client.newRequest('PATCH', resp.relativeLocation()).setHeader('Content-Type', 'application/octet-stream')
      .setHeader('Content-Length', chunked.chunk2Length).setHeader('Content-Range', chunked.chunk2Range).setBody(chunked.chunk2))
    status(t, resp, resp.status === 416, '416')
  })
  await spec('Push › Blob Upload Chunked › PATCH request with first chunk should return 202', async (t) => {
    let resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/').setHeader('Content-Length', '0'))
    if (!t.not(resp.header('Location'), '', 'Location')) return
    prevResponse = resp
    resp = await client.do(client.newRequest('PATCH', resp.relativeLocation()).setHeader('Content-Type', 'application/octet-stream')
      .setHeader('Content-Length', chunked.chunk1Length).setHeader('Content-Range', chunked.chunk1Range).setBody(chunked.chunk1))
    status(t, resp, resp.status === 202, '202')
    t.equal(resp.header('Range'), chunked.chunk1Range)
    lastResponse = resp
  })
  await spec('Push › Blob Upload Chunked › Retry previous blob chunk should return 416', async (t) => {
    const resp = await client.do(client.newRequest('PATCH', prevResponse!.relativeLocation()).setHeader('Content-Type', 'application/octet-stream')
      .setHeader('Content-Length', chunked.chunk1Length).setHeader('Content-Range', chunked.chunk1Range).setBody(chunked.chunk1))
    status(t, resp, resp.status === 416, '416')
  })
  await spec('Push › Blob Upload Chunked › Get on stale blob upload should return 204 with a range and location', async (t) => {
    const resp = await client.do(client.newRequest('GET', prevResponse!.relativeLocation()))
    status(t, resp, resp.status === 204, '204')
    t.not(resp.header('Location'), '', 'Location')
    t.equal(resp.header('Range'), chunked.chunk1Range)
    lastResponse = resp
  })
  await spec('Push › Blob Upload Chunked › PATCH request with second chunk should return 202', async (t) => {
    const resp = await client.do(client.newRequest('PATCH', lastResponse!.relativeLocation()).setHeader('Content-Length', chunked.chunk2Length)
      .setHeader('Content-Range', chunked.chunk2Range).setHeader('Content-Type', 'application/octet-stream').setBody(chunked.chunk2))
    status(t, resp, resp.status === 202, '202')
    t.not(resp.header('Location'), '', 'Location')
    lastResponse = resp
  })
  await spec('Push › Blob Upload Chunked › PUT request with digest should return 201', async (t) => {
    const resp = await client.do(client.newRequest('PUT', lastResponse!.relativeLocation()).setHeader('Content-Length', '0')
      .setHeader('Content-Type', 'application/octet-stream').setQueryParam('digest', chunked.digest))
    status(t, resp, resp.status === 201, '201')
    t.not(resp.header('Location'), '', 'Location')
  })
  await spec('Push › Cross-Repository Blob Mount › Cross-mounting of a blob without the from argument should yield session id', async (t) => {
    const resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/', { name: crossmountNamespace }).setQueryParam('mount', dummyDigest))
    status(t, resp, resp.status === 202, '202')
    t.not(resp.header('Location'), '', 'Location (absolute or not)')
  })
  await spec("Push › Cross-Repository Blob Mount › POST request to mount another repository's blob should return 201 or 202", async (t) => {
    const resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/', { name: crossmountNamespace })
      .setQueryParam('mount', d.testBlobA.digest).setQueryParam('from', namespace))
    status(t, resp, oneOf(resp.status, 201, 202), '201 or 202')
    lastResponse = resp
  })
  await spec('Push › Cross-Repository Blob Mount › GET request to test digest within cross-mount namespace should return 200', async (t) => {
    if (lastResponse?.status !== 201) { t.plan(0, `RunOnlyIf(lastResponse.StatusCode() == 201): it was ${lastResponse?.status}`); return }
    t.equal(lastResponse.relativeLocation(), `/v2/${crossmountNamespace}/blobs/${d.testBlobA.digest}`)
    const resp = await client.do(client.newRequest('GET', lastResponse.relativeLocation()))
    t.equal(resp.status, 200)
  })
  await spec('Push › Cross-Repository Blob Mount › Cross-mounting of nonexistent blob should yield session id', async (t) => {
    if (lastResponse?.status !== 202) { t.plan(0, `RunOnlyIf(lastResponse.StatusCode() == 202): it was ${lastResponse?.status}`); return }
    t.ok(lastResponse.relativeLocation().startsWith(`/v2/${crossmountNamespace}/blobs/uploads/`), 'an upload session in the cross-mount namespace')
  })
  await spec('Push › Cross-Repository Blob Mount › Cross-mounting without from, and automatic content discovery enabled should return a 201', async (t) => {
    if (lastResponse?.status !== 201) { t.plan(0, `RunOnlyIf(lastResponse.StatusCode() == 201): it was ${lastResponse?.status}`); return }
    const resp = await client.do(client.newRequest('POST', '/v2/<name>/blobs/uploads/', { name: crossmountNamespace }).setQueryParam('mount', d.testBlobA.digest))
    status(t, resp, resp.status === 201, '201')
  })
  await spec('Push › Manifest Upload › GET nonexistent manifest should return 404', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/manifests/<reference>', { reference: nonexistentManifest }))
    t.equal(resp.status, 404)
  })
  await spec('Push › Manifest Upload › PUT should accept a manifest upload', async (t) => {
    for (let i = 0; i < 4; i++) {
      const resp = await putManifest(`test${i}`, manifests[1]!.content)
      t.not(resp.header('Location'), '', `test${i}: Location`)
      status(t, resp, resp.status === 201, `test${i}: 201`)
    }
  })
  await spec('Push › Manifest Upload › Registry should accept a manifest upload with no layers', async (t) => {
    const resp = await putManifest(emptyLayerTestTag, d.emptyLayerManifest.content)
    if (resp.status === 201) {
      emptyLayerManifestRef = resp.header('Location')
      t.not(emptyLayerManifestRef, '', 'Location')
    } else {
      t.comment(`WARNING: image manifest with no layers is not supported (${resp.status} ${resp.body.toString().slice(0, 300)})`)
      t.pass('the Go suite only warns here')
    }
  })
  await spec('Push › Manifest Upload › GET request to manifest URL (digest) should yield 200 response', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/manifests/<digest>', { digest: manifests[1]!.digest }).setHeader('Accept', OCI_MANIFEST))
    t.equal(resp.status, 200)
  })
  await spec('Push › Teardown › Delete manifest created in tests', async (t) => {
    await deleteAllowed(t, '/v2/<name>/manifests/<digest>', { digest: manifests[1]!.digest }, [405])
    if (emptyLayerManifestRef !== '') await deleteAllowed(t, '/v2/<name>/manifests/<reference>', { reference: d.emptyLayerManifest.digest }, [405])
  })
  await spec('Push › Teardown › Delete config blob created in tests', async (t) => { await deleteAllowed(t, '/v2/<name>/blobs/<digest>', { digest: configs[1]!.digest }, [404, 405]) })
  await spec('Push › Teardown › Delete layer blob created in setup', async (t) => { await deleteAllowed(t, '/v2/<name>/blobs/<digest>', { digest: layerBlob.digest }, [404, 405]) })

  // ---------------- 03_discovery_test.go ----------------
  let numTags = 4
  let tagList: string[] = []
  const setupRef = async (t: Tap, ref: TestBlob, contentType: string, subject: string): Promise<void> => {
    const resp = await putManifest(ref.digest, ref.content, contentType)
    status(t, resp, is2xx(resp.status), '2xx')
    t.equal(resp.header('OCI-Subject'), subject, 'OCI-Subject names the subject')
  }
  await spec('Content Discovery › Setup › Populate registry with test blob', async (t) => { await populateBlob(t, configs[2]!) })
  await spec('Content Discovery › Setup › Populate registry with test layer', async (t) => { await populateBlob(t, layerBlob) })
  await spec('Content Discovery › Setup › Populate registry with test tags', async (t) => {
    for (let i = 0; i < numTags; i++) {
      const resp = await putManifest(`test${i}`, manifests[2]!.content)
      status(t, resp, is2xx(resp.status), `test${i}: 2xx`)
    }
    tagList = tagsOf(await client.do(client.newRequest('GET', '/v2/<name>/tags/list')))
  })
  await spec('Content Discovery › Setup › References setup', async (t) => {
    t.equal(d.emptyJSONDescriptor.digest, 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a')
    await populateBlob(t, testBlob(d.emptyJSONBlob))
    // A referrer's blob before its subject is pushed, then the referrers themselves.
    await populateBlob(t, d.testRefBlobA)
    await setupRef(t, d.refsManifestAConfigArtifact, OCI_MANIFEST, manifests[4]!.digest)
    await setupRef(t, d.refsManifestALayerArtifact, OCI_MANIFEST, manifests[4]!.digest)
    await setupRef(t, d.refsIndexArtifact, OCI_INDEX, manifests[4]!.digest)
    // The subject itself.
    await populateBlob(t, configs[4]!)
    await populateBlob(t, layerBlob)
    const resp = await putManifest(testTagName, manifests[4]!.content)
    status(t, resp, is2xx(resp.status), 'subject manifest: 2xx')
    // Referrers pushed after their subject, and one whose subject (manifests[3]) is never pushed here.
    await populateBlob(t, d.testRefBlobB)
    await setupRef(t, d.refsManifestBConfigArtifact, OCI_MANIFEST, manifests[4]!.digest)
    await setupRef(t, d.refsManifestBLayerArtifact, OCI_MANIFEST, manifests[4]!.digest)
    await setupRef(t, d.refsManifestCLayerArtifact, OCI_MANIFEST, manifests[3]!.digest)
  })
  await spec('Content Discovery › Test content discovery endpoints (listing tags) › GET request to list tags should yield 200 response', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/tags/list'))
    t.equal(resp.status, 200)
    tagList = tagsOf(resp)
    numTags = tagList.length
  })
  await spec('Content Discovery › Test content discovery endpoints (listing tags) › GET number of tags should be limitable by `n` query parameter', async (t) => {
    const numResults = Math.floor(numTags / 2)
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/tags/list').setQueryParam('n', String(numResults)))
    t.equal(resp.status, 200)
    tagList = tagsOf(resp)
    t.equal(tagList.length, numResults)
  })
  await spec('Content Discovery › Test content discovery endpoints (listing tags) › GET start of tag is set by `last` query parameter', async (t) => {
    const numResults = Math.floor(numTags / 2)
    let resp = await client.do(client.newRequest('GET', '/v2/<name>/tags/list').setQueryParam('n', String(numResults)))
    tagList = tagsOf(resp)
    const last = tagList[numResults - 1]
    if (!t.ok(last !== undefined, `a first page of ${numResults}`)) return
    resp = await client.do(client.newRequest('GET', '/v2/<name>/tags/list').setQueryParam('n', String(numResults)).setQueryParam('last', last!))
    t.equal(resp.status, 200)
    // The Go spec checks the first page again (it never re-reads tagList); kept as it is.
    t.ok(tagList.length <= numResults)
    t.ok(tagList.includes(last!))
    // Beyond the Go spec, which never looks at it: the page after `last` holds only later tags (lexical order).
    const next = tagsOf(resp)
    t.ok(next.length <= numResults && next.every((tag) => tag > last!), `the page after ${last!} (${next.join(', ')}) starts after it`)
  })
  await spec('Content Discovery › Test content discovery endpoints (listing references) › GET request to nonexistent blob should result in empty 200 response', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/referrers/<digest>', { digest: dummyDigest }))
    t.equal(resp.status, 200)
    t.equal(resp.header('Content-Type'), OCI_INDEX)
    const index = indexOf(resp)
    if (t.ok(index, 'an index')) t.equal(index!.manifests?.length ?? 0, 0)
  })
  const checkAnnotations = (t: Tap, index: IndexDoc): void => {
    for (const m of index.manifests ?? []) {
      t.equal(Object.keys(m.annotations ?? {}).length, 1, `${m.digest}: one annotation`)
      t.equal(m.annotations?.[d.testAnnotationKey], d.testAnnotationValues[m.digest], `${m.digest}: its annotation`)
    }
  }
  await spec('Content Discovery › Test content discovery endpoints (listing references) › GET request to existing blob should yield 200', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/referrers/<digest>', { digest: manifests[4]!.digest }))
    t.equal(resp.status, 200)
    t.equal(resp.header('Content-Type'), OCI_INDEX)
    const index = indexOf(resp)
    if (!t.ok(index, 'an index')) return
    if (!t.equal(index!.manifests?.length, 5, 'five referrers')) return
    t.not(index!.manifests![0]!.digest, index!.manifests![1]!.digest)
    checkAnnotations(t, index!)
  })
  await spec('Content Discovery › Test content discovery endpoints (listing references) › GET request to existing blob with filter should yield 200', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/referrers/<digest>', { digest: manifests[4]!.digest }).setQueryParam('artifactType', d.testRefArtifactTypeA))
    t.equal(resp.status, 200)
    t.equal(resp.header('Content-Type'), OCI_INDEX)
    const index = indexOf(resp)
    if (!t.ok(index, 'an index')) return
    if (resp.header('OCI-Filters-Applied') !== '') {
      t.equal(index!.manifests?.length, 2)
      t.equal(resp.header('OCI-Filters-Applied'), artifactTypeFilter)
    } else {
      t.equal(index!.manifests?.length, 5)
      t.comment('WARNING: filtering by artifact-type is not implemented')
    }
    checkAnnotations(t, index!)
  })
  await spec('Content Discovery › Test content discovery endpoints (listing references) › GET request to missing manifest should yield 200', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/referrers/<digest>', { digest: manifests[3]!.digest }))
    t.equal(resp.status, 200)
    t.equal(resp.header('Content-Type'), OCI_INDEX)
    const index = indexOf(resp)
    if (!t.ok(index, 'an index')) return
    if (t.equal(index!.manifests?.length, 1)) t.equal(index!.manifests![0]!.digest, d.refsManifestCLayerArtifact.digest)
  })
  await spec('Content Discovery › Teardown › Delete created manifest & associated tags', async (t) => {
    const references = [d.refsIndexArtifact.digest, manifests[2]!.digest, manifests[4]!.digest, d.refsManifestAConfigArtifact.digest,
      d.refsManifestALayerArtifact.digest, testTagName, d.refsManifestBConfigArtifact.digest, d.refsManifestBLayerArtifact.digest, d.refsManifestCLayerArtifact.digest]
    for (const ref of references) await deleteAllowed(t, '/v2/<name>/manifests/<digest>', { digest: ref }, [405, 404])
  })
  await spec('Content Discovery › Teardown › Delete config blob created in tests', async (t) => { await deleteAllowed(t, '/v2/<name>/blobs/<digest>', { digest: configs[2]!.digest }, [405]) })
  await spec('Content Discovery › Teardown › Delete layer blob created in setup', async (t) => { await deleteAllowed(t, '/v2/<name>/blobs/<digest>', { digest: layerBlob.digest }, [405]) })
  await spec('Content Discovery › Teardown › References teardown', async (t) => {
    for (const ref of [d.refsIndexArtifact, d.refsManifestAConfigArtifact, d.refsManifestALayerArtifact]) await deleteAllowed(t, '/v2/<name>/manifests/<reference>', { reference: ref.digest }, [405, 404])
    await deleteAllowed(t, '/v2/<name>/manifests/<digest>', { digest: manifests[4]!.digest }, [405, 404])
    for (const ref of [d.refsManifestBConfigArtifact, d.refsManifestBLayerArtifact]) await deleteAllowed(t, '/v2/<name>/manifests/<reference>', { reference: ref.digest }, [405, 404])
    for (const digest of [configs[4]!.digest, d.testRefBlobA.digest, d.testRefBlobB.digest, d.emptyJSONDescriptor.digest]) await deleteAllowed(t, '/v2/<name>/blobs/<digest>', { digest }, [405, 404])
  })

  // ---------------- 04_management_test.go ----------------
  const defaultTagName = 'tagtest0'
  let tagToDelete = ''
  let numTagsBefore = 0
  let blobDeleteAllowed = true
  await spec('Content Management › Setup › Populate registry with test config blob', async (t) => { await populateBlob(t, configs[3]!) })
  await spec('Content Management › Setup › Populate registry with test layer', async (t) => { await populateBlob(t, layerBlob) })
  await spec('Content Management › Setup › Populate registry with test tag', async (t) => {
    tagToDelete = defaultTagName
    const resp = await putManifest(tagToDelete, manifests[3]!.content)
    status(t, resp, is2xx(resp.status), '2xx')
  })
  await spec('Content Management › Setup › Check how many tags there are before anything gets deleted', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/tags/list'))
    t.equal(resp.status, 200)
    numTagsBefore = tagsOf(resp).length
  })
  await spec('Content Management › Manifest delete › DELETE request to manifest tag should return 202, unless tag deletion is disallowed (400/405)', async (t) => {
    const resp = await client.do(client.newRequest('DELETE', '/v2/<name>/manifests/<reference>', { reference: tagToDelete }))
    status(t, resp, oneOf(resp.status, 400, 202, 405), '400, 202 or 405')
    if (resp.status === 400) t.equal(errorsOf(resp)?.[0]?.code, 'UNSUPPORTED')
  })
  await spec('Content Management › Manifest delete › DELETE request to manifest (digest) should yield 202 response unless already deleted', async (t) => {
    const resp = await client.do(client.newRequest('DELETE', '/v2/<name>/manifests/<digest>', { digest: manifests[3]!.digest }))
    status(t, resp, oneOf(resp.status, 202, 404), '202 or 404')
  })
  await spec('Content Management › Manifest delete › GET request to deleted manifest URL should yield 404 response, unless delete is disallowed', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/manifests/<digest>', { digest: manifests[3]!.digest }))
    status(t, resp, oneOf(resp.status, 404, 200), '404 or 200')
  })
  await spec('Content Management › Manifest delete › GET request to tags list should reflect manifest deletion', async (t) => {
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/tags/list'))
    t.equal(resp.status, 200)
    t.ok(tagsOf(resp).length < numTagsBefore, `fewer tags than the ${numTagsBefore} before`)
  })
  await spec('Content Management › Blob delete › DELETE request to blob URL should yield 202 response', async (t) => {
    let resp = await client.do(client.newRequest('DELETE', '/v2/<name>/blobs/<digest>', { digest: configs[3]!.digest }))
    status(t, resp, oneOf(resp.status, 202, 404, 405), 'config: 202, 404 or 405')
    resp = await client.do(client.newRequest('DELETE', '/v2/<name>/blobs/<digest>', { digest: layerBlob.digest }))
    status(t, resp, oneOf(resp.status, 202, 404, 405), 'layer: 202, 404 or 405')
    if (resp.status === 405) blobDeleteAllowed = false
  })
  await spec('Content Management › Blob delete › GET request to deleted blob URL should yield 404 response', async (t) => {
    if (!blobDeleteAllowed) { t.plan(0, 'RunOnlyIf(blobDeleteAllowed): blob delete answered 405'); return }
    const resp = await client.do(client.newRequest('GET', '/v2/<name>/blobs/<digest>', { digest: configs[3]!.digest }))
    t.equal(resp.status, 404)
  })
}

// --- the targets ---

const NAMESPACE_PATTERNS = ['conformance/**', 'conformance-*']

/** A user (not the admin) who may read, write and delete in the suite's namespaces, as OCI_USERNAME/OCI_PASSWORD. */
async function conformanceUser (base: string, admin: Credentials): Promise<Credentials> {
  const user = { username: 'conformance', password: `conf-${randomBytes(9).toString('hex')}` }
  const call = async (method: string, path: string, body: unknown): Promise<void> => {
    const res = await fetch(base + path, { method, headers: { authorization: basicAuth(admin), 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(30_000) })
    const text = await res.text()
    if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${text}`)
  }
  await call('POST', '/api/v1/users', { name: user.username, password: user.password })
  await call('PUT', '/api/v1/permissions/conformance', { repositories: NAMESPACE_PATTERNS, users: { [user.username]: ['read', 'write', 'delete'] } })
  return user
}

// The cluster starts meanwhile: its elections and joins overlap the single node's run.
const clusterStarting = startTestCluster(t, { size: 3 })
clusterStarting.catch(() => {}) // awaited (and reported) by its test below

t.test('single node', async (t) => {
  const node = await startFlotilla()
  t.teardown(async () => {
    await node.stop()
    const base = dirname(node.dataDir)
    if (!t.passing()) {
      for (const f of (await readdir(base).catch(() => [] as string[])).filter((n) => n.endsWith('.log'))) {
        t.comment(`log ${f} (last 40 lines):\n${(await readFile(join(base, f), 'utf8').catch(() => '')).split('\n').slice(-40).join('\n')}`)
      }
    }
    await rm(base, { recursive: true, force: true })
  })
  const user = await conformanceUser(node.url, node.credentials!)
  await conformance(t, node.url, user, 'conformance/oci', `conformance-${randomUUID()}`)
})

t.test('cluster follower (3 nodes)', async (t) => {
  const c = await clusterStarting
  const leader = await c.leader()
  const follower = c.live().find((n) => n !== leader)!
  t.comment(`follower ${follower.name} (${follower.url}); leader ${leader.name}`)
  const user = await conformanceUser(follower.url, c.credentials)
  await conformance(t, follower.url, user, 'conformance/oci', `conformance-${randomUUID()}`)
})
