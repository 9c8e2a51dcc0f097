/**
 * Issue 13, remote repositories: a blob fill (cluster/remote/fill.ts) on the real file stores,
 * with the upstream's answer played by a stream the test writes to. Readers at the head get
 * the upstream's chunks as they pass, and never the last one before the digest is checked;
 * readers behind the in-memory window read the upload file; readers after the end read the
 * stored blob. A wrong digest or a cut answer fails every reader and stores nothing. The
 * digest is computed once: the commit takes the fill's.
 */
import t, { type Test } from 'tap'
import { PassThrough, type Readable } from 'node:stream'
import pino from 'pino'
import { FsBlobStore } from '../../storage/blobs/fs-blob-store.js'
import { FsUploadStore } from '../../storage/blobs/fs-upload-store.js'
import type { CommitOptions } from '../../storage/blobs/blob-store.js'
import { BlobFills, type FillSource } from '../../cluster/remote/fill.js'
import type { Digest } from '../../storage/reference.js'
import { bytes, collect, digestFor } from '../storage/helpers.js'

const KiB = 1024
const MiB = 1024 * KiB

async function stores (t: Test): Promise<{ blobs: FsBlobStore; uploads: FsUploadStore; commits: CommitOptions[] }> {
  const root = t.testdir()
  const blobs = new FsBlobStore(root)
  await blobs.open()
  const uploads = new FsUploadStore(root)
  await uploads.open()
  const commits: CommitOptions[] = []
  const commit = uploads.commit.bind(uploads)
  // Watched, not replaced: what the fill hands the store at commit.
  uploads.commit = async (id, digest, b, opts) => { commits.push(opts ?? {}); return await commit(id, digest, b, opts) }
  return { blobs, uploads, commits }
}

/** Write `data` into `src` in 64 KiB chunks, waiting for drain like a socket would. */
async function send (src: PassThrough, data: Buffer): Promise<void> {
  for (let i = 0; i < data.length; i += 64 * KiB) {
    if (!src.write(data.subarray(i, i + 64 * KiB))) await new Promise((resolve) => src.once('drain', resolve))
  }
}

/** Every byte a reader hands on, and how many so far. */
function drain (r: Readable): { got: () => number; all: Promise<Buffer> } {
  const parts: Buffer[] = []
  let n = 0
  const all = new Promise<Buffer>((resolve, reject) => {
    r.on('data', (c: Buffer) => { parts.push(Buffer.from(c)); n += c.length })
    r.on('end', () => resolve(Buffer.concat(parts)))
    r.on('error', reject)
  })
  all.catch(() => {})
  return { got: () => n, all }
}

