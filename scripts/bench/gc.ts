/**
 * Garbage-collection benchmark (issue 12, "Benchmark"; not a test).
 *
 *   npm run bench:gc -- [--blobs 100000] [--per-manifest 100] [--seconds 15] [--quick] [--json FILE]
 *
 * Both registries get the same content: BLOBS small blobs, PER-MANIFEST of them in each
 * manifest, then half the manifests deleted, so half the blobs are garbage.
 *
 *   Flotilla (one node, GC online): small image pushes by 8 clients for --seconds without GC
 *     (baseline), then the same pushes while `POST /api/v1/gc {graceSeconds: 0}` runs. Prints
 *     the GC time and the push throughput during GC against the baseline (target >= 0.8x).
 *   Reference (CNCF registry 2.8.2): its GC is offline (`registry garbage-collect`, the
 *     registry stopped: no push goes through meanwhile). Prints its GC time. Its content is
 *     written straight into its storage layout (what its pushes and deletes leave behind):
 *     pushing 100,000 blobs through its API took 12 minutes here, and only its GC is measured.
 *     `--reference-api` pushes through the API instead.
 *
 * Both must end with the garbage gone and every remaining manifest's blobs present: the script
 * checks this on disk and says so.
 */
import { parseArgs } from 'node:util'
import { join } from 'node:path'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { randomBytes, createHash } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { cpus, loadavg } from 'node:os'
import { startFlotilla, startReference, OPEN_ANONYMOUS, type RunningRegistry } from '../lib/procs.js'
import { run } from './lib/exec.js'
import { intOptions } from './lib/args.js'
import { fmt } from './lib/stats.js'
import { httpsFetch } from '../../src/cli/tls.js'

const { values: argv } = parseArgs({
  options: {
    blobs: { type: 'string' },
    'per-manifest': { type: 'string' },
    seconds: { type: 'string' },
    quick: { type: 'boolean', default: false },
    'reference-api': { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
})
if (argv.help) {
  process.stdout.write('npm run bench:gc -- [--blobs 100000] [--per-manifest 100] [--seconds 15] [--quick] [--reference-api] [--json FILE]\n')
  process.exit(0)
}
const int = intOptions(argv.quick)
const BLOBS = int(argv.blobs, 100_000, 10_000, 100, 10_000_000, '--blobs')
const PER = int(argv['per-manifest'], 100, 100, 1, 1000, '--per-manifest')
const SECONDS = int(argv.seconds, 15, 5, 1, 3600, '--seconds')
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar'

const sha256 = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

interface Blob { digest: string; size: number; data: Buffer }
const mkBlob = (data: Buffer): Blob => ({ digest: sha256(data), size: data.length, data })

function manifestOf (config: Blob, layers: Blob[]): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: OCI_LAYER, digest: l.digest, size: l.size })),
  }))
}

/** Run `fn` over `items` with `n` at a time. */
async function pool<T> (items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0
  await Promise.all(Array.from({ length: n }, async () => {
    while (i < items.length) await fn(items[i++]!)
  }))
}

async function ok (res: Response, what: string, status: number): Promise<void> {
  const text = await res.text()
  if (res.status !== status) throw new Error(`${what} answered ${res.status}: ${text.slice(0, 300)}`)
}

