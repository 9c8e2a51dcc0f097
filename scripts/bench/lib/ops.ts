/**
 * The registry operations the benchmark times. Each returns its own timing; any unexpected
 * answer throws HttpFailure with the exact request and response.
 */
import http from 'node:http'
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import { request, expect, location, withDigest, credentialsFor, trustedCA, HttpFailure, type BenchRequest } from './http.js'
import { run } from './exec.js'
import type { FileBlob } from './content.js'
import { percentile, median } from './stats.js'

const OCTET = 'application/octet-stream'
let BIG_TIMEOUT = 15 * 60_000

/** The limit for one large transfer (a whole blob upload or GET). */
export function setBigTimeout (ms: number): void { BIG_TIMEOUT = ms }

/** A keep-alive agent; an https one trusting the bench CA when it is set (--tls): every registry then speaks TLS. */
export function newAgent (maxSockets = 8): http.Agent {
  const ca = trustedCA()
  return ca !== undefined ? new https.Agent({ keepAlive: true, maxSockets, ca: ca.pem }) : new http.Agent({ keepAlive: true, maxSockets })
}

function checkDigestHeader (req: BenchRequest, res: Awaited<ReturnType<typeof request>>, digest: string): void {
  const got = res.headers['docker-content-digest']
  if (got !== undefined && got !== digest) throw new HttpFailure(req, res, `Docker-Content-Digest ${String(got)} != ${digest}`)
}

/** POST to open an upload, then PUT ?digest= with the whole blob. Returns ms. */
export async function pushMonolithic (base: string, repo: string, blob: FileBlob, agent: http.Agent): Promise<number> {
  const t0 = performance.now()
  const post: BenchRequest = { method: 'POST', url: `${base}/v2/${repo}/blobs/uploads/`, headers: { 'content-length': 0 }, agent }
  const opened = await expect(post, [202])
  const put: BenchRequest = {
    method: 'PUT',
    url: withDigest(location(base, post, opened), blob.digest),
    headers: { 'content-type': OCTET },
    body: { file: blob.path, start: 0, end: blob.size - 1 },
    agent,
    timeoutMs: BIG_TIMEOUT,
  }
  const res = await expect(put, [201])
  checkDigestHeader(put, res, blob.digest)
  return performance.now() - t0
}

/**
 * The same monolithic upload with curl sending the PUT (`-T`, streamed from disk): POST with
 * node:http, then curl. Returns curl's time_total for the PUT plus the POST's. Over TLS, curl
 * (OpenSSL in C) encrypts faster than a node:https client, so this shows the server's side.
 */
export async function pushMonolithicCurl (base: string, repo: string, blob: FileBlob, agent: http.Agent): Promise<number> {
  const t0 = performance.now()
  const post: BenchRequest = { method: 'POST', url: `${base}/v2/${repo}/blobs/uploads/`, headers: { 'content-length': 0 }, agent }
  const opened = await expect(post, [202])
  const postMs = performance.now() - t0
  const url = withDigest(location(base, post, opened), blob.digest)
  const creds = credentialsFor(url)
  const auth = creds === undefined ? [] : ['-u', `${creds.user}:${creds.pass}`]
  const ca = trustedCA()
  const tls = ca !== undefined && url.startsWith('https:') ? ['--cacert', ca.file] : []
  const r = await run('curl', ['-sS', ...auth, ...tls, '-T', blob.path, '-H', `content-type: ${OCTET}`, '-o', '/dev/null', '-w', '%{http_code} %{time_total}', url], BIG_TIMEOUT)
  const [code, total] = r.stdout.trim().split(' ')
  if (r.code !== 0 || code !== '201') {
    throw new HttpFailure({ method: 'PUT', url, headers: { via: 'curl -T' } }, { status: Number(code ?? 0), headers: {}, body: Buffer.from(r.stderr), bytes: 0 }, `curl exit ${r.code}, status ${code}`)
  }
  return postMs + Number(total) * 1000
}

/**
 * Single-request monolithic upload: POST ?digest= with the body. Returns ms, or undefined
 * when the registry answers 202 (it opened a session instead: the form is not supported).
 */
