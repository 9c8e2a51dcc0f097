/**
 * Start and stop the processes that tests and benchmarks drive: Flotilla nodes and the
 * CNCF reference registry, each as a real process on 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createWriteStream, readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { request as httpsRequest } from 'node:https'

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** A port that was free a moment ago (the kernel picks it). */
/**
 * A free TCP port on 127.0.0.1 for a process to listen on, drawn at random below the kernel's
 * ephemeral range (32768–60999 here). A port the kernel hands out for listen(0) is in that
 * range, where every outgoing connection on the machine also takes its local port: between
 * our check and the node's listen, one of the thousands of connections a test run makes could
 * take it ("the port is in use"). Below the range only another listener can.
 */
export async function freePort (): Promise<number> {
  // FLOTILLA_PORT_RANGE=LOW-HIGH: draw from there only (several people benching on one machine).
  const range = /^(\d+)-(\d+)$/.exec(process.env.FLOTILLA_PORT_RANGE ?? '')
  const low = range === null ? 10_000 : Number(range[1])
  const span = range === null ? 22_000 : Number(range[2]) - low + 1
  for (let i = 0; i < 50; i++) {
    const port = low + Math.floor(Math.random() * span)
    if (await canListen(port)) return port
  }
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

async function canListen (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const srv = createServer()
    srv.unref()
    srv.once('error', () => resolve(false))
    srv.listen(port, '127.0.0.1', () => { srv.close(() => resolve(true)) })
  })
}

export async function tempDir (prefix = 'flotilla-'): Promise<string> {
  return await mkdtemp(join(tmpdir(), prefix))
}

/** GET an https:// URL trusting `ca` (Node 20's fetch takes no CA): the status, or the error. */
export async function httpsStatus (url: string, ca: string | Buffer, extra: { cert?: Buffer; key?: Buffer } = {}): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, ...extra, agent: false, timeout: 10_000 }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end()
  })
}

/** Poll `url` until it answers with a status below 500 (401 counts as up), or time out. `ca`: for https://, the CA to trust. */
export async function waitForHttp (url: string, timeoutMs = 20_000, proc?: ChildProcess, ca?: string | Buffer, client?: { cert?: Buffer; key?: Buffer }): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    if (proc !== undefined && proc.exitCode !== null) throw new Error(`process exited with ${proc.exitCode} before ${url} answered`)
    try {
      let status: number
      if (ca !== undefined && url.startsWith('https:')) status = await httpsStatus(url, ca, client)
      else {
        const res = await fetch(url)
        await res.arrayBuffer()
        status = res.status
      }
      if (status < 500) return
      last = new Error(`status ${status}`)
    } catch (err) { last = err }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`${url} did not come up within ${timeoutMs} ms: ${String(last)}`)
}

export interface RunningRegistry {
  /** host:port, as clients name the registry. */
  host: string
  /** http://host:port */
  url: string
  dataDir: string
  proc: ChildProcess
  /** SIGTERM and wait for exit. */
  stop (): Promise<void>
  /** Send a signal (SIGKILL for crash tests) and wait for exit. */
  kill (signal?: NodeJS.Signals): Promise<void>
  /** Flotilla only: the admin's credentials (its password as set on first start). */
  credentials?: { username: string; password: string }
}

function exited (proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => proc.once('exit', () => resolve()))
}

function wrap (proc: ChildProcess, host: string, dataDir: string, scheme = 'http'): RunningRegistry {
  return {
    host,
    url: `${scheme}://${host}`,
    dataDir,
    proc,
    async stop () { proc.kill('SIGTERM'); await exited(proc) },
    async kill (signal: NodeJS.Signals = 'SIGKILL') { proc.kill(signal); await exited(proc) },
  }
}

export interface FlotillaOptions {
  dataDir?: string
  port?: number
  /** Extra CLI arguments after `serve`. */
  args?: string[]
  env?: Record<string, string>
  /** Where the node's stdout/stderr go (default: DATA/../node-PORT.log). */
  logFile?: string
  /** The admin's password on first start (default: random); handed back as `credentials`. */
  adminPassword?: string
  /**
   * Node-local anonymous grants, FLOTILLA_AUTH_ANONYMOUS form (`PATTERN=ACTIONS;…`). Default none:
   * access control as in production. OPEN_ANONYMOUS opens everything, for protocol tests only.
   */
  anonymous?: string
  /**
   * Serve HTTPS with this certificate and key (flags --tls-certificate/--tls-key); `ca` is the CA
   * that signed it, trusted for the readiness probe (which shows `client`, a client certificate,
   * to a node that requires one). `url` is then https://.
   */
  tls?: { certificate: string; key: string; ca: string; client?: { cert: string; key: string } }
  /** The address to listen on (default 127.0.0.1). */
  listenHost?: string
}

