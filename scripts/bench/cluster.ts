/**
 * Cluster benchmark (issue 4, "Benchmark"; not a test). Real `flotilla serve` / `join`
 * processes on 127.0.0.1, Basic auth as admin on every request.
 *
 *   npm run bench:cluster -- [--size-mib 1024] [--quick] [--json FILE] [--reps N] [--tags N]
 *                            [--only push,pull,fanout,failover,commits,catchup] [--seconds 10]
 *
 *  [1] push:     an image with one SIZE layer (config, layer POST+PUT, manifest PUT) to node 1
 *                of a 3-node cluster vs to a single node. Throughput ratio, target >= 0.7.
 *  [2] pull:     GET of a SIZE blob from a node that lacks it (3 nodes, FLOTILLA_REPLICAS=1)
 *                vs a local GET on a holder. Throughput ratio, target >= 0.6.
 *  [3] fanout:   push a SIZE blob to node 1, time until its file is on all 3 / all 5 nodes vs
 *                on both nodes of a 2-node cluster (one transfer). Time ratio, target <= 1.5
 *                for 5 nodes; and node 1's egress (blob bytes it sent to peers, from its
 *                flotilla_replication_bytes_sent_total) in copies, target <= 1.25 for 5 nodes.
 *  [4] failover: kill -9 of the leader to the next successful small push (blob + manifest PUT,
 *                retried every 50 ms against a survivor); 3 rounds, target <= 2 s.
 *  [5] commits:  64 concurrent tag PUTs for --seconds against a follower and the leader.
 *  [6] catchup:  a cluster holding --tags tags; `join` of a new node until /readyz is 200
 *                and a tag read on it works (against joins of a nearly empty cluster).
 *
 * Each cluster gets a fresh blob per rep (a node that already holds a blob would not copy it).
 * Order alternates between the cluster and its baseline from rep to rep.
 */
import { parseArgs } from 'node:util'
import { join } from 'node:path'
import { rm, writeFile, mkdtemp } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import { cpus, totalmem, loadavg, tmpdir } from 'node:os'
import { performance } from 'node:perf_hooks'
import { startCluster, startNode, clusterStatus, waitFor, sleep, NodeExitError, type TestCluster, type ClusterNode, type ClusterOptions } from '../lib/cluster.js'
import { tempDir } from '../lib/procs.js'
import { writeRandomFile, type FileBlob } from './lib/content.js'
import { HttpFailure, request } from './lib/http.js'
import { run } from './lib/exec.js'
import * as ops from './lib/ops.js'
import { readCpuSeconds } from './lib/rss.js'
import { MiB, median, fmt } from './lib/stats.js'
import { intOptions } from './lib/args.js'
import { authorize, hasBlob, watchArrivals, pushLayerImage, pushSmallImage, tagLoad, OCI_MANIFEST, type TagLoad } from './lib/cluster.js'

// ---------------------------------------------------------------- options

const PHASES = ['push', 'pull', 'fanout', 'failover', 'commits', 'catchup'] as const
type Phase = typeof PHASES[number]

