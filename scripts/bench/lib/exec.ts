/** Run an external command (curl, skopeo, sync) with a time limit, capturing its output. */
import { spawn } from 'node:child_process'
import { performance } from 'node:perf_hooks'

export interface ExecResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }

export async function run (cmd: string, args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<ExecResult> {
  const t0 = performance.now()
  return await new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (c: Buffer) => { if (stdout.length < 1_000_000) stdout += c.toString() })
    p.stderr.on('data', (c: Buffer) => { if (stderr.length < 1_000_000) stderr += c.toString() })
    const timer = setTimeout(() => { stderr += `\n[killed after ${timeoutMs} ms]`; p.kill('SIGKILL') }, timeoutMs)
    p.on('error', (err) => { clearTimeout(timer); reject(err) })
    p.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 })
    })
  })
}
