/**
 * Conformance suite for UploadStore: every implementation runs it through its own *.test.ts.
 * `factory(t)` returns a fresh, opened, empty upload store with a blob store to commit into;
 * `restart`, when the implementation keeps bytes across processes, returns a new instance over
 * the same storage (as after a restart: nothing shared in memory).
 */
import type { Test } from 'tap'
import type { BlobStore, UploadStore } from '../../storage/blobs/blob-store.js'
import { bytes, chunked, collect, digestFor, failingSource, readAll, stallingSource } from './helpers.js'

export interface UploadHarness {
  uploads: UploadStore
  blobs: BlobStore
  restart?: () => Promise<UploadStore>
}

export type UploadStoreFactory = (t: Test) => Promise<UploadHarness>

const ID = 'upload-0001'

export function uploadStoreSuite (t: Test, factory: UploadStoreFactory): void {
  t.test('create, append in order, commit', async (t) => {
    const { uploads, blobs } = await factory(t)
    const data = bytes(2_500_000, 1)
    await uploads.create(ID)
    t.equal(await uploads.size(ID), 0)
    t.equal(await uploads.append(ID, chunked(data.subarray(0, 1_000_000)), { offset: 0, length: 1_000_000 }), 1_000_000)
    t.equal(await uploads.append(ID, chunked(data.subarray(1_000_000, 2_000_000)), { offset: 1_000_000 }), 2_000_000)
    t.equal(await uploads.append(ID, chunked(data.subarray(2_000_000))), data.length, 'offset and length are optional')
    t.equal(await uploads.size(ID), data.length)
    const info = await uploads.commit(ID, digestFor(data), blobs)
    t.same(info, { digest: digestFor(data), size: data.length })
    t.ok((await readAll(await blobs.read(info.digest))).equals(data))
    t.equal(await uploads.size(ID), undefined, 'the upload is gone once committed')
    t.same(await collect(uploads.list()), [])
  })

  t.test('an empty upload commits to the empty blob', async (t) => {
    const { uploads, blobs } = await factory(t)
    await uploads.create(ID)
    t.same(await uploads.commit(ID, digestFor(Buffer.alloc(0)), blobs), { digest: digestFor(Buffer.alloc(0)), size: 0 })
  })

  t.test('list and duplicate create', async (t) => {
    const { uploads } = await factory(t)
    await uploads.create('bbbbbbbb')
    await uploads.create('aaaaaaaa')
    t.same((await collect(uploads.list())).sort(), ['aaaaaaaa', 'bbbbbbbb'])
    await t.rejects(uploads.create('aaaaaaaa'), { code: 'BLOB_UPLOAD_INVALID' })
  })

  t.test('out-of-order append is refused and changes nothing', async (t) => {
    const { uploads, blobs } = await factory(t)
    const data = bytes(3000, 2)
    await uploads.create(ID)
    await uploads.append(ID, chunked(data.subarray(0, 1000)), { offset: 0 })
    await t.rejects(uploads.append(ID, chunked(data.subarray(1000)), { offset: 0 }), { code: 'UPLOAD_OUT_OF_ORDER', detail: { size: 1000 } }, 'replayed chunk')
    await t.rejects(uploads.append(ID, chunked(data.subarray(1000)), { offset: 1500 }), { code: 'UPLOAD_OUT_OF_ORDER' }, 'gap')
    t.equal(await uploads.size(ID), 1000)
    await uploads.append(ID, chunked(data.subarray(1000)), { offset: 1000 })
    t.equal((await uploads.commit(ID, digestFor(data), blobs)).size, 3000)
  })

  t.test('a chunk of the wrong length is refused whole', async (t) => {
    const { uploads, blobs } = await factory(t)
    const data = bytes(4000, 3)
    await uploads.create(ID)
    await uploads.append(ID, chunked(data.subarray(0, 1000)))
    await t.rejects(uploads.append(ID, chunked(data.subarray(1000, 2000)), { length: 1500 }), { code: 'SIZE_INVALID' }, 'short')
    t.equal(await uploads.size(ID), 1000)
    await t.rejects(uploads.append(ID, chunked(bytes(2_000_000, 4), 1000), { length: 1500 }), { code: 'SIZE_INVALID' }, 'long')
    t.equal(await uploads.size(ID), 1000)
    await uploads.append(ID, chunked(data.subarray(1000)), { offset: 1000, length: 3000 })
    t.same(await uploads.commit(ID, digestFor(data), blobs), { digest: digestFor(data), size: 4000 }, 'refused chunks left no trace in the hash')
  })

  t.test('unknown uploads', async (t) => {
    const { uploads, blobs } = await factory(t)
    t.equal(await uploads.size('nosuchupload'), undefined)
    await t.rejects(uploads.append('nosuchupload', chunked(bytes(10))), { code: 'BLOB_UPLOAD_UNKNOWN' })
    await t.rejects(uploads.commit('nosuchupload', digestFor(bytes(10)), blobs), { code: 'BLOB_UPLOAD_UNKNOWN' })
    t.equal(await uploads.remove('nosuchupload'), false)
  })

  t.test('invalid ids are unknown, whatever they try', async (t) => {
    const { uploads, blobs } = await factory(t)
    for (const id of ['../../../etc/passwd', '..', 'short', 'x'.repeat(129), 'has/slash', 'dots.dots.dots', '', 'space here', 'ünïcödé-id']) {
      await t.rejects(uploads.create(id), { code: 'BLOB_UPLOAD_UNKNOWN' }, `create ${JSON.stringify(id)}`)
      t.equal(await uploads.size(id), undefined)
      await t.rejects(uploads.append(id, chunked(bytes(10))), { code: 'BLOB_UPLOAD_UNKNOWN' })
      await t.rejects(uploads.commit(id, digestFor(bytes(10)), blobs), { code: 'BLOB_UPLOAD_UNKNOWN' })
      t.equal(await uploads.remove(id), false)
    }
    await uploads.create('A-z_0-9-' + 'x'.repeat(120))
    t.same(await collect(uploads.list()), ['A-z_0-9-' + 'x'.repeat(120)], 'the longest valid id')
  })

  t.test('commit with the wrong digest keeps the upload', async (t) => {
    const { uploads, blobs } = await factory(t)
    const data = bytes(100_000, 5)
    await uploads.create(ID)
    await uploads.append(ID, chunked(data))
    await t.rejects(uploads.commit(ID, digestFor(bytes(100_000, 6)), blobs), { code: 'DIGEST_INVALID' })
    await t.rejects(uploads.commit(ID, digestFor(data, 'sha512').replace('a', 'b') as never, blobs), { code: 'DIGEST_INVALID' }, 'sha512 too')
    t.equal(await uploads.size(ID), data.length)
    t.same(await collect(blobs.list()), [], 'nothing committed')
    t.equal((await uploads.commit(ID, digestFor(data), blobs)).digest, digestFor(data), 'the client may retry')
  })

  t.test('deferHash: appends hashed at commit verify the same way', async (t) => {
    const { uploads, blobs } = await factory(t)
    const data = bytes(600_000, 7)
    await uploads.create(ID)
    await uploads.append(ID, chunked(data.subarray(0, 200_000)))
    await uploads.append(ID, chunked(data.subarray(200_000, 400_000)), { deferHash: true })
    await uploads.append(ID, chunked(data.subarray(400_000)))
    await t.rejects(uploads.commit(ID, digestFor(bytes(600_000, 8)), blobs), { code: 'DIGEST_INVALID' }, 'a wrong digest is still refused')
    t.same(await uploads.commit(ID, digestFor(data), blobs), { digest: digestFor(data), size: data.length }, 'the right one commits')
    t.ok((await readAll(await blobs.read(digestFor(data)))).equals(data))
  })

  t.test('hashed: a commit takes the digest the caller computed while appending', async (t) => {
    const { uploads, blobs } = await factory(t)
    const data = bytes(700_000, 17)
    await uploads.create(ID)
    await uploads.append(ID, chunked(data), { deferHash: true })
    const other = digestFor(bytes(700_000, 18))
    await t.rejects(uploads.commit(ID, digestFor(data), blobs, { hashed: { digest: other, size: data.length } }), { code: 'DIGEST_INVALID' }, 'a caller whose bytes hashed to another digest is refused')
    t.equal(await uploads.size(ID), data.length, 'and the upload is kept')
    t.same(await uploads.commit(ID, digestFor(data), blobs, { hashed: { digest: digestFor(data), size: data.length } }), { digest: digestFor(data), size: data.length })
    t.ok((await readAll(await blobs.read(digestFor(data)))).equals(data), 'the bytes appended are the blob')
  })

  t.test('hashed after a restart: the store cannot vouch for the bytes and hashes them', async (t) => {
    const h = await factory(t)
    if (h.restart === undefined) {
      t.pass('nothing outlives this implementation\'s process')
      return
    }
    const data = bytes(300_000, 19)
    await h.uploads.create(ID)
    await h.uploads.append(ID, chunked(data), { deferHash: true })
    const uploads = await h.restart()
    const lie = digestFor(bytes(300_000, 20))
    await t.rejects(uploads.commit(ID, lie, h.blobs, { hashed: { digest: lie, size: data.length } }), { code: 'DIGEST_INVALID' }, 'a claim that does not match the bytes is caught')
    t.same(await uploads.commit(ID, digestFor(data), h.blobs, { hashed: { digest: digestFor(data), size: data.length } }), { digest: digestFor(data), size: data.length })
  })

  t.test('sha512 commit', async (t) => {
    const { uploads, blobs } = await factory(t)
    const data = bytes(1_300_000, 7)
    await uploads.create(ID)
    await uploads.append(ID, chunked(data.subarray(0, 600_000)))
    await uploads.append(ID, chunked(data.subarray(600_000)))
    const info = await uploads.commit(ID, digestFor(data, 'sha512'), blobs)
    t.same(info, { digest: digestFor(data, 'sha512'), size: data.length })
    t.ok((await readAll(await blobs.read(info.digest))).equals(data))
  })

  t.test('commit of bytes already stored (dedupe)', async (t) => {
    const { uploads, blobs } = await factory(t)
    const data = bytes(50_000, 8)
    await blobs.ingest(chunked(data))
    await uploads.create(ID)
    await uploads.append(ID, chunked(data))
    t.same(await uploads.commit(ID, digestFor(data), blobs), { digest: digestFor(data), size: data.length })
    t.equal(await uploads.size(ID), undefined)
    t.equal((await collect(blobs.list())).length, 1)
  })

  t.test('concurrent operations on one upload are refused, never interleaved', async (t) => {
    const { uploads, blobs } = await factory(t)
    const a = bytes(40_000, 9)
    const b = bytes(40_000, 10)
    await uploads.create(ID)
    const slow = stallingSource(a.subarray(0, 20_000), a.subarray(20_000))
    const first = uploads.append(ID, slow.source, { offset: 0 })
    await slow.delivered
    await t.rejects(uploads.append(ID, chunked(b), { offset: 0 }), { code: 'BLOB_UPLOAD_INVALID' })
    await t.rejects(uploads.append(ID, chunked(b)), { code: 'BLOB_UPLOAD_INVALID' })
    await t.rejects(uploads.commit(ID, digestFor(a), blobs), { code: 'BLOB_UPLOAD_INVALID' })
    slow.release()
    t.equal(await first, a.length)
    t.equal((await uploads.commit(ID, digestFor(a), blobs)).size, a.length)
  })

  t.test('other uploads proceed while one is busy', async (t) => {
    const { uploads } = await factory(t)
    await uploads.create('upload-aaaa')
    await uploads.create('upload-bbbb')
    const slow = stallingSource(bytes(10, 1), bytes(10, 2))
    const first = uploads.append('upload-aaaa', slow.source)
    await slow.delivered
    t.equal(await uploads.append('upload-bbbb', chunked(bytes(30, 3))), 30)
    slow.release()
    t.equal(await first, 20)
  })

  t.test('abort mid-append keeps the bytes before it, and the hash stays right', async (t) => {
    const { uploads, blobs } = await factory(t)
    const data = bytes(300_000, 11)
    await uploads.create(ID)
    await uploads.append(ID, chunked(data.subarray(0, 100_000)))
    const slow = stallingSource(bytes(150_000, 12))
    const ac = new AbortController()
    const p = uploads.append(ID, slow.source, { signal: ac.signal })
    await slow.delivered
    ac.abort()
    await t.rejects(p, { name: 'AbortError' })
    slow.release()
    t.equal(await uploads.size(ID), 100_000)
    await uploads.append(ID, failingSource(bytes(70_000, 13), new Error('reset by peer'))).catch((err: Error) => { t.equal(err.message, 'reset by peer') })
    t.equal(await uploads.size(ID), 100_000, 'a failing source is rolled back too')
    await uploads.append(ID, chunked(data.subarray(100_000)), { offset: 100_000 })
    t.same(await uploads.commit(ID, digestFor(data), blobs), { digest: digestFor(data), size: data.length })
  })

  t.test('remove', async (t) => {
    const { uploads, blobs } = await factory(t)
    await uploads.create(ID)
    await uploads.append(ID, chunked(bytes(1000, 14)))
    t.equal(await uploads.remove(ID), true)
    t.equal(await uploads.size(ID), undefined)
    t.equal(await uploads.remove(ID), false)
    await t.rejects(uploads.commit(ID, digestFor(bytes(1000, 14)), blobs), { code: 'BLOB_UPLOAD_UNKNOWN' })
    t.same(await collect(uploads.list()), [])
  })

  t.test('remove aborts an append that is still running', async (t) => {
    const { uploads } = await factory(t)
    await uploads.create(ID)
    const slow = stallingSource(bytes(1000, 15))
    const p = uploads.append(ID, slow.source)
    await slow.delivered
    const refused = t.rejects(p, { code: 'BLOB_UPLOAD_UNKNOWN' })
    t.equal(await uploads.remove(ID), true)
    await refused
    slow.release()
    t.equal(await uploads.size(ID), undefined)
  })

  t.test('resume after a restart', async (t) => {
    const h = await factory(t)
    if (h.restart === undefined) {
      t.pass('nothing to resume: this implementation does not outlive its process')
      return
    }
    const data = bytes(3_000_000, 16)
    await h.uploads.create(ID)
    await h.uploads.append(ID, chunked(data.subarray(0, 1_234_567)))
    let uploads = await h.restart()
    t.equal(await uploads.size(ID), 1_234_567, 'bytes survive')
    t.same(await collect(uploads.list()), [ID])
    await t.rejects(uploads.append(ID, chunked(data.subarray(1_234_567)), { offset: 0 }), { code: 'UPLOAD_OUT_OF_ORDER' })
    await uploads.append(ID, chunked(data.subarray(1_234_567, 2_000_000)), { offset: 1_234_567 })
    uploads = await h.restart()
    await uploads.append(ID, chunked(data.subarray(2_000_000)), { offset: 2_000_000 })
    await t.rejects(uploads.commit(ID, digestFor(bytes(10)), h.blobs), { code: 'DIGEST_INVALID' })
    t.same(await uploads.commit(ID, digestFor(data), h.blobs), { digest: digestFor(data), size: data.length }, 'the rebuilt hash verifies')
    // And a commit straight after a restart, with no append to rebuild the hash first.
    await uploads.create('upload-0002')
    await uploads.append('upload-0002', chunked(data.subarray(0, 777)))
    uploads = await h.restart()
    t.equal((await uploads.commit('upload-0002', digestFor(data.subarray(0, 777)), h.blobs)).size, 777)
  })
}
