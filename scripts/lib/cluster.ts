/**
 * Start and drive a Flotilla cluster as real processes on 127.0.0.1, for tests and
 * benchmarks: `serve` founds it, `token` + `join` add nodes, `status` (GET /api/v1/cluster)
 * says who leads. Every node gets its own data dir, log file, HTTP port and libp2p port.
 *
 *   BASE/                  one temp dir per cluster (os.tmpdir())
 *   ├── n1/data            node 1's data dir
 *   ├── n1.log             its stdout and stderr (JSON lines)
 *   ├── n2/data …
 *
 * Access control is on as in production; every node is started with the same
 * FLOTILLA_INITIAL_ADMIN_PASSWORD (only the founder's counts: the admin is replicated).
 * Children that outlive the test process are SIGKILLed when it exits.
 * FLOTILLA_TEST_TLS=1: every node serves HTTPS, trusted by the CLI runs and this process
 * (scripts/lib/test-tls.ts); node URLs are then https://.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, existsSync } from 'node:fs'
import { mkdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { ROOT, freePort, tempDir } from './procs.js'
import { cliTlsEnv, nodeTlsEnv, scheme } from './test-tls.js'

export { scheme, testTls, tlsOn } from './test-tls.js'

export const CLI = join(ROOT, 'bin', 'flotilla.mjs')

export interface Credentials { username: string; password: string }

/** GET /api/v1/cluster, as the node defines it. */
export type { ClusterMemberDoc as ClusterMember, ClusterStatusDoc as ClusterStatus } from '../../src/http/cluster-api.js'
import type { ClusterStatusDoc as ClusterStatus } from '../../src/http/cluster-api.js'

export interface ClusterNode {
  /** n1, n2, …: stable across restarts. */
  name: string
  /** host:port, as clients name the registry. */
  host: string
  /** http://host:port (https:// with FLOTILLA_TEST_TLS=1) */
  url: string
  p2pPort: number
  dataDir: string
  logFile: string
  /** This node's libp2p peer id (read from its status once it serves). */
  peerId: string
  proc: ChildProcess
  /** True between SIGSTOP and SIGCONT. */
  paused: boolean
  /** SIGTERM and wait for exit (SIGKILL after 15 s). */
  stop (): Promise<void>
  /** Send a signal (default SIGKILL) and wait for the process to exit. */
  kill (signal?: NodeJS.Signals): Promise<void>
  pause (): void
  resume (): void
  alive (): boolean
}

export interface NodeOptions {
  name: string
  base: string
  adminPassword: string
  /** FLOTILLA_AUTH_ANONYMOUS form; default '' (none). */
  anonymous?: string
  /** Join through this member with this token; otherwise `serve` (found, or restart). */
  join?: { url: string; token: string }
  /** Reuse a data dir and ports (restart). */
  dataDir?: string
  port?: number
  p2pPort?: number
  env?: Record<string, string>
  /** More flags for `serve`/`join` (e.g. --ca-cert FILE, --force-new-cluster). */
  args?: string[]
  /** How long to wait for /readyz (a join catches up first). Default 60 s. */
  readyTimeoutMs?: number
}

const children = new Set<ChildProcess>()
let exitHookInstalled = false
function track (proc: ChildProcess): void {
  children.add(proc)
  proc.once('exit', () => children.delete(proc))
  if (!exitHookInstalled) {
    exitHookInstalled = true
    // A crashed test process must not leave nodes behind (a stopped one too: SIGKILL ends it).
    process.once('exit', () => { for (const c of children) { try { c.kill('SIGKILL') } catch {} } })
  }
}

function exited (proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => proc.once('exit', () => resolve()))
}

export const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** Poll `fn` until it returns a value other than undefined, or throw after timeoutMs naming `what`. */
export async function waitFor<T> (what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const v = await fn()
      if (v !== undefined) return v
    } catch (err) { last = err }
    await sleep(everyMs)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last !== undefined ? `: ${String((last as Error).message ?? last)}` : ''}`)
}

export function basicAuth (c: Credentials): string {
  return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64')
}

/** GET /api/v1/cluster on one node (short timeout: a paused node must not hang the caller). */
export async function clusterStatus (url: string, creds?: Credentials, timeoutMs = 3000): Promise<ClusterStatus> {
  const res = await fetch(`${url}/api/v1/cluster`, { headers: creds !== undefined ? { authorization: basicAuth(creds) } : {}, signal: AbortSignal.timeout(timeoutMs) })
  const text = await res.text()
  if (!res.ok) throw new Error(`GET ${url}/api/v1/cluster answered ${res.status}: ${text.slice(0, 300)}`)
  return JSON.parse(text) as ClusterStatus
}

/** POST /api/v1/cluster/tokens as `creds`. */
export async function issueToken (url: string, creds: Credentials | undefined, ttlSeconds?: number): Promise<{ token: string; expiresAt: string }> {
  const res = await fetch(`${url}/api/v1/cluster/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(creds !== undefined ? { authorization: basicAuth(creds) } : {}) },
    body: JSON.stringify(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    signal: AbortSignal.timeout(15_000),
  })
  const text = await res.text()
  if (res.status !== 201) throw new Error(`POST ${url}/api/v1/cluster/tokens answered ${res.status}: ${text.slice(0, 300)}`)
  return JSON.parse(text) as { token: string; expiresAt: string }
}

