/**
 * Registry benchmark: Flotilla against the CNCF reference registry (docker-registry 2.8.2),
 * both running side by side on 127.0.0.1, measured one request at a time in alternation.
 *
 *   npm run bench:registry -- [--size-mib 1024] [--quick] [--only flotilla|reference]
 *                             [--json FILE] [--reps 3] [--chunk-mib 8] [--image-mib 200]
 *                             [--requests 2000] [--concurrency 200] [--rounds 5]
 *                             [--skip mono,post,chunked,get,first,skopeo,manifest] [--self-check] [--keep]
 *                             [--wait-idle SECONDS]   (wait, at most that long, for the 1-min load to drop below 1)
 *                             [--flotilla-entry FILE] (run Flotilla from FILE, e.g. a tsc build's src/cli.js, instead of bin/flotilla.mjs)
 *                             [--tls]                 both registries serve HTTPS with the same certificate (ECDSA P-256, from
 *                               a CA made for the run; the reference: http.tls.certificate/key), every client verifies it
 *                             [--auth anonymous|basic] Flotilla requires authentication by default. anonymous (default):
 *                               start it with FLOTILLA_AUTH_ANONYMOUS granting bench/** read,write,delete, like the open
 *                               reference; basic: a known admin password, sent as Basic auth on every request (and to
 *                               skopeo as --src-creds/--dest-creds). The reference registry always runs without auth.
 *
 * Ratios are always "Flotilla advantage": Flotilla/reference for throughputs, reference/Flotilla
 * for latencies and memory, so > 1 means Flotilla is better. --self-check runs a second
 * reference registry in Flotilla's place (the ratios should then sit near 1).
 */
import { parseArgs } from 'node:util'
import { join, dirname } from 'node:path'
import { rm, mkdir, writeFile, readFile } from 'node:fs/promises'
import { cpus, totalmem, loadavg } from 'node:os'
import { randomBytes } from 'node:crypto'
import { startFlotilla, startReference, tempDir, type RunningRegistry } from '../lib/procs.js'
import { writeRandomFile, writeOciLayout, smallImage, type OciLayout } from './lib/content.js'
import { RssSampler, readCpu } from './lib/rss.js'
import { HttpFailure, setCredentials } from './lib/http.js'
import { run } from './lib/exec.js'
import * as ops from './lib/ops.js'
import { startSink } from './lib/sink.js'
import { startFlotillaEntry } from './lib/entry.js'
import { request as httpRequest } from './lib/http.js'
import { performance } from 'node:perf_hooks'
import { MiB, median, fmt } from './lib/stats.js'
import { intOptions } from './lib/args.js'
import { setTrustedCA } from './lib/http.js'
import { createCA, issueCertificate } from '../../src/tls/issue.js'

// ---------------------------------------------------------------- options

