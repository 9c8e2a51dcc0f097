/**
 * rangeOfFill (src/http/remote.ts): a range of a blob still being filled is cut from the fill's
 * reader, and its last piece waits until the reader ends, which a fill's reader does only once
 * the whole blob matched its digest. A fill that fails after the range's bytes went by must not
 * leave the client with a complete range.
 */
import t from 'tap'
import { PassThrough } from 'node:stream'
import { rangeOfFill } from '../../src/http/remote.js'

const bytes = Buffer.from(Array.from({ length: 100 }, (_, i) => i))

/** Feed `chunks` (of bytes from `from` on) into a reader, then end it or fail it. */
function reader (from: number, sizes: number[], end: 'end' | 'fail'): PassThrough {
  const p = new PassThrough()
  let at = from
  setImmediate(() => {
    for (const n of sizes) { p.write(bytes.subarray(at, at + n)); at += n }
    if (end === 'end') p.end(); else p.destroy(new Error('the blob did not match its digest'))
  })
  return p
}

async function collect (r: NodeJS.ReadableStream): Promise<{ bytes: Buffer; error?: Error }> {
  const out: Buffer[] = []
  try {
    for await (const c of r) out.push(c as Buffer)
    return { bytes: Buffer.concat(out) }
  } catch (err) {
    return { bytes: Buffer.concat(out), error: err as Error }
  }
}

t.test('the range\'s bytes, cut across chunk edges, once the reader ended (verified)', async (t) => {
  const got = await collect(rangeOfFill(reader(10, [7, 13, 30, 40], 'end'), { start: 10, end: 44 }))
  t.equal(got.error, undefined)
  t.ok(got.bytes.equals(bytes.subarray(10, 45)), `bytes 10-44 (${got.bytes.length})`)
})

t.test('a range inside one chunk', async (t) => {
  const got = await collect(rangeOfFill(reader(20, [80], 'end'), { start: 20, end: 20 }))
  t.ok(got.bytes.equals(bytes.subarray(20, 21)))
})

t.test('a fill that fails after the range went by: the range is never answered whole', async (t) => {
  const got = await collect(rangeOfFill(reader(0, [10, 10, 10, 70], 'fail'), { start: 5, end: 24 }))
  t.match(got.error?.message ?? '', /did not match its digest/, 'the answer fails')
  t.ok(got.bytes.length < 20, `and holds back its last piece (${got.bytes.length} of 20 bytes went out)`)
})
