import t from 'tap'
import { PassThrough, Writable } from 'node:stream'
import { readFile, stat } from 'node:fs/promises'
import { open, type FileHandle } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { writeHashed } from '../../storage/blobs/fs-io.js'
import { batchesOf } from '../../storage/blobs/source.js'
import { join } from 'node:path'
import { FsBlobStore } from '../../storage/blobs/fs-blob-store.js'
import { FsUploadStore } from '../../storage/blobs/fs-upload-store.js'
import { ALIGN, DIRECT_CHUNK, DIRECT_READ_CHUNK, openDirect } from '../../storage/blobs/direct-io.js'
import { bytes, chunked, digestFor, readAll } from './helpers.js'

async function pair (root: string): Promise<{ blobs: FsBlobStore; uploads: FsUploadStore }> {
  const blobs = new FsBlobStore(root, { directIO: true })
  await blobs.open()
  const uploads = new FsUploadStore(root, { directIO: true })
  await uploads.open()
  return { blobs, uploads }
}

/**
 * A destination that takes each chunk as a socket does: copied before the write's callback.
 * (writeTo refills a buffer once its write is called back; a PassThrough calls back while it
 * still queues the chunk itself, so it would read refilled bytes.)
 */
function socketLike (): { sink: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = []
  const sink = new Writable({ write (chunk: Buffer, _enc, cb) { parts.push(Buffer.from(chunk)); cb() } })
  return { sink, bytes: () => Buffer.concat(parts) }
}

/** GET through writeTo into memory. */
async function served (store: FsBlobStore, digest: ReturnType<typeof digestFor>, range?: { start: number; end: number }, opts: { oneShot?: boolean } = { oneShot: true }): Promise<Buffer> {
  const { sink, bytes } = socketLike()
  await store.writeTo(digest, range, sink, opts)
  return bytes()
}

t.test('the test directory supports O_DIRECT (else these tests prove nothing)', async (t) => {
  const { blobs } = await pair(t.testdir())
  const info = await blobs.ingest(chunked(bytes(ALIGN * 3, 9)))
  const fh = await openDirect(blobs.pathOf(info.digest), 'read')
  t.ok(fh !== undefined, 'O_DIRECT open works here')
  await fh?.close()
})

t.test('appends that start and end anywhere relative to blocks and staging buffers', async (t) => {
  const { blobs, uploads } = await pair(t.testdir())
  // Sizes around ALIGN and DIRECT_CHUNK boundaries, in odd chunk sizes, appended one after another.
  const sizes = [1, ALIGN - 1, 1, ALIGN, ALIGN + 1, 123, DIRECT_CHUNK - 7, DIRECT_CHUNK, 3 * DIRECT_CHUNK + 4321, 5, 2 * ALIGN]
  const all = bytes(sizes.reduce((a, b) => a + b, 0), 42)
  await uploads.create('direct-0001')
  let at = 0
  for (const [i, n] of sizes.entries()) {
    const end = await uploads.append('direct-0001', chunked(all.subarray(at, at + n), [65_537, 1000, 4096, 1 << 20][i % 4]), { offset: at })
    at += n
    t.equal(end, at, `append ${i} (${n} bytes) ends at ${at}`)
  }
  const info = await uploads.commit('direct-0001', digestFor(all), blobs)
  t.equal(info.size, all.length)
  t.ok((await readFile(blobs.pathOf(info.digest))).equals(all), 'the file holds exactly the bytes appended')
})

t.test('ingest of sizes around the boundaries', async (t) => {
  const { blobs } = await pair(t.testdir())
  for (const n of [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, DIRECT_CHUNK - 1, DIRECT_CHUNK, DIRECT_CHUNK + 1, 2 * DIRECT_CHUNK + ALIGN + 17]) {
    const data = bytes(n, n + 1)
    const info = await blobs.ingest(chunked(data, 7919), { expected: digestFor(data) })
    t.equal((await stat(blobs.pathOf(info.digest))).size, n, `${n} bytes on disk`)
    t.ok((await readFile(blobs.pathOf(info.digest))).equals(data), `${n} bytes intact`)
  }
})

t.test('direct reads serve any range exactly (RFC 9110 §14.1.2)', async (t) => {
  const { blobs } = await pair(t.testdir())
  const data = bytes(3 * DIRECT_CHUNK + 5000, 7)
  const info = await blobs.ingest(chunked(data))
  t.ok((await served(blobs, info.digest)).equals(data), 'whole blob')
  const ranges: Array<[number, number]> = [
    [0, DIRECT_CHUNK], [1, DIRECT_CHUNK + 1], [ALIGN - 1, 2 * DIRECT_CHUNK + 3], [DIRECT_CHUNK + 17, data.length - 1],
    [data.length - DIRECT_CHUNK - 1, data.length - 1], [5, DIRECT_CHUNK + ALIGN * 3 + 9],
  ]
  for (const [start, end] of ranges) {
    t.ok((await served(blobs, info.digest, { start, end })).equals(data.subarray(start, end + 1)), `bytes ${start}-${end}`)
  }
  t.ok((await served(blobs, info.digest, { start: 10, end: data.length + 1000 })).equals(data.subarray(10)), 'a range past the end is cut at the end')
})

