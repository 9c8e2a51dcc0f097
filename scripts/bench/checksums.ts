/**
 * Blob checksums benchmark (issue 14, "Benchmark"; not a test).
 *
 *   npm run bench:checksums -- [--size-mib 128] [--burst 4] [--reps 3] [--quick] [--self-check] [--json FILE]
 *
 * Two single nodes side by side on 127.0.0.1, driven one at a time in alternation: `off` with
 * FLOTILLA_CHECKSUMS=false (what the build did before checksums: no SHA-1/MD5 at all) and `on`
 * (the default: the committing node hashes each blob in a worker thread right after commit).
 * Each rep pushes a burst of BURST fresh random blobs of SIZE back to back (monolithic PUT,
 * streamed from the page cache) to each node: with checksums on, hashing a blob overlaps the
 * next upload, the case where it could slow pushes down. Prints
 *
 *   - upload throughput per mode (MiB/s over each burst, median of the reps) and on/off (target >= 0.9)
 *   - the delay from a push's 201 until GET /api/v1/checksums/DIGEST answers 200 (the checksums
 *     are in the metadata, hence searchable), polled every 10 ms: for BURST pushes made one at a
 *     time after the reps, and for the last blob of each burst (it waits for the hashing of the
 *     ones before it). Nothing polls during a timed burst.
 *
 * --self-check starts the `on` node with checksums off too: the ratio then shows the noise.
 *
 * Blob files go to a temp dir and are deleted after each burst; both nodes' data dirs at the end.
 */
import { parseArgs } from 'node:util'
import { join } from 'node:path'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import { cpus, loadavg } from 'node:os'
import { startFlotilla, tempDir, OPEN_ANONYMOUS, type RunningRegistry } from '../lib/procs.js'
import { writeRandomFile, type FileBlob } from './lib/content.js'
import { newAgent, pushMonolithic, setBigTimeout } from './lib/ops.js'
import { intOptions } from './lib/args.js'
import { fmt, median, MiB, sleep } from './lib/stats.js'

