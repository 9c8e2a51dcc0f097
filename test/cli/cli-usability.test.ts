/**
 * The CLI as a new user meets it (issue 10, items 3, 11 and 12), run as real processes
 * (`node bin/flotilla.mjs …`) against a real node:
 *
 * - `--version`; tables with ISO 8601 times for every listing, `--json` for the API's document;
 * - one duration syntax for --ttl, --expires and --since; unknown enum values and bad durations
 *   are errors naming the option and what it accepts; the admin API's validation errors carry
 *   BAD_REQUEST, /v2 keeps the OCI codes;
 * - errors in plain words, one line on stderr, exit 1: a port in use (p2p and HTTP), an invalid
 *   HOST:PORT, an expired or malformed join token, --user without a password and no terminal;
 *   --node without a scheme means http://; --user NAME asks for the password on a terminal;
 * - the CLI waits up to 30 s for a node that refuses connections or answers 503, says so once,
 *   then proceeds or gives the usual error;
 * - a joining node reports its catch-up (log lines off a terminal, a bar on one); promote says
 *   what it copied.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { createServer, type Server } from 'node:net'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { SignJWT } from 'jose'
import { pino } from 'pino'
import { CLI, runCli, startNode, startTestCluster, pushHttp, sleep, waitFor, type CliResult } from '../helpers/cluster.js'
import { ROOT, freePort, startFlotilla, tempDir } from '../../scripts/lib/procs.js'
import { image } from '../helpers/oci.js'
import { removeTree } from '../helpers/cleanup.js'
import { watchCatchUp } from '../../src/cli/progress.js'

const c = await startTestCluster(t, { size: 1 })
const n1 = c.nodes[0]!
const creds = c.credentials
const USER = `${creds.username}:${creds.password}`
/** The CLI against node 1 as the admin (FLOTILLA_NODE without a scheme: host:port). */
const cli = async (args: string[], env: Record<string, string> = {}, timeoutMs?: number): Promise<CliResult> =>
  await runCli(args, { env: { FLOTILLA_NODE: n1.host, FLOTILLA_USER: USER, ...env }, ...(timeoutMs !== undefined ? { timeoutMs } : {}) })
const api = async (path: string, init: RequestInit = {}): Promise<Response> =>
  await fetch(`${n1.url}/api/v1${path}`, { ...init, headers: { authorization: 'Basic ' + Buffer.from(USER).toString('base64'), 'content-type': 'application/json', ...init.headers as Record<string, string> } })

const ISO = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/
const EPOCH_MS = /\b1\d{12}\b/
/** stderr as the lines a user sees. */
const lines = (s: string): string[] => s.split('\n').filter((l) => l.trim() !== '')

/** An error is one line on stderr, exit 1, no stack trace, nothing on stdout. */
function oneLineError (t: Test, r: CliResult, what: string): string {
  t.equal(r.code, 1, `${what}: exit 1`)
  t.equal(lines(r.stderr).length, 1, `${what}: one line on stderr: ${r.stderr}`)
  t.notMatch(r.stderr, /^\s+at /m, `${what}: no stack trace`)
  return r.stderr.trim()
}

t.test('flotilla --version prints the package version', async (t) => {
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag])
    t.equal(r.code, 0)
    t.equal(r.stdout.trim(), pkg.version, `${flag} prints ${pkg.version}`)
  }
})