async function until (what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

const log = pino({ level: 'silent' })

t.test('a reader at the head streams the bytes as they arrive; the last chunk waits for the digest', async (t) => {
  const { blobs, uploads, commits } = await stores(t)
  const data = bytes(3 * MiB + 123, 1)
  const digest = digestFor(data)
  const src = new PassThrough()
  let fetches = 0
  const recorded: number[] = []
  const fills = new BlobFills({ uploads, blobs, log })
  const fetch = async (): Promise<FillSource> => { fetches++; return { body: src, size: data.length } }
  const f = fills.fill(digest, 'hub', fetch, async (size) => { recorded.push(size) })
  t.equal(fills.fill(digest, 'hub', fetch, async () => {}), f, 'a second pull of the same blob joins the fill under way')
  await f.started
  await send(src, data.subarray(0, MiB))
  const r = f.reader()
  await r.prime()
  const head = drain(r)
  await until('the first megabyte but its last chunk', () => head.got() >= MiB - 64 * KiB - 256 * KiB)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(head.got() <= MiB - 64 * KiB, `the last chunk received is held back until the digest is checked (${head.got()} of ${MiB} bytes handed on)`)
  await send(src, data.subarray(MiB))
  src.end()
  t.ok((await head.all).equals(data), 'the reader got the blob, byte for byte')
  await f.done
  t.equal(fetches, 1, 'one upstream request')
  t.same(recorded, [data.length], 'recorded once, with its size')
  t.same(await blobs.stat(digest), { digest, size: data.length }, 'stored under its digest')
  t.same(commits, [{ hashed: { digest, size: data.length } }], 'the commit took the digest computed as the bytes passed: hashed once')
  t.same(await collect(uploads.list()), [], 'no upload left behind')
})

t.test('readers behind the window read the upload file; readers after the end read the stored blob', async (t) => {
  const { blobs, uploads } = await stores(t)
  const data = bytes(20 * MiB + 5, 2)
  const digest = digestFor(data)
  const src = new PassThrough()
  const fills = new BlobFills({ uploads, blobs, log })
  const f = fills.fill(digest, 'hub', async () => ({ body: src, size: data.length }), async () => {})
  await f.started
  // More than the in-memory window (8 MiB) has passed before these readers come.
  await send(src, data.subarray(0, 14 * MiB))
  const late = f.reader()
  await late.prime()
  const lateAll = drain(late).all
  const range = f.reader({ start: 5 * MiB + 7, end: 17 * MiB })
  await range.prime()
  const rangeAll = drain(range).all
  await send(src, data.subarray(14 * MiB))
  src.end()
  t.ok((await lateAll).equals(data), 'a reader from byte 0 joining late gets the whole blob')
  t.ok((await rangeAll).equals(data.subarray(5 * MiB + 7, 17 * MiB + 1)), 'a range reader gets its bytes')
  await f.done
  const after = f.reader()
  await after.prime()
  t.ok((await drain(after).all).equals(data), 'a reader after the blob was stored reads it from the store')
  const tail = f.reader({ start: data.length - 10, end: data.length - 1 })
  await tail.prime()
  t.ok((await drain(tail).all).equals(data.subarray(data.length - 10)), 'and a range of it')
})

t.test('bad answers fail every reader and store nothing', async (t) => {
  // `play` sends the rest of the answer (after its first 512 KiB), badly.
  const cases: Array<{ name: string, play: (src: PassThrough, rest: Buffer) => Promise<void>, digest: (data: Buffer) => Digest }> = [
    { name: 'bytes that do not match the digest', play: async (src, rest) => { await send(src, rest); src.end() }, digest: () => digestFor(bytes(2 * MiB, 99)) },
    { name: 'an answer cut short', play: async (src, rest) => { await send(src, rest.subarray(0, MiB)); src.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' })) }, digest: (data) => digestFor(data) },
    { name: 'fewer bytes than announced', play: async (src, rest) => { await send(src, rest.subarray(0, MiB)); src.end() }, digest: (data) => digestFor(data) },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const { blobs, uploads, commits } = await stores(t)
      const data = bytes(2 * MiB, 3)
      const digest = c.digest(data)
      const src = new PassThrough()
      let recorded = 0
      const fills = new BlobFills({ uploads, blobs, log })
      const f = fills.fill(digest, 'hub', async () => ({ body: src, size: data.length }), async () => { recorded++ })
      await f.started
      await send(src, data.subarray(0, 512 * KiB))
      const r = f.reader()
      await r.prime()
      const got = drain(r)
      await c.play(src, data.subarray(512 * KiB))
      await t.rejects(got.all, 'the reader fails: its client sees the transfer cut')
      t.ok(got.got() < data.length, `the reader never had the whole blob (${got.got()} bytes)`)
      await t.rejects(f.done, { message: /nothing was cached/ }, 'the fill fails, saying nothing was cached')
      t.equal(await blobs.stat(digest), undefined, 'nothing stored')
      t.equal(recorded, 0, 'nothing recorded')
      t.same(commits, [], 'nothing committed')
      await until('the upload to be removed', () => fills.active() === 0)
      t.same(await collect(uploads.list()), [], 'the upload file is removed')
      const again = f.reader()
      await t.rejects(again.prime(), { message: /nothing was cached/ }, 'a reader that comes after the failure gets the error at once')
      again.destroy()
    })
  }
})