t.test('concurrent transfers share the aligned buffer pool without mixing bytes', async (t) => {
  const { blobs } = await pair(t.testdir())
  const datas = Array.from({ length: 6 }, (_, i) => bytes(2 * DIRECT_CHUNK + i * 1013, 100 + i))
  const infos = await Promise.all(datas.map(async (d) => await blobs.ingest(chunked(d, 65_536))))
  const back = await Promise.all(infos.map(async (info) => await served(blobs, info.digest)))
  for (const [i, d] of datas.entries()) {
    t.equal(infos[i]!.digest, digestFor(d), `ingest ${i} hashed its own bytes`)
    t.ok(back[i]!.equals(d), `read ${i} got its own bytes`)
  }
})

t.test('a blob written directly is read directly by clients until it has been idle, then warmed into the cache', async (t) => {
  const { blobs } = await pair(t.testdir())
  // Several wide (8 MiB) reads long, with an odd tail; ranges cross the read boundaries.
  const data = bytes(3 * DIRECT_READ_CHUNK + 12_345, 11)
  const info = await blobs.ingest(chunked(data, 1 << 20))
  t.ok(blobs.isCold(info.digest), 'written directly: not in the page cache')
  const client = async (range?: { start: number; end: number }): Promise<Buffer> => await served(blobs, info.digest, range, {})
  // More pulls at once than get the wide ring: the rest read narrow, all get their own bytes.
  const all = await Promise.all([client(), client(), client(), client({ start: DIRECT_READ_CHUNK - 3, end: 2 * DIRECT_READ_CHUNK + 2 })])
  for (const [i, b] of all.slice(0, 3).entries()) t.ok(b.equals(data), `pull ${i} got every byte`)
  t.ok(all[3]!.equals(data.subarray(DIRECT_READ_CHUNK - 3, 2 * DIRECT_READ_CHUNK + 3)), 'a range across two reads')
  t.ok(blobs.isCold(info.digest), 'still cold right after the pulls: a burst of pulls does not race a warming read')
  await new Promise((resolve) => setTimeout(resolve, 1000))
  t.ok((await client({ start: 5, end: 100 })).equals(data.subarray(5, 101)), 'another pull within the idle time')
  t.ok(blobs.isCold(info.digest), 'which puts warming off again')
  const deadline = Date.now() + 15_000
  while (blobs.isCold(info.digest) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100))
  t.notOk(blobs.isCold(info.digest), 'warmed once idle: later pulls use the page cache')
  t.ok((await client()).equals(data), 'and get every byte from it')
})

t.test('a filesystem that turns direct writes down (EINVAL) gets the bytes through the page cache', async (t) => {
  const path = join(t.testdir(), 'f')
  const fh = await open(path, 'w+')
  let refused = 0
  // Stands in for a filesystem that accepts the O_DIRECT open but not the write.
  const direct = { write: async () => { refused++; throw Object.assign(new Error('invalid argument'), { code: 'EINVAL' }) } } as unknown as FileHandle
  const data = bytes(3 * DIRECT_CHUNK + 777, 5)
  const hash = createHash('sha256')
  const n = await writeHashed(fh, 0, batchesOf(chunked(data)), hash, undefined, direct)
  await fh.close()
  t.equal(n, data.length)
  t.equal(refused, 1, 'the direct handle is given up after its first refusal')
  t.equal(`sha256:${hash.digest('hex')}`, digestFor(data))
  t.ok((await readFile(path)).equals(data), 'bytes intact')
})

// A GET's buffers are read ahead (several reads in flight) and refilled only once the socket
// took their last write: a slow client (write callbacks late) must still get every byte, in
// order, direct or buffered, whole or by range. (A first version read a buffer's next chunk
// before its write was taken, and cut every slow transfer after RING chunks.)
t.test('writeTo into a slow client: every byte in order, with reads ahead, direct and buffered', async (t) => {
  const { Writable } = await import('node:stream')
  for (const directIO of [true, false]) {
    const store = new FsBlobStore(t.testdir(), { directIO })
    await store.open()
    const data = bytes(9 * DIRECT_CHUNK + 12_345, directIO ? 7 : 8)
    const info = await store.ingest(chunked(data, 1 << 20))
    for (const range of [undefined, { start: 3, end: data.length - 2 }, { start: DIRECT_CHUNK + 1, end: 5 * DIRECT_CHUNK + 77 }]) {
      const parts: Buffer[] = []
      const slow = new Writable({
        highWaterMark: 1,
        write (chunk: Buffer, _enc, cb) { parts.push(Buffer.from(chunk)); setTimeout(cb, 3) },
      })
      const done = new Promise<void>((resolve, reject) => { slow.on('finish', resolve); slow.on('error', reject) })
      await store.writeTo(info.digest, range, slow)
      await done
      const want = range === undefined ? data : data.subarray(range.start, range.end + 1)
      t.ok(Buffer.concat(parts).equals(want), `${directIO ? 'direct' : 'buffered'}, ${range === undefined ? 'whole' : `${range.start}-${range.end}`}: ${Buffer.concat(parts).length} bytes, as stored`)
    }
  }
})
