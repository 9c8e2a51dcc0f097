/**
 * Search benchmark (issue 14, "Benchmark"; not a test).
 *
 *   npm run bench:search -- [--manifests 100000] [--tags-per 10] [--repos 1000] [--queries 300]
 *                           [--commits 3000] [--quick] [--json FILE]
 *
 * In-process, on a real LevelDB in a temp dir: the metadata state machine (sync off) applies
 * the commands a registry would (LinkBlob, PutManifest with TAGS-PER tags and annotations, which
 * become read-only properties, RecordChecksums), so the search indexes are built as in a node,
 * by the state machine. Then the search engine (cluster/metadata/search.ts, what
 * GET /api/v1/search and /latest run after their read barrier) answers typical queries, each
 * QUERIES times with varied values, first page of 100: the HTTP layer on top (auth, JSON) is not
 * in these figures. Target: p99 under 50 ms for property equality, name glob and latest by semver.
 *
 * Then the index's cost on writes, same run, same store: tag PUTs (PutManifest of an existing
 * manifest with a new tag) through a state machine keeping the indexes and one not keeping them
 * (the `searchIndex: false` baseline), in alternating rounds; commits per second of each, with
 * fsync on (a single node: the disk sets the pace) and off (a Raft member's apply: the CPU).
 */
import { parseArgs } from 'node:util'
import { join } from 'node:path'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir, cpus, loadavg } from 'node:os'
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import { LevelKV } from '../../storage/kv/level-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { MetadataSearch } from '../../cluster/metadata/search.js'
import { parseQuery } from '../../cluster/metadata/search-query.js'
import { intOptions } from './lib/args.js'
import { fmt, percentile } from './lib/stats.js'

const { values: argv } = parseArgs({
  options: {
    manifests: { type: 'string' },
    'tags-per': { type: 'string' },
    repos: { type: 'string' },
    queries: { type: 'string' },
    commits: { type: 'string' },
    quick: { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
})
if (argv.help) {
  process.stdout.write('npm run bench:search -- [--manifests 100000] [--tags-per 10] [--repos 1000] [--queries 300] [--commits 3000] [--quick] [--json FILE]\n')
  process.exit(0)
}
const int = intOptions(argv.quick)
const MANIFESTS = int(argv.manifests, 100_000, 10_000, 100, 10_000_000, 'manifests')
const TAGS_PER = int(argv['tags-per'], 10, 10, 1, 1000, 'tags-per')
const REPOS = int(argv.repos, 1000, 100, 1, 1_000_000, 'repos')
const QUERIES = int(argv.queries, 300, 100, 10, 100_000, 'queries')
const COMMITS = int(argv.commits, 3000, 1000, 50, 1_000_000, 'commits')
const NOW = Date.now()
const OCI = 'application/vnd.oci.image.manifest.v1+json'
const STATUSES = ['approved', 'rejected', 'pending']

const hex = (s: string): string => createHash('sha256').update(s).digest('hex')
const digest = (s: string): string => 'sha256:' + hex(s)
const repoName = (r: number): string => `org-${r % 37}/service-${r}`
const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: {}, layers: [] })).toString('base64')

