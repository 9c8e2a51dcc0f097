import t, { type Test } from 'tap'
import { appendFile, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { FsBlobStore } from '../../storage/blobs/fs-blob-store.js'
import { FsUploadStore } from '../../storage/blobs/fs-upload-store.js'
import { MemoryBlobStore } from '../../storage/blobs/memory-blob-store.js'
import { bytes, chunked, collect, digestFor, readAll } from './helpers.js'
import { uploadStoreSuite } from './upload-store.suite.js'

for (const directIO of [false, true]) {
  t.test(`UploadStore conformance, direct I/O ${directIO ? 'on' : 'off'}`, async (t) => {
    uploadStoreSuite(t, async (t) => {
      const root = t.testdir()
      const blobs = new FsBlobStore(root, { directIO })
      await blobs.open()
      const uploads = new FsUploadStore(root, { directIO })
      await uploads.open()
      return {
        uploads,
        blobs,
        restart: async () => {
          const fresh = new FsUploadStore(root, { directIO })
          await fresh.open()
          return fresh
        },
      }
    })
  })
}

async function fsPair (t: Test): Promise<{ root: string; blobs: FsBlobStore; uploads: FsUploadStore }> {
  const root = t.testdir()
  const blobs = new FsBlobStore(root)
  await blobs.open()
  const uploads = new FsUploadStore(root)
  await uploads.open()
  return { root, blobs, uploads }
}

t.test('layout: uploads/<id>, committed by rename into blobs/', async (t) => {
  const { root, blobs, uploads } = await fsPair(t)
  const data = bytes(2_000_000, 1)
  await uploads.create('upload-0001')
  await uploads.append('upload-0001', chunked(data))
  t.ok((await readFile(join(root, 'uploads', 'upload-0001'))).equals(data))
  const { ino } = await stat(join(root, 'uploads', 'upload-0001'))
  const info = await uploads.commit('upload-0001', digestFor(data), blobs)
  const committed = await stat(blobs.pathOf(info.digest))
  t.equal(committed.ino, ino, 'the same file, renamed: no copy')
  t.equal(committed.mode & 0o777, 0o444)
  t.same(await readdir(join(root, 'uploads')), [])
})

t.test('the hash is rebuilt when the file is not what was hashed', async (t) => {
  const { root, blobs, uploads } = await fsPair(t)
  await uploads.create('upload-0001')
  await uploads.append('upload-0001', chunked(bytes(1000, 2)))
  // Something else grew the file (say, an append whose reply was lost in a crash).
  await appendFile(join(root, 'uploads', 'upload-0001'), bytes(500, 3))
  const whole = Buffer.concat([bytes(1000, 2), bytes(500, 3)])
  t.equal(await uploads.append('upload-0001', chunked(bytes(10, 4)), { offset: 1500 }), 1510)
  t.equal((await uploads.commit('upload-0001', digestFor(Buffer.concat([whole, bytes(10, 4)])), blobs)).size, 1510)
})

t.test('a caller\'s hash is not trusted for bytes this process did not append', async (t) => {
  const { root, blobs, uploads } = await fsPair(t)
  await uploads.create('upload-0001')
  await uploads.append('upload-0001', chunked(bytes(1000, 2)), { deferHash: true })
  // Something else grew the file: a claim about 1003 bytes cannot be about what was appended.
  await appendFile(join(root, 'uploads', 'upload-0001'), Buffer.from('xyz'))
  const claimed = digestFor(Buffer.concat([bytes(1000, 2), Buffer.from('abc')]))
  await t.rejects(uploads.commit('upload-0001', claimed, blobs, { hashed: { digest: claimed, size: 1003 } }), { code: 'DIGEST_INVALID' }, 'the file was hashed, and its bytes differ')
  t.equal((await uploads.commit('upload-0001', digestFor(Buffer.concat([bytes(1000, 2), Buffer.from('xyz')])), blobs)).size, 1003)
})

t.test('commit into a blob store that is not an FsBlobStore copies through ingest', async (t) => {
  const { root, uploads } = await fsPair(t)
  const blobs = new MemoryBlobStore()
  const data = bytes(1_500_000, 5)
  await uploads.create('upload-0001')
  await uploads.append('upload-0001', chunked(data))
  await t.rejects(uploads.commit('upload-0001', digestFor(bytes(5, 5)), blobs), { code: 'DIGEST_INVALID' })
  const info = await uploads.commit('upload-0001', digestFor(data, 'sha512'), blobs)
  t.ok((await readAll(await blobs.read(info.digest))).equals(data))
  t.same(await readdir(join(root, 'uploads')), [])
})

t.test('list() ignores files that are not upload ids', async (t) => {
  const { root, uploads } = await fsPair(t)
  await uploads.create('upload-0001')
  await writeFile(join(root, 'uploads', '.nfs1234'), '')
  await writeFile(join(root, 'uploads', 'x'), '')
  t.same(await collect(uploads.list()), ['upload-0001'])
})
