/**
 * Remote repositories (pull-through caches) benchmark: a Flotilla node in front of the CNCF
 * reference registry (docker-registry 2.8.2), both on 127.0.0.1, in the same run:
 *
 *   first pull    an uncached image through Flotilla (hub/…) against the same kind of image
 *                 pulled straight from the upstream. Target: at least 0.8×.
 *   cached pull   the same image through Flotilla again (from its cache) against the same
 *                 bytes pushed to a local repository of Flotilla. Target: at least 0.95×.
 *
 * A pull is the manifest by tag then every blob, one after the other, bodies drained (not
 * hashed: the servers are measured, not this client). Each repetition uses a new image.
 *
 *   npm run bench:remote -- [--size-mib 200] [--reps 3] [--json FILE]
 */
import { parseArgs } from 'node:util'
import http from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import { rm, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { loadavg } from 'node:os'
import { startFlotilla, startReference, OPEN_ANONYMOUS, type RunningRegistry } from '../lib/procs.js'

const { values: argv } = parseArgs({ options: { 'size-mib': { type: 'string', default: '200' }, reps: { type: 'string', default: '3' }, json: { type: 'string' } } })
const SIZE = Number(argv['size-mib']) * 2 ** 20
const REPS = Number(argv.reps)
const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
const OCI = 'application/vnd.oci.image.manifest.v1+json'
const agent = new http.Agent({ keepAlive: true })

function request (url: string, method: string, headers: Record<string, string> = {}, body?: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const keep: Buffer[] = []
      let bytes = 0
      // Only small bodies (manifests, errors) are kept; blobs are counted and dropped.
      res.on('data', (c: Buffer) => { bytes += c.length; if (bytes < 1 << 20) keep.push(c) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(keep), bytes }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function push (base: string, repo: string, tag: string, blobs: Buffer[], manifest: Buffer): Promise<void> {
  for (const b of blobs) {
    const start = await request(`${base}/v2/${repo}/blobs/uploads/`, 'POST')
    const loc = new URL(start.headers.location ?? '', base)
    loc.searchParams.set('digest', sha(b))
    const put = await request(loc.toString(), 'PUT', { 'content-type': 'application/octet-stream', 'content-length': String(b.length) }, b)
    if (put.status !== 201) throw new Error(`blob push to ${base} answered ${start.status}/${put.status}: ${put.body.toString().slice(0, 200)}`)
  }
  const m = await request(`${base}/v2/${repo}/manifests/${tag}`, 'PUT', { 'content-type': OCI }, manifest)
  if (m.status !== 201) throw new Error(`manifest push to ${base} answered ${m.status}: ${m.body.toString().slice(0, 200)}`)
}

/** Pull manifest + blobs; answers MiB/s over the whole pull. */
async function pull (base: string, repo: string, tag: string): Promise<number> {
  const t0 = performance.now()
  const m = await request(`${base}/v2/${repo}/manifests/${tag}`, 'GET', { accept: OCI })
  if (m.status !== 200) throw new Error(`${base}/v2/${repo}/manifests/${tag} answered ${m.status}: ${m.body.toString().slice(0, 200)}`)
  const doc = JSON.parse(m.body.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> }
  let bytes = 0
  for (const d of [doc.config.digest, ...doc.layers.map((l) => l.digest)]) {
    const b = await request(`${base}/v2/${repo}/blobs/${d}`, 'GET')
    if (b.status !== 200) throw new Error(`blob ${d} answered ${b.status}`)
    bytes += b.bytes
  }
  return bytes / 2 ** 20 / ((performance.now() - t0) / 1000)
}

function image (): { blobs: Buffer[]; manifest: Buffer } {
  const layer = randomBytes(SIZE)
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }))
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }] }))
  return { blobs: [config, layer], manifest }
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }

let upstream: RunningRegistry | undefined
let node: RunningRegistry | undefined
try {
  console.log(`remote bench: ${REPS} reps of a ${SIZE / 2 ** 20} MiB image; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`)
  upstream = await startReference()
  node = await startFlotilla({ anonymous: OPEN_ANONYMOUS })
  const admin = 'Basic ' + Buffer.from(`${node.credentials!.username}:${node.credentials!.password}`).toString('base64')
  const put = await request(`${node.url}/api/v1/remotes/hub`, 'PUT', { authorization: admin, 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ prefix: 'hub/', upstream: upstream.url, ttlSeconds: 3600 })))
  if (put.status !== 200) throw new Error(`remote add answered ${put.status}: ${put.body.toString()}`)
  const direct: number[] = []
  const first: number[] = []
  const cached: number[] = []
  const local: number[] = []
  for (let i = 0; i < REPS; i++) {
    // Two images per rep, pushed alike to the upstream: one pulled straight, one through Flotilla.
    const a = image()
    const b = image()
    await push(upstream.url, `library/direct${i}`, '1', a.blobs, a.manifest)
    await push(upstream.url, `library/cached${i}`, '1', b.blobs, b.manifest)
    direct.push(await pull(upstream.url, `library/direct${i}`, '1'))
    first.push(await pull(node.url, `hub/library/cached${i}`, '1'))
    // After the first pull: blobs already in Flotilla are linked, not downloaded, by a remote.
    await push(node.url, `bench/local${i}`, '1', b.blobs, b.manifest)
    await new Promise((resolve) => setTimeout(resolve, 500)) // the last link applied
    // Alternated, so that neither side always goes first.
    if (i % 2 === 0) { cached.push(await pull(node.url, `hub/library/cached${i}`, '1')); local.push(await pull(node.url, `bench/local${i}`, '1')) } else { local.push(await pull(node.url, `bench/local${i}`, '1')); cached.push(await pull(node.url, `hub/library/cached${i}`, '1')) }
    console.log(`rep ${i + 1}: direct ${direct[i]!.toFixed(0)} MiB/s, first through Flotilla ${first[i]!.toFixed(0)} MiB/s, cached ${cached[i]!.toFixed(0)} MiB/s, local ${local[i]!.toFixed(0)} MiB/s`)
  }
  const r1 = median(first) / median(direct)
  const r2 = median(cached) / median(local)
  console.log('')
  console.log('| pull | MiB/s (median) | against | MiB/s | ratio | target |')
  console.log('| --- | --- | --- | --- | --- | --- |')
  console.log(`| first, through Flotilla | ${median(first).toFixed(0)} | straight from the upstream | ${median(direct).toFixed(0)} | ${r1.toFixed(2)}× | ≥ 0.8× |`)
  console.log(`| cached, through Flotilla | ${median(cached).toFixed(0)} | local repository | ${median(local).toFixed(0)} | ${r2.toFixed(2)}× | ≥ 0.95× |`)
  if (argv.json !== undefined) await writeFile(argv.json, JSON.stringify({ sizeMiB: SIZE / 2 ** 20, reps: REPS, direct, first, cached, local, firstRatio: r1, cachedRatio: r2, load: loadavg() }, null, 2))
} finally {
  await node?.stop()
  await upstream?.stop()
  for (const r of [node, upstream]) if (r !== undefined) await rm(dirname(r.dataDir), { recursive: true, force: true })
}