const { values: argv } = parseArgs({
  options: {
    'size-mib': { type: 'string' },
    quick: { type: 'boolean', default: false },
    json: { type: 'string' },
    reps: { type: 'string' },
    tags: { type: 'string' },
    seconds: { type: 'string' },
    only: { type: 'string' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
})
if (argv.help) {
  console.log('usage: npm run bench:cluster -- [--size-mib 1024] [--quick] [--json FILE] [--reps N] [--tags N] [--seconds N] [--only push,pull,fanout,failover,commits,catchup] [--keep]')
  process.exit(0)
}
const intOpt = intOptions(argv.quick === true)
const SIZE = intOpt(argv['size-mib'], 1024, 256, 1, 16 * 1024, 'size-mib') * MiB
const REPS = intOpt(argv.reps, 3, 2, 1, 10, 'reps')
const TAGS = intOpt(argv.tags, 10_000, 2000, 1, 1_000_000, 'tags')
const SECONDS = intOpt(argv.seconds, 10, 5, 1, 600, 'seconds')
const FAILOVER_ROUNDS = 3
const ONLY = new Set<Phase>(argv.only === undefined ? PHASES : argv.only.split(',').map((s) => s.trim()) as Phase[])
for (const p of ONLY) if (!PHASES.includes(p)) { console.error(`unknown phase ${p} in --only (one of ${PHASES.join(',')})`); process.exit(2) }
const SIZE_LABEL = SIZE >= 1024 * MiB ? `${fmt(SIZE / 1024 / MiB, SIZE % (1024 * MiB) === 0 ? 0 : 2)} GiB` : `${SIZE / MiB} MiB`
// A whole-blob transfer slower than 3 MiB/s (or 2 minutes for small ones) counts as a hang.
const BIG_MS = Math.max(120_000, (SIZE / MiB / 3) * 1000)
ops.setBigTimeout(BIG_MS)

// ---------------------------------------------------------------- results

interface Measure {
  id: string
  name: string
  unit: string
  better: 'higher' | 'lower'
  value?: number
  baseline?: number
  baselineName?: string
  /** value/baseline (or the value itself for an absolute target). */
  ratio?: number
  target?: { kind: 'ratio-min'; min: number } | { kind: 'ratio-max'; max: number } | { kind: 'abs-max'; max: number }
  samples: number[]
  baselineSamples: number[]
  extra: Record<string, unknown>
}
const measures: Measure[] = []
const failures: Array<{ phase: string; failure: Record<string, unknown> }> = []
const notes: string[] = []

function measure (m: Omit<Measure, 'samples' | 'baselineSamples' | 'extra'>): Measure {
  const full: Measure = { samples: [], baselineSamples: [], extra: {}, ...m }
  measures.push(full)
  return full
}

function finish (m: Measure): void {
  if (m.samples.length > 0) m.value = median(m.samples)
  if (m.baselineSamples.length > 0) m.baseline = median(m.baselineSamples)
  if (m.value !== undefined && m.baseline !== undefined && m.baseline !== 0) m.ratio = m.value / m.baseline
}

function verdict (m: Measure): string {
  if (m.target === undefined) return ''
  if (m.target.kind === 'abs-max') return m.value === undefined ? 'n/a' : m.value <= m.target.max ? 'PASS' : 'MISS'
  if (m.ratio === undefined) return 'n/a'
  return m.target.kind === 'ratio-min' ? (m.ratio >= m.target.min ? 'PASS' : 'MISS') : (m.ratio <= m.target.max ? 'PASS' : 'MISS')
}
function targetText (m: Measure): string {
  if (m.target === undefined) return '(none)'
  if (m.target.kind === 'ratio-min') return `ratio >= ${m.target.min}`
  if (m.target.kind === 'ratio-max') return `ratio <= ${m.target.max}`
  return `<= ${m.target.max} ${m.unit}`
}
const digits = (m: Measure): number => (m.unit === '/s' ? 0 : m.unit === 's' || m.unit === 'copies' ? 2 : 1)
function printMeasure (m: Measure): void {
  finish(m)
  const d = digits(m)
  const s = m.samples.length > 1 ? ` [${m.samples.map((x) => fmt(x, d)).join(', ')}]` : ''
  const bs = m.baselineSamples.length > 1 ? ` [${m.baselineSamples.map((x) => fmt(x, d)).join(', ')}]` : ''
  const base = m.baselineName === undefined ? '' : `  |  ${m.baselineName} ${fmt(m.baseline, d)} ${m.unit}${bs}`
  const ratio = m.ratio === undefined ? '' : `  |  ratio ${fmt(m.ratio, 2)}`
  console.log(`  => ${m.name}: ${fmt(m.value, d)} ${m.unit}${s}${base}${ratio}  (target ${targetText(m)}${m.target === undefined ? '' : `: ${verdict(m)}`})`)
}

function recordFailure (phase: string, err: unknown): void {
  const failure = err instanceof HttpFailure ? err.report() : { why: err instanceof Error ? (err.stack ?? err.message) : String(err) }
  failures.push({ phase, failure })
  console.log(`  !! ${phase} failed: ${JSON.stringify(failure, null, 2).split('\n').join('\n     ')}`)
}

// ---------------------------------------------------------------- lifecycle

const clusters = new Set<TestCluster>()
const cleanupDirs: string[] = []
let cleaning = false
const ADMIN_PASSWORD = 'adminpw123'

async function cluster (size: number, env: Record<string, string> = {}, label = `${size}-node`): Promise<TestCluster> {
  const t0 = performance.now()
  const opts: ClusterOptions = { size, adminPassword: ADMIN_PASSWORD, env }
  const c = await startCluster(opts)
  clusters.add(c)
  authorize(c)
  await c.converged({ voters: size, timeoutMs: 60_000 })
  console.log(`    ${label} cluster up in ${fmt((performance.now() - t0) / 1000, 1)} s: ${c.nodes.map((n) => `${n.name}=${n.url}`).join(' ')}${Object.keys(env).length > 0 ? ` (${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')})` : ''}`)
  return c
}

async function destroy (c: TestCluster | undefined): Promise<void> {
  if (c === undefined) return
  clusters.delete(c)
  if (argv.keep) { for (const n of c.nodes) await n.kill().catch(() => {}); console.log(`    kept ${c.base}`); return }
  await c.destroy()
}

async function cleanup (): Promise<void> {
  if (cleaning) return
  cleaning = true
  for (const c of [...clusters]) await destroy(c).catch(() => {})
  if (!argv.keep) for (const d of cleanupDirs) await rm(d, { recursive: true, force: true }).catch(() => {})
  if (!argv.keep && process.env.TMPDIR?.includes('bench-cluster-run-') === true) await rm(process.env.TMPDIR, { recursive: true, force: true }).catch(() => {})
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => { console.error(`\n${sig}: killing every node and removing temp dirs`); void cleanup().finally(() => process.exit(130)) })
}

async function settle (): Promise<void> {
  // Flush the dirty pages of the previous transfer so they do not slow down the next one.
  await run('sync', [], 120_000)
  // Start every transfer from the same page cache: only the bench's own source blobs cached.
  // Without this the same push took 1.8 to 4.7 node CPU s from rep to rep. Needs root; skipped otherwise.
  try {
    await writeFile('/proc/sys/vm/drop_caches', '1\n')
    for (const b of blobs) for await (const _ of createReadStream(b.path, { highWaterMark: 4 << 20 })) { /* into the page cache */ }
  } catch { /* not root: figures are noisier */ }
}

const mibps = (bytes: number, ms: number): number => (bytes / MiB) / (ms / 1000)

async function logTails (c: TestCluster, lines = 12): Promise<string> {
  return await c.logs(lines).catch(() => '')
}

/** Until no node copies anything and all applied the leader's commit (twice, 300 ms apart). */
async function quiesce (c: TestCluster, timeoutMs = BIG_MS): Promise<void> {
  let calm = 0
  await waitFor('replication to go quiet', async () => {
    const views = await Promise.all(c.live().map(async (n) => await clusterStatus(n.url, c.credentials) as unknown as { replicationBacklog?: number; applied: number; commit: number; leader: string | null; node: string }))
    const lead = views.find((v) => v.node === v.leader)
    const quiet = lead !== undefined && views.every((v) => (v.replicationBacklog ?? 0) === 0 && v.applied >= lead.commit)
    calm = quiet ? calm + 1 : 0
    return calm >= 2 ? true : undefined
  }, timeoutMs, 300)
}

// ---------------------------------------------------------------- phases

let blobs: FileBlob[] = []

/** [1] An image with one SIZE layer to a 3-node cluster vs to a single node. */
async function pushPhase (): Promise<void> {
  console.log(`\n[1] push of an image with one ${SIZE_LABEL} layer (config + layer POST/PUT + manifest PUT) to node 1: 3-node cluster vs single node`)
  const m = measure({ id: 'push', name: `push ${SIZE_LABEL} layer + manifest, 3-node cluster`, unit: 'MiB/s', better: 'higher', baselineName: 'single node', target: { kind: 'ratio-min', min: 0.7 } })
  const blobOnly = measure({ id: 'push-blob-only', name: `  same, blob PUT part only (before the manifest PUT's wait for copies)`, unit: 'MiB/s', better: 'higher', baselineName: 'single node' })
  const wait = measure({ id: 'push-manifest-wait', name: '  manifest PUT (waits for the write quorum of copies)', unit: 's', better: 'lower', baselineName: 'single node' })
  let single: TestCluster | undefined
  let three: TestCluster | undefined
  try {
    single = await cluster(1, {}, 'single-node')
    three = await cluster(3)
    const agents = new Map([[single, ops.newAgent()], [three, ops.newAgent()]])
    for (let rep = 0; rep < REPS; rep++) {
      const order = rep % 2 === 0 ? [single, three] : [three, single]
      for (const c of order) {
        const isCluster = c === three
        await settle()
        const node = c.nodes[0]!
        const cpu0 = c.live().map((n) => readCpuSeconds(n.proc.pid!))
        const r = await pushLayerImage(node.url, `bench/push-${rep}`, 'v1', blobs[rep]!, agents.get(c)!)
        const cpu = c.live().map((n, i) => readCpuSeconds(n.proc.pid!) - cpu0[i]!)
        const v = mibps(SIZE, r.totalMs)
        ;(isCluster ? m.samples : m.baselineSamples).push(v)
        ;(isCluster ? blobOnly.samples : blobOnly.baselineSamples).push(mibps(SIZE, r.blobMs))
        ;(isCluster ? wait.samples : wait.baselineSamples).push(r.manifestMs / 1000)
        console.log(`    ${(isCluster ? '3-node' : 'single').padEnd(7)} rep ${rep + 1}/${REPS}: ${fmt(r.totalMs / 1000, 2)} s total = blobs ${fmt(r.blobMs / 1000, 2)} s + manifest PUT ${fmt(r.manifestMs / 1000, 2)} s; ${fmt(v)} MiB/s; node CPU s: ${cpu.map((x) => fmt(x, 1)).join(' / ')}`)
      }
      if (rep < REPS - 1) await quiesce(three)
    }
    // Where the copies are once replication finished (expect every node: no FLOTILLA_REPLICAS).
    await quiesce(three)
    const where = await Promise.all(three.nodes.map(async (n) => await hasBlob(n, blobs[0]!.digest, SIZE)))
    console.log(`    after replication, rep 1's layer is on ${where.filter(Boolean).length}/3 nodes (${three.nodes.map((n, i) => `${n.name}:${where[i] ? 'yes' : 'no'}`).join(' ')})`)
    for (const a of agents.values()) a.destroy()
  } catch (err) {
    recordFailure('push', err)
    for (const c of [single, three]) if (c !== undefined) console.log(await logTails(c))
  } finally {
    await destroy(single); await destroy(three)
  }
  printMeasure(m); printMeasure(blobOnly); printMeasure(wait)
}

/** [2] GET of a SIZE blob from a node that lacks it vs a local GET on the holder. */
async function pullPhase (): Promise<void> {
  console.log(`\n[2] pull of a ${SIZE_LABEL} blob from a node that lacks it vs a local pull on the holder (3 nodes, FLOTILLA_REPLICAS=1)`)
  const m = measure({ id: 'pull', name: `pull ${SIZE_LABEL} blob from a node lacking it`, unit: 'MiB/s', better: 'higher', baselineName: 'local pull on the holder', target: { kind: 'ratio-min', min: 0.6 } })
  let c: TestCluster | undefined
  try {
    c = await cluster(3, { FLOTILLA_REPLICAS: '1' })
    const agent = ops.newAgent()
    for (let rep = 0; rep < REPS; rep++) {
      const blob = blobs[rep]!
      const holder = c.nodes[0]!
      const repo = `bench/pull-${rep}`
      await ops.pushMonolithic(holder.url, repo, blob, agent)
      await quiesce(c)
      const has = await Promise.all(c.nodes.map(async (n) => await hasBlob(n, blob.digest, SIZE)))
      const lacking = c.nodes.find((_, i) => !has[i])
      console.log(`    rep ${rep + 1}/${REPS}: pushed to ${holder.name}; after replication the blob is on ${c.nodes.filter((_, i) => has[i]).map((n) => n.name).join(', ')}`)
      if (lacking === undefined) throw new Error(`with FLOTILLA_REPLICAS=1 every node holds ${blob.digest}: no node to pull remotely from`)
      const order: Array<'local' | 'remote'> = rep % 2 === 0 ? ['local', 'remote'] : ['remote', 'local']
      for (const which of order) {
        await settle()
        const node = which === 'local' ? holder : lacking
        const ms = await ops.getBlobNode(node.url, repo, blob, agent)
        const v = mibps(SIZE, ms)
        ;(which === 'remote' ? m.samples : m.baselineSamples).push(v)
        console.log(`      ${which === 'local' ? `local on ${holder.name} ` : `remote via ${lacking.name}`}: ${fmt(ms / 1000, 2)} s, ${fmt(v)} MiB/s`)
      }
      // The node that served it remotely keeps a copy (fetch-through): check that, then its bytes.
      const kept = await waitFor(`${lacking.name} to keep the copy it served`, async () => (await hasBlob(lacking, blob.digest, SIZE)) ? true : undefined, 60_000, 100).catch(() => false)
      if (rep === 0) {
        if (kept) {
          await ops.getBlobNode(lacking.url, repo, blob, agent, true)
          console.log(`      ${lacking.name} kept the copy it served; a GET of it hashes to the right digest`)
        } else {
          notes.push(`pull: ${lacking.name} did not keep a copy of the blob it served remotely within 60 s`)
          console.log(`      note: ${notes.at(-1)!}`)
        }
      }
    }
    agent.destroy()
  } catch (err) {
    recordFailure('pull', err)
    if (c !== undefined) console.log(await logTails(c))
  } finally { await destroy(c) }
  printMeasure(m)
}

/**
 * [3] Push to node 1, time until the blob file is on every node of 3 and of 5 nodes vs on both
 * nodes of 2 (one transfer); and node 1's egress: the blob bytes it sent to its peers
 * (flotilla_replication_bytes_sent_total, read from its /metrics before the push and once
 * replication has gone quiet), in copies of the blob.
 */
async function fanoutPhase (): Promise<void> {
  console.log(`\n[3] a ${SIZE_LABEL} blob onto every node: push to node 1, time until the file is on all 3 and all 5 nodes vs on both nodes of a 2-node cluster (one transfer); node 1's egress in copies`)
  const m = measure({ id: 'fanout', name: `${SIZE_LABEL} blob onto 5 nodes, from push start`, unit: 's', better: 'lower', baselineName: '2 nodes (one transfer)', target: { kind: 'ratio-max', max: 1.5 } })
  const repl = measure({ id: 'fanout-replication', name: '  same, from the blob PUT\'s 201 (the copies still under way)', unit: 's', better: 'lower' })
  const egress5 = measure({ id: 'fanout-egress-5', name: '  origin egress, 5 nodes (blob bytes node 1 sent / blob size)', unit: 'copies', better: 'lower', target: { kind: 'abs-max', max: 1.25 } })
  const m3 = measure({ id: 'fanout-3', name: `${SIZE_LABEL} blob onto 3 nodes, from push start`, unit: 's', better: 'lower', baselineName: '2 nodes (one transfer)' })
  const egress3 = measure({ id: 'fanout-egress-3', name: '  origin egress, 3 nodes', unit: 'copies', better: 'lower' })
  const clustersBySize = new Map<number, TestCluster>()
  try {
    for (const size of [5, 3, 2]) clustersBySize.set(size, await cluster(size))
    const agent = ops.newAgent()
    const sizes = [2, 3, 5]
    for (let rep = 0; rep < REPS; rep++) {
      // Rotate the order from rep to rep, so that no cluster size always runs first (or last).
      const order = sizes.map((_, i) => sizes[(i + rep) % sizes.length]!)
      for (const size of order) {
        const c = clustersBySize.get(size)!
        const blob = blobs[rep]!
        await settle()
        const origin = c.nodes[0]!
        const sent0 = await bytesSent(origin.url)
        const watch = watchArrivals(c.nodes, blob.digest, SIZE, BIG_MS * 2)
        const cpu0 = c.live().map((n) => readCpuSeconds(n.proc.pid!))
        const t0 = performance.now()
        await ops.pushMonolithic(origin.url, `bench/fanout-${rep}`, blob, agent)
        const t1 = performance.now()
        await watch.done
        watch.stop()
        const at = [...watch.at.entries()]
        const missing = at.filter(([, t]) => t === undefined).map(([n]) => n.name)
        if (missing.length > 0) throw new Error(`the blob never reached ${missing.join(', ')} within ${BIG_MS * 2} ms`)
        const last = Math.max(...at.map(([, t]) => t!))
        const total = (last - t0) / 1000
        // How busy the machine's cores were: all nodes' CPU over the time until the last copy landed.
        const cpu = c.live().reduce((sum, n, i) => sum + readCpuSeconds(n.proc.pid!) - cpu0[i]!, 0)
        const after = (last - t1) / 1000
        // Egress once nothing moves any more: a late background copy served by the origin counts too.
        await quiesce(c)
        const sent1 = await bytesSent(origin.url)
        const copies = (sent1.total - sent0.total) / SIZE
        const byRoute = Object.keys(sent1.byRoute).map((r) => `${r} ${fmt((sent1.byRoute[r]! - (sent0.byRoute[r] ?? 0)) / SIZE, 2)}`).join(', ')
        if (size === 5) { m.samples.push(total); repl.samples.push(after); egress5.samples.push(copies) }
        if (size === 3) { m3.samples.push(total); egress3.samples.push(copies) }
        if (size === 2) { m.baselineSamples.push(total); m3.baselineSamples.push(total) }
        console.log(`    ${size} nodes rep ${rep + 1}/${REPS}: blob PUT ${fmt((t1 - t0) / 1000, 2)} s, on all nodes at ${fmt(total, 2)} s (${fmt(after, 2)} s after the 201); arrivals: ${at.map(([n, t]) => `${n.name} ${fmt((t! - t0) / 1000, 2)}`).join(', ')}; origin egress ${fmt(copies, 2)} copies (${byRoute}); node CPU ${fmt(cpu, 1)} s = ${fmt(cpu / total, 2)} cores of ${cpus().length} on average`)
      }
    }
    agent.destroy()
  } catch (err) {
    recordFailure('fanout', err)
    for (const c of clustersBySize.values()) console.log(await logTails(c))
  } finally {
    for (const c of clustersBySize.values()) await destroy(c)
  }
  for (const x of [m, repl, egress5, m3, egress3]) printMeasure(x)
}

/** A node's flotilla_replication_bytes_sent_total, by route and in all (its /metrics). */
async function bytesSent (url: string): Promise<{ total: number; byRoute: Record<string, number> }> {
  const res = await request({ method: 'GET', url: `${url}/metrics`, timeoutMs: 10_000, keepBytes: 1 << 22 })
  if (res.status !== 200) throw new Error(`GET ${url}/metrics answered ${res.status}`)
  const byRoute: Record<string, number> = {}
  for (const line of res.body.toString('utf8').split('\n')) {
    const mm = /^flotilla_replication_bytes_sent_total\{route="([a-z]+)"\} (\S+)$/.exec(line)
    if (mm !== null) byRoute[mm[1]!] = Number(mm[2])
  }
  if (Object.keys(byRoute).length === 0) throw new Error(`${url}/metrics has no flotilla_replication_bytes_sent_total`)
  return { total: Object.values(byRoute).reduce((a, b) => a + b, 0), byRoute }
}

async function leaderOf (c: TestCluster): Promise<ClusterNode> {
  return await c.leader(30_000)
}

let failoverCluster: TestCluster | undefined

/** [4] kill -9 of the leader to the next successful small push against a survivor. */
async function failoverPhase (): Promise<void> {
  console.log(`\n[4] kill -9 of the leader until the next successful small push (config + layer + manifest PUT, retried every 50 ms against a surviving node), ${FAILOVER_ROUNDS} rounds`)
  const m = measure({ id: 'failover', name: 'kill -9 of the leader to the next successful push', unit: 's', better: 'lower', target: { kind: 'abs-max', max: 2 } })
  let c = failoverCluster = await cluster(3)
  try {
    await pushSmallImage(c.nodes[0]!.url, 'bench/failover', 'warmup', ops.newAgent())
    for (let round = 0; round < FAILOVER_ROUNDS; round++) {
      await c.converged({ voters: 3, timeoutMs: 60_000 })
      const leader = await leaderOf(c)
      const survivors = c.live().filter((n) => n !== leader)
      const target = survivors[round % survivors.length]!
      const agent = ops.newAgent()
      // Warm the connection to the survivor, so the first attempt does not pay a TCP handshake that the baseline did not.
      await pushSmallImage(target.url, 'bench/failover', `pre-${round}`, agent)
      // Beside the pushes, poll the other survivor's status: when does it know a new leader?
      const watcher = survivors.find((n) => n !== target) ?? target
      let electedAt: number | undefined
      let watching = true
      const t0 = performance.now()
      leader.proc.kill('SIGKILL')
      const exited = leader.kill()
      const election = (async () => {
        while (watching && performance.now() < t0 + 60_000) {
          try {
            const st = await clusterStatus(watcher.url, c.credentials, 1000)
            if (st.leader !== null && st.leader !== leader.peerId) { electedAt = performance.now(); return }
          } catch { /* busy or down: poll again */ }
          await sleep(50)
        }
      })()
      let attempts = 0
      let okAt: number | undefined
      const errs = new Map<string, number>()
      const limit = t0 + 60_000
      for (; performance.now() < limit && attempts < 2000; attempts++) {
        try {
          await pushSmallImage(target.url, 'bench/failover', `r${round}-a${attempts}`, agent, 10_000)
          okAt = performance.now()
          break
        } catch (err) {
          const why = err instanceof HttpFailure ? `${err.request.method} ${new URL(err.request.url).pathname.replace(/[0-9a-f]{64}/, '…').replace(/uploads\/[^?]+/, 'uploads/<id>')}: ${err.why}${err.response !== undefined ? ` ${err.response.body.toString().slice(0, 160)}` : ''}` : String(err)
          errs.set(why, (errs.get(why) ?? 0) + 1)
        }
        await sleep(50)
      }
      await exited
      agent.destroy()
      watching = false
      await election
      if (electedAt !== undefined) ((m.extra.electionS ??= []) as number[]).push((electedAt - t0) / 1000)
      if (okAt === undefined) throw new Error(`no push succeeded on ${target.name} within 60 s of killing the leader ${leader.name}; errors: ${JSON.stringify([...errs])}`)
      const s = (okAt - t0) / 1000
      m.samples.push(s)
      const after = await leaderOf(c).catch(() => undefined)
      console.log(`    round ${round + 1}/${FAILOVER_ROUNDS}: killed leader ${leader.name}, pushing to ${target.name}: first success after ${fmt(s, 2)} s, ${attempts + 1} attempt(s); ${watcher.name} saw a new leader after ${electedAt === undefined ? '?' : fmt((electedAt - t0) / 1000, 2)} s; new leader ${after?.name ?? '?'}${errs.size > 0 ? `; failed attempts: ${[...errs].map(([w, n]) => `${n}x ${w}`).join(' | ')}` : ''}`)
      // Bring the killed node back (same data dir and ports) for the next round.
      const t1 = performance.now()
      try {
        await c.restart(leader)
        authorize(c)
        await c.converged({ voters: 3, timeoutMs: 60_000 })
        console.log(`      ${leader.name} restarted and caught up in ${fmt((performance.now() - t1) / 1000, 1)} s`)
      } catch (err) {
        const why = err instanceof NodeExitError ? (err.log.trimEnd().split('\n').at(-1) ?? '') : (err as Error).message.split('\n')[0]!
        const note = `failover round ${round + 1}: the killed leader ${leader.name} did not come back with \`flotilla serve --data\` on its data dir: ${why}`
        notes.push(note)
        m.extra.restartFailures = ((m.extra.restartFailures as number | undefined) ?? 0) + 1
        console.log(`      !! ${note}`)
        if (round < FAILOVER_ROUNDS - 1) {
          console.log('      replacing the cluster with a fresh 3-node one for the next round')
          await destroy(c)
          c = failoverCluster = await cluster(3)
          await pushSmallImage(c.nodes[0]!.url, 'bench/failover', 'warmup', ops.newAgent())
        } else {
          // The commit load that follows needs three voters: a fresh cluster.
          await destroy(c)
          failoverCluster = undefined
        }
      }
    }
  } catch (err) {
    recordFailure('failover', err)
    console.log(await logTails(c))
  }
  finish(m)
  m.extra.rounds = m.samples
  const el = (m.extra.electionS as number[] | undefined) ?? []
  console.log(`  rounds: ${m.samples.map((x) => fmt(x, 2) + ' s').join(', ')}; median ${fmt(m.value, 2)} s; a new leader known after ${el.map((x) => fmt(x, 2) + ' s').join(', ')} (median ${fmt(median(el), 2)} s; election timeout 10 ticks x 100 ms, randomized to 1-2 s)`)
  printMeasure(m)
}

function printLoad (who: string, r: TagLoad): void {
  console.log(`    ${who.padEnd(9)}: ${r.ok} tag PUTs in ${fmt(r.ms / 1000, 1)} s = ${fmt(r.perSec, 0)} commits/s, latency p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms, max ${fmt(r.max, 1)} ms${r.errors > 0 ? `; ${r.errors} errors, first: ${r.firstErrors.join(' | ')}` : ''}`)
}

/** [5] Metadata commits per second: 64 concurrent tag PUTs against a follower and the leader. */
async function commitsPhase (): Promise<void> {
  console.log(`\n[5] metadata commits over the real transport: 64 concurrent tag PUTs (one Raft commit each) for ${SECONDS} s, 3 voters`)
  const mf = measure({ id: 'commits-follower', name: 'tag PUT commits/s, 64 concurrent, via a follower', unit: '/s', better: 'higher', baselineName: 'via the leader' })
  let own: TestCluster | undefined
  try {
    const c = failoverCluster ?? (own = await cluster(3))
    await c.converged({ voters: 3, timeoutMs: 60_000 })
    const leader = await leaderOf(c)
    const follower = c.live().find((n) => n !== leader)!
    const { manifest } = await pushSmallImage(leader.url, 'bench/commits', 'base', ops.newAgent())
    await quiesce(c)
    // Warm-up, one second each.
    await tagLoad(follower.url, 'bench/commits', manifest, { prefix: 'warm-f-', concurrency: 64, durationMs: 1000 })
    await tagLoad(leader.url, 'bench/commits', manifest, { prefix: 'warm-l-', concurrency: 64, durationMs: 1000 })
    for (const [who, node, prefix] of [['follower', follower, 'f-'], ['leader', leader, 'l-']] as const) {
      const cpu0 = c.live().map((n) => readCpuSeconds(n.proc.pid!))
      const r = await tagLoad(node.url, 'bench/commits', manifest, { prefix, concurrency: 64, durationMs: SECONDS * 1000 })
      const cpu = c.live().map((n, i) => `${n === leader ? 'L' : 'F'} ${fmt((readCpuSeconds(n.proc.pid!) - cpu0[i]!) / (r.ms / 1000) * 100, 0)}%`)
      printLoad(`${who} ${node.name}`, r)
      console.log(`      node CPU (of one core): ${cpu.join(', ')}`)
      if (who === 'follower') { mf.samples.push(r.perSec); mf.extra.follower = r } else { mf.baselineSamples.push(r.perSec); mf.extra.leader = r }
    }
  } catch (err) {
    recordFailure('commits', err)
  } finally { await destroy(own) }
  printMeasure(mf)
}

/** [6] Join of a new node into a cluster holding TAGS tags, until /readyz and a tag read on it. */
async function catchupPhase (): Promise<void> {
  console.log(`\n[6] catch-up of a node joining a cluster that holds ${TAGS} tags: \`flotilla join\` until /readyz is 200 and a tag read on it answers`)
  const m = measure({ id: 'catchup', name: `join until ready + tag read, cluster holding ${TAGS} tags`, unit: 's', better: 'lower', baselineName: 'joins of a nearly empty cluster' })
  const ready = measure({ id: 'catchup-ready', name: '  same, join until /readyz 200 only', unit: 's', better: 'lower', baselineName: 'nearly empty' })
  let c: TestCluster | undefined
  const timedJoin = async (cl: TestCluster, tag: string | undefined): Promise<{ readyS: number; readS: number; node: ClusterNode }> => {
    const via = cl.live()[0]!
    const token = await cl.token({ via })
    const t0 = performance.now()
    const node = await startNode({ name: `n${cl.nodes.length + 1}`, base: cl.base, adminPassword: cl.credentials.password, env: {}, join: { url: via.url, token }, readyTimeoutMs: 300_000 })
    cl.nodes.push(node)
    const tReady = performance.now()
    authorize(cl, node)
    let tRead = tReady
    if (tag !== undefined) {
      await waitFor(`a tag read on ${node.name}`, async () => {
        const res = await request({ method: 'GET', url: `${node.url}/v2/bench/tags/manifests/${tag}`, headers: { accept: OCI_MANIFEST }, timeoutMs: 10_000 })
        return res.status === 200 ? true : undefined
      }, 120_000, 20)
      tRead = performance.now()
    }
    return { readyS: (tReady - t0) / 1000, readS: (tRead - t0) / 1000, node }
  }
  try {
    c = await cluster(1, {}, 'founder (1-node)')
    // Baseline: the second and third members joining while the cluster holds one image.
    const { manifest } = await pushSmallImage(c.nodes[0]!.url, 'bench/tags', 'tag-base', ops.newAgent())
    for (let i = 0; i < 2; i++) {
      const j = await timedJoin(c, 'tag-base')
      await c.converged({ voters: i + 2, timeoutMs: 60_000 })
      m.baselineSamples.push(j.readS); ready.baselineSamples.push(j.readyS)
      console.log(`    baseline: ${j.node.name} joined a cluster of ${i + 1} holding 1 tag: ready after ${fmt(j.readyS, 2)} s, tag read after ${fmt(j.readS, 2)} s`)
    }
    await quiesce(c)
    // TAGS tag PUTs through the leader, 64 at a time.
    const leader = await leaderOf(c)
    const r = await tagLoad(leader.url, 'bench/tags', manifest, { prefix: 'tag-', concurrency: 64, count: TAGS })
    printLoad(`${TAGS} tags`, r)
    if (r.ok !== TAGS) throw new Error(`only ${r.ok} of ${TAGS} tag PUTs succeeded`)
    await c.converged({ voters: 3, timeoutMs: 60_000 })
    const st = await c.status(leader)
    console.log(`    cluster holds ${TAGS + 1} tags; leader commit index ${st.commit}`)
    const last = `tag-${TAGS - 1}`
    for (let i = 0; i < (argv.quick ? 1 : 2); i++) {
      const j = await timedJoin(c, last)
      m.samples.push(j.readS); ready.samples.push(j.readyS)
      // The whole tag list on the new node, page by page (Link: <…>; rel="next"; pages hold at most 10 000).
      let count = 0
      let url: string | undefined = `${j.node.url}/v2/bench/tags/tags/list?n=10000`
      for (let page = 0; url !== undefined && page < 100; page++) {
        const res = await request({ method: 'GET', url, timeoutMs: 60_000, keepBytes: 1 << 24 })
        if (res.status !== 200) { count = -1; break }
        count += ((JSON.parse(res.body.toString()) as { tags?: string[] }).tags ?? []).length
        const link = /<([^>]+)>;\s*rel="?next"?/.exec(String(res.headers.link ?? ''))
        url = link === null ? undefined : new URL(link[1]!, j.node.url).toString()
      }
      console.log(`    ${j.node.name} joined (${c.live().length - 1} members, ${TAGS + 1} tags): ready after ${fmt(j.readyS, 2)} s, ${last} read on it after ${fmt(j.readS, 2)} s; its tag list (all pages) has ${count} tags`)
      if (count !== TAGS + 1) notes.push(`catchup: ${j.node.name}'s tag list has ${count} tags, expected ${TAGS + 1}`)
      await c.converged({ timeoutMs: 120_000 })
    }
  } catch (err) {
    recordFailure('catchup', err)
    if (c !== undefined) console.log(await logTails(c))
  } finally { await destroy(c) }
  printMeasure(m); printMeasure(ready)
}

// ---------------------------------------------------------------- main

async function main (): Promise<void> {
  const startedAt = new Date()
  console.log(`Flotilla cluster benchmark — ${startedAt.toISOString()}`)
  console.log(`node ${process.version}, ${cpus().length} CPUs, ${fmt(totalmem() / 1024 / MiB)} GiB RAM; blob ${SIZE_LABEL}, ${REPS} rep(s) (median), ${TAGS} tags, commit load ${SECONDS} s${argv.quick ? ' [quick]' : ''}; phases: ${[...ONLY].join(', ')}`)
  const loadStart = loadavg()
  console.log(`load average at start: ${loadStart.map((x) => fmt(x, 2)).join(' ')}${loadStart[0]! > 1.5 ? '  (WARNING: the machine is busy; other processes share the cores, expect noisy figures)' : ''}`)
  // Every temp dir of this run (clusters, blobs) under one private dir, not named flotilla-*:
  // other sessions on this machine clean up /tmp/flotilla-* behind running benchmarks.
  const own = await mkdtemp(join(tmpdir(), 'bench-cluster-run-'))
  process.env.TMPDIR = own
  console.log(`temp dirs under ${own} (TMPDIR for this run and its nodes)`)
  const needBlobs = ONLY.has('push') || ONLY.has('pull') || ONLY.has('fanout')
  if (needBlobs) {
    const work = await tempDir('flotilla-bench-cluster-')
    cleanupDirs.push(work)
    console.log(`generating ${REPS} random ${SIZE_LABEL} blob(s) in ${work} ...`)
    for (let i = 0; i < REPS; i++) blobs.push(await writeRandomFile(join(work, `blob-${i}.bin`), SIZE))
  }
  if (ONLY.has('push')) await pushPhase()
  if (ONLY.has('pull')) await pullPhase()
  if (ONLY.has('fanout')) await fanoutPhase()
  blobs = []
  if (ONLY.has('failover')) await failoverPhase()
  if (ONLY.has('commits')) await commitsPhase()
  await destroy(failoverCluster)
  if (ONLY.has('catchup')) await catchupPhase()

  // ---------------------------------------------------------------- report
  const rows = measures.map((m) => {
    finish(m)
    const d = digits(m)
    return [m.name, m.unit, fmt(m.value, d), m.baselineName === undefined ? '' : `${fmt(m.baseline, d)} (${m.baselineName})`, m.ratio === undefined ? '' : fmt(m.ratio, 2), targetText(m), verdict(m)]
  })
  const head = ['measure', 'unit', 'cluster', 'baseline', 'ratio', 'target', '']
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cols: string[]): string => cols.map((col, i) => (i === 2 || i === 4 ? col.padStart(widths[i]!) : col.padEnd(widths[i]!))).join(' | ')
  console.log('\n' + '='.repeat(widths.reduce((a, b) => a + b + 3, 0)))
  console.log('RESULTS (medians; ratio = cluster / baseline)')
  console.log(line(head))
  console.log(widths.map((w) => '-'.repeat(w)).join('-|-'))
  for (const r of rows) console.log(line(r))
  for (const n of notes) console.log(`note: ${n}`)
  const loadEnd = loadavg()
  console.log(`load average: at start ${loadStart.map((x) => fmt(x, 2)).join(' ')}, at end ${loadEnd.map((x) => fmt(x, 2)).join(' ')}`)
  const missed = measures.filter((m) => verdict(m) === 'MISS').map((m) => m.name.trim())
  console.log(missed.length === 0 ? 'targets: none missed' : `targets MISSED: ${missed.join('; ')}`)
  if (failures.length > 0) {
    console.log(`\n${failures.length} FAILURE(S):`)
    for (const f of failures) console.log(`- ${f.phase}: ${JSON.stringify(f.failure)}`)
  }
  const summary = {
    benchmark: 'cluster',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { node: process.version, cpus: cpus().length, memGiB: totalmem() / 1024 / MiB, loadStart, loadEnd },
    options: { sizeMiB: SIZE / MiB, reps: REPS, tags: TAGS, seconds: SECONDS, quick: argv.quick, phases: [...ONLY] },
    measures: measures.map((m) => ({ id: m.id, name: m.name.trim(), unit: m.unit, value: m.value ?? null, samples: m.samples, baselineName: m.baselineName ?? null, baseline: m.baseline ?? null, baselineSamples: m.baselineSamples, ratio: m.ratio ?? null, target: m.target ?? null, verdict: verdict(m) || null, extra: m.extra })),
    failures,
    notes,
  }
  if (argv.json !== undefined) {
    await writeFile(argv.json, JSON.stringify(summary, null, 2) + '\n')
    console.log(`JSON summary written to ${argv.json}`)
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
