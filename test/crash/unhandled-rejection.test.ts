import t from 'tap'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

// A node must not die of a timeout a library left in a promise nobody awaited (it killed a
// member right after another's removal), and must still stop on a real bug.
const child = fileURLToPath(new URL('./fixtures/unhandled-child.ts', import.meta.url))
const run = (kind: string): { status: number | null; out: string; err: string } => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', child, kind], { encoding: 'utf8', timeout: 30_000 })
  return { status: r.status, out: r.stdout, err: r.stderr }
}

t.test('an unobserved TimeoutError from AbortSignal.timeout is logged and counted, and the process lives on', async (t) => {
  const r = run('timeout')
  t.equal(r.status, 0, `exits normally (stderr: ${r.err})`)
  t.match(r.out, /"level":40.*TimeoutError nobody awaited was ignored/, 'a warning names it')
  t.match(r.out, /still alive: \[\["TimeoutError",1\]\]/, 'flotilla_unhandled_cancellations_total{kind="TimeoutError"} 1')
})

t.test('an unobserved AbortError is treated the same way', async (t) => {
  const r = run('abort')
  t.equal(r.status, 0, `exits normally (stderr: ${r.err})`)
  t.match(r.out, /still alive: \[\["AbortError",1\]\]/)
})

t.test('any other unhandled rejection is fatal: logged with its stack, exit 1', async (t) => {
  const r = run('bug')
  t.equal(r.status, 1, 'exits 1')
  t.match(r.out, /"level":60.*"message":"a real bug".*unhandled promise rejection: this is a bug/, 'one fatal line with the error')
  t.notMatch(r.out, /still alive/, 'it did not carry on')
})