/** A monolithic upload: POST with the bytes (Flotilla: 201), or POST then PUT (the reference answers 202). */
async function putBlob (base: string, repo: string, b: Blob): Promise<void> {
  const res = await fetch(`${base}/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: b.data })
  if (res.status !== 202) return await ok(res, `blob ${b.digest}`, 201)
  await res.arrayBuffer()
  const loc = new URL(res.headers.get('location')!, base)
  loc.searchParams.set('digest', b.digest)
  await ok(await fetch(loc, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: b.data }), `blob ${b.digest}`, 201)
}

async function putManifest (base: string, repo: string, ref: string, body: Buffer): Promise<void> {
  await ok(await fetch(`${base}/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': OCI_MANIFEST }, body }), `manifest ${repo}:${ref}`, 201)
}

interface Content { manifests: Array<{ config: Blob; layers: Blob[]; body: Buffer; digest: string }>; doomed: Set<string> }

function content (): Content {
  const manifests: Content['manifests'] = []
  for (let m = 0; m * PER < BLOBS; m++) {
    const layers = Array.from({ length: Math.min(PER, BLOBS - m * PER) }, () => mkBlob(randomBytes(200)))
    const config = mkBlob(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', m, nonce: randomBytes(8).toString('hex') })))
    const body = manifestOf(config, layers)
    manifests.push({ config, layers, body, digest: sha256(body) })
  }
  return { manifests, doomed: new Set(manifests.filter((_, i) => i % 2 === 0).map((m) => m.digest)) }
}

async function populate (base: string, c: Content): Promise<number> {
  const t0 = performance.now()
  await pool(c.manifests, 4, async (m) => {
    await pool([m.config, ...m.layers], 8, async (b) => await putBlob(base, 'bench/gc', b))
    await putManifest(base, 'bench/gc', m.digest, m.body)
  })
  for (const m of c.manifests) {
    if (!c.doomed.has(m.digest)) continue
    await ok(await fetch(`${base}/v2/bench/gc/manifests/${m.digest}`, { method: 'DELETE' }), `delete ${m.digest}`, 202)
  }
  return (performance.now() - t0) / 1000
}

/**
 * The reference's storage layout after the same pushes and deletes (registry/storage/paths.go):
 * every blob (manifests too) under blobs/, each layer and config linked into the repository's
 * _layers, and a revision link for each manifest not deleted (a DELETE removes that link).
 */
async function populateReferenceLayout (dataDir: string, c: Content): Promise<number> {
  const t0 = performance.now()
  const v2 = join(dataDir, 'docker', 'registry', 'v2')
  const repo = join(v2, 'repositories', 'bench', 'gc')
  const hex = (d: string): string => d.slice('sha256:'.length)
  const putFile = async (dir: string, name: string, data: Buffer | string): Promise<void> => {
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, name), data)
  }
  const blobFile = async (digest: string, data: Buffer): Promise<void> => await putFile(join(v2, 'blobs', 'sha256', hex(digest).slice(0, 2), hex(digest)), 'data', data)
  await pool(c.manifests, 8, async (m) => {
    for (const b of [m.config, ...m.layers]) {
      await blobFile(b.digest, b.data)
      await putFile(join(repo, '_layers', 'sha256', hex(b.digest)), 'link', b.digest)
    }
    await blobFile(m.digest, m.body)
    if (!c.doomed.has(m.digest)) await putFile(join(repo, '_manifests', 'revisions', 'sha256', hex(m.digest)), 'link', m.digest)
  })
  return (performance.now() - t0) / 1000
}

/** Small image pushes by 8 clients until `stop()`: pushes completed, per second. */
function pusher (base: string): { stop: () => Promise<{ pushes: number; seconds: number; failed: number }> } {
  let running = true
  let pushes = 0
  let failed = 0
  const t0 = performance.now()
  const one = async (k: number): Promise<void> => {
    for (let n = 0; running; n++) {
      const layer = mkBlob(randomBytes(1024))
      const config = mkBlob(Buffer.from(JSON.stringify({ k, n, nonce: randomBytes(6).toString('hex') })))
      try {
        await putBlob(base, `bench/push${k}`, layer)
        await putBlob(base, `bench/push${k}`, config)
        await putManifest(base, `bench/push${k}`, `t${n % 5}`, manifestOf(config, [layer]))
        pushes++
      } catch {
        failed++
      }
    }
  }
  const all = Promise.all(Array.from({ length: 8 }, async (_, k) => await one(k)))
  return {
    async stop () {
      running = false
      await all
      return { pushes, seconds: (performance.now() - t0) / 1000, failed }
    },
  }
}

async function filesUnder (dir: string): Promise<Set<string>> {
  const out = new Set<string>()
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(join(d, e.name))
      else out.add(e.name)
    }
  }
  await walk(dir)
  return out
}

/** Every kept manifest's blobs are on disk, and no doomed-only blob is. */
function checkDisk (names: Set<string>, c: Content, hexName: (digest: string) => string): string {
  let lost = 0
  let left = 0
  for (const m of c.manifests) {
    for (const b of [m.config, ...m.layers]) {
      const has = names.has(hexName(b.digest))
      if (c.doomed.has(m.digest) && has) left++
      if (!c.doomed.has(m.digest) && !has) lost++
    }
  }
  return lost === 0 && left === 0 ? 'ok: garbage gone, nothing referenced lost' : `WRONG: ${left} garbage blobs left, ${lost} referenced blobs lost`
}