/** Anonymous callers may read, write and delete everything (FLOTILLA_AUTH_ANONYMOUS form). */
export const OPEN_ANONYMOUS = '**=read,write,delete'

/** Start `flotilla serve` as its own process and wait until GET /v2/ answers. */
export async function startFlotilla (opts: FlotillaOptions = {}): Promise<RunningRegistry> {
  const dataDir = opts.dataDir ?? join(await tempDir(), 'data')
  const port = opts.port ?? await freePort()
  const host = `${opts.listenHost ?? '127.0.0.1'}:${port}`
  const tlsArgs = opts.tls === undefined ? [] : ['--tls-certificate', opts.tls.certificate, '--tls-key', opts.tls.key]
  const adminPassword = opts.adminPassword ?? `test-${randomBytes(12).toString('hex')}`
  const authEnv: Record<string, string> = { FLOTILLA_INITIAL_ADMIN_PASSWORD: adminPassword, FLOTILLA_AUTH_ANONYMOUS: opts.anonymous ?? '' }
  // FLOTILLA_NODE_ARGS: node options for the node under test (e.g. --cpu-prof, which NODE_OPTIONS refuses).
  const nodeArgs = (process.env.FLOTILLA_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')
  const proc = spawn(process.execPath, [...nodeArgs, join(ROOT, 'bin', 'flotilla.mjs'), 'serve', '--data', dataDir, '--listen', host, ...tlsArgs, ...(opts.args ?? [])], {
    cwd: ROOT,
    env: { ...process.env, FLOTILLA_LOG_LEVEL: process.env.FLOTILLA_LOG_LEVEL ?? 'info', ...authEnv, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const log = createWriteStream(opts.logFile ?? join(dirname(dataDir), `node-${port}.log`), { flags: 'a' })
  proc.stdout?.pipe(log)
  proc.stderr?.pipe(log)
  // /readyz turns 200 once the node serves, its admin user bootstrapped.
  const scheme = opts.tls === undefined ? 'http' : 'https'
  const client = opts.tls?.client === undefined ? undefined : { cert: readFileSync(opts.tls.client.cert), key: readFileSync(opts.tls.client.key) }
  try {
    await waitForHttp(`${scheme}://${host}/readyz`, 30_000, proc, opts.tls === undefined ? undefined : readFileSync(opts.tls.ca), client)
  } catch (err) {
    // Nobody holds a handle to stop it yet: a node that never answered must not outlive the caller.
    proc.kill('SIGKILL')
    throw err
  }
  return { ...wrap(proc, host, dataDir, scheme), credentials: { username: 'admin', password: adminPassword } }
}

/**
 * Start the CNCF reference registry (Debian's docker-registry 2.8.2) on a fresh dir.
 * `baseDir` (for config and log) lets a restart reuse its first run's dir instead of leaking a new one.
 */
export async function startReference (opts: { dataDir?: string; port?: number; baseDir?: string; htpasswd?: string; tls?: { certificate: string; key: string; ca: string } } = {}): Promise<RunningRegistry> {
  const base = opts.baseDir ?? await tempDir('reference-')
  const dataDir = opts.dataDir ?? join(base, 'data')
  await mkdir(dataDir, { recursive: true })
  const port = opts.port ?? await freePort()
  const host = `127.0.0.1:${port}`
  const config = join(base, 'config.yml')
  await writeFile(config, [
    'version: 0.1',
    'log: {level: error}',
    'storage:',
    `  filesystem: {rootdirectory: ${dataDir}}`,
    '  delete: {enabled: true}',
    `http: {addr: ${host}${opts.tls !== undefined ? `, tls: {certificate: ${opts.tls.certificate}, key: ${opts.tls.key}}` : ''}}`,
    // Basic auth from an htpasswd file (bcrypt lines from `htpasswd -Bbn USER PASS`).
    ...(opts.htpasswd !== undefined ? [`auth: {htpasswd: {realm: reference, path: ${opts.htpasswd}}}`] : []),
    '',
  ].join('\n'))
  const proc = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] })
  const log = createWriteStream(join(base, 'registry.log'), { flags: 'a' })
  proc.stderr?.pipe(log)
  const scheme = opts.tls === undefined ? 'http' : 'https'
  await waitForHttp(`${scheme}://${host}/v2/`, 20_000, proc, opts.tls === undefined ? undefined : readFileSync(opts.tls.ca))
  return wrap(proc, host, dataDir, scheme)
}