const { values: argv } = parseArgs({
  options: {
    'size-mib': { type: 'string' },
    burst: { type: 'string' },
    reps: { type: 'string' },
    quick: { type: 'boolean', default: false },
    'self-check': { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
})
if (argv.help) {
  process.stdout.write('npm run bench:checksums -- [--size-mib 128] [--burst 4] [--reps 3] [--quick] [--self-check] [--json FILE]\n')
  process.exit(0)
}
const int = intOptions(argv.quick)
const SIZE = int(argv['size-mib'], 128, 32, 1, 16 * 1024, 'size-mib') * MiB
const BURST = int(argv.burst, 4, 3, 1, 100, 'burst')
const REPS = int(argv.reps, 3, 2, 1, 50, 'reps')
setBigTimeout(600_000)

type Mode = 'off' | 'on'
const base = await tempDir('flotilla-bench-checksums-')
for (const mode of ['off', 'on']) await mkdir(join(base, mode), { recursive: true })
const nodes: Record<Mode, RunningRegistry> = {
  off: await startFlotilla({ dataDir: join(base, 'off', 'data'), anonymous: OPEN_ANONYMOUS, env: { FLOTILLA_CHECKSUMS: 'false', FLOTILLA_LOG_LEVEL: 'warn' } }),
  on: await startFlotilla({ dataDir: join(base, 'on', 'data'), anonymous: OPEN_ANONYMOUS, env: { FLOTILLA_LOG_LEVEL: 'warn', ...(argv['self-check'] ? { FLOTILLA_CHECKSUMS: 'false' } : {}) } }),
}
const agent = newAgent(4)

/** An access token for the admin API (a token is checked by its hash: cheaper than a password, so polling costs little). */
async function tokenFor (node: RunningRegistry): Promise<string> {
  const c = node.credentials!
  const res = await fetch(`${node.url}/api/v1/tokens`, { method: 'POST', headers: { authorization: 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64'), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'bench', scopes: [{ repositories: ['**'], actions: ['read'] }] }) })
  const doc = await res.json() as { token?: string }
  if (res.status !== 201 || doc.token === undefined) throw new Error(`token: ${res.status} ${JSON.stringify(doc)}`)
  return doc.token
}
const SELF_CHECK = argv['self-check']
const auth = 'Basic ' + Buffer.from(`admin:${await tokenFor(nodes.on)}`).toString('base64')

/** ms from `since` until the node answers the blob's checksums (polled every 10 ms). */
async function searchable (node: RunningRegistry, digest: string, since: number): Promise<number> {
  const deadline = since + 600_000
  for (;;) {
    const res = await fetch(`${node.url}/api/v1/checksums/${digest}`, { headers: { authorization: auth } })
    await res.arrayBuffer()
    if (res.status === 200) return performance.now() - since
    if (res.status !== 404) throw new Error(`checksums of ${digest}: ${res.status}`)
    if (performance.now() > deadline) throw new Error(`checksums of ${digest} not recorded after 10 minutes`)
    await sleep(10)
  }
}

const throughput: Record<Mode, number[]> = { off: [], on: [] }
const delays: number[] = []
const tailDelays: number[] = []
/** on/off of each rep's two bursts, run back to back: drift in the machine's load cancels within a pair. */
const pairs: number[] = []
let n = 0

async function burst (mode: Mode): Promise<void> {
  const node = nodes[mode]
  const files: FileBlob[] = []
  for (let i = 0; i < BURST; i++) files.push(await writeRandomFile(join(base, `blob-${n++}`), SIZE))
  const done: Array<{ digest: string; at: number }> = []
  const t0 = performance.now()
  for (const f of files) {
    await pushMonolithic(node.url, 'bench/checksums', f, agent)
    done.push({ digest: f.digest, at: performance.now() })
  }
  const ms = performance.now() - t0
  throughput[mode].push(BURST * SIZE / MiB / (ms / 1000))
  // No polling during the burst (it would load the node being measured): the last blob's delay,
  // from its 201, which waits for the hashing of every blob before it.
  if (mode === 'on' && !SELF_CHECK) tailDelays.push(await searchable(node, done.at(-1)!.digest, done.at(-1)!.at))
  for (const f of files) await rm(f.path, { force: true })
}

/** One push at a time, polled from its 201: the delay of a push with nothing queued before it. */
async function single (): Promise<void> {
  const f = await writeRandomFile(join(base, `blob-${n++}`), SIZE)
  await pushMonolithic(nodes.on.url, 'bench/checksums', f, agent)
  delays.push(await searchable(nodes.on, f.digest, performance.now()))
  await rm(f.path, { force: true })
}

console.log(`checksums bench: ${REPS} reps of ${BURST} x ${SIZE / MiB} MiB monolithic pushes per mode; ${cpus().length} cores, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`)
try {
  // A warm-up burst each, not counted (JIT, page cache, first files of the store).
  const keep = { off: [...throughput.off], on: [...throughput.on] }
  await burst('off'); await burst('on')
  throughput.off = keep.off; throughput.on = keep.on; tailDelays.length = 0
  for (let r = 0; r < REPS; r++) {
    // Alternate which goes first, so drift (load, cache) does not favour one mode.
    for (const mode of (r % 2 === 0 ? ['off', 'on'] : ['on', 'off']) as Mode[]) await burst(mode)
    pairs.push(throughput.on.at(-1)! / throughput.off.at(-1)!)
    console.log(`  rep ${r + 1}: off ${fmt(throughput.off.at(-1)!)} MiB/s, on ${fmt(throughput.on.at(-1)!)} MiB/s (on/off ${fmt(pairs.at(-1)!, 3)})`)
  }
  if (!SELF_CHECK) for (let i = 0; i < BURST; i++) await single()
  const off = median(throughput.off)
  const on = median(throughput.on)
  const ratio = on / off
  const result = {
    sizeMiB: SIZE / MiB, burst: BURST, reps: REPS,
    uploadMiBps: { off, on }, ratio, pairedRatioMedian: median(pairs), load: loadavg(),
    searchableMs: { single: { median: median(delays), max: Math.max(...delays), samples: delays.length }, burstLast: { median: median(tailDelays), max: Math.max(...tailDelays), samples: tailDelays.length } },
  }
  console.log(`upload throughput: checksums off ${fmt(off)} MiB/s, on ${fmt(on)} MiB/s: on/off ${fmt(ratio, 3)}, median of the reps' on/off ${fmt(median(pairs), 3)} (target >= 0.9) ${median(pairs) >= 0.9 ? 'MET' : 'NOT MET'}`)
  if (loadavg()[0]! > cpus().length) console.log(`  (load ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores: other processes share the CPU, the figures are noisy; --self-check shows how much)`)
  console.log(`push -> checksums searchable, one push alone: median ${fmt(median(delays), 0)} ms, max ${fmt(Math.max(...delays), 0)} ms over ${delays.length} blobs of ${SIZE / MiB} MiB`)
  console.log(`push -> checksums searchable, last blob of a burst of ${BURST}: median ${fmt(median(tailDelays), 0)} ms, max ${fmt(Math.max(...tailDelays), 0)} ms over ${tailDelays.length} bursts`)
  if (argv.json !== undefined) await writeFile(argv.json, JSON.stringify(result, null, 2))
} finally {
  agent.destroy()
  await Promise.all([nodes.off.stop(), nodes.on.stop()])
  await rm(base, { recursive: true, force: true })
}
