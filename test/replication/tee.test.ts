/**
 * cluster/replication/tee.ts: one stream of bytes to a reader and to copies, at the pace of
 * the slowest; a copy that stalls is dropped; a reader that gives up voids the transfer.
 */
import t from 'tap'
import { PassThrough, Readable, Writable } from 'node:stream'
import { randomBytes } from 'node:crypto'
import { finished } from 'node:stream/promises'
import { tee } from '../../cluster/replication/tee.js'

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

function chunks (n: number, size: number): Buffer[] {
  return Array.from({ length: n }, () => randomBytes(size))
}

/** A Writable that keeps what it gets, taking `delayMs` per chunk. */
function sink (delayMs = 0): Writable & { got: Buffer[] } {
  const got: Buffer[] = []
  const w = new Writable({
    highWaterMark: 64 << 10,
    write (chunk: Buffer, _enc, cb) {
      got.push(chunk)
      if (delayMs > 0) setTimeout(cb, delayMs)
      else cb()
    },
  })
  return Object.assign(w, { got })
}

async function readAll (r: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of r) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

t.test('the reader and every copy get every byte', async (t) => {
  const data = chunks(64, 64 << 10)
  const main = new PassThrough()
  const a = sink()
  const b = sink(1)
  tee(Readable.from(data), main, [a, b].map((s) => ({ stream: s, highWater: 256 << 10, onStall: () => t.fail('no stall') })), 1000)
  const got = await readAll(main)
  await Promise.all([a, b].map(async (s) => { await finished(s) }))
  const want = Buffer.concat(data)
  t.ok(got.equals(want), 'the reader got the stream')
  t.ok(Buffer.concat(a.got).equals(want), 'a fast copy got it')
  t.ok(Buffer.concat(b.got).equals(want), 'a slow copy got it')
})

t.test('a slow copy sets the pace instead of being dropped', async (t) => {
  const data = chunks(32, 64 << 10)
  const main = new PassThrough()
  const slow = sink(5)
  let stalled = false
  tee(Readable.from(data), main, [{ stream: slow, highWater: 128 << 10, onStall: () => { stalled = true } }], 1000)
  const t0 = Date.now()
  await readAll(main)
  t.ok(Date.now() - t0 >= 32 * 5 * 0.5, 'the reader waited for the copy')
  t.notOk(stalled, 'the copy was kept')
})

t.test('a copy that stops reading is dropped after stallMs; the reader finishes', async (t) => {
  const data = chunks(64, 64 << 10)
  const main = new PassThrough()
  const stuck = new Writable({ highWaterMark: 16 << 10, write () { /* never calls back */ } })
  let why = ''
  tee(Readable.from(data), main, [{ stream: stuck, highWater: 128 << 10, onStall: (w) => { why = w } }], 200)
  const got = await readAll(main)
  t.equal(got.length, 64 * (64 << 10), 'the reader got every byte')
  t.match(why, /held the transfer back for 200 ms/, 'the stalled copy was told why')
  t.ok(stuck.destroyed, 'and destroyed')
})

t.test('a copy that does not set the pace is dropped once it falls behind; the reader never waits', async (t) => {
  const data = chunks(64, 64 << 10)
  const main = new PassThrough()
  const stuck = new Writable({ highWaterMark: 16 << 10, write () { /* never calls back */ } })
  let why = ''
  tee(Readable.from(data), main, [{ stream: stuck, highWater: 256 << 10, pace: false, onStall: (w) => { why = w } }], 60_000)
  const t0 = Date.now()
  const got = await readAll(main)
  t.equal(got.length, 64 * (64 << 10), 'the reader got every byte')
  t.ok(Date.now() - t0 < 5000, 'without waiting for the stall timer')
  t.match(why, /fell 262144 bytes behind/, 'the copy was told why')
  t.ok(stuck.destroyed, 'and destroyed')
})

t.test('a reader that gives up voids the transfer', async (t) => {
  let pushed = 0
  const source = new Readable({ read () { if (pushed++ < 1000) this.push(randomBytes(64 << 10)) } })
  const main = new PassThrough()
  const copy = sink()
  tee(source, main, [{ stream: copy, highWater: 1 << 20, onStall: () => {} }], 1000)
  for await (const _ of main) break // reads one chunk, then destroys main
  await sleep(50)
  t.ok(source.destroyed, 'the source is destroyed')
  t.ok(copy.destroyed, 'the copy is destroyed')
  t.notOk(copy.writableFinished, 'the copy never finished')
})

t.test('a failing source fails the reader and the copies', async (t) => {
  const source = new PassThrough()
  const main = new PassThrough()
  const copy = sink()
  tee(source, main, [{ stream: copy, highWater: 1 << 20, onStall: () => {} }], 1000)
  source.write(randomBytes(1000))
  source.destroy(new Error('peer went away'))
  await t.rejects(readAll(main), /peer went away/)
  t.ok(copy.destroyed)
})

// Issue 15's soak: a client that hung up while the owner waited for its mirrors left the
// ingest waiting forever on `main`, and its file handles to the garbage collector.
t.test('a source that closed early, even before tee(), fails the reader and the copies', async (t) => {
  for (const when of ['before', 'during'] as const) {
    const source = new PassThrough()
    const main = new PassThrough()
    const copy = sink()
    source.write(Buffer.alloc(1000))
    if (when === 'before') source.destroy()
    tee(source, main, [{ stream: copy, highWater: 1 << 20, onStall: () => {} }], 1000)
    if (when === 'during') { await sleep(10); source.destroy() }
    const err = await readAll(main).then(() => undefined, (e: Error) => e)
    t.match(err?.message, /closed before its end|premature/i, `closed ${when}: the reader gets an error, not a wait`)
    t.ok(copy.destroyed, `closed ${when}: the copy is destroyed`)
  }
})

t.test('a source that failed before tee() does not crash a reader that starts listening later', async (t) => {
  const source = new PassThrough()
  source.destroy(new Error('aborted'))
  const main = new PassThrough()
  tee(source, main, [], 1000)
  await sleep(20)
  t.ok(main.destroyed, 'the reader is destroyed')
  const err = await readAll(main).then(() => undefined, (e: Error) => e)
  t.ok(err !== undefined, `and reads as failed, not as a complete stream (${err?.message ?? 'no error'})`)
})