export async function pushPostDigest (base: string, repo: string, blob: FileBlob, agent: http.Agent): Promise<number | undefined> {
  const t0 = performance.now()
  const post: BenchRequest = {
    method: 'POST',
    url: `${base}/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(blob.digest)}`,
    headers: { 'content-type': OCTET },
    body: { file: blob.path, start: 0, end: blob.size - 1 },
    agent,
    timeoutMs: BIG_TIMEOUT,
  }
  const res = await expect(post, [201, 202])
  if (res.status === 202) return undefined
  checkDigestHeader(post, res, blob.digest)
  return performance.now() - t0
}

/** Probe whether POST ?digest= (single request) is supported, with a small body. */
export async function supportsPostDigest (base: string, repo: string, small: FileBlob, agent: http.Agent): Promise<boolean> {
  const t = await pushPostDigest(base, repo, small, agent)
  if (t === undefined) return false
  const head: BenchRequest = { method: 'HEAD', url: `${base}/v2/${repo}/blobs/${small.digest}`, agent }
  await expect(head, [200])
  return true
}

/** POST, PATCH each chunk with Content-Range, then PUT ?digest= with no body. Returns ms. */
export async function pushChunked (base: string, repo: string, blob: FileBlob, chunk: number, agent: http.Agent): Promise<number> {
  const t0 = performance.now()
  const post: BenchRequest = { method: 'POST', url: `${base}/v2/${repo}/blobs/uploads/`, headers: { 'content-length': 0 }, agent }
  let loc = location(base, post, await expect(post, [202]))
  const maxChunks = Math.ceil(blob.size / chunk) + 1
  let off = 0
  for (let i = 0; off < blob.size && i < maxChunks; i++) {
    const end = Math.min(blob.size, off + chunk) - 1
    const patch: BenchRequest = {
      method: 'PATCH',
      url: loc.toString(),
      headers: { 'content-type': OCTET, 'content-range': `${off}-${end}` },
      body: { file: blob.path, start: off, end },
      agent,
      timeoutMs: Math.min(BIG_TIMEOUT, 5 * 60_000),
    }
    const res = await expect(patch, [202])
    const range = res.headers.range
    if (typeof range === 'string' && range !== `0-${end}`) throw new HttpFailure(patch, res, `Range ${range}, expected 0-${end}`)
    loc = location(base, patch, res)
    off = end + 1
  }
  const put: BenchRequest = { method: 'PUT', url: withDigest(loc, blob.digest), headers: { 'content-type': OCTET, 'content-length': 0 }, agent, timeoutMs: Math.min(BIG_TIMEOUT, 5 * 60_000) }
  const res = await expect(put, [201])
  checkDigestHeader(put, res, blob.digest)
  return performance.now() - t0
}

/** GET the blob with node:http, reading (and counting) the whole body. Optionally hash it. */
export async function getBlobNode (base: string, repo: string, blob: FileBlob, agent: http.Agent, verify = false): Promise<number> {
  const t0 = performance.now()
  let url = `${base}/v2/${repo}/blobs/${blob.digest}`
  for (let hop = 0; hop < 4; hop++) {
    const get: BenchRequest = { method: 'GET', url, agent, keepBytes: 0, timeoutMs: BIG_TIMEOUT, hashBody: verify }
    const res = await expect(get, [200, 307, 302])
    if (res.status !== 200) { url = location(base, get, res).toString(); continue }
    if (res.bytes !== blob.size) throw new HttpFailure(get, res, `body has ${res.bytes} bytes, expected ${blob.size}`)
    if (verify && res.sha256 !== blob.digest) throw new HttpFailure(get, res, `body hashes to ${res.sha256}, expected ${blob.digest}`)
    checkDigestHeader(get, res, blob.digest)
    return performance.now() - t0
  }
  throw new Error(`too many redirects for ${url}`)
}

/** GET the blob with curl to /dev/null; returns curl's own time_total in ms. */
export async function getBlobCurl (base: string, repo: string, blob: FileBlob): Promise<number> {
  const url = `${base}/v2/${repo}/blobs/${blob.digest}`
  const creds = credentialsFor(url)
  const auth = creds === undefined ? [] : ['-u', `${creds.user}:${creds.pass}`]
  const ca = trustedCA()
  const tls = ca !== undefined && url.startsWith('https:') ? ['--cacert', ca.file] : []
  const r = await run('curl', ['-sS', '-L', ...auth, ...tls, '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}', url], BIG_TIMEOUT)
  const [code, size, total] = r.stdout.trim().split(' ')
  if (r.code !== 0 || code !== '200' || Number(size) !== blob.size) {
    throw new HttpFailure({ method: 'GET', url, headers: { via: 'curl' } }, { status: Number(code ?? 0), headers: {}, body: Buffer.from(r.stderr), bytes: Number(size ?? 0) },
      `curl exit ${r.code}, status ${code}, ${size} bytes (expected ${blob.size})`)
  }
  return Number(total) * 1000
}