const dir = await mkdtemp(join(tmpdir(), 'flotilla-bench-search-'))
const kv = new LevelKV(join(dir, 'meta'), { writeBufferSize: 64 * 1024 * 1024 })
await kv.open()
try {
  const sm = new MetadataStateMachine(kv, { sync: false })
  const apply = async (c: Command): Promise<void> => {
    const r = await sm.apply({ at: NOW, command: c })
    if (!r.ok) throw new Error(`${c.type}: ${r.message}`)
  }
  console.log(`search benchmark: ${MANIFESTS} manifests, ${MANIFESTS * TAGS_PER} tags in ${REPOS} repositories; ${cpus().length} CPUs, load ${loadavg().map((x) => x.toFixed(1)).join(' ')}`)
  await apply({ type: 'RebuildRefs', at: NOW })
  await apply({ type: 'RebuildSearchIndex', at: NOW })

  // Populate: manifest i lives in repository i % REPOS, has one layer of its own, TAGS_PER
  // tags (versions and builds), annotations (qa.status, build, created) that become properties.
  const t0 = performance.now()
  let sums: Array<{ digest: string; sha1: string; md5: string }> = []
  const perRepo = new Map<number, number>()
  for (let i = 0; i < MANIFESTS; i++) {
    const r = i % REPOS
    const n = perRepo.get(r) ?? 0
    perRepo.set(r, n + 1)
    const repo = repoName(r)
    const layer = digest(`layer ${i}`)
    await apply({ type: 'LinkBlob', repo, digest: layer, size: 1000 + i, at: NOW })
    const tags = Array.from({ length: TAGS_PER }, (_, k) => k === 0 ? `v${Math.floor(n / 10)}.${n % 10}.0` : `build-${n}-${k}`)
    await apply({
      type: 'PutManifest', repo, digest: digest(`manifest ${i}`), body, mediaType: OCI, tags, blobs: [layer], manifests: [], at: NOW - (MANIFESTS - i) * 1000,
      annotations: { 'qa.status': STATUSES[i % 3]!, build: String(i), 'org.opencontainers.image.created': new Date(NOW - (MANIFESTS - i) * 1000).toISOString() },
    })
    sums.push({ digest: layer, sha1: createHash('sha1').update(`layer ${i}`).digest('hex'), md5: createHash('md5').update(`layer ${i}`).digest('hex') })
    if (sums.length === 4096) { await apply({ type: 'RecordChecksums', sums }); sums = [] }
    if ((i + 1) % 20_000 === 0) console.log(`  ${i + 1} manifests applied (${fmt((i + 1) / ((performance.now() - t0) / 1000), 0)}/s)`)
  }
  if (sums.length > 0) await apply({ type: 'RecordChecksums', sums })
  const populateS = (performance.now() - t0) / 1000
  console.log(`populated in ${fmt(populateS)} s (${fmt(MANIFESTS / populateS, 0)} manifests/s, each with ${TAGS_PER} tags)`)

  // Queries: the engine the API runs (after its read barrier), first page of 100, as an admin would (every repository readable).
  const search = new MetadataSearch(kv)
  const all = (): boolean => true
  const rnd = (n: number): number => Math.floor(Math.random() * n)
  const kinds: Array<{ name: string; typical: boolean; make: () => string | { latest: string; match?: string; prop?: { key: string; value: string } } }> = [
    { name: 'property equality, selective (prop:build=N)', typical: true, make: () => `prop:build=${rnd(MANIFESTS)}` },
    { name: 'property equality, a third of all (prop:qa.status=approved)', typical: true, make: () => `prop:qa.status=${STATUSES[rnd(3)]!}` },
    { name: 'name glob with a prefix (name:org-N/*)', typical: true, make: () => `name:org-${rnd(37)}/*` },
    { name: 'name glob without a prefix (name:*-N)', typical: true, make: () => `name:*-${rnd(REPOS)}` },
    { name: 'latest by semver', typical: true, make: () => ({ latest: repoName(rnd(REPOS)) }) },
    { name: 'latest by semver, tag pattern and property', typical: true, make: () => ({ latest: repoName(rnd(REPOS)), match: 'v*', prop: { key: 'qa.status', value: 'approved' } }) },
    { name: 'tag exact (tag=v1.2.0)', typical: false, make: () => `tag=v${rnd(Math.max(1, Math.floor(MANIFESTS / REPOS / 10)))}.${rnd(10)}.0` },
    { name: 'sha1 of a layer', typical: false, make: () => `sha1:${createHash('sha1').update(`layer ${rnd(MANIFESTS)}`).digest('hex')}` },
    { name: 'digest of a layer', typical: false, make: () => `digest:${digest(`layer ${rnd(MANIFESTS)}`)}` },
    { name: 'combined: name glob AND property AND NOT tag glob', typical: false, make: () => `name:org-${rnd(37)}/* AND prop:qa.status=approved AND NOT tag:v0.*` },
    { name: 'OR of two properties', typical: false, make: () => `prop:build=${rnd(MANIFESTS)} OR prop:build=${rnd(MANIFESTS)}` },
    { name: 'pushed in the last hour', typical: false, make: () => 'pushed>=now-1h' },
  ]
  const results: Array<{ query: string; typical: boolean; p50: number; p99: number; max: number; cpuP99: number; hits: number }> = []
  console.log(`\nqueries (${QUERIES} each, first page of 100, in-process on LevelDB):`)
  // Wall time, and this process's CPU time per query (user + system; less sensitive to other
  // processes on a loaded machine, though it counts LevelDB's own threads too).
  console.log('  p50 ms   p99 ms   max ms  cpu p99  hits/q  query')
  for (const k of kinds) {
    const times: number[] = []
    const cpu: number[] = []
    let hits = 0
    for (let i = 0; i < QUERIES + 5; i++) {
      const q = k.make()
      const s = performance.now()
      const c0 = process.cpuUsage()
      let n: number
      if (typeof q === 'string') n = (await search.search(parseQuery(q, Date.now()), { limit: 100, canRead: all })).items.length
      else n = (await search.latest(q.latest, { by: 'semver', ...(q.match !== undefined ? { match: q.match } : {}), ...(q.prop !== undefined ? { prop: q.prop } : {}) })) === undefined ? 0 : 1
      const ms = performance.now() - s
      const c = process.cpuUsage(c0)
      // The first few warm the caches and JIT.
      if (i >= 5) { times.push(ms); cpu.push((c.user + c.system) / 1000); hits += n }
    }
    const row = { query: k.name, typical: k.typical, p50: percentile(times, 50), p99: percentile(times, 99), max: Math.max(...times), cpuP99: percentile(cpu, 99), hits: hits / QUERIES }
    results.push(row)
    console.log(`  ${fmt(row.p50, 2).padStart(6)}   ${fmt(row.p99, 2).padStart(6)}   ${fmt(row.max, 1).padStart(6)}   ${fmt(row.cpuP99, 2).padStart(6)}  ${fmt(row.hits, 1).padStart(6)}  ${k.name}${k.typical ? ' *' : ''}`)
  }
  const worstTypical = Math.max(...results.filter((r) => r.typical).map((r) => r.p99))
  console.log(`  (* typical: the target is p99 < 50 ms) worst typical p99: ${fmt(worstTypical, 2)} ms: ${worstTypical < 50 ? 'MET' : 'NOT MET'} (load now ${loadavg().map((x) => x.toFixed(1)).join(' ')} on ${cpus().length} CPUs)`)

  // Tag PUT commits per second with and without the index, same store, alternating rounds:
  // fsync on (as a single node applies them: the disk sets the pace), then fsync off (a Raft
  // member's apply: the CPU cost of the index shows). Each round's rate; the medians compared.
  const ROUNDS = 10
  const per = Math.max(1, Math.floor(COMMITS / ROUNDS))
  let seq = 0
  const commitRates: Record<string, { with: number; without: number; cost: number }> = {}
  for (const sync of [true, false]) {
    const machines = { with: new MetadataStateMachine(kv, { sync }), without: new MetadataStateMachine(kv, { sync, searchIndex: false }) }
    const rounds: Record<'with' | 'without', number[]> = { with: [], without: [] }
    for (let round = 0; round < ROUNDS * 2; round++) {
      const which = round % 2 === 0 ? 'with' : 'without'
      const s = performance.now()
      for (let j = 0; j < per; j++) {
        const i = rnd(MANIFESTS)
        const r = await machines[which].apply({ at: Date.now(), command: { type: 'PutManifest', repo: repoName(i % REPOS), digest: digest(`manifest ${i}`), body, mediaType: OCI, tags: [`bench-${seq++}`], blobs: [digest(`layer ${i}`)], manifests: [], at: Date.now() } })
        if (!r.ok) throw new Error(r.message)
      }
      rounds[which].push(per / ((performance.now() - s) / 1000))
    }
    const w = percentile(rounds.with, 50)
    const wo = percentile(rounds.without, 50)
    commitRates[sync ? 'fsync' : 'nosync'] = { with: w, without: wo, cost: 1 - w / wo }
    console.log(`\ntag PUT commits (PutManifest of an existing manifest with a new tag), fsync ${sync ? 'on' : 'off'}, ${ROUNDS} alternating rounds of ${per}, median round:`)
    console.log(`  with the search indexes:    ${fmt(w, 0)} commits/s`)
    console.log(`  without (baseline):         ${fmt(wo, 0)} commits/s`)
    console.log(`  the indexes cost ${fmt((1 - w / wo) * 100, 1)}% of the commit rate (rounds with: ${rounds.with.map((x) => fmt(x, 0)).join(' ')}; without: ${rounds.without.map((x) => fmt(x, 0)).join(' ')})`)
  }
  const cps = commitRates
  if (argv.json !== undefined) await writeFile(argv.json, JSON.stringify({ manifests: MANIFESTS, tags: MANIFESTS * TAGS_PER, repos: REPOS, populateSeconds: populateS, queries: results, worstTypicalP99: worstTypical, commitsPerSecond: cps }, null, 2))
} finally {
  await kv.close()
  await rm(dir, { recursive: true, force: true })
}