export interface CliResult { code: number | null; stdout: string; stderr: string }

/** Run `flotilla ARGS` (token, status, remove, leave …) to completion; never throws on a non-zero exit. */
export async function runCli (args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  const tlsEnv = await cliTlsEnv()
  return await new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...tlsEnv, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    proc.stdout.on('data', (b: Buffer) => out.push(b))
    proc.stderr.on('data', (b: Buffer) => err.push(b))
    const timer = setTimeout(() => { err.push(Buffer.from(`\n[killed after ${opts.timeoutMs ?? 60_000} ms]\n`)); proc.kill('SIGKILL') }, opts.timeoutMs ?? 60_000)
    proc.on('error', (e) => { clearTimeout(timer); reject(e) })
    proc.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }) })
  })
}

/**
 * Start one node: `flotilla serve` (found a cluster, or restart on an existing data dir) or
 * `flotilla join URL --token T`. Resolves once /readyz answers 200.
 *
 * Ports drawn by freePort were free a moment before the node binds them; another test's
 * listener may take one in between ("the port is in use"). The node then exits before it
 * does anything else, and is started again on newly drawn ports (a data dir it created is
 * removed first; an existing one is kept).
 */
export async function startNode (opts: NodeOptions): Promise<ClusterNode> {
  const dataDir = opts.dataDir ?? join(opts.base, opts.name, 'data')
  const fresh = !existsSync(dataDir)
  for (let attempt = 1; ; attempt++) {
    try {
      return await startNodeOnce(opts)
    } catch (err) {
      const drawn = opts.port === undefined && opts.p2pPort === undefined
      if (!drawn || attempt >= 3 || !(err instanceof NodeExitError) || !/cannot listen on .* the port is in use/s.test(err.message)) throw err
      if (fresh) await rm(dataDir, { recursive: true, force: true })
    }
  }
}

