/**
 * Conformance suite for BlobStore: every implementation runs it through its own *.test.ts.
 * `factory(t)` returns a fresh, opened, empty store (t is the subtest, for t.testdir()).
 */
import type { Test } from 'tap'
import { Readable } from 'node:stream'
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import { bytes, chunked, collect, digestFor, failingSource, readAll, stallingSource } from './helpers.js'

export type BlobStoreFactory = (t: Test) => Promise<BlobStore>

export function blobStoreSuite (t: Test, factory: BlobStoreFactory): void {
  t.test('ingest, stat, read', async (t) => {
    const store = await factory(t)
    const data = bytes(100_000)
    const info = await store.ingest(chunked(data))
    t.same(info, { digest: digestFor(data), size: data.length })
    t.same(await store.stat(info.digest), info)
    t.ok((await readAll(await store.read(info.digest))).equals(data))
  })

  t.test('a Readable source and a multi-MiB blob in odd chunks', async (t) => {
    const store = await factory(t)
    const data = bytes(3.5 * 1024 * 1024 + 3, 2)
    const info = await store.ingest(Readable.from(chunked(data, 100_003)), { expected: digestFor(data), expectedSize: data.length })
    t.equal(info.size, data.length)
    t.ok((await readAll(await store.read(info.digest))).equals(data))
  })

  t.test('the empty blob', async (t) => {
    const store = await factory(t)
    const info = await store.ingest(chunked(Buffer.alloc(0)))
    t.same(info, { digest: digestFor(Buffer.alloc(0)), size: 0 })
    t.equal((await readAll(await store.read(info.digest))).length, 0)
    await t.rejects(store.read(info.digest, { start: 0, end: 0 }), { code: 'RANGE_NOT_SATISFIABLE' })
  })

  t.test('byte ranges (inclusive ends, end clamped to the last byte)', async (t) => {
    const store = await factory(t)
    const data = bytes(1000, 3)
    const { digest } = await store.ingest(chunked(data))
    const range = async (start: number, end: number): Promise<Buffer> => await readAll(await store.read(digest, { start, end }))
    t.ok((await range(0, 0)).equals(data.subarray(0, 1)))
    t.ok((await range(10, 19)).equals(data.subarray(10, 20)))
    t.ok((await range(990, 999)).equals(data.subarray(990)))
    t.ok((await range(990, 5000)).equals(data.subarray(990)), 'end past the blob is clamped')
    t.ok((await range(999, 999)).equals(data.subarray(999)))
    for (const [start, end] of [[1000, 1000], [1500, 2000], [20, 10], [-1, 5], [0.5, 3]] as const) {
      await t.rejects(store.read(digest, { start, end }), { code: 'RANGE_NOT_SATISFIABLE' }, `${start}-${end}`)
    }
  })

  t.test('unknown blobs', async (t) => {
    const store = await factory(t)
    const d = digestFor(bytes(10, 99))
    t.equal(await store.stat(d), undefined)
    await t.rejects(store.read(d), { code: 'BLOB_UNKNOWN' })
    await t.rejects(store.read(d, { start: 0, end: 1 }), { code: 'BLOB_UNKNOWN' })
    t.equal(await store.delete(d), false)
  })

  t.test('delete', async (t) => {
    const store = await factory(t)
    const { digest } = await store.ingest(chunked(bytes(5000, 4)))
    t.equal(await store.delete(digest), true)
    t.equal(await store.stat(digest), undefined)
    await t.rejects(store.read(digest), { code: 'BLOB_UNKNOWN' })
    t.equal(await store.delete(digest), false)
    t.same(await collect(store.list()), [])
  })

  t.test('list returns every blob of every algorithm', async (t) => {
    const store = await factory(t)
    t.same(await collect(store.list()), [])
    const a = await store.ingest(chunked(bytes(10, 5)))
    const b = await store.ingest(chunked(bytes(20, 6)))
    const c = await store.ingest(chunked(bytes(30, 7)), { algorithm: 'sha512' })
    const listed = (await collect(store.list())).sort((x, y) => x.digest < y.digest ? -1 : 1)
    t.same(listed, [a, b, c].sort((x, y) => x.digest < y.digest ? -1 : 1))
  })

  t.test('digest mismatch leaves nothing visible', async (t) => {
    const store = await factory(t)
    const data = bytes(300_000, 8)
    const wrong = digestFor(bytes(300_000, 9))
    await t.rejects(store.ingest(chunked(data), { expected: wrong }), { code: 'DIGEST_INVALID' })
    t.equal(await store.stat(wrong), undefined)
    t.equal(await store.stat(digestFor(data)), undefined)
    t.same(await collect(store.list()), [])
  })

  t.test('size mismatch leaves nothing visible', async (t) => {
    const store = await factory(t)
    const data = bytes(300_000, 10)
    await t.rejects(store.ingest(chunked(data), { expectedSize: data.length + 1 }), { code: 'SIZE_INVALID' }, 'too few bytes')
    await t.rejects(store.ingest(chunked(data), { expectedSize: data.length - 1 }), { code: 'SIZE_INVALID' }, 'too many bytes')
    await t.rejects(store.ingest(chunked(data), { expected: digestFor(data), expectedSize: 5 }), { code: 'SIZE_INVALID' }, 'size checked with a right digest')
    t.same(await collect(store.list()), [])
  })

  t.test('sha512, asked for or implied by the expected digest', async (t) => {
    const store = await factory(t)
    const data = bytes(70_000, 11)
    const a = await store.ingest(chunked(data), { algorithm: 'sha512' })
    t.same(a, { digest: digestFor(data, 'sha512'), size: data.length })
    const other = bytes(500, 12)
    const b = await store.ingest(chunked(other), { expected: digestFor(other, 'sha512') })
    t.equal(b.digest, digestFor(other, 'sha512'))
    t.ok((await readAll(await store.read(a.digest, { start: 5, end: 9 }))).equals(data.subarray(5, 10)))
    await t.rejects(store.ingest(chunked(other), { expected: digestFor(other, 'sha512'), algorithm: 'sha256' }), { code: 'DIGEST_INVALID' }, 'algorithm contradicts the expected digest')
    t.equal(await store.stat(digestFor(other)), undefined, 'the sha256 name is not used')
  })

  t.test('the same bytes are stored once', async (t) => {
    const store = await factory(t)
    const data = bytes(200_000, 13)
    const [a, b] = await Promise.all([store.ingest(chunked(data)), store.ingest(chunked(data))])
    const c = await store.ingest(chunked(data), { expected: digestFor(data) })
    t.same(a, b)
    t.same(a, c)
    t.equal((await collect(store.list())).length, 1)
    t.ok((await readAll(await store.read(a.digest))).equals(data))
  })

  t.test('abort mid-stream leaves nothing', async (t) => {
    const store = await factory(t)
    const first = bytes(50_000, 14)
    const { source, delivered } = stallingSource(first, bytes(10, 15))
    const ac = new AbortController()
    const p = store.ingest(source, { signal: ac.signal })
    await delivered
    ac.abort()
    await t.rejects(p, { name: 'AbortError' })
    t.same(await collect(store.list()), [])
    t.equal(await store.stat(digestFor(first)), undefined)
  })

  t.test('an aborted signal fails before reading', async (t) => {
    const store = await factory(t)
    const ac = new AbortController()
    ac.abort()
    await t.rejects(store.ingest(chunked(bytes(10, 16)), { signal: ac.signal }), { name: 'AbortError' })
    t.same(await collect(store.list()), [])
  })

  t.test('a failing source leaves nothing and passes its error on', async (t) => {
    const store = await factory(t)
    await t.rejects(store.ingest(failingSource(bytes(2_000_000, 17), new Error('connection reset'))), { message: 'connection reset' })
    t.same(await collect(store.list()), [])
  })

  t.test('collect (GC) leaves a fresh blob alone until it is settled, a re-placed one too', async (t) => {
    const store = await factory(t)
    const data = bytes(70_000, 23)
    const info = await store.ingest(chunked(data))
    t.same(store.fresh(), [info.digest], 'a placed blob is fresh')
    t.equal(await store.collect(info.digest), false, 'a fresh blob is not collected')
    t.same(await store.stat(info.digest), info, 'and is still there')
    store.settle(info.digest)
    t.same(store.fresh(), [], 'settled: no longer fresh')
    // The same bytes uploaded again (a push racing GC) make it fresh again, though already there.
    await store.ingest(chunked(data))
    t.equal(await store.collect(info.digest), false, 'an ingest of the same bytes makes it fresh again')
    store.settle(info.digest)
    t.equal(await store.collect(info.digest), true, 'settled and unreferenced: collected')
    t.equal(await store.stat(info.digest), undefined, 'gone')
    t.equal(await store.collect(info.digest), false, 'collecting it again finds nothing')
  })

  t.test('an ingest racing a collect of the same bytes ends with the blob there', async (t) => {
    const store = await factory(t)
    const data = bytes(300_000, 29)
    const info = await store.ingest(chunked(data))
    store.settle(info.digest)
    for (let i = 0; i < 20; i++) {
      store.settle(info.digest)
      const [again] = await Promise.all([store.ingest(chunked(data, 7_000 + i * 101)), store.collect(info.digest)])
      t.ok(await store.stat(again.digest) !== undefined, `round ${i}: the re-ingested blob is there`)
    }
  })
}
