/**
 * The deterministic simulation on every CI run: a few hundred seeds of chaos (partitions,
 * one-way cuts, pauses, crash-restarts losing unsynced writes, lossy reordering network)
 * with safety checked after every event, liveness after every heal, and linearizability of
 * the client history at the end. More seeds on demand: `npm run sim -- --seeds 5000`.
 * SIM_SEEDS / SIM_FROM override the range here.
 */
import t from 'tap'
import { runSeed, type SimResult } from '../../cluster/sim/simulation.js'

const SEEDS = Number(process.env.SIM_SEEDS ?? 300)
const FROM = Number(process.env.SIM_FROM ?? 1)

const firstLines = (s: string | undefined, n: number): string => (s ?? '').split('\n').slice(0, n).join('\n')

t.test(`seeds ${FROM}..${FROM + SEEDS - 1}: safety, liveness after heal, linearizability`, async t => {
  const failures: SimResult[] = []
  let ops = 0
  let elections = 0
  let crashes = 0
  let snapshots = 0
  let refused = 0
  let largest = 0
  for (let seed = FROM; seed < FROM + SEEDS; seed++) {
    const r = runSeed({ seed })
    ops += r.stats.ops
    elections += r.stats.elections
    crashes += r.stats.crashes
    snapshots += r.stats.snapshotsInstalled
    refused += r.stats.opsRefused
    largest += r.stats.largestCommitted
    if (!r.ok) failures.push(r)
  }
  for (const f of failures) {
    t.fail(`seed ${f.seed}: ${f.invariant ?? '?'} at ${f.at ?? '?'} ms — replay: npm run sim -- --seed ${f.seed} --trace\n${firstLines(f.detail, 12)}`)
  }
  t.equal(failures.length, 0, `${SEEDS - failures.length} passed, ${failures.length} failed`)
  t.comment(`${ops} client operations, ${elections} elections, ${crashes} crashes, ${snapshots} snapshots installed`)
  t.ok(snapshots > 0, 'some followers were caught up by snapshot')
  // Entry sizes are drawn up to a fifth over each seed's maxEntryBytes: every proposal is
  // committed or refused, never stuck (liveness), and no frame exceeds the transport's limit.
  t.ok(refused > 0, `${refused} puts over the entry limit were refused before they were proposed`)
  t.ok(largest >= SEEDS, `${largest} entries of exactly the limit committed on every node`)
})

t.test('a seed replays exactly: same seed, same event trace', async t => {
  const a = runSeed({ seed: 7, trace: true })
  const b = runSeed({ seed: 7, trace: true })
  t.ok(a.trace.length > 1000, `trace has ${a.trace.length} events`)
  t.same(b.trace, a.trace, 'identical traces')
  t.same(b.stats, a.stats)
  const c = runSeed({ seed: 8, trace: true })
  t.not(c.trace.join('\n'), a.trace.join('\n'), 'another seed, another run')
})

// The checks must be able to fail: break the driver on purpose and expect them to notice.
t.test('harness self-test: stale local reads are caught by the linearizability check', async t => {
  const caught = [1, 2, 3, 4, 5].map(seed => runSeed({ seed, unsafe: 'local-reads' })).filter(r => r.invariant === 'linearizability')
  t.ok(caught.length > 0, `caught in ${caught.length} of 5 seeds`)
})

t.test('harness self-test: sending before fsync is caught by the safety checks', async t => {
  const caught: string[] = []
  for (let seed = 1; seed <= 150 && caught.length === 0; seed++) {
    const r = runSeed({ seed, nodes: 3, unsafe: 'send-before-sync' })
    if (!r.ok && r.invariant !== 'liveness') caught.push(`seed ${seed}: ${r.invariant ?? ''}`)
  }
  t.ok(caught.length > 0, `caught: ${caught.join(', ')}`)
})