async function main (): Promise<void> {
  process.stdout.write(`GC benchmark: ${BLOBS} blobs of 200 bytes, ${PER} per manifest, half the manifests deleted; ${cpus().length} cores, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}\n`)
  const c = content()
  const results: Record<string, unknown> = { blobs: BLOBS, perManifest: PER, seconds: SECONDS }

  // ---- Flotilla: online GC while pushes go on.
  const f: RunningRegistry = await startFlotilla({ anonymous: OPEN_ANONYMOUS, env: { FLOTILLA_GC_INTERVAL: '0', FLOTILLA_LOG_LEVEL: 'warn' } })
  try {
    process.stdout.write(`[flotilla] populating… `)
    process.stdout.write(`${fmt(await populate(f.url, c))} s\n`)
    const base = pusher(f.url)
    await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000))
    const without = await base.stop()
    const withoutRate = without.pushes / without.seconds
    process.stdout.write(`[flotilla] pushes without GC: ${fmt(withoutRate)}/s (${without.pushes} in ${fmt(without.seconds)} s, ${without.failed} failed)\n`)
    const during = pusher(f.url)
    const t0 = performance.now()
    // Through node:http: fetch() gives up on an answer after 300 s, and 100,000 blobs may take longer.
    const res = await httpsFetch(`${f.url}/api/v1/gc`, { method: 'POST', headers: { authorization: 'Basic ' + Buffer.from(`${f.credentials!.username}:${f.credentials!.password}`).toString('base64'), 'content-type': 'application/json' }, body: JSON.stringify({ graceSeconds: 0 }) }, {}, 3_600_000)
    const report = await res.json() as { blobs: unknown[]; bytes: number; nodes: Array<{ deleted: number }>; collectMs?: number; sweepMs?: number }
    const gcSeconds = (performance.now() - t0) / 1000
    // Push throughput is measured over the GC's own window (at least a few seconds of it).
    if (gcSeconds < SECONDS) await new Promise((resolve) => setTimeout(resolve, (SECONDS - gcSeconds) * 1000))
    const withGc = await during.stop()
    const withRate = withGc.pushes / withGc.seconds
    if (res.status !== 200) throw new Error(`gc answered ${res.status}`)
    const disk = checkDisk(await filesUnder(join(f.dataDir, 'blobs')), c, (d) => d.slice('sha256:'.length))
    process.stdout.write(`[flotilla] GC: ${fmt(gcSeconds)} s (collection ${fmt((report.collectMs ?? 0) / 1000)} s, sweep ${fmt((report.sweepMs ?? 0) / 1000)} s), ${report.blobs.length} blobs forgotten, ${report.nodes[0]?.deleted ?? 0} files deleted; disk ${disk}\n`)
    process.stdout.write(`[flotilla] pushes during GC: ${fmt(withRate)}/s (${withGc.pushes} in ${fmt(withGc.seconds)} s, ${withGc.failed} failed) => ratio ${fmt(withRate / withoutRate, 2)}x (target >= 0.8x: ${withRate / withoutRate >= 0.8 ? 'PASS' : 'MISS'})\n`)
    Object.assign(results, { flotilla: { gcSeconds, forgotten: report.blobs.length, pushesPerSecondWithout: withoutRate, pushesPerSecondDuring: withRate, ratio: withRate / withoutRate, disk } })
  } finally {
    await f.stop()
  }

  // ---- Reference: offline GC.
  const r = await startReference()
  let refSeconds = NaN
  try {
    if (argv['reference-api']) {
      process.stdout.write('[reference] populating through its API… ')
      process.stdout.write(`${fmt(await populate(r.url, c))} s\n`)
    } else {
      process.stdout.write('[reference] writing its storage layout… ')
      process.stdout.write(`${fmt(await populateReferenceLayout(r.dataDir, c))} s\n`)
    }
  } finally {
    await r.stop()
  }
  const config = join(r.dataDir, '..', 'config.yml')
  const t0 = performance.now()
  const gc = await run('docker-registry', ['garbage-collect', config], 3600_000)
  refSeconds = (performance.now() - t0) / 1000
  if (gc.code !== 0) throw new Error(`registry garbage-collect failed: ${gc.stderr.slice(-500)}`)
  // The reference stores each blob as blobs/sha256/xx/<hex>/data: check by directory.
  const dirs = new Set<string>()
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (!e.isDirectory()) continue
      if (/^[0-9a-f]{64}$/.test(e.name)) dirs.add(e.name); else await walk(join(d, e.name))
    }
  }
  await walk(join(r.dataDir, 'docker', 'registry', 'v2', 'blobs'))
  const refCheck = checkDisk(dirs, c, (d) => d.slice('sha256:'.length))
  process.stdout.write(`[reference] GC (offline, registry stopped: 0 pushes/s meanwhile): ${fmt(refSeconds)} s; disk ${refCheck}\n`)
  results.reference = { gcSeconds: refSeconds, disk: refCheck }
  process.stdout.write(`\nRESULTS: Flotilla GC ${fmt((results.flotilla as { gcSeconds: number }).gcSeconds)} s online (pushes at ${fmt((results.flotilla as { ratio: number }).ratio, 2)}x meanwhile) | reference GC ${fmt(refSeconds)} s offline (pushes stopped)\n`)
  if (argv.json !== undefined) await writeFile(argv.json, JSON.stringify(results, null, 2))
}

await main()
