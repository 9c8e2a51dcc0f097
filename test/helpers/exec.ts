/**
 * Run a client CLI (docker, skopeo, podman, ...) and collect its output. Tests assert on
 * exit codes and output, so `run` never throws on a non-zero exit; `runOk` does, with the
 * command line and stderr in the message so a failing test says what the client saw.
 */
import { spawn } from 'node:child_process'

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Kill the process (SIGKILL) after this long; real clients retry for minutes otherwise. */
  timeoutMs?: number
  /** Written to stdin, then closed (e.g. a password for --password-stdin). */
  input?: string
}

export async function run (cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return await new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    if (opts.input !== undefined) proc.stdin?.end(opts.input)
    const out: Buffer[] = []
    const err: Buffer[] = []
    proc.stdout?.on('data', (b: Buffer) => out.push(b))
    proc.stderr?.on('data', (b: Buffer) => err.push(b))
    const timer = setTimeout(() => {
      err.push(Buffer.from(`\n[killed after ${opts.timeoutMs} ms]\n`))
      proc.kill('SIGKILL')
    }, opts.timeoutMs ?? 180_000)
    proc.on('error', (e) => { clearTimeout(timer); reject(e) })
    proc.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() })
    })
  })
}

export class CommandError extends Error {
  static override name = 'CommandError'
  constructor (readonly cmdline: string, readonly result: RunResult) {
    super(`${cmdline} exited with ${result.code ?? result.signal}\n--- stderr ---\n${result.stderr.slice(-4000)}\n--- stdout ---\n${result.stdout.slice(-2000)}`)
  }
}

export async function runOk (cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const res = await run(cmd, args, opts)
  if (res.code !== 0) throw new CommandError([cmd, ...args].join(' '), res)
  return res
}