t.test('every listing prints a table with ISO times; --json prints the API document', async (t) => {
  for (const args of [
    ['user', 'add', 'alice', '--password', 'alice-password'],
    ['group', 'add', 'qa', '--member', 'alice'],
    ['permission', 'set', 'team', '--repo', 'team/**', '--allow-user', 'alice=read,write', '--allow-group', 'qa=read'],
    ['token', 'create', 'ci', '--scope', 'team/**=read', '--expires', '30d'],
    ['immutable', 'add', 'releases/**'],
  ]) {
    const r = await cli(args)
    t.equal(r.code, 0, `flotilla ${args.slice(0, 2).join(' ')}: ${r.stderr}`)
    t.notMatch(r.stdout, EPOCH_MS, `flotilla ${args.slice(0, 2).join(' ')} prints no epoch milliseconds`)
    t.notMatch(r.stdout.trimStart(), /^[{[]/, 'and no raw JSON')
  }
  const listings: Array<{ args: string[]; path: string; head: string[]; row: RegExp }> = [
    { args: ['user', 'list'], path: '/users', head: ['NAME', 'ADMIN', 'DISABLED', 'GROUPS', 'CREATED', 'UPDATED'], row: /^alice\s+no\s+no\s+qa\s+\S+Z\s+\S+Z$/m },
    { args: ['group', 'list'], path: '/groups', head: ['NAME', 'MEMBERS', 'CREATED'], row: /^qa\s+alice\s+\S+Z$/m },
    { args: ['permission', 'list'], path: '/permissions', head: ['NAME', 'REPOSITORIES', 'USERS', 'GROUPS', 'UPDATED'], row: /^team\s+team\/\*\*\s+alice=read,write\s+qa=read\s+\S+Z$/m },
    { args: ['token', 'list'], path: '/tokens', head: ['ID', 'NAME', 'OWNER', 'KIND', 'SCOPES', 'CREATED', 'EXPIRES', 'STATE'], row: /^[0-9a-f]{16}\s+ci\s+admin\s+robot\s+team\/\*\*=read\s+\S+Z\s+\S+Z\s+active$/m },
    { args: ['immutable', 'list'], path: '/immutable', head: ['PATTERN', 'CREATED'], row: /^releases\/\*\*\s+\S+Z$/m },
    { args: ['audit', '--limit', '3'], path: '/audit?limit=3', head: ['TIME', 'USER', 'ADDRESS', 'ACTION', 'REPO', 'OUTCOME', 'DETAIL'], row: /^\S+Z\s+admin\s+127\.0\.0\.1\s+SetImmutable\s+-\s+ok\s+pattern=releases\/\*\*/m },
  ]
  for (const l of listings) {
    const r = await cli(l.args)
    const name = `flotilla ${l.args.join(' ')}`
    t.equal(r.code, 0, `${name}: ${r.stderr}`)
    t.same(r.stdout.split('\n')[0]!.split(/\s{2,}/), l.head, `${name}: the table's columns`)
    t.match(r.stdout, l.row, `${name}: a row`)
    t.match(r.stdout, ISO, `${name}: ISO 8601 times`)
    t.notMatch(r.stdout, EPOCH_MS, `${name}: no epoch milliseconds`)
    const json = await cli([...l.args, '--json'])
    t.equal(json.code, 0)
    t.same(JSON.parse(json.stdout), await (await api(l.path)).json(), `${name} --json: the API's document`)
  }
  const st = await cli(['status'])
  t.match(st.stdout, /^PEER\s+ROLE\s+REACHABLE\s+LAST CONTACT\s+HTTP\s+PEER PORT\s+LAG\s+P2P$/m, 'flotilla status: a table')
  t.match(st.stdout, /\shttps:\/\/127\.0\.0\.1:\d+\s/, 'with the node\'s peer port')
  t.match(st.stdout, ISO, 'with ISO times')
  const stj = JSON.parse((await cli(['status', '--json'])).stdout) as { node: string; members: unknown[] }
  t.equal(stj.node, n1.peerId, 'flotilla status --json: the API document')
  const show = await cli(['user', 'show', 'alice'])
  t.match(show.stdout, /^created\s+\S+Z$/m, 'flotilla user show: fields, with ISO times')
})

t.test('an unknown --outcome is an error listing the accepted values, not an empty list', async (t) => {
  const msg = oneLineError(t, await cli(['audit', '--outcome', 'bogus']), 'audit --outcome bogus')
  t.match(msg, /--outcome/)
  t.match(msg, /ok, failed, denied/)
  const res = await api('/audit?outcome=bogus')
  t.equal(res.status, 400, 'the API refuses it too')
  t.match(await res.json(), { errors: [{ code: 'BAD_REQUEST', message: /one of ok, failed, denied/ }] })
})

t.test('validation errors carry BAD_REQUEST on the admin API; /v2 keeps the OCI codes', async (t) => {
  const bad = await api('/users', { method: 'POST', body: JSON.stringify({ name: 'x', password: 'short' }) })
  t.equal(bad.status, 400)
  t.match(await bad.json(), { errors: [{ code: 'BAD_REQUEST', message: /at least/ }] })
  const r = await cli(['user', 'add', 'Bad-Name', '--password', 'long-enough-pw'])
  t.match(oneLineError(t, r, 'user add Bad-Name'), /^400 BAD_REQUEST: /, 'the CLI shows the code')
  const v2 = await fetch(`${n1.url}/v2/team/app/manifests/v1`, { method: 'POST', headers: { authorization: 'Basic ' + Buffer.from(USER).toString('base64') } })
  t.equal(v2.status, 405)
  t.match(await v2.json(), { errors: [{ code: 'UNSUPPORTED' }] }, '/v2 answers the OCI code')
})

t.test('one duration syntax for --ttl, --expires and --since; a bare number is seconds', async (t) => {
  for (const [given, seconds] of [['90s', 90], ['10m', 600], ['2h', 7200], ['30d', 30 * 86400], ['3600', 3600]] as const) {
    const r = await cli(['token', 'create', `d-${given}`, '--scope', 'team/**=read', '--expires', given, '--json'])
    t.equal(r.code, 0, r.stderr)
    const doc = JSON.parse(r.stdout) as { createdAt: number; expiresAt: number }
    // expiresAt is counted from a moment before createdAt was taken: a few ms apart.
    t.ok(Math.abs(doc.expiresAt - doc.createdAt - seconds * 1000) < 1000, `--expires ${given} is ${seconds} s (${doc.expiresAt - doc.createdAt} ms)`)
  }
  for (const [given, seconds] of [['10m', 600], ['3600', 3600], ['2h', 7200]] as const) {
    const before = Date.now()
    const r = await cli(['token', '--ttl', given, '--json'])
    const after = Date.now()
    t.equal(r.code, 0, r.stderr)
    const expires = Date.parse((JSON.parse(r.stdout) as { expiresAt: string }).expiresAt)
    // Issued while the command ran (its start can take seconds on a loaded machine); expiresAt has whole seconds.
    t.ok(expires >= before + seconds * 1000 - 1000 && expires <= after + seconds * 1000 + 1000, `--ttl ${given}: expires ${seconds} s after it was issued (${expires - before - seconds * 1000} ms after the command started)`)
  }
  const recent = await cli(['audit', '--since', '1h', '--json'])
  t.ok((JSON.parse(recent.stdout) as { entries: unknown[] }).entries.length > 0, '--since 1h: the last hour\'s entries')
  const none = await cli(['audit', '--since', new Date(Date.now() + 86400_000).toISOString(), '--json'])
  t.same((JSON.parse(none.stdout) as { entries: unknown[] }).entries, [], '--since takes an ISO date too')
  for (const [args, option] of [
    [['token', 'create', 'x', '--scope', 'a=read', '--expires', '5x'], '--expires'],
    [['token', '--ttl', '1w'], '--ttl'],
    [['token', '--ttl', '0'], '--ttl'],
    [['audit', '--since', 'yesterday'], '--since'],
  ] as const) {
    const msg = oneLineError(t, await cli([...args]), args.join(' '))
    t.match(msg, option, `names ${option}`)
    t.match(msg, /90s, 10m, 1h or 30d/, 'and the accepted forms')
  }
})

/** A TCP port held by this process until released. */
async function occupy (): Promise<{ port: number; server: Server }> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return { port: (server.address() as { port: number }).port, server }
}

t.test('a p2p port in use is one line naming --p2p, FLOTILLA_P2P and the fix', async (t) => {
  const held = await occupy()
  t.teardown(() => { held.server.close() })
  const dir = await tempDir()
  t.teardown(async () => { await removeTree(dir) })
  const r = await runCli(['serve', '--data', join(dir, 'data'), '--listen', '127.0.0.1:0', '--p2p', `127.0.0.1:${held.port}`], { env: { FLOTILLA_LOG_LEVEL: 'silent' } })
  const msg = oneLineError(t, r, 'serve --p2p on a port in use')
  t.equal(msg, `flotilla: cannot listen on 127.0.0.1:${held.port} for cluster traffic (--p2p, FLOTILLA_P2P): the port is in use; pick another or stop the process holding it`)
  t.notMatch(r.stderr + r.stdout, /faultTolerance|EADDRINUSE/, 'no libp2p internals')
})

t.test('an HTTP port in use is one line naming --listen, FLOTILLA_LISTEN and the fix', async (t) => {
  const held = await occupy()
  t.teardown(() => { held.server.close() })
  const dir = await tempDir()
  t.teardown(async () => { await removeTree(dir) })
  const r = await runCli(['serve', '--data', join(dir, 'data'), '--listen', `127.0.0.1:${held.port}`], { env: { FLOTILLA_LOG_LEVEL: 'silent' } })
  const msg = oneLineError(t, r, 'serve --listen on a port in use')
  t.equal(msg, `flotilla: cannot listen on 127.0.0.1:${held.port} for HTTP (--listen, FLOTILLA_LISTEN): the port is in use; pick another or stop the process holding it`)
})

t.test('an invalid HOST:PORT is refused at config parsing, naming the option', async (t) => {
  const dir = await tempDir()
  t.teardown(async () => { await removeTree(dir) })
  for (const [flag, value] of [['--listen', '127.0.0.1:99999'], ['--p2p', 'localhost'], ['--listen', '127.0.0.1']] as const) {
    const r = await runCli(['serve', '--data', join(dir, 'data'), flag, value])
    const msg = oneLineError(t, r, `serve ${flag} ${value}`)
    t.match(msg, `expected HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:5000, not "${value}" (${flag}, FLOTILLA_${flag.slice(2).toUpperCase()})`)
  }
  t.equal(await stat(join(dir, 'data')).then(() => true, () => false), false, 'nothing was created')
})

t.test('an expired or malformed join token is refused in plain words before anything starts', async (t) => {
  const dir = await tempDir()
  t.teardown(async () => { await removeTree(dir) })
  const exp = Math.floor(Date.now() / 1000) - 3600
  const expired = await new SignJWT({ purpose: 'join' }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt(exp - 60).setExpirationTime(exp).sign(Buffer.from('any secret: the joiner reads the expiry only'))
  const r = await runCli(['join', n1.url, '--token', expired, '--data', join(dir, 'data')])
  t.equal(oneLineError(t, r, 'join with an expired token'), `the join token expired at ${new Date(exp * 1000).toISOString()}: ask a member for a new one with flotilla token`)
  t.notMatch(r.stderr, /JWT|claim|"exp"/, 'no JWT jargon')
  const m = await runCli(['join', n1.url, '--data', join(dir, 'data')], { env: { FLOTILLA_JOIN_TOKEN: 'garbage' } })
  t.match(oneLineError(t, m, 'join with a malformed token'), /^the join token is malformed: copy the whole line flotilla token printed/)
  t.equal(await stat(join(dir, 'data')).then(() => true, () => false), false, 'no data dir was made')
})

t.test('--node without a scheme means http://', async (t) => {
  const r = await runCli(['user', 'list', '--node', n1.host, '--user', USER])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^admin\s/m)
  const bad = await runCli(['user', 'list', '--node', 'ftp://example.org', '--user', USER])
  t.match(oneLineError(t, bad, '--node ftp://'), /http:\/\/ or https:\/\//)
})

t.test('--user NAME without a password: an error off a terminal, a prompt without echo on one', async (t) => {
  const r = await runCli(['user', 'list', '--node', n1.host, '--user', 'admin'])
  t.equal(oneLineError(t, r, '--user admin, stdin not a terminal'), 'no password for the user admin, and no terminal to ask for it on: pass --user admin:PASSWORD or set FLOTILLA_USER=admin:PASSWORD')
  const env = await runCli(['user', 'list', '--node', n1.host], { env: { FLOTILLA_USER: 'admin' } })
  t.match(oneLineError(t, env, 'FLOTILLA_USER=admin'), /FLOTILLA_USER=admin:PASSWORD/)

  if (spawnSync('script', ['--version']).status !== 0) { t.comment('skipped the terminal half: no script(1) here to give the CLI a terminal'); return }
  // script(1) runs the CLI on a pseudo-terminal; the password is typed once the prompt shows.
  const cmd = `${process.execPath} ${CLI} user list --node ${n1.host} --user admin`
  const proc = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { cwd: ROOT, env: { ...process.env, FLOTILLA_USER: '' }, stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout.on('data', (b: Buffer) => { out += b.toString() })
  proc.stderr.on('data', (b: Buffer) => { out += b.toString() })
  const code = new Promise<number | null>((resolve) => proc.on('close', resolve))
  await waitFor('the password prompt', async () => out.includes('password for admin') ? true : undefined, 20_000)
  const typedAt = out.length
  proc.stdin.write(creds.password + '\r')
  t.equal(await code, 0, `the CLI signs in with the typed password: ${out}`)
  t.notOk(out.slice(typedAt).includes(creds.password), 'the password is not echoed')
  t.match(out, /^admin\s+yes\s/m, 'and lists the users')
})

/** An HTTP server answering 503 with Retry-After to the first `n` requests (forever when n is Infinity), then the users. */
async function starting (n: number): Promise<{ url: string; server: HttpServer; seen: () => number }> {
  let seen = 0
  const server = createHttpServer((req, res) => {
    seen++
    if (seen <= n) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' })
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'this node is still starting: retry in a moment' }] }))
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ users: [{ name: 'admin', admin: true, disabled: false, groups: [], createdAt: 0, updatedAt: 0 }] }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server, seen: () => seen }
}