async function startNodeOnce (opts: NodeOptions): Promise<ClusterNode> {
  const dataDir = opts.dataDir ?? join(opts.base, opts.name, 'data')
  await mkdir(join(dataDir, '..'), { recursive: true })
  const port = opts.port ?? await freePort()
  const p2pPort = opts.p2pPort ?? await freePort()
  const host = `127.0.0.1:${port}`
  const logFile = join(opts.base, `${opts.name}.log`)
  const common = ['--data', dataDir, '--listen', host, '--p2p', `127.0.0.1:${p2pPort}`, ...opts.args ?? []]
  const args = opts.join !== undefined ? ['join', opts.join.url, '--token', opts.join.token, ...common] : ['serve', ...common]
  const tlsEnv = await nodeTlsEnv()
  // FLOTILLA_NODE_ARGS: node options for every node (e.g. --cpu-prof, or --import of a probe), as in procs.ts.
  const nodeArgs = (process.env.FLOTILLA_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')
  const proc = spawn(process.execPath, [...nodeArgs, CLI, ...args], {
    cwd: ROOT,
    env: {
      ...process.env,
      ...tlsEnv,
      FLOTILLA_LOG_LEVEL: process.env.FLOTILLA_LOG_LEVEL ?? 'info',
      FLOTILLA_INITIAL_ADMIN_PASSWORD: opts.adminPassword,
      FLOTILLA_AUTH_ANONYMOUS: opts.anonymous ?? '',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  track(proc)
  const log = createWriteStream(logFile, { flags: 'a' })
  log.write(JSON.stringify({ harness: `flotilla ${args.map((a) => a === opts.join?.token ? '<token>' : a).join(' ')}`, at: new Date().toISOString() }) + '\n')
  // Both into one file: whichever ends first must not end it (the other may still write:
  // a removed node says why on stderr as it exits), so it is closed once the process is.
  proc.stdout?.pipe(log, { end: false })
  proc.stderr?.pipe(log, { end: false })
  proc.once('close', () => log.end())
  const node: ClusterNode = {
    name: opts.name,
    host,
    url: `${scheme()}://${host}`,
    p2pPort,
    dataDir,
    logFile,
    peerId: '',
    proc,
    paused: false,
    async stop () {
      if (node.paused) node.resume()
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000)
      await exited(proc)
      clearTimeout(timer)
    },
    async kill (signal: NodeJS.Signals = 'SIGKILL') {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill(signal)
      await exited(proc)
    },
    pause () { proc.kill('SIGSTOP'); node.paused = true },
    resume () { proc.kill('SIGCONT'); node.paused = false },
    alive () { return proc.exitCode === null && proc.signalCode === null },
  }
  try {
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000)
    let last = ''
    for (;;) {
      if (!node.alive()) {
        throw new NodeExitError(`node ${opts.name} (${args[0]}) exited with ${proc.exitCode ?? proc.signalCode} before it was ready:\n${await tail(logFile, 15)}`, proc.exitCode, await readFile(logFile, 'utf8').catch(() => ''))
      }
      try {
        const res = await fetch(`${node.url}/readyz`, { signal: AbortSignal.timeout(2000) })
        await res.arrayBuffer()
        if (res.status === 200) break
        last = `status ${res.status}`
      } catch (err) { last = (err as Error).message }
      if (Date.now() > deadline) throw new Error(`node ${opts.name} not ready within ${opts.readyTimeoutMs ?? 60_000} ms (${last}):\n${await tail(logFile, 15)}`)
      await sleep(100)
    }
    node.peerId = (await clusterStatus(node.url, { username: 'admin', password: opts.adminPassword })).node
  } catch (err) {
    // Never leave a half-started node behind: the caller has no handle on it yet.
    await node.kill('SIGKILL')
    throw err
  }
  return node
}

export class NodeExitError extends Error {
  static override name = 'NodeExitError'
  constructor (message: string, readonly code: number | null, readonly log: string) { super(message) }
}

/** The last `n` lines of a file ('' when unreadable). */
export async function tail (file: string, n: number): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text.trimEnd().split('\n').slice(-n).join('\n')
}

/**
 * Start a join that is expected to fail (wrong token, removed identity …): resolves with the
 * exit code and the log once the process exits, or kills it and reports that it kept running.
 */
export async function tryJoin (opts: NodeOptions & { join: { url: string; token: string } }, timeoutMs = 30_000): Promise<{ joined: boolean; code: number | null; log: string; node?: ClusterNode }> {
  try {
    const node = await startNode({ ...opts, readyTimeoutMs: timeoutMs })
    return { joined: true, code: null, log: await readFile(node.logFile, 'utf8').catch(() => ''), node }
  } catch (err) {
    if (err instanceof NodeExitError) return { joined: false, code: err.code, log: err.log }
    return { joined: false, code: null, log: (err as Error).message }
  }
}

export interface TestCluster {
  base: string
  credentials: Credentials
  /** Every node ever started, in order (stopped and removed ones included). */
  nodes: ClusterNode[]
  /** Nodes whose process still runs. */
  live (): ClusterNode[]
  /**
   * A join token from `via` (default: the first live node), through POST /api/v1/cluster/tokens
   * (what `flotilla token` calls; `cli: true` runs the CLI instead, which costs a process start).
   */
  token (opts?: { via?: ClusterNode; ttlSeconds?: number; cli?: boolean }): Promise<string>
  /** Start a new node that joins through `via` (default: the first live node). */
  join (opts?: { via?: ClusterNode; token?: string; anonymous?: string }): Promise<ClusterNode>
  /** Restart a stopped node on its data dir and ports with `flotilla serve`. */
  /** Stop (if alive) and start again on its data dir and ports; `env` adds to the cluster's. */
  restart (node: ClusterNode, opts?: { env?: Record<string, string> }): Promise<ClusterNode>
  status (node: ClusterNode): Promise<ClusterStatus>
  /** The node that leads, as every live, unpaused node agrees (waits for agreement). */
  leader (timeoutMs?: number, among?: ClusterNode[]): Promise<ClusterNode>
  /** Wait until every given node (default: live, unpaused) has `count` voters and applied the leader's commit index. */
  converged (opts?: { voters?: number; among?: ClusterNode[]; timeoutMs?: number }): Promise<void>
  /** Kill every node (SIGKILL; paused ones too), print the logs' tails when asked. */
  destroy (): Promise<void>
  /** The tail of every node's log, for a failing test's comments. */
  logs (lines?: number): Promise<string>
}

export interface ClusterOptions {
  size: number
  anonymous?: string
  adminPassword?: string
  /** Extra env for every node. */
  env?: Record<string, string>
  /** Extra env for one node, by name (n1, n2 …): e.g. the address it advertises to other sites. */
  envOf?: (name: string) => Record<string, string>
}

/** Found a cluster on node 1 and join `size - 1` more through it, one after the other. */
export async function startCluster (opts: ClusterOptions): Promise<TestCluster> {
  const base = await tempDir('flotilla-cluster-')
  const credentials = { username: 'admin', password: opts.adminPassword ?? `test-${randomBytes(12).toString('hex')}` }
  const nodes: ClusterNode[] = []
  const nodeEnv = { ...opts.env }
  const user = `${credentials.username}:${credentials.password}`
  const live = (): ClusterNode[] => nodes.filter((n) => n.alive())

  const c: TestCluster = {
    base,
    credentials,
    nodes,
    live,
    async token (o = {}) {
      const via = o.via ?? live()[0]!
      if (o.cli === true) {
        const res = await runCli(['token', '--node', via.url, '--user', user, ...(o.ttlSeconds !== undefined ? ['--ttl', String(o.ttlSeconds)] : [])])
        if (res.code !== 0) throw new Error(`flotilla token failed (${res.code}): ${res.stderr}`)
        return res.stdout.trim()
      }
      return (await issueToken(via.url, credentials, o.ttlSeconds)).token
    },
    async join (o = {}) {
      const via = o.via ?? live()[0]!
      const token = o.token ?? await c.token({ via })
      const node = await startNode({ name: `n${nodes.length + 1}`, base, adminPassword: credentials.password, anonymous: o.anonymous ?? opts.anonymous, env: { ...nodeEnv, ...opts.envOf?.(`n${nodes.length + 1}`) }, join: { url: via.url, token }, readyTimeoutMs: 90_000 })
      nodes.push(node)
      return node
    },
    async restart (node, o = {}) {
      if (node.alive()) await node.stop()
      const again = await startNode({ name: node.name, base, adminPassword: credentials.password, anonymous: opts.anonymous, env: { ...nodeEnv, ...opts.envOf?.(node.name), ...o.env }, dataDir: node.dataDir, port: Number(node.host.split(':')[1]), p2pPort: node.p2pPort })
      nodes[nodes.indexOf(node)] = again
      return again
    },
    async status (node) {
      return await clusterStatus(node.url, credentials)
    },
    async leader (timeoutMs = 15_000, among?: ClusterNode[]) {
      return await waitFor('one leader that every live node agrees on', async () => {
        const group = (among ?? live()).filter((n) => !n.paused && n.alive())
        const views = await Promise.all(group.map(async (n) => await c.status(n)))
        const ids = new Set(views.map((v) => v.leader))
        if (ids.size !== 1) return undefined
        const id = [...ids][0]
        return group.find((n) => n.peerId === id)
      }, timeoutMs)
    },
    async converged (o = {}) {
      await waitFor(`the cluster to converge${o.voters !== undefined ? ` on ${o.voters} voters` : ''}`, async () => {
        const group = (o.among ?? live()).filter((n) => !n.paused && n.alive())
        const views = await Promise.all(group.map(async (n) => await c.status(n)))
        const leaderIds = new Set(views.map((v) => v.leader))
        if (leaderIds.size !== 1 || views.some((v) => v.leader === null)) return undefined
        const lead = views.find((v) => v.node === v.leader)
        if (lead === undefined) return undefined
        if (o.voters !== undefined && lead.members.filter((m) => m.role === 'voter').length !== o.voters) return undefined
        return views.every((v) => v.applied >= lead.commit) ? true : undefined
      }, o.timeoutMs ?? 30_000)
    },
    async destroy () {
      await Promise.all(nodes.map(async (n) => { await n.kill('SIGKILL').catch(() => {}) }))
      // FLOTILLA_KEEP_CLUSTER=1 keeps the data dirs and logs for a post-mortem.
      if (process.env.FLOTILLA_KEEP_CLUSTER === '1') process.stderr.write(`cluster kept in ${base}\n`)
      else await rm(base, { recursive: true, force: true }).catch(() => {})
    },
    async logs (lines = 30) {
      const parts: string[] = []
      for (const n of nodes) parts.push(`--- ${n.name} (${n.peerId}) ${n.logFile}\n${await tail(n.logFile, lines)}`)
      return parts.join('\n')
    },
  }
  try {
    nodes.push(await startNode({ name: 'n1', base, adminPassword: credentials.password, anonymous: opts.anonymous, env: { ...nodeEnv, ...opts.envOf?.('n1') } }))
    for (let i = 1; i < opts.size; i++) await c.join()
    // A joiner serves as a learner; wait for the promotions so tests start from `size` voters.
    await c.converged({ voters: opts.size, timeoutMs: 60_000 })
  } catch (err) {
    await c.destroy()
    throw err
  }
  return c
}
