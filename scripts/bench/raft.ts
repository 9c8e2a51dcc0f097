/**
 * Raft benchmark (not a test): Flotilla's Raft against etcd, both three voters with fsync.
 *
 *   node --import ./scripts/polyfill.mjs --import tsx scripts/bench/raft.ts [--seconds 5] [--only flotilla|etcd]
 *
 * Flotilla: three RaftDrivers in this process, each on its own LevelLogStorage (one fsync per
 * Ready: group commit), talking over the in-memory transport. etcd: three etcd members
 * (/usr/bin/etcd) on loopback ports, driven from Node with the etcd3 client.
 * Each run: 200-byte values, 1 and 64 concurrent proposers, proposals (puts) per second and
 * commit latency p50/p99 (from propose to applied on the proposer, i.e. the leader).
 * Ratios are "Flotilla advantage": Flotilla/etcd for throughput, etcd/Flotilla for latency.
 * --procs runs Flotilla as three processes over the real transport (libp2p, scripts/bench/raft-node.ts)
 * instead of one process over the in-memory one, as etcd runs.
 */
import { parseArgs } from 'node:util'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Etcd3 } from 'etcd3'
import { LevelLogStorage } from '../../storage/raftlog/level-log-storage.js'
import { RaftDriver } from '../../cluster/raft/driver.js'
import { MemoryHub } from '../../cluster/raft/memory-transport.js'
import { freePort, tempDir } from '../lib/procs.js'
import { fmt, percentile } from './lib/stats.js'

const { values: argv } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    only: { type: 'string' },
    procs: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false }
  },
  strict: true
})
if (argv.help) {
  console.log('usage: scripts/bench/raft.ts [--seconds 5] [--only flotilla|etcd] [--procs]')
  process.exit(0)
}
const SECONDS = Number(argv.seconds)
const CONCURRENCY = [1, 64]
const VALUE = randomBytes(200)

interface Result { concurrency: number, ops: number, perSec: number, p50: number, p99: number }

/** Run `op` from `concurrency` workers for SECONDS; latencies in ms. */
async function load (concurrency: number, op: (worker: number) => Promise<unknown>): Promise<Result> {
  const lat: number[] = []
  const end = performance.now() + SECONDS * 1000
  const start = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    while (performance.now() < end) {
      const t0 = performance.now()
      await op(w)
      lat.push(performance.now() - t0)
    }
  }))
  const elapsed = (performance.now() - start) / 1000
  return { concurrency, ops: lat.length, perSec: lat.length / elapsed, p50: percentile(lat, 50), p99: percentile(lat, 99) }
}

function print (name: string, r: Result): void {
  console.log(`${name.padEnd(9)} c=${String(r.concurrency).padEnd(3)} ${fmt(r.perSec, 0).padStart(7)} ops/s  p50 ${fmt(r.p50, 2).padStart(7)} ms  p99 ${fmt(r.p99, 2).padStart(7)} ms  (${r.ops} ops)`)
}

