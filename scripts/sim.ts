/**
 * Deterministic simulation of the Raft cluster.
 *
 *   npm run sim -- --seeds 1000 [--from 1]    run seeds from..from+N-1; exit 0 only if all pass
 *   npm run sim -- --seed 42 [--trace]        replay one seed exactly (and print its event trace)
 *
 * Options: --nodes N (default: 3 or 5 from the seed), --rounds N (chaos/heal rounds, default 3),
 * --report-loss (the transport reports lost messages to their sender), --verbose.
 */
import { Command } from 'commander'
import { runSeed, type SimOptions, type SimResult } from '../cluster/sim/simulation.js'

const program = new Command()
  .name('sim')
  .option('--seeds <n>', 'number of seeds to run', v => parseInt(v, 10))
  .option('--from <s>', 'first seed', v => parseInt(v, 10), 1)
  .option('--seed <s>', 'replay one seed', v => parseInt(v, 10))
  .option('--trace', 'print the event trace (with --seed)', false)
  .option('--nodes <n>', 'cluster size', v => parseInt(v, 10))
  .option('--rounds <n>', 'chaos → heal rounds per seed', v => parseInt(v, 10))
  .option('--verbose', 'print one line per seed', false)
  .option('--report-loss', 'the transport reports every lost message to its sender (reportUnreachable)', false)
  .parse()

const o = program.opts<{ seeds?: number, from: number, seed?: number, trace: boolean, nodes?: number, rounds?: number, verbose: boolean, reportLoss: boolean }>()

function options (seed: number, trace: boolean): SimOptions {
  const opts: SimOptions = { seed, trace, reportLoss: o.reportLoss }
  if (o.nodes !== undefined) opts.nodes = o.nodes
  if (o.rounds !== undefined) opts.rounds = o.rounds
  return opts
}

function stats (r: SimResult): string {
  const s = r.stats
  return `${s.nodes} nodes, ${s.virtualMs} ms virtual, ${s.events} events, ${s.messages} msgs (${s.dropped} dropped), ` +
    `${s.elections} elections, ${s.crashes} crashes, ${s.pauses} pauses, ${s.partitions} partitions, ${s.replacements} replacements, ` +
    `${s.snapshotsInstalled} snapshots installed, ${s.ops} ops (${s.opsUnknown} unknown), ${s.reads} reads, ` +
    `leader ≤ ${s.maxLeaderAfterHealMs} ms after heal`
}

function report (r: SimResult): void {
  console.log(`FAIL seed ${r.seed}: ${r.invariant ?? '?'} at ${r.at ?? '?'} ms (${r.stats.nodes} nodes, ${JSON.stringify(r.tuning)})`)
  console.log(r.detail ?? '')
  console.log(`replay: npm run sim -- --seed ${r.seed} --trace`)
}

if (o.seed !== undefined) {
  const r = runSeed(options(o.seed, o.trace))
  if (o.trace) for (const line of r.trace) console.log(line)
  if (r.ok) console.log(`seed ${r.seed} passed: ${stats(r)}`)
  else report(r)
  process.exitCode = r.ok ? 0 : 1
} else {
  const n = o.seeds ?? 100
  let passed = 0
  let failed = 0
  let slowestLeader = 0
  const start = performance.now()
  for (let seed = o.from; seed < o.from + n; seed++) {
    const r = runSeed(options(seed, false))
    slowestLeader = Math.max(slowestLeader, r.stats.maxLeaderAfterHealMs)
    if (r.ok) {
      passed++
      if (o.verbose) console.log(`ok seed ${seed}: ${stats(r)}`)
    } else {
      failed++
      report(r)
    }
  }
  console.log(`${passed} passed, ${failed} failed (seeds ${o.from}..${o.from + n - 1}, ${((performance.now() - start) / 1000).toFixed(1)} s; slowest leader after a heal: ${slowestLeader} virtual ms)`)
  process.exitCode = failed === 0 ? 0 : 1
}