const { values: argv } = parseArgs({
  options: {
    'size-mib': { type: 'string' },
    'chunk-mib': { type: 'string', default: '8' },
    'image-mib': { type: 'string' },
    reps: { type: 'string' },
    requests: { type: 'string' },
    concurrency: { type: 'string' },
    rounds: { type: 'string' },
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    json: { type: 'string' },
    skip: { type: 'string', default: '' },
    'self-check': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    'wait-idle': { type: 'string', default: '0' },
    'flotilla-entry': { type: 'string' },
    auth: { type: 'string', default: 'anonymous' },
    tls: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
})

if (argv.help) {
  console.log('usage: npm run bench:registry -- [--size-mib N] [--quick] [--only flotilla|reference] [--json FILE] [--reps N] [--chunk-mib N] [--image-mib N] [--requests N] [--concurrency N] [--rounds N] [--skip mono,post,chunked,get,first,skopeo,manifest] [--self-check] [--keep] [--wait-idle SECONDS] [--flotilla-entry FILE] [--auth anonymous|basic] [--tls]')
  process.exit(0)
}

const intOpt = intOptions(argv.quick === true)

const SIZE = intOpt(argv['size-mib'], 1024, 64, 1, 16 * 1024, 'size-mib') * MiB
const CHUNK = intOpt(argv['chunk-mib'], 8, 8, 1, 1024, 'chunk-mib') * MiB
const IMAGE = intOpt(argv['image-mib'], 200, 16, 1, 4096, 'image-mib') * MiB
const REPS = intOpt(argv.reps, 3, 2, 1, 20, 'reps')
const REQUESTS = intOpt(argv.requests, 2000, 400, 1, 1_000_000, 'requests')
const CONCURRENCY = intOpt(argv.concurrency, 200, 100, 1, 2000, 'concurrency')
const ROUNDS = intOpt(argv.rounds, 5, 2, 1, 50, 'rounds')
const WAIT_IDLE_S = intOpt(argv['wait-idle'], 0, 0, 0, 3600, 'wait-idle')
const SKIP = new Set(argv.skip.split(',').map((s) => s.trim()).filter(Boolean))
for (const s of SKIP) if (!['mono', 'post', 'chunked', 'get', 'first', 'skopeo', 'manifest'].includes(s)) { console.error(`unknown --skip ${s}`); process.exit(2) }
if (argv.auth !== 'anonymous' && argv.auth !== 'basic') { console.error('--auth takes anonymous or basic'); process.exit(2) }
if (argv.only !== undefined && argv.only !== 'flotilla' && argv.only !== 'reference') { console.error('--only takes flotilla or reference'); process.exit(2) }

type Who = 'reference' | 'flotilla'
const WHO: Who[] = argv.only === undefined ? ['reference', 'flotilla'] : [argv.only as Who]
const SIZE_LABEL = SIZE >= 1024 * MiB ? `${fmt(SIZE / 1024 / MiB, SIZE % (1024 * MiB) === 0 ? 0 : 2)} GiB` : `${SIZE / MiB} MiB`
const RSS_TARGET_MB = 150
// A whole-blob transfer slower than 5 MiB/s (or 2 minutes for small ones) counts as a hang.
ops.setBigTimeout(Math.max(120_000, (Math.max(SIZE, IMAGE) / MiB / 5) * 1000))

// ---------------------------------------------------------------- results

type Better = 'higher' | 'lower'
interface Measure {
  id: string
  name: string
  unit: string
  better: Better
  /** For ratios: the minimum Flotilla advantage. For 'absolute': Flotilla's value must be below. */
  target?: { kind: 'ratio'; min: number } | { kind: 'absolute-max'; max: number }
  values: Partial<Record<Who, number>>
  samples: Partial<Record<Who, number[]>>
  extra: Partial<Record<Who, Record<string, unknown>>>
  note?: string
}

const measures: Measure[] = []
const failures: Array<{ registry: Who; phase: string; failure: Record<string, unknown> }> = []
const notes: string[] = []

function measure (id: string, name: string, unit: string, better: Better, target?: Measure['target']): Measure {
  const m: Measure = { id, name, unit, better, target, values: {}, samples: {}, extra: {} }
  measures.push(m)
  return m
}

function advantage (m: Measure): number | undefined {
  const r = m.values.reference
  const f = m.values.flotilla
  if (r === undefined || f === undefined || !Number.isFinite(r) || !Number.isFinite(f) || r === 0 || f === 0) return undefined
  return m.better === 'higher' ? f / r : r / f
}

function verdict (m: Measure): string {
  if (m.target === undefined) return ''
  if (m.target.kind === 'absolute-max') {
    const f = m.values.flotilla
    if (f === undefined) return 'n/a'
    return f < m.target.max ? 'PASS' : 'MISS'
  }
  const a = advantage(m)
  if (a === undefined) return 'n/a'
  return a >= m.target.min ? 'PASS' : 'MISS'
}

function targetText (m: Measure): string {
  if (m.target === undefined) return ''
  return m.target.kind === 'ratio' ? `>= ${m.target.min}x` : `< ${m.target.max} ${m.unit}`
}

function label (who: Who): string {
  return who === 'flotilla' && argv['self-check'] ? 'flotilla(=ref#2)' : who
}

function printMeasure (m: Measure): void {
  const parts = WHO.map((w) => {
    const v = m.values[w]
    const s = m.samples[w]
    const sampleText = s !== undefined && s.length > 1 ? ` [${s.map((x) => fmt(x)).join(', ')}]` : ''
    const missing = m.extra[w]?.supported === false ? 'unsupported' : 'FAILED/n/a'
    const sys = m.extra[w]?.sysCpuSecondsPerGiB
    const sysText = typeof sys === 'number' ? ` (of which sys ${fmt(sys, 2)})` : ''
    return `${label(w)} ${v === undefined ? missing : fmt(v, m.unit === 'req/s' ? 0 : m.unit === 'ms' || m.unit === 'CPU-s/GiB' ? 2 : 1)} ${m.unit}${sysText}${sampleText}`
  })
  const a = advantage(m)
  const v = verdict(m)
  console.log(`  => ${m.name}: ${parts.join('  |  ')}${a === undefined ? '' : `  |  ratio ${fmt(a, 2)}x`}${m.target === undefined ? '' : `  (target ${targetText(m)}: ${v})`}`)
}

function recordFailure (who: Who, phase: string, err: unknown): void {
  const failure = err instanceof HttpFailure ? err.report() : { why: err instanceof Error ? (err.stack ?? err.message) : String(err) }
  failures.push({ registry: who, phase, failure })
  console.log(`  !! ${label(who)} failed in ${phase}: ${JSON.stringify(failure, null, 2).split('\n').join('\n     ')}`)
}

// ---------------------------------------------------------------- lifecycle

const registries: Partial<Record<Who, RunningRegistry>> = {}
const cleanupDirs: string[] = []
let flotillaLog: string | undefined
let cleaning = false

async function cleanup (): Promise<void> {
  if (cleaning) return
  cleaning = true
  for (const r of Object.values(registries)) {
    const timer = setTimeout(() => { r.proc.kill('SIGKILL') }, 10_000)
    try { await r.stop() } catch { /* already gone */ }
    clearTimeout(timer)
  }
  if (argv.keep) { console.log(`kept temp dirs: ${cleanupDirs.join(' ')}`); return }
  for (const d of cleanupDirs) await rm(d, { recursive: true, force: true })
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => { console.error(`\n${sig}: stopping registries and removing temp dirs`); void cleanup().finally(() => process.exit(130)) })
}

/** --tls: one CA and one server certificate for 127.0.0.1, shared by both registries. */
let tlsFiles: { certificate: string; key: string; ca: string; caDir: string } | undefined

async function makeTls (): Promise<void> {
  const dir = await tempDir('flotilla-bench-tls-')
  cleanupDirs.push(dir)
  const ca = await createCA({ name: 'Flotilla bench CA' })
  const server = await issueCertificate(ca, { kind: 'server', hosts: { dns: ['localhost'], ips: ['127.0.0.1'] } })
  // The CA alone in the cert dir skopeo reads (--dest-cert-dir): there, a *.key is taken for a
  // client key and skopeo refuses to start without its *.cert.
  await mkdir(join(dir, 'certs.d'))
  tlsFiles = { certificate: join(dir, 'server.crt'), key: join(dir, 'server.key'), ca: join(dir, 'certs.d', 'ca.crt'), caDir: join(dir, 'certs.d') }
  await writeFile(tlsFiles.certificate, server.certPem)
  await writeFile(tlsFiles.key, server.keyPem, { mode: 0o600 })
  await writeFile(tlsFiles.ca, ca.certPem)
  setTrustedCA(ca.certPem, tlsFiles.ca)
}

