/**
 * How a pushed blob spreads over N nodes, by the model in cluster/replication/fanout-model.ts
 * (deterministic; no node runs): the relay chain against the origin sending every copy (star)
 * and the mirror-then-pull policy before the chain, with and without a node lost mid-chain.
 *
 *   npm run sim:fanout -- [--nodes 3,5,100,1000] [--size-mib 1024] [--gbps 1] [--chunk-kib 64]
 *                         [--latency-ms 0.5] [--commit-ms 5] [--lose-at 0.5] [--fraction 0.5] [--seed 1]
 *
 * --lose-at: where in the chain the lost node sits (0.5: the middle); --fraction: how much of
 * the blob it had received when it was lost.
 */
import { parseArgs } from 'node:util'
import { simulateFanout, DEFAULT_PARAMS, type FanoutParams, type FanoutPolicy, type FanoutResult } from '../cluster/replication/fanout-model.js'

const { values: argv } = parseArgs({
  options: {
    nodes: { type: 'string', default: '3,5,100,1000' },
    'size-mib': { type: 'string' },
    gbps: { type: 'string' },
    'chunk-kib': { type: 'string' },
    'latency-ms': { type: 'string' },
    'commit-ms': { type: 'string' },
    'lose-at': { type: 'string', default: '0.5' },
    fraction: { type: 'string', default: '0.5' },
    seed: { type: 'string', default: '1' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
})
if (argv.help) {
  console.log('usage: npm run sim:fanout -- [--nodes 3,5,100,1000] [--size-mib 1024] [--gbps 1] [--chunk-kib 64] [--latency-ms 0.5] [--commit-ms 5] [--lose-at 0.5] [--fraction 0.5] [--seed 1]')
  process.exit(0)
}

function num (raw: string | undefined, fallback: number, what: string): number {
  if (raw === undefined) return fallback
  const v = Number(raw)
  if (!Number.isFinite(v) || v < 0) { console.error(`--${what} must be a number ≥ 0, got ${raw}`); process.exit(2) }
  return v
}

const base: Omit<FanoutParams, 'nodes'> = {
  blobBytes: num(argv['size-mib'], DEFAULT_PARAMS.blobBytes / (1 << 20), 'size-mib') * (1 << 20),
  linkBytesPerSec: num(argv.gbps, DEFAULT_PARAMS.linkBytesPerSec * 8 / 1e9, 'gbps') * 1e9 / 8,
  chunkBytes: num(argv['chunk-kib'], DEFAULT_PARAMS.chunkBytes / 1024, 'chunk-kib') * 1024,
  latencyMs: num(argv['latency-ms'], DEFAULT_PARAMS.latencyMs, 'latency-ms'),
  commitMs: num(argv['commit-ms'], DEFAULT_PARAMS.commitMs, 'commit-ms'),
  seed: num(argv.seed, 1, 'seed'),
}
const loseAt = num(argv['lose-at'], 0.5, 'lose-at')
const fraction = num(argv.fraction, 0.5, 'fraction')
const sizes = argv.nodes.split(',').map((s) => Math.floor(num(s.trim(), 0, 'nodes')))

const fmt = (x: number, d = 2): string => x.toFixed(d)
console.log(`fan-out model: ${base.blobBytes / (1 << 20)} MiB blob, ${fmt(base.linkBytesPerSec * 8 / 1e9, 1)} Gbit/s links, ${base.chunkBytes / 1024} KiB chunks, ${base.latencyMs} ms a hop, ${base.commitMs} ms a commit, W = a majority`)
console.log(`one transfer: ${fmt(base.blobBytes / base.linkBytesPerSec + base.latencyMs / 1000)} s; lost node: ${fmt(loseAt * 100, 0)} % down the chain, after ${fmt(fraction * 100, 0)} % of the blob`)
const head = ['nodes', 'policy', 'spread s', 'x transfer', 'blob 201 s', 'origin egress', 'total egress', 'pulled copies', 'holders/live']
const rows: string[][] = []
const row = (label: string, r: FanoutResult): void => {
  rows.push([String(r.nodes), label, fmt(r.spreadS), fmt(r.ratio), fmt(r.ackS), fmt(r.originEgressCopies), fmt(r.totalEgressCopies), String(r.backgroundCopies), `${r.holders}/${r.live}`])
}
for (const n of sizes) {
  if (n < 2) { console.error(`--nodes: ${n} is fewer than 2`); process.exit(2) }
  const params: FanoutParams = { ...base, nodes: n }
  for (const policy of ['chain', 'star', 'mirror-pull'] as FanoutPolicy[]) row(policy === 'chain' ? 'chain (relay)' : policy === 'star' ? 'star (origin sends all)' : 'mirror W-1 + pull (before)', simulateFanout(policy, params))
  if (n >= 3) {
    const hop = Math.min(n - 1, Math.max(1, Math.round(loseAt * (n - 1))))
    for (const kind of ['kill', 'freeze'] as const) row(`chain, hop ${hop} ${kind === 'kill' ? 'killed' : 'frozen'}`, simulateFanout('chain', { ...params, loss: { hop, atFraction: fraction, kind } }))
  }
}
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
const line = (cols: string[]): string => cols.map((c, i) => (i <= 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')
console.log(line(head))
console.log(widths.map((w) => '-'.repeat(w)).join('-|-'))
for (const r of rows) console.log(line(r))
console.log('egress in copies of the blob; spread: until the last live node holds it (durable, recorded); pulled: whole copies made by replication afterwards')