t.test('the CLI waits for a node that is starting, says so once, then proceeds', async (t) => {
  // A node answering 503 (Retry-After) three times.
  const s = await starting(3)
  t.teardown(() => { s.server.close() })
  const r = await runCli(['user', 'list', '--node', s.url, '--user', USER])
  t.equal(r.code, 0, r.stderr)
  t.same(lines(r.stderr), [`waiting for the node at ${s.url} to start…`], 'one line says it waits')
  t.equal(s.seen(), 4, 'asked again until it answered')
  t.match(r.stdout, /^admin\s+yes/m)

  // Nothing listening yet: the node starts 2 s after the command.
  const port = await freePort()
  const dir = await tempDir()
  t.teardown(async () => { await removeTree(dir) })
  const started = Date.now()
  const early = runCli(['user', 'list', '--node', `127.0.0.1:${port}`, '--user', USER])
  await sleep(2000)
  const late = await startFlotilla({ port, dataDir: join(dir, 'data'), adminPassword: creds.password })
  t.teardown(async () => { await late.stop() })
  const e = await early
  t.equal(e.code, 0, `the command went through once the node was up: ${e.stderr}`)
  t.same(lines(e.stderr), [`waiting for the node at http://127.0.0.1:${port} to start…`], 'one line says it waits')
  t.ok(Date.now() - started >= 2000, 'it waited')
  t.match(e.stdout, /^admin\s+yes/m)
})