async function start (who: Who): Promise<void> {
  try {
    if (who === 'reference' || argv['self-check']) {
      const r = await startReference(tlsFiles !== undefined ? { tls: tlsFiles } : {})
      cleanupDirs.push(dirname(r.dataDir))
      registries[who] = r
    } else {
      const base = await tempDir('flotilla-bench-')
      cleanupDirs.push(base)
      flotillaLog = join(base, 'flotilla.log')
      const password = randomBytes(18).toString('base64url')
      const env: Record<string, string> = argv.auth === 'basic'
        ? { FLOTILLA_INITIAL_ADMIN_PASSWORD: password }
        : { FLOTILLA_AUTH_ANONYMOUS: 'bench/**=read,write,delete' }
      registries[who] = argv['flotilla-entry'] !== undefined
        ? await startFlotillaEntry(argv['flotilla-entry'], join(base, 'data'), flotillaLog, env)
        : await startFlotilla({ dataDir: join(base, 'data'), logFile: flotillaLog, env, ...(tlsFiles !== undefined ? { tls: tlsFiles } : {}) })
      if (argv.auth === 'basic') setCredentials(registries[who]!.url, 'admin', password)
    }
    const r = registries[who]!
    const how = who === 'flotilla' && !argv['self-check']
      ? ` from ${argv['flotilla-entry'] ?? 'bin/flotilla.mjs'}, auth: ${argv.auth === 'basic' ? 'Basic admin:<password> on every request' : 'anonymous grant bench/**=read,write,delete'}`
      : ' (no auth)'
    console.log(`${label(who)}: ${r.url} (pid ${r.proc.pid})${how}`)
  } catch (err) {
    recordFailure(who, 'start', err)
  }
}

function alive (who: Who): RunningRegistry | undefined {
  const r = registries[who]
  if (r === undefined) return undefined
  if (r.proc.exitCode !== null || r.proc.signalCode !== null) {
    if (!failures.some((f) => f.registry === who && f.phase === 'process exited')) {
      recordFailure(who, 'process exited', new Error(`${label(who)} exited with ${r.proc.exitCode ?? r.proc.signalCode}`))
    }
    return undefined
  }
  return r
}

/** Alternate which registry goes first, so neither always runs on a warmer machine. */
function order (rep: number): Who[] {
  return rep % 2 === 0 ? WHO : [...WHO].reverse()
}

async function settle (): Promise<void> {
  // Flush dirty pages left by the previous upload so it does not slow down the next one.
  await run('sync', [], 120_000)
}

// Memory and CPU of each registry per phase.
const memory: Partial<Record<Who, Record<string, { peakRssMiB: number; peakTreeMiB: number; hwmMiB: number; startRssMiB: number; children: number }>>> = {}
const cpu: Partial<Record<Who, Record<string, number[]>>> = {}
const sysCpu: Partial<Record<Who, Record<string, number[]>>> = {}

async function timed<T> (who: Who, phase: string, fn: () => Promise<T>, cpuKey = phase): Promise<T> {
  const r = registries[who]!
  const pid = r.proc.pid!
  const sampler = new RssSampler(pid, 50).start()
  const cpu0 = readCpu(pid)
  try {
    return await fn()
  } finally {
    const mem = sampler.stop()
    const cpu1 = readCpu(pid)
    const cpuS = (cpu1.user + cpu1.sys) - (cpu0.user + cpu0.sys)
    ;((sysCpu[who] ??= {})[cpuKey] ??= []).push(cpu1.sys - cpu0.sys)
    const byPhase = (memory[who] ??= {})
    const prev = byPhase[phase]
    byPhase[phase] = {
      peakRssMiB: Math.max(prev?.peakRssMiB ?? 0, mem.peakRssMiB),
      peakTreeMiB: Math.max(prev?.peakTreeMiB ?? 0, mem.peakTreeMiB),
      children: Math.max(prev?.children ?? 0, mem.children),
      hwmMiB: Math.max(prev?.hwmMiB ?? 0, mem.hwmMiB),
      startRssMiB: prev?.startRssMiB ?? mem.startRssMiB,
    }
    ;((cpu[who] ??= {})[cpuKey] ??= []).push(cpuS)
  }
}

const mibps = (bytes: number, ms: number): number => (bytes / MiB) / (ms / 1000)

