/**
 * Issue 16, TLS configuration mistakes: a missing, unreadable or wrong certificate or key stops
 * `flotilla serve` at start with exit status 1 and one line on stderr that names the file (or
 * setting) and the fix, never a stack trace, and before the data dir is touched.
 */
import t, { type Test } from 'tap'
import { chmod, copyFile, mkdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { run } from '../helpers/exec.js'
import { makePki } from '../helpers/tls.js'
import { ROOT } from '../../scripts/lib/procs.js'

const pki = await makePki(t, 'localhost,127.0.0.1')
const other = await pki.server('other')
// Readable by anyone but the key, for the unreadable case (run as nobody).
await chmod(pki.dir, 0o755)

async function serve (args: string[], opts: { env?: Record<string, string>; uid?: number } = {}): Promise<{ code: number | null; stderr: string; data: string }> {
  const data = join(pki.dir, `data-${Math.random().toString(36).slice(2)}`)
  const env = { ...process.env, FLOTILLA_INITIAL_ADMIN_PASSWORD: 'startup-errors-1', ...opts.env }
  const argv = [join(ROOT, 'bin', 'flotilla.mjs'), 'serve', '--data', data, '--listen', '127.0.0.1:0', ...args]
  // As another user: setpriv drops root (the tests run as root, who can read anything).
  const r = opts.uid === undefined
    ? await run(process.execPath, argv, { env, timeoutMs: 60_000 })
    : await run('setpriv', [`--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', 'env', '-u', 'NODE_OPTIONS', process.execPath, ...argv], { env: { ...withoutTap(env), HOME: '/tmp' }, cwd: '/tmp', timeoutMs: 60_000 })
  return { code: r.code, stderr: r.stderr, data }
}

/**
 * tap's process-info hook (NODE_OPTIONS, which tap adds back to every child it sees spawned) writes
 * under .tap/, which another user may not: `env -u` drops it just before node starts.
 */
function withoutTap (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => k !== 'NODE_OPTIONS' && !k.startsWith('TAP') && !k.startsWith('_TAP')))
}

function oneLine (t: Test, stderr: string): void {
  t.equal(stderr.trim().split('\n').length, 1, `one line on stderr: ${stderr}`)
  t.notMatch(stderr, /\n\s+at /, 'no stack trace')
}

t.test('a certificate file that does not exist', async (t) => {
  const r = await serve(['--tls-certificate', join(pki.dir, 'missing.crt'), '--tls-key', pki.key])
  t.equal(r.code, 1)
  t.match(r.stderr, /tls\.certificate \(--tls-certificate, FLOTILLA_TLS_CERTIFICATE\): cannot read .*missing\.crt: no such file\. Check the path/)
  oneLine(t, r.stderr)
  await t.rejects(stat(r.data), 'the data dir was not created')
})

t.test('a key the node cannot read', async (t) => {
  const key = join(pki.dir, 'private.key')
  await copyFile(pki.key, key)
  await chmod(key, 0o600)
  await chmod(pki.cert, 0o644)
  const r = await serve(['--tls-certificate', pki.cert, '--tls-key', key], { uid: 65534 })
  t.equal(r.code, 1)
  t.match(r.stderr, /tls\.key .*cannot read .*private\.key: permission denied\. Make it readable by the user running flotilla \(uid 65534\)/)
  oneLine(t, r.stderr)
})

t.test('a directory where the key should be', async (t) => {
  const dir = join(pki.dir, 'a-dir')
  await mkdir(dir)
  const r = await serve([], { env: { FLOTILLA_TLS_CERTIFICATE: pki.cert, FLOTILLA_TLS_KEY: dir } })
  t.equal(r.code, 1)
  t.match(r.stderr, /tls\.key .*cannot read .*a-dir: it is a directory/)
  oneLine(t, r.stderr)
})

t.test('a key that belongs to another certificate', async (t) => {
  const r = await serve(['--tls-certificate', pki.cert, '--tls-key', other.key])
  t.equal(r.code, 1)
  t.match(r.stderr, /other\.key does not belong to the certificate in .*node\.crt \(subject CN=localhost, serial [0-9A-F]+\): give the key that was made with this certificate/)
  oneLine(t, r.stderr)
})

t.test('certificate and key given the wrong way round', async (t) => {
  const r = await serve(['--tls-certificate', pki.key, '--tls-key', pki.cert])
  t.equal(r.code, 1)
  t.match(r.stderr, /node\.key holds no PEM certificate .*it holds a private key; the certificate is the other file/)
  oneLine(t, r.stderr)
})

t.test('a file that is not PEM at all', async (t) => {
  const junk = join(pki.dir, 'junk.crt')
  await writeFile(junk, 'not a certificate\n')
  const r = await serve(['--tls-certificate', junk, '--tls-key', pki.key])
  t.equal(r.code, 1)
  t.match(r.stderr, /junk\.crt holds no PEM certificate/)
  oneLine(t, r.stderr)
})

t.test('settings that do not go together', async (t) => {
  const onlyCert = await serve(['--tls-certificate', pki.cert])
  t.equal(onlyCert.code, 1)
  t.match(onlyCert.stderr, /tls: tls\.certificate and tls\.key go together: set both .* only the certificate is set/)
  oneLine(t, onlyCert.stderr)
  const noCa = await serve(['--tls-certificate', pki.cert, '--tls-key', pki.key, '--tls-client-auth', 'require'])
  t.equal(noCa.code, 1)
  t.match(noCa.stderr, /tls\.clientAuth require needs tls\.clientCA \(--tls-client-ca FILE\)/)
  oneLine(t, noCa.stderr)
  const badCa = await serve(['--tls-certificate', pki.cert, '--tls-key', pki.key, '--tls-client-ca', pki.key])
  t.equal(badCa.code, 1)
  t.match(badCa.stderr, /tls\.clientCA \(--tls-client-ca, FLOTILLA_TLS_CLIENT_CA\): .*node\.key holds no PEM certificate/)
  oneLine(t, badCa.stderr)
})