t.test('after 30 s of waiting the CLI gives the usual error', async (t) => {
  const s = await starting(Infinity)
  t.teardown(() => { s.server.close() })
  const port = await freePort()
  const started = Date.now()
  const [refused, unavailable] = await Promise.all([
    runCli(['user', 'list', '--node', `127.0.0.1:${port}`, '--user', USER], { timeoutMs: 90_000 }),
    runCli(['user', 'list', '--node', s.url, '--user', USER], { timeoutMs: 90_000 }),
  ])
  const took = Date.now() - started
  t.ok(took >= 29_000 && took < 60_000, `about 30 s (${took} ms)`)
  for (const [r, what] of [[refused, 'nothing listening'], [unavailable, 'always 503']] as const) {
    t.equal(r.code, 1, `${what}: exit 1`)
    const l = lines(r.stderr)
    t.equal(l.length, 2, `${what}: the waiting line, then the error: ${r.stderr}`)
    t.match(l[0], /^waiting for the node at http:\/\/127\.0\.0\.1:\d+ to start…$/)
  }
  t.match(lines(refused.stderr)[1], `cannot reach the node at http://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port} (waited 30 s for it to start)`)
  t.match(lines(unavailable.stderr)[1], /^503 UNAVAILABLE: this node is still starting/)
})

