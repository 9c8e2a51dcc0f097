/**
 * Start Flotilla from another entry point than bin/flotilla.mjs (for example a precompiled
 * build, `tsc --outDir DIR` then DIR/src/cli.js), so the cost of the tsx loader can be told
 * apart from Flotilla's own. Same contract as startFlotilla() in scripts/lib/procs.ts.
 */
import { spawn } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { join, resolve } from 'node:path'
import { freePort, waitForHttp, ROOT, type RunningRegistry } from '../../lib/procs.js'

export async function startFlotillaEntry (entry: string, dataDir: string, logFile: string, env: Record<string, string> = {}): Promise<RunningRegistry> {
  const port = await freePort()
  const host = `127.0.0.1:${port}`
  const proc = spawn(process.execPath, ['--import', join(ROOT, 'scripts', 'polyfill.mjs'), resolve(entry), 'serve', '--data', dataDir, '--listen', host], {
    cwd: ROOT,
    env: { ...process.env, FLOTILLA_LOG_LEVEL: process.env.FLOTILLA_LOG_LEVEL ?? 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const log = createWriteStream(logFile, { flags: 'a' })
  proc.stdout?.pipe(log)
  proc.stderr?.pipe(log)
  await waitForHttp(`http://${host}/v2/`, 30_000, proc)
  const exited = (): Promise<void> => proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise((r) => proc.once('exit', () => r()))
  return {
    host,
    url: `http://${host}`,
    dataDir,
    proc,
    async stop () { proc.kill('SIGTERM'); await exited() },
    async kill (signal: NodeJS.Signals = 'SIGKILL') { proc.kill(signal); await exited() },
  }
}