async function until (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

// ---------------------------------------------------------------- Flotilla

async function benchFlotilla (): Promise<Result[]> {
  const dir = await tempDir('raft-bench-')
  const ids = ['a', 'b', 'c']
  const hub = new MemoryHub()
  const drivers: RaftDriver[] = []
  const stores: LevelLogStorage[] = []
  try {
    for (const [i, id] of ids.entries()) {
      const storage = new LevelLogStorage(join(dir, id))
      await storage.open()
      stores.push(storage)
      const d = new RaftDriver({
        id,
        storage,
        transport: hub.connect(id),
        apply: async () => undefined,
        bootstrap: ids,
        tickMs: 20,
        seed: i + 1,
        snapshotEvery: 0,
        raft: { electionTick: 10, heartbeatTick: 1 }
      })
      drivers.push(d)
    }
    for (const d of drivers) await d.start()
    await until('a Flotilla leader', () => drivers.some(d => d.isLeader))
    const results: Result[] = []
    for (const c of CONCURRENCY) {
      // Propose at whichever node leads now (a follower would forward, adding a hop).
      const r = await load(c, async () => {
        const leader = drivers.find(d => d.isLeader) ?? drivers[0]!
        await leader.propose(VALUE)
      })
      print('flotilla', r)
      results.push(r)
    }
    const syncs = drivers.reduce((s, d) => s + d.syncs, 0)
    const readies = drivers.reduce((s, d) => s + d.readies, 0)
    console.log(`flotilla: ${readies} readies, ${syncs} fsyncs over 3 nodes`)
    return results
  } finally {
    for (const d of drivers) await d.stop()
    for (const s of stores) await s.close()
    await rm(dir, { recursive: true, force: true })
  }
}

/** Three voter processes over libp2p on loopback; load is driven inside the leader's process. */
async function benchFlotillaProcs (): Promise<Result[]> {
  const { generateKeyPair, privateKeyToProtobuf } = await import('@libp2p/crypto/keys')
  const { createInterface } = await import('node:readline')
  const dir = await tempDir('raft-bench-procs-')
  const keys = await Promise.all([0, 1, 2].map(async () => Buffer.from(privateKeyToProtobuf(await generateKeyPair('Ed25519'))).toString('hex')))
  const ports = [await freePort(), await freePort(), await freePort()]
  const procs: ChildProcess[] = []
  const state: Array<{ isLeader: boolean, result?: Result }> = [{ isLeader: false }, { isLeader: false }, { isLeader: false }]
  try {
    for (let i = 0; i < 3; i++) {
      const p = spawn(process.execPath, ['--import', './scripts/polyfill.mjs', '--import', 'tsx', 'scripts/bench/raft-node.ts',
        '--dir', join(dir, String(i)), '--index', String(i), '--keys', keys.join(','), '--ports', ports.join(',')], { stdio: ['pipe', 'pipe', 'inherit'] })
      procs.push(p)
      createInterface({ input: p.stdout! }).on('line', (line) => {
        const m = JSON.parse(line) as { isLeader?: boolean, result?: Result }
        if (m.isLeader !== undefined) state[i]!.isLeader = m.isLeader
        if (m.result !== undefined) state[i]!.result = m.result
      })
    }
    await until('a leader among the three processes', () => state.some(s => s.isLeader), 60_000)
    const results: Result[] = []
    for (const c of CONCURRENCY) {
      const li = state.findIndex(s => s.isLeader)
      state[li]!.result = undefined
      procs[li]!.stdin!.write(JSON.stringify({ cmd: 'run', concurrency: c, seconds: SECONDS, valueBytes: 200 }) + '\n')
      await until('the run to finish', () => state[li]!.result !== undefined, (SECONDS + 30) * 1000)
      print('flotilla', state[li]!.result!)
      results.push(state[li]!.result!)
    }
    return results
  } finally {
    for (const p of procs) p.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------- etcd

async function benchEtcd (): Promise<Result[]> {
  const dir = await tempDir('etcd-bench-')
  const names = ['m1', 'm2', 'm3']
  const ports = await Promise.all(names.map(async () => ({ client: await freePort(), peer: await freePort() })))
  const cluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[i]!.peer}`).join(',')
  const procs: ChildProcess[] = []
  let client: Etcd3 | undefined
  try {
    for (const [i, name] of names.entries()) {
      const p = ports[i]!
      const proc = spawn('/usr/bin/etcd', [
        '--name', name,
        '--data-dir', join(dir, name),
        '--listen-client-urls', `http://127.0.0.1:${p.client}`,
        '--advertise-client-urls', `http://127.0.0.1:${p.client}`,
        '--listen-peer-urls', `http://127.0.0.1:${p.peer}`,
        '--initial-advertise-peer-urls', `http://127.0.0.1:${p.peer}`,
        '--initial-cluster', cluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', 'flotilla-bench',
        '--logger', 'zap',
        '--log-level', 'error'
      ], { stdio: ['ignore', 'ignore', 'pipe'] })
      // etcd logs to stderr even at error level (e.g. on shutdown); keep it for failures only.
      let log = ''
      proc.stderr!.on('data', (b: Buffer) => { log = (log + b.toString()).slice(-4000) })
      proc.once('exit', (code) => { if (code !== 0 && code !== null) console.error(`etcd ${name} exited with ${code}:\n${log}`) })
      procs.push(proc)
    }
    client = new Etcd3({ hosts: ports.map(p => `http://127.0.0.1:${p.client}`) })
    const c = client
    await until('etcd to serve', async () => {
      try { await c.put('warmup').value('x'); return true } catch { return false }
    })
    const results: Result[] = []
    for (const conc of CONCURRENCY) {
      const r = await load(conc, async (w) => { await c.put(`k${w}`).value(VALUE) })
      print('etcd', r)
      results.push(r)
    }
    return results
  } finally {
    client?.close()
    for (const p of procs) p.kill('SIGTERM')
    await Promise.all(procs.map(async p => await new Promise(resolve => { if (p.exitCode !== null) resolve(null); else p.once('exit', resolve) })))
    await rm(dir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------- main

console.log(`raft bench: 3 voters, fsync on, 200-byte values, ${SECONDS} s per run`)
if (argv.procs) console.log('flotilla: three processes over libp2p (tcp + noise + yamux) on loopback')
const flotilla = argv.only === 'etcd' ? [] : argv.procs ? await benchFlotillaProcs() : await benchFlotilla()
const etcd = argv.only === 'flotilla' ? [] : await benchEtcd()
if (flotilla.length > 0 && etcd.length > 0) {
  console.log('Flotilla advantage (> 1 means Flotilla is better):')
  for (const [i, f] of flotilla.entries()) {
    const e = etcd[i]!
    console.log(`  c=${String(f.concurrency).padEnd(3)} throughput ×${fmt(f.perSec / e.perSec, 2)}  p50 ×${fmt(e.p50 / f.p50, 2)}  p99 ×${fmt(e.p99 / f.p99, 2)}`)
  }
}