/** Upload a small in-memory blob (monolithic POST + PUT). */
export async function pushSmallBlob (base: string, repo: string, bytes: Buffer, digest: string, agent: http.Agent): Promise<void> {
  const post: BenchRequest = { method: 'POST', url: `${base}/v2/${repo}/blobs/uploads/`, headers: { 'content-length': 0 }, agent }
  const loc = location(base, post, await expect(post, [202]))
  await expect({ method: 'PUT', url: withDigest(loc, digest), headers: { 'content-type': OCTET }, body: bytes, agent }, [201])
}

export async function pushManifest (base: string, repo: string, ref: string, bytes: Buffer, mediaType: string, agent: http.Agent): Promise<void> {
  await expect({ method: 'PUT', url: `${base}/v2/${repo}/manifests/${ref}`, headers: { 'content-type': mediaType }, body: bytes, agent }, [201])
}

export interface LoadResult { requests: number; ms: number; rps: number; p50: number; p99: number; max: number }

/** `total` manifest GETs by `ref`, `concurrency` at a time, each checked for status and size. */
export async function manifestLoad (base: string, repo: string, ref: string, expectBytes: number, total: number, concurrency: number): Promise<LoadResult> {
  const agent = newAgent(concurrency)
  const lat: number[] = []
  let issued = 0
  let failure: unknown
  const url = `${base}/v2/${repo}/manifests/${ref}`
  const headers = { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' }
  const worker = async (): Promise<void> => {
    while (issued < total && failure === undefined) {
      issued++
      const req: BenchRequest = { method: 'GET', url, headers, agent, timeoutMs: 60_000 }
      const t = performance.now()
      try {
        const res = await expect(req, [200])
        if (res.bytes !== expectBytes) throw new HttpFailure(req, res, `manifest body has ${res.bytes} bytes, expected ${expectBytes}`)
      } catch (err) { failure ??= err; return }
      lat.push(performance.now() - t)
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => await worker()))
  const ms = performance.now() - t0
  agent.destroy()
  if (failure !== undefined) throw failure
  return { requests: lat.length, ms, rps: lat.length / (ms / 1000), p50: percentile(lat, 50), p99: percentile(lat, 99), max: percentile(lat, 100) }
}

export function summarizeLoads (rounds: LoadResult[]): { rps: number; p50: number; p99: number } {
  return { rps: median(rounds.map((r) => r.rps)), p50: median(rounds.map((r) => r.p50)), p99: median(rounds.map((r) => r.p99)) }
}

/** skopeo copy; returns ms of the whole command. Throws with skopeo's stderr on failure. */
export async function skopeoCopy (src: string, dst: string, extra: string[]): Promise<number> {
  // Credentials for whichever side is a registry we hold credentials for.
  const creds: string[] = []
  for (const [flag, ref] of [['--src-creds', src], ['--dest-creds', dst]] as const) {
    if (!ref.startsWith('docker://')) continue
    const c = credentialsFor('http://' + ref.slice('docker://'.length).split('/')[0]!) ?? credentialsFor('https://' + ref.slice('docker://'.length).split('/')[0]!)
    if (c !== undefined) creds.push(flag, `${c.user}:${c.pass}`)
  }
  const args = ['copy', '--quiet', ...extra, ...creds, src, dst]
  const r = await run('skopeo', args, BIG_TIMEOUT)
  if (r.code !== 0) {
    throw new HttpFailure({ method: 'SKOPEO', url: `skopeo ${args.map((a, i) => args[i - 1]?.endsWith('-creds') === true ? '<user>:<redacted>' : a).join(' ')}`, headers: {} },
      { status: r.code ?? -1, headers: {}, body: Buffer.from((r.stderr + r.stdout).slice(-4000)), bytes: 0 }, `skopeo exited ${r.code ?? r.signal}`)
  }
  return r.ms
}
