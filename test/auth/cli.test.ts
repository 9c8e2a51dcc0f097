/**
 * The access-control CLI against a running node: every command goes through the admin API,
 * with --node/--user or FLOTILLA_NODE/FLOTILLA_USER.
 */
import t from 'tap'
import { dirname, join } from 'node:path'
import { run } from '../helpers/exec.js'
import { removeTree } from '../helpers/cleanup.js'
import { ROOT, startFlotilla } from '../../scripts/lib/procs.js'

const reg = await startFlotilla()
t.teardown(async () => { await reg.stop(); await removeTree(dirname(reg.dataDir)) })
const env = { ...process.env, FLOTILLA_NODE: reg.url, FLOTILLA_USER: `admin:${reg.credentials!.password}` }
// --json: the API's documents, which this test reads (people get tables: test/cli/cli-usability.test.ts).
const flotilla = async (args: string[], input?: string, extraEnv: Record<string, string> = {}): Promise<{ code: number | null; out: any; stderr: string }> => {
  const r = await run(process.execPath, [join(ROOT, 'bin', 'flotilla.mjs'), ...args, '--json'], { env: { ...env, ...extraEnv }, ...(input !== undefined ? { input } : {}), timeoutMs: 60_000 })
  let out: unknown = r.stdout
  try { out = JSON.parse(r.stdout) } catch {}
  return { code: r.code, out, stderr: r.stderr }
}
const tokenCmd = 'token'

t.test('users, groups, permissions, tokens, immutability, promotion and audit from the CLI', async (t) => {
  let r = await flotilla(['user', 'add', 'alice', '--password-stdin'], 'alice-password\n')
  t.equal(r.code, 0, r.stderr)
  t.equal(r.out.name, 'alice')
  r = await flotilla(['user', 'add', 'bob'])
  t.equal(r.code, 0, r.stderr)
  t.ok(r.out.password.length >= 16, 'a random password is printed when none is given')
  r = await flotilla(['group', 'add', 'qa', '--member', 'bob'])
  t.same(r.out.members, ['bob'])
  r = await flotilla(['permission', 'set', 'team', '--repo', 'team/**', '--allow-user', 'alice=read,write', '--allow-group', 'qa=read'])
  t.equal(r.code, 0, r.stderr)
  t.same(r.out.users, { alice: ['read', 'write'] })
  r = await flotilla(['user', 'list'])
  t.same(r.out.users.map((u: { name: string }) => u.name).sort(), ['admin', 'alice', 'bob'])
  t.notOk(JSON.stringify(r.out).includes('argon2'), 'no hashes')
  r = await flotilla([tokenCmd, 'create', 'ci', '--scope', 'team/**=read', '--expires', '1h'], undefined, { FLOTILLA_USER: 'alice:alice-password' })
  t.equal(r.code, 0, r.stderr)
  t.match(r.out.token, /^flt_/)
  const tokenId = r.out.id as string
  r = await flotilla([tokenCmd, 'list'], undefined, { FLOTILLA_USER: `ci:${r.out.token as string}` })
  t.equal(r.code, 0, 'a token works as the password')
  r = await flotilla([tokenCmd, 'revoke', tokenId], undefined, { FLOTILLA_USER: 'alice:alice-password' })
  t.equal(r.code, 0, r.stderr)
  r = await flotilla(['immutable', 'add', 'releases/**'])
  t.equal(r.code, 0, r.stderr)
  r = await flotilla(['immutable', 'list'])
  t.same(r.out.rules.map((x: { pattern: string }) => x.pattern), ['releases/**'])
  r = await flotilla(['user', 'list'], undefined, { FLOTILLA_USER: 'alice:alice-password' })
  t.equal(r.code, 1, 'alice is no admin')
  t.match(r.stderr, /403 DENIED/)
  r = await flotilla(['user', 'list'], undefined, { FLOTILLA_USER: 'alice:wrong-password' })
  t.match(r.stderr, /401 UNAUTHORIZED/)
  r = await flotilla(['password', '--password-stdin'], 'alice-new-password', { FLOTILLA_USER: 'alice:alice-password' })
  t.equal(r.code, 0, r.stderr)
  r = await flotilla(['promote', 'team/none:v1', 'prod/none'], undefined, { FLOTILLA_USER: 'alice:alice-new-password' })
  t.equal(r.code, 1)
  t.match(r.stderr, /403|404/)
  r = await flotilla(['audit', '--by', 'alice', '--limit', '5'])
  t.equal(r.code, 0, r.stderr)
  t.ok(r.out.entries.length > 0 && r.out.entries.every((e: { user: string }) => e.user === 'alice'))
  r = await flotilla(['user', 'rm', 'bob'])
  t.equal(r.code, 0, r.stderr)
  // A name that never resolves fails at once; a refused connection is waited through (cli-usability.test.ts).
  r = await flotilla(['user', 'list'], undefined, { FLOTILLA_NODE: 'http://flotilla-test.invalid:1' })
  t.match(r.stderr, /cannot reach/)
})