/** Flotilla's own view of its memory, from /metrics (prom-client default metrics), if it serves one. */
async function metricsMemory (who: Who): Promise<string | undefined> {
  const r = registries[who]
  if (r === undefined || (who === 'reference' || argv['self-check'])) return undefined
  try {
    const res = await httpRequest({ method: 'GET', url: `${r.url}/metrics`, timeoutMs: 5000, keepBytes: 1 << 20 })
    if (res.status !== 200) return undefined
    const text = res.body.toString()
    const pick = (suffix: string): string => {
      const m = new RegExp(`^\\w*${suffix}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text)
      return m === null ? '?' : fmt(Number(m[1]) / 1e6)
    }
    return `resident ${pick('process_resident_memory_bytes')} MB, V8 heap used ${pick('nodejs_heap_size_used_bytes')} / total ${pick('nodejs_heap_size_total_bytes')} MB, external ${pick('nodejs_external_memory_bytes')} MB`
  } catch { return undefined }
}

// ---------------------------------------------------------------- phases

const blobRepo: Partial<Record<Who, string>> = {}

async function throughputPhase (m: Measure, phase: string, bytes: number, op: (who: Who, r: RunningRegistry, rep: number) => Promise<number | undefined>, reps = REPS): Promise<void> {
  const dead = new Set<Who>()
  for (let rep = 0; rep < reps; rep++) {
    for (const who of order(rep)) {
      if (dead.has(who)) continue
      const r = alive(who)
      if (r === undefined) { dead.add(who); continue }
      await settle()
      try {
        const ms = await timed(who, phase, async () => await op(who, r, rep), m.id)
        if (ms === undefined) { cpu[who]?.[m.id]?.pop(); sysCpu[who]?.[m.id]?.pop(); dead.add(who); continue }
        const v = mibps(bytes, ms)
        ;(m.samples[who] ??= []).push(v)
        const cpuS = cpu[who]?.[m.id]?.at(-1) ?? Number.NaN
        const sysS = sysCpu[who]?.[m.id]?.at(-1) ?? Number.NaN
        console.log(`    ${label(who).padEnd(17)} rep ${rep + 1}/${reps}: ${fmt(ms / 1000, 2)} s, ${fmt(v)} MiB/s, server CPU ${fmt(cpuS, 2)} s = user ${fmt(cpuS - sysS, 2)} + sys ${fmt(sysS, 2)} (${fmt(100 * cpuS / (ms / 1000), 0)}% of one core)`)
      } catch (err) {
        recordFailure(who, phase, err)
        dead.add(who)
      }
    }
  }
  for (const who of WHO) {
    const s = m.samples[who]
    if (s !== undefined && s.length === reps) m.values[who] = median(s)
  }
  printMeasure(m)
  // Server CPU per GiB moved: steadier than wall time on a busy machine.
  if (WHO.some((w) => m.values[w] !== undefined)) {
    const short: Record<string, string> = {
      'mono-put': 'monolithic upload', 'mono-put-curl': 'monolithic upload (curl)', 'post-digest': 'POST ?digest= upload', chunked: 'chunked upload',
      'get-node': 'GET (node:http)', 'get-curl': 'GET (curl)', 'get-first': 'first GET after a push (curl)', 'get-second': 'second GET (curl)', 'skopeo-push': 'skopeo push', 'skopeo-pull': 'skopeo pull',
    }
    const c = measure(`${m.id}-cpu`, `  server CPU per GiB, ${short[m.id] ?? m.id}`, 'CPU-s/GiB', 'lower')
    for (const who of WHO) {
      const list = cpu[who]?.[m.id]
      const sys = sysCpu[who]?.[m.id]
      if (m.values[who] !== undefined && list !== undefined) c.values[who] = median(list) / (bytes / (1024 * MiB))
      if (m.values[who] !== undefined && sys !== undefined) c.extra[who] = { sysCpuSecondsPerGiB: median(sys) / (bytes / (1024 * MiB)) }
      if (m.extra[who]?.supported === false) c.extra[who] = { supported: false }
    }
    printMeasure(c)
  }
}

async function main (): Promise<void> {
  const startedAt = new Date()
  const work = await tempDir('flotilla-bench-content-')
  cleanupDirs.push(work)
  console.log(`Flotilla registry benchmark — ${startedAt.toISOString()}`)
  console.log(`node ${process.version}, ${cpus().length} CPUs, ${fmt(totalmem() / 1024 / MiB)} GiB RAM; blob ${SIZE_LABEL}, chunk ${CHUNK / MiB} MiB, image ${IMAGE / MiB} MiB, ${REPS} reps (median), manifest load ${REQUESTS} req x ${ROUNDS} rounds @ ${CONCURRENCY}${argv.quick ? ' [quick]' : ''}${argv['self-check'] ? ' [self-check: reference vs reference]' : ''}`)

  if (WAIT_IDLE_S > 0) {
    const until = Date.now() + WAIT_IDLE_S * 1000
    while (loadavg()[0]! >= 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 5000))
  }
  const loadStart = loadavg()
  console.log(`load average at start: ${loadStart.map((x) => fmt(x, 2)).join(' ')}${loadStart[0]! > 1.5 ? '  (WARNING: the machine is busy; other processes share the 2 cores, expect noisy figures)' : ''}`)
  if (argv.tls) {
    await makeTls()
    console.log(`TLS: both registries serve HTTPS with ${tlsFiles!.certificate} (ECDSA P-256, CA ${tlsFiles!.ca}); node:http, curl and skopeo verify it`)
  }
  for (const who of WHO) await start(who)

  for (const who of WHO) {
    const mm = await metricsMemory(who)
    if (mm !== undefined) { notes.push(`${label(who)} /metrics at idle after start: ${mm}`); console.log(`${label(who)} /metrics at idle: ${mm}`) }
  }
  console.log(`\ngenerating a ${SIZE_LABEL} random blob in ${work} ...`)
  const blob = await writeRandomFile(join(work, 'blob.bin'), SIZE)
  const probe = await writeRandomFile(join(work, 'probe.bin'), 64 * 1024)
  console.log(`  ${blob.digest}`)
  const agents: Record<Who, ReturnType<typeof ops.newAgent>> = { reference: ops.newAgent(), flotilla: ops.newAgent() }

  // 0. Client ceiling: how fast node:http sends the blob from disk into a discard server (own process).
  if (!SKIP.has('mono') || !SKIP.has('chunked')) {
    const sink = await startSink()
    try {
      const speeds: number[] = []
      for (let rep = 0; rep < Math.min(REPS, 3); rep++) {
        const t0 = performance.now()
        const res = await httpRequest({ method: 'PUT', url: `${sink.url}/x`, body: { file: blob.path, start: 0, end: blob.size - 1 }, timeoutMs: 15 * 60_000 })
        if (res.status !== 201 || res.headers['x-bytes'] !== String(blob.size)) throw new Error(`sink answered ${res.status}, ${String(res.headers['x-bytes'])} bytes`)
        speeds.push(mibps(blob.size, performance.now() - t0))
      }
      notes.push(`client ceiling: node:http streams the ${SIZE_LABEL} blob from disk into a discard server at ${fmt(median(speeds))} MiB/s [${speeds.map((x) => fmt(x)).join(', ')}]; upload figures near this are client-bound.`)
      console.log(`\n[0] ${notes.at(-1)!}`)
    } catch (err) {
      console.log(`\n[0] client ceiling not measured: ${String(err)}`)
    } finally { await sink.stop() }
  }

  // 0b. Disk ceiling: copy the blob to a new file in the same temp dir and fsync it (what a durable upload must at least pay).
  if (!SKIP.has('mono') || !SKIP.has('chunked')) {
    const speeds: number[] = []
    const nosync: number[] = []
    for (let rep = 0; rep < Math.min(REPS, 3); rep++) {
      await settle()
      const target = join(work, 'disk-check.bin')
      const a = await run('dd', [`if=${blob.path}`, `of=${target}`, 'bs=1M', 'status=none'], 600_000)
      await rm(target, { force: true })
      await settle()
      const b = await run('dd', [`if=${blob.path}`, `of=${target}`, 'bs=1M', 'conv=fsync', 'status=none'], 600_000)
      await rm(target, { force: true })
      if (a.code !== 0 || b.code !== 0) { console.log(`    dd failed: ${a.stderr}${b.stderr}`); break }
      nosync.push(mibps(blob.size, a.ms))
      speeds.push(mibps(blob.size, b.ms))
    }
    if (speeds.length > 0) {
      notes.push(`disk ceiling: dd of the ${SIZE_LABEL} blob into the temp dir runs at ${fmt(median(nosync))} MiB/s into the page cache and ${fmt(median(speeds))} MiB/s with conv=fsync [${speeds.map((x) => fmt(x)).join(', ')}]; a registry that fsyncs before answering 201 cannot beat the second figure by much.`)
      console.log(`[0b] ${notes.at(-1)!}`)
    }
  }

  // 1. Monolithic upload: POST, then PUT ?digest= with the whole body.
  if (!SKIP.has('mono')) {
    console.log(`\n[1] monolithic upload of ${SIZE_LABEL}: POST /uploads/ then PUT ?digest= (node:http, streamed from disk)`)
    // Over TLS (issue 16) the target is parity: both sides pay for the encryption.
    const m = measure('mono-put', `blob upload, monolithic POST+PUT, ${SIZE_LABEL}${argv.tls ? ', TLS' : ''}`, 'MiB/s', 'higher', { kind: 'ratio', min: argv.tls ? 1.0 : 1.5 })
    await throughputPhase(m, 'upload', SIZE, async (who, r, rep) => {
      const repo = `bench/mono-${rep}`
      const ms = await ops.pushMonolithic(r.url, repo, blob, agents[who])
      blobRepo[who] ??= repo
      return ms
    })
  }

  // 1a. Over TLS, the same upload with curl as the client: a node:https client tops out near
  // 250 MiB/s on this machine whichever registry receives, so [1] is client-bound there.
  if (!SKIP.has('mono') && argv.tls) {
    console.log(`\n[1a] monolithic upload of ${SIZE_LABEL} over TLS with curl -T as the client (POST, then curl PUT ?digest=)`)
    const m = measure('mono-put-curl', `blob upload, monolithic POST+PUT, ${SIZE_LABEL}, TLS, curl`, 'MiB/s', 'higher', { kind: 'ratio', min: 1.0 })
    await throughputPhase(m, 'upload', SIZE, async (who, r, rep) => {
      const repo = `bench/mono-curl-${rep}`
      const ms = await ops.pushMonolithicCurl(r.url, repo, blob, agents[who])
      blobRepo[who] ??= repo
      return ms
    })
  }

  // 1b. Single-request monolithic upload: POST ?digest= with the body (probed with 64 KiB first).
  if (!SKIP.has('post')) {
    console.log(`\n[1b] single-request monolithic upload of ${SIZE_LABEL}: POST /uploads/?digest= with the body`)
    const m = measure('post-digest', `blob upload, single POST ?digest=, ${SIZE_LABEL}`, 'MiB/s', 'higher')
    const supported: Partial<Record<Who, boolean>> = {}
    for (const who of WHO) {
      const r = alive(who)
      if (r === undefined) continue
      try {
        supported[who] = await ops.supportsPostDigest(r.url, 'bench/probe', probe, agents[who])
        console.log(`    ${label(who).padEnd(17)} POST ?digest= ${supported[who] ? 'supported (201)' : 'not supported (answered 202: opened a session and ignored the body)'}`)
        if (supported[who] === false) (m.extra[who] ??= {}).supported = false
      } catch (err) { recordFailure(who, 'post-digest probe', err) }
    }
    await throughputPhase(m, 'upload', SIZE, async (who, r, rep) => {
      if (supported[who] !== true) return undefined
      const repo = `bench/post-${rep}`
      const ms = await ops.pushPostDigest(r.url, repo, blob, agents[who])
      if (ms === undefined) throw new Error('POST ?digest= answered 202 for the large blob after 201 for the probe')
      blobRepo[who] ??= repo
      return ms
    })
    const unsupported = WHO.filter((w) => supported[w] === false)
    if (unsupported.length > 0) m.note = `not supported by ${unsupported.map(label).join(', ')}`
  }

  // 2. Chunked upload: PATCH 8 MiB chunks with Content-Range, then PUT ?digest=.
  if (!SKIP.has('chunked')) {
    console.log(`\n[2] chunked upload of ${SIZE_LABEL}: POST, PATCH ${CHUNK / MiB} MiB chunks with Content-Range, PUT ?digest=`)
    const m = measure('chunked', `blob upload, ${CHUNK / MiB} MiB PATCH chunks, ${SIZE_LABEL}`, 'MiB/s', 'higher', { kind: 'ratio', min: 1.0 })
    await throughputPhase(m, 'upload', SIZE, async (who, r, rep) => {
      const repo = `bench/chunked-${rep}`
      const ms = await ops.pushChunked(r.url, repo, blob, CHUNK, agents[who])
      blobRepo[who] ??= repo
      return ms
    })
  }

  // Memory during the uploads.
  if (!SKIP.has('mono') || !SKIP.has('chunked') || !SKIP.has('post')) {
    const m = measure('upload-rss', `peak server VmRSS during the ${SIZE_LABEL} uploads`, 'MB', 'lower', { kind: 'absolute-max', max: RSS_TARGET_MB })
    const h = measure('upload-hwm', 'server VmHWM (lifetime peak) after the uploads', 'MB', 'lower')
    const t = measure('upload-rss-tree', 'peak VmRSS of server + its child processes, uploads', 'MB', 'lower')
    for (const who of WHO) {
      const mem = memory[who]?.upload
      if (mem === undefined) continue
      m.values[who] = mem.peakRssMiB * MiB / 1e6
      m.extra[who] = { rssBeforeFirstUploadMB: mem.startRssMiB * MiB / 1e6 }
      h.values[who] = mem.hwmMiB * MiB / 1e6
      t.values[who] = mem.peakTreeMiB * MiB / 1e6
      t.extra[who] = { childProcesses: mem.children }
    }
    console.log('\n[memory] /proc/PID/status sampled every 50 ms during the uploads (own VmRSS; child processes counted apart)')
    for (const who of WHO) {
      const mem = memory[who]?.upload
      if (mem !== undefined) console.log(`    ${label(who).padEnd(17)} VmRSS before the first upload ${fmt(mem.startRssMiB * MiB / 1e6)} MB, ${mem.children} child process(es)`)
    }
    printMeasure(m)
    printMeasure(h)
    printMeasure(t)
    for (const who of WHO) {
      const mm = await metricsMemory(who)
      if (mm !== undefined) { notes.push(`${label(who)} /metrics after the uploads: ${mm}`); console.log(`    ${label(who)} /metrics after the uploads: ${mm}`) }
    }
  }

  // 3. GET the blob, whole body, with node:http and with curl.
  if (!SKIP.has('get')) {
    console.log(`\n[3] blob GET of ${SIZE_LABEL}, whole body read`)
    const ensureBlob = async (who: Who, r: RunningRegistry): Promise<string> => {
      if (blobRepo[who] === undefined) {
        console.log(`    ${label(who)}: no upload phase stored the blob; pushing it first (monolithic)`)
        await ops.pushMonolithic(r.url, 'bench/get', blob, agents[who])
        blobRepo[who] = 'bench/get'
      }
      return blobRepo[who]!
    }
    const mNode = measure('get-node', `blob GET, ${SIZE_LABEL}, client node:http${argv.tls ? ' (TLS)' : ''}`, 'MiB/s', 'higher', { kind: 'ratio', min: argv.tls ? 1.0 : 0.9 })
    await throughputPhase(mNode, 'get', SIZE, async (who, r) => await ops.getBlobNode(r.url, await ensureBlob(who, r), blob, agents[who]))
    const mCurl = measure('get-curl', `blob GET, ${SIZE_LABEL}, client curl${argv.tls ? ' (TLS)' : ''}`, 'MiB/s', 'higher', { kind: 'ratio', min: argv.tls ? 1.0 : 0.9 })
    await throughputPhase(mCurl, 'get', SIZE, async (who, r) => await ops.getBlobCurl(r.url, await ensureBlob(who, r), blob))
    for (const who of WHO) {
      const r = alive(who)
      if (r === undefined || blobRepo[who] === undefined) continue
      try {
        await ops.getBlobNode(r.url, blobRepo[who]!, blob, agents[who], true)
        console.log(`    ${label(who).padEnd(17)} content check: GET body hashes to ${blob.digest.slice(0, 19)}… OK`)
      } catch (err) { recordFailure(who, 'get (content check)', err) }
    }
    const rn = mNode.values.reference
    const rc = mCurl.values.reference
    if (rn !== undefined && rc !== undefined) {
      const client = rc > rn * 1.1 ? 'curl' : rn > rc * 1.1 ? 'node:http' : 'either (within 10%)'
      notes.push(`blob GET: the faster client against the reference was ${client} (node ${fmt(rn)} MiB/s, curl ${fmt(rc)} MiB/s); the node:http figure is client-bound when curl is clearly faster.`)
      console.log(`  note: ${notes.at(-1)!}`)
    }
  }

  // 3b. The first pull after a push: a fresh blob for each rep, all pushed (monolithic) first,
  // then each GET once with curl, then once more. Nothing is dropped from the page cache in between: whatever a
  // registry's writes leave there (the reference's buffered writes, Flotilla's direct ones
  // nothing) is what its users get.
  if (!SKIP.has('first')) {
    console.log(`\n[3b] first pull after a push, ${SIZE_LABEL}, client curl (a fresh blob each rep)`)
    const fresh = await Promise.all(Array.from({ length: REPS }, async (_, rep) => await writeRandomFile(join(work, `fresh-${rep}.bin`), SIZE)))
    // Pushed first (not timed, nor counted in the phase's server CPU).
    for (const who of WHO) {
      const r = alive(who)
      if (r === undefined) continue
      try {
        for (const b of fresh) await ops.pushMonolithic(r.url, 'bench/first', b, agents[who])
      } catch (err) { recordFailure(who, 'first pull (push)', err) }
    }
    const mFirst = measure('get-first', `first GET after the push, ${SIZE_LABEL}, curl${argv.tls ? ' (TLS)' : ''}`, 'MiB/s', 'higher', { kind: 'ratio', min: 0.9 })
    const mSecond = measure('get-second', `second GET, ${SIZE_LABEL}, curl${argv.tls ? ' (TLS)' : ''}`, 'MiB/s', 'higher')
    await throughputPhase(mFirst, 'get-first', SIZE, async (who, r, rep) => await ops.getBlobCurl(r.url, 'bench/first', fresh[rep]!))
    await throughputPhase(mSecond, 'get-second', SIZE, async (who, r, rep) => await ops.getBlobCurl(r.url, 'bench/first', fresh[rep]!))
  }

  // 4. skopeo push and pull of a single-layer image.
  if (!SKIP.has('skopeo')) {
    console.log(`\n[4] skopeo copy of a ${IMAGE / MiB} MiB single-layer image (fresh random layer per rep, so skopeo's blob cache cannot skip or mount)`)
    const layouts: OciLayout[] = []
    for (let rep = 0; rep < REPS; rep++) layouts.push(await writeOciLayout(join(work, `oci-${rep}`), IMAGE))
    const imageBytes = layouts[0]!.layer.size + layouts[0]!.config.size + layouts[0]!.manifest.size
    console.log(`    layer ${fmt(layouts[0]!.layer.size / MiB)} MiB gzip (of ${IMAGE / MiB} MiB random data)`)
    const mPush = measure('skopeo-push', `skopeo push, ${IMAGE / MiB} MiB image`, 'MiB/s', 'higher')
    await throughputPhase(mPush, 'skopeo', imageBytes, async (_who, r, rep) =>
      await ops.skopeoCopy(`oci:${layouts[rep]!.dir}:bench`, `docker://${r.host}/bench/skopeo-${rep}:bench`, tlsFiles !== undefined ? ['--dest-cert-dir', tlsFiles.caDir] : ['--dest-tls-verify=false']))
    const mPull = measure('skopeo-pull', `skopeo pull, ${IMAGE / MiB} MiB image`, 'MiB/s', 'higher')
    await mkdir(join(work, 'pulled'), { recursive: true })
    await throughputPhase(mPull, 'skopeo', imageBytes, async (who, r, rep) => {
      const out = join(work, 'pulled', `${who}-${rep}`)
      const ms = await ops.skopeoCopy(`docker://${r.host}/bench/skopeo-${rep}:bench`, `oci:${out}:bench`, tlsFiles !== undefined ? ['--src-cert-dir', tlsFiles.caDir] : ['--src-tls-verify=false'])
      const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }
      if (index.manifests[0]?.digest !== layouts[rep]!.manifest.digest) throw new Error(`pulled manifest ${index.manifests[0]?.digest} != pushed ${layouts[rep]!.manifest.digest}`)
      await rm(out, { recursive: true, force: true })
      return ms
    })
    for (const m of [mPush, mPull]) {
      for (const who of WHO) {
        const s = m.samples[who]
        if (s !== undefined) (m.extra[who] ??= {}).secondsMedian = median(s.map((v) => imageBytes / MiB / v))
      }
    }
    for (const l of layouts) await rm(l.dir, { recursive: true, force: true })
  }

  // 5. Concurrent manifest GETs.
  if (!SKIP.has('manifest')) {
    console.log(`\n[5] manifest GET by tag: ${REQUESTS} requests at concurrency ${CONCURRENCY}, ${ROUNDS} rounds (after a warm-up round)`)
    const img = smallImage()
    const mRps = measure('manifest-rps', `manifest GET, ${CONCURRENCY} concurrent, throughput`, 'req/s', 'higher')
    const mP50 = measure('manifest-p50', 'manifest GET latency p50', 'ms', 'lower')
    const mP99 = measure('manifest-p99', 'manifest GET latency p99', 'ms', 'lower')
    for (const who of WHO) {
      const r = alive(who)
      if (r === undefined) continue
      try {
        await ops.pushSmallBlob(r.url, 'bench/small', img.config, img.digests.config, agents[who])
        await ops.pushSmallBlob(r.url, 'bench/small', img.layer, img.digests.layer, agents[who])
        await ops.pushManifest(r.url, 'bench/small', 'latest', img.manifest, 'application/vnd.oci.image.manifest.v1+json', agents[who])
        await ops.manifestLoad(r.url, 'bench/small', 'latest', img.manifest.length, REQUESTS, CONCURRENCY)
      } catch (err) { recordFailure(who, 'manifest setup', err); (mRps.extra[who] ??= {}).setupFailed = true }
    }
    const dead = new Set<Who>(WHO.filter((w) => mRps.extra[w]?.setupFailed === true))
    const rounds: Partial<Record<Who, ops.LoadResult[]>> = {}
    for (let round = 0; round < ROUNDS; round++) {
      for (const who of order(round)) {
        if (dead.has(who)) continue
        const r = alive(who)
        if (r === undefined) { dead.add(who); continue }
        try {
          const res = await timed(who, 'manifest', async () => await ops.manifestLoad(r.url, 'bench/small', 'latest', img.manifest.length, REQUESTS, CONCURRENCY))
          ;(rounds[who] ??= []).push(res)
          console.log(`    ${label(who).padEnd(17)} round ${round + 1}/${ROUNDS}: ${fmt(res.rps, 0)} req/s, p50 ${fmt(res.p50, 2)} ms, p99 ${fmt(res.p99, 2)} ms, max ${fmt(res.max, 2)} ms, server CPU ${fmt(cpu[who]?.manifest?.at(-1), 2)} s`)
        } catch (err) { recordFailure(who, 'manifest load', err); dead.add(who) }
      }
    }
    for (const who of WHO) {
      const rs = rounds[who]
      if (rs === undefined || dead.has(who)) continue
      const s = ops.summarizeLoads(rs)
      mRps.values[who] = s.rps; mRps.samples[who] = rs.map((x) => x.rps)
      mP50.values[who] = s.p50; mP50.samples[who] = rs.map((x) => x.p50)
      mP99.values[who] = s.p99; mP99.samples[who] = rs.map((x) => x.p99)
      const mem = memory[who]?.manifest
      if (mem !== undefined) (mRps.extra[who] ??= {}).peakRssMB = mem.peakRssMiB * MiB / 1e6
    }
    printMeasure(mRps); printMeasure(mP50); printMeasure(mP99)
  }

  for (const a of Object.values(agents)) a.destroy()

  for (const [phase, what] of [['get', 'blob GETs'], ['skopeo', 'skopeo copies'], ['manifest', 'manifest GET load']] as const) {
    if (!WHO.some((w) => memory[w]?.[phase] !== undefined)) continue
    const m = measure(`${phase}-rss`, `peak server RSS during the ${what}`, 'MB', 'lower')
    for (const who of WHO) {
      const mem = memory[who]?.[phase]
      if (mem !== undefined) m.values[who] = mem.peakRssMiB * MiB / 1e6
    }
  }

  // ---------------------------------------------------------------- report
  const cpuPerGiB: Partial<Record<Who, Record<string, number>>> = {}
  for (const who of WHO) {
    for (const [phase, list] of Object.entries(cpu[who] ?? {})) {
      if (list.length > 0) (cpuPerGiB[who] ??= {})[phase] = Math.round(median(list) * 100) / 100
    }
  }

  const rows = measures.map((m) => {
    const a = advantage(m)
    const cell = (w: Who): string => {
      const v = m.values[w]
      if (v === undefined) return m.extra[w]?.supported === false ? 'unsupported' : 'n/a'
      const sys = m.extra[w]?.sysCpuSecondsPerGiB
      return fmt(v, m.unit === 'req/s' ? 0 : m.unit === 'ms' || m.unit === 'CPU-s/GiB' ? 2 : 1) + (typeof sys === 'number' ? ` (sys ${fmt(sys, 2)})` : '')
    }
    return [m.name, m.unit, cell('reference'), cell('flotilla'), a === undefined ? '' : `${fmt(a, 2)}x`, targetText(m), verdict(m)]
  })
  const head = ['measure', 'unit', 'reference', argv['self-check'] ? 'flotilla(=ref#2)' : 'flotilla', 'F advantage', 'target', '']
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cols: string[]): string => cols.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')
  console.log('\n' + '='.repeat(widths.reduce((a, b) => a + b + 3, 0)))
  console.log('RESULTS (medians; "F advantage" > 1 means Flotilla is better: throughput F/R, latency, CPU and memory R/F; "sys" = kernel CPU)')
  console.log(line(head))
  console.log(widths.map((w) => '-'.repeat(w)).join('-|-'))
  for (const r of rows) console.log(line(r))
  for (const m of measures) if (m.note !== undefined) console.log(`note: ${m.name}: ${m.note}`)
  for (const n of notes) console.log(`note: ${n}`)
  console.log(`server CPU seconds (median per operation, from /proc/PID/stat): ${JSON.stringify(cpuPerGiB)}`)
  const loadEnd = loadavg()
  console.log(`load average: at start ${loadStart.map((x) => fmt(x, 2)).join(' ')}, at end ${loadEnd.map((x) => fmt(x, 2)).join(' ')}`)

  if (failures.length > 0) {
    console.log(`\n${failures.length} FAILURE(S):`)
    for (const f of failures) console.log(`- ${label(f.registry)} / ${f.phase}: ${JSON.stringify(f.failure)}`)
    if (flotillaLog !== undefined && failures.some((f) => f.registry === 'flotilla')) {
      try {
        const tail = (await readFile(flotillaLog, 'utf8')).split('\n').slice(-40).join('\n')
        console.log(`\nlast lines of the Flotilla log (${flotillaLog}):\n${tail}`)
      } catch { /* no log */ }
    }
  }

  const summary = {
    benchmark: 'registry',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { node: process.version, cpus: cpus().length, memGiB: totalmem() / 1024 / MiB, loadStart, loadEnd },
    options: { tls: argv.tls, flotillaEntry: argv['flotilla-entry'] ?? 'bin/flotilla.mjs', auth: argv.auth, sizeMiB: SIZE / MiB, chunkMiB: CHUNK / MiB, imageMiB: IMAGE / MiB, reps: REPS, requests: REQUESTS, concurrency: CONCURRENCY, rounds: ROUNDS, quick: argv.quick, only: argv.only ?? null, selfCheck: argv['self-check'], skip: [...SKIP] },
    registries: Object.fromEntries(WHO.map((w) => [w, registries[w] === undefined ? null : { url: registries[w]!.url, kind: w === 'reference' || argv['self-check'] ? 'docker-registry 2.8.2' : 'flotilla' }])),
    measures: measures.map((m) => ({
      id: m.id, name: m.name, unit: m.unit, better: m.better,
      reference: m.values.reference ?? null, flotilla: m.values.flotilla ?? null,
      samples: m.samples, extra: m.extra,
      advantage: advantage(m) ?? null, target: m.target ?? null, verdict: verdict(m) || null, note: m.note ?? null,
    })),
    memoryMiB: memory,
    serverCpuSecondsMedian: cpuPerGiB,
    serverSysCpuSeconds: sysCpu,
    failures,
    notes,
  }
  console.log('\nJSON summary:')
  console.log(JSON.stringify(summary))
  if (argv.json !== undefined) {
    await writeFile(argv.json, JSON.stringify(summary, null, 2) + '\n')
    console.log(`(written to ${argv.json})`)
  }
  if (failures.length > 0) process.exitCode = 1
}

try {
  await main()
} catch (err) {
  console.error(err)
  process.exitCode = 1
} finally {
  await cleanup()
}
