/**
 * A private Docker engine for one test file: dockerd 20.10 (Debian's docker.io) with its
 * data, exec root, pidfile and socket in a temp dir, vfs storage and no networking set-up,
 * so it touches nothing shared on the machine. The CLI is /usr/local/bin/docker (28.x),
 * pinned to API 1.41, the newest the 20.10 engine speaks.
 */
import { spawn } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alive, removeTree, waitGone } from './cleanup.js'
import { run, runOk, type RunOptions, type RunResult } from './exec.js'
import type { Lifecycle } from './registry.js'
import { findTool } from './tools.js'

export interface DockerEngine {
  dir: string
  /** Environment for the docker CLI: DOCKER_HOST, DOCKER_CONFIG, DOCKER_API_VERSION. */
  env: NodeJS.ProcessEnv
  /** Run `docker ARGS` against this engine; never throws on a non-zero exit. */
  docker (args: string[], opts?: RunOptions): Promise<RunResult>
  /** Same, but throws (with stderr) on a non-zero exit. */
  dockerOk (args: string[], opts?: RunOptions): Promise<RunResult>
  /** `docker login` to host (password on stdin), stored in this engine's private DOCKER_CONFIG. */
  login (host: string, creds: { username: string, password: string }): Promise<RunResult>
  stop (): Promise<void>
}

export interface DockerOptions {
  /** host:port registries to trust over plain HTTP (127.0.0.0/8 already is). */
  insecureRegistries?: string[]
  startTimeoutMs?: number
}

async function readPid (file: string): Promise<number | undefined> {
  const n = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10)
  return Number.isInteger(n) && n > 0 ? n : undefined
}

export async function startDocker (t: Lifecycle, opts: DockerOptions = {}): Promise<DockerEngine> {
  // Short prefix: containerd's socket lives below this dir and unix socket paths max out at 108 bytes.
  const dir = await mkdtemp(join(tmpdir(), 'fl-dockerd-'))
  const pidfile = join(dir, 'dockerd.pid')
  const sock = join(dir, 'docker.sock')
  const clientConfig = join(dir, 'client-config')
  await mkdir(clientConfig)
  await writeFile(join(clientConfig, 'config.json'), '{}')
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DOCKER_HOST: `unix://${sock}`,
    DOCKER_CONFIG: clientConfig,
    DOCKER_API_VERSION: '1.41',
    DOCKER_CLI_HINTS: 'false',
  }
  const logFile = join(dir, 'dockerd.log')
  const logFd = openSync(logFile, 'a')
  const args = [
    '--data-root', join(dir, 'data'),
    '--exec-root', join(dir, 'exec'),
    '--pidfile', pidfile,
    '-H', `unix://${sock}`,
    '--storage-driver=vfs', '--iptables=false', '--ip6tables=false', '--bridge=none',
    ...(opts.insecureRegistries ?? []).flatMap((r) => ['--insecure-registry', r]),
  ]
  const proc = spawn(findTool('dockerd') ?? 'dockerd', args, { stdio: ['ignore', logFd, logFd], env: process.env })
  closeSync(logFd)
  let spawnError: Error | undefined
  proc.on('error', (err) => { spawnError = err }) // e.g. ENOENT; unhandled it would kill the test process
  // If the test process dies without teardown, still ask dockerd to shut down (it stops its containerd).
  const onExit = (): void => { if (proc.pid !== undefined && alive(proc.pid)) process.kill(proc.pid, 'SIGTERM') }
  process.once('exit', onExit)

  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    process.off('exit', onExit)
    const pid = (await readPid(pidfile)) ?? proc.pid
    const containerdPid = await readPid(join(dir, 'exec', 'containerd', 'containerd.pid'))
    if (pid !== undefined && alive(pid)) {
      process.kill(pid, 'SIGTERM')
      if (!await waitGone(pid, 20_000)) { process.kill(pid, 'SIGKILL'); await waitGone(pid, 5_000) }
    }
    // dockerd normally takes its containerd down with it; make sure, so nothing outlives the test.
    if (containerdPid !== undefined && alive(containerdPid)) {
      process.kill(containerdPid, 'SIGTERM')
      if (!await waitGone(containerdPid, 10_000)) process.kill(containerdPid, 'SIGKILL')
    }
    await removeTree(dir)
  }

  const docker = async (a: string[], o: RunOptions = {}): Promise<RunResult> => await run('docker', a, { env, ...o })
  const dockerOk = async (a: string[], o: RunOptions = {}): Promise<RunResult> => await runOk('docker', a, { env, ...o })

  const login = async (host: string, creds: { username: string, password: string }): Promise<RunResult> =>
    await dockerOk(['login', '-u', creds.username, '--password-stdin', host], { input: creds.password })

  t.teardown(async () => {
    if (!t.passing()) {
      const text = await readFile(logFile, 'utf8').catch(() => '')
      t.comment(`dockerd log (last 40 lines):\n${text.split('\n').slice(-40).join('\n')}`)
    }
    await stop()
  })

  const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000)
  let last: RunResult | undefined
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || spawnError !== undefined) break
    last = await docker(['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 10_000 })
    if (last.code === 0) return { dir, env, docker, dockerOk, login, stop }
    await new Promise((r) => setTimeout(r, 200))
  }
  const log = await readFile(logFile, 'utf8').catch(() => '')
  await stop()
  throw new Error(`dockerd did not come up (exit ${proc.exitCode}${spawnError !== undefined ? `, ${spawnError.message}` : ''}): ${last?.stderr ?? ''}\n${log.split('\n').slice(-20).join('\n')}`)
}
