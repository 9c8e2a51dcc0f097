/**
 * Backup benchmark (issue 17, "Benchmark"; not a test).
 *
 *   npm run bench:backup -- [--gib 10] [--layer-mib 64] [--rounds 1] [--warm] [--json FILE]
 *
 * One node gets GIB of blobs (images of one random layer of LAYER-MIB each). Then, each from a
 * cold page cache (`echo 3 > /proc/sys/vm/drop_caches`, as root; without root the script says
 * the figures are warm-cache; --warm skips the drop, for a quick try that leaves other work's
 * caches alone):
 *
 *   full         `flotilla backup --out DIR` (every blob fetched through the node, hashed,
 *                fsynced) against `cp -r DATA/blobs COPY && sync`. Target: backup >= 0.8x cp's
 *                speed (time_cp / time_backup).
 *   incremental  1% of GIB pushed as new images, then `flotilla backup` into the same DIR.
 *                Target: <= 5% of the full backup's time.
 *
 * Times are the CLI's own (`seconds` in its --json: from its start of work to the end, fsyncs
 * included), and the wall time with the process start (the tsx loader) is printed beside them.
 */
import { parseArgs } from 'node:util'
import { join } from 'node:path'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import { cpus, loadavg } from 'node:os'
import { startCluster, CLI } from '../lib/cluster.js'
import { tempDir } from '../lib/procs.js'
import { authorize, pushLayerImage } from './lib/cluster.js'
import { writeRandomFile } from './lib/content.js'
import { newAgent } from './lib/ops.js'
import { run } from './lib/exec.js'

const { values: argv } = parseArgs({
  options: {
    gib: { type: 'string', default: '10' },
    'layer-mib': { type: 'string', default: '64' },
    rounds: { type: 'string', default: '1' },
    warm: { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
})
if (argv.help) {
  process.stdout.write('npm run bench:backup -- [--gib 10] [--layer-mib 64] [--rounds 1] [--warm] [--json FILE]\n')
  process.exit(0)
}
const GIB = Number(argv.gib)
const LAYER_MIB = Number(argv['layer-mib'])
const ROUNDS = Number(argv.rounds)
if (!(GIB > 0 && GIB <= 1024)) { console.error('--gib must be a number in (0, 1024]'); process.exit(2) }
if (!(Number.isInteger(LAYER_MIB) && LAYER_MIB >= 1 && LAYER_MIB <= 4096)) { console.error('--layer-mib must be an integer in [1, 4096]'); process.exit(2) }
if (!(Number.isInteger(ROUNDS) && ROUNDS >= 1 && ROUNDS <= 10)) { console.error('--rounds must be an integer in [1, 10]'); process.exit(2) }
const MiB = 2 ** 20

async function dropCaches (): Promise<boolean> {
  if (argv.warm) return false
  const s = await run('sync', [], 600_000)
  if (s.code !== 0) return false
  try { await writeFile('/proc/sys/vm/drop_caches', '3\n'); return true } catch { return false }
}

async function main (): Promise<void> {
  const base = await tempDir('flotilla-bench-backup-')
  const c = await startCluster({ size: 1, env: { FLOTILLA_LOG_LEVEL: 'warn' } })
  const node = c.nodes[0]!
  authorize(c)
  const agent = newAgent(4)
  const user = `${c.credentials.username}:${c.credentials.password}`
  const out: Record<string, unknown> = { gib: GIB, layerMib: LAYER_MIB, cpus: cpus().length, loadavg: loadavg() }
  try {
    // Content: images of one random layer each, pushed through the API.
    const push = async (bytes: number, prefix: string): Promise<number> => {
      let n = 0
      for (let left = bytes; left > 0; n++) {
        const size = Math.min(left, LAYER_MIB * MiB)
        const f = await writeRandomFile(join(base, 'layer.tmp'), size)
        await pushLayerImage(node.url, `bench/${prefix}`, `t${n}`, f, agent)
        await rm(f.path)
        left -= size
      }
      return n
    }
    const t0 = performance.now()
    const images = await push(Math.round(GIB * 1024) * MiB, 'full')
    process.stdout.write(`pushed ${images} images (${GIB} GiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`)

    const backup = async (dir: string): Promise<{ seconds: number; wall: number; copied: number; bytes: number }> => {
      const r = await run(process.execPath, [CLI, 'backup', '--node', node.url, '--user', user, '--out', dir, '--json'], 3 * 3600_000)
      if (r.code !== 0) throw new Error(`flotilla backup failed: ${r.stderr}`)
      const doc = JSON.parse(r.stdout) as { seconds: number; blobs: { copied: number; bytesCopied: number } }
      return { seconds: doc.seconds, wall: r.ms / 1000, copied: doc.blobs.copied, bytes: doc.blobs.bytesCopied }
    }
    const rows: Array<Record<string, number | boolean>> = []
    let cold = true
    for (let round = 1; round <= ROUNDS; round++) {
      const dir = join(base, `backup-${round}`)
      const copy = join(base, `cp-${round}`)
      cold = await dropCaches() && cold
      const cp0 = performance.now()
      const cp = await run('sh', ['-c', `cp -r "${join(node.dataDir, 'blobs')}" "${copy}" && sync`], 3 * 3600_000)
      if (cp.code !== 0) throw new Error(`cp failed: ${cp.stderr}`)
      const cpSeconds = (performance.now() - cp0) / 1000
      await rm(copy, { recursive: true, force: true })
      cold = await dropCaches() && cold
      const full = await backup(dir)
      // 1% new data, then an incremental backup into the same DIR.
      await push(Math.max(1, Math.round(GIB * 1024 * 0.01)) * MiB, `incr${round}`)
      cold = await dropCaches() && cold
      const incr = await backup(dir)
      await rm(dir, { recursive: true, force: true })
      const row = {
        round,
        cpSeconds,
        fullSeconds: full.seconds,
        fullWallSeconds: full.wall,
        fullMiBps: full.bytes / MiB / full.seconds,
        cpMiBps: full.bytes / MiB / cpSeconds,
        speedVsCp: cpSeconds / full.seconds,
        incrSeconds: incr.seconds,
        incrWallSeconds: incr.wall,
        incrCopied: incr.copied,
        incrOverFull: incr.seconds / full.seconds,
      }
      rows.push(row)
      process.stdout.write(`round ${round}: cp -r + sync ${cpSeconds.toFixed(1)} s (${row.cpMiBps.toFixed(0)} MiB/s); backup ${full.seconds.toFixed(1)} s (${row.fullMiBps.toFixed(0)} MiB/s, wall ${full.wall.toFixed(1)} s) = ${row.speedVsCp.toFixed(2)}x cp's speed (target >= 0.8x); incremental after 1% new: ${incr.seconds.toFixed(2)} s (wall ${incr.wall.toFixed(1)} s, ${incr.copied} blobs) = ${(row.incrOverFull * 100).toFixed(1)}% of the full backup (target <= 5%)\n`)
    }
    if (!cold) process.stdout.write('NOTE: the page cache could not be dropped (not root?): these figures are warm-cache, not the benchmark\'s\n')
    out.coldCache = cold
    out.rounds = rows
    if (argv.json !== undefined) {
      await mkdir(join(argv.json, '..'), { recursive: true })
      await writeFile(argv.json, JSON.stringify(out, null, 2) + '\n')
    }
  } finally {
    agent.destroy()
    await c.destroy()
    await rm(base, { recursive: true, force: true })
  }
}

await main()