t.test('promote says what it copied', async (t) => {
  const img = image({ layers: 2, seed: 'promote-cli' })
  t.equal((await pushHttp(n1.url, creds, 'dev/app', img, 'rc1')).outcome, 'ok', 'an image to promote')
  const r = await cli(['promote', 'dev/app:rc1', 'prod/app:1.0'])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, `promoted dev/app:rc1 to prod/app:1.0 (${img.digest}): 1 manifest(s), 3 blob(s), 0 referrer(s)\n`)
  t.equal(r.stderr, '', 'no spinner off a terminal')
})

t.test('a joining node reports its catch-up: log lines off a terminal', async (t) => {
  // Entries for the joiner to catch up on (through the API: the CLI is not what this tests).
  for (let i = 0; i < 20; i++) {
    const r = await api('/users', { method: 'POST', body: JSON.stringify({ name: `filler-${i}`, password: 'filler-password' }) })
    t.equal(r.status, 201, `filler-${i} created`)
    await r.arrayBuffer()
  }
  const token = await c.token()
  const n2 = await startNode({ name: 'n2', base: c.base, adminPassword: creds.password, join: { url: n1.url, token } })
  c.nodes.push(n2)
  const log = (await readFile(n2.logFile, 'utf8')).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg?: string; applied?: number; commit?: number })
  const done = log.find((l) => l.msg === 'caught up with the cluster')
  t.ok(done !== undefined, 'the joiner logs that it caught up')
  // Caught up: applied what was committed when it joined (the fillers included). The cluster may
  // commit an entry or two meanwhile (the joiner's own promotion), so commit can be a little ahead.
  t.ok(done!.applied! > 20 && done!.commit! - done!.applied! <= 3, `applied ${done?.applied} of ${done?.commit} committed`)
})

t.test('catch-up progress on a terminal is a bar of applied against commit', async (t) => {
  let out = ''
  const stream = Object.assign(new Writable({ write (chunk: Buffer, _enc, cb) { out += chunk.toString(); cb() } }), { isTTY: true, columns: 120 })
  let applied = 0
  const stop = watchCatchUp(() => ({ applied: Math.min(applied += 25, 100), commit: 100 }), { log: pino({ level: 'silent' }), stream, everyMs: 20 })
  await sleep(200)
  stop(true)
  t.match(out, /catching up with the cluster \[=+-*\] \d+% \| applied \d+ of 100 committed/, 'a bar')
  t.match(out, /100% \| applied 100 of 100 committed/, 'that ends full')
})
