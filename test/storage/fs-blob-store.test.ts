import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { FsBlobStore } from '../../storage/blobs/fs-blob-store.js'
import { blobStoreSuite } from './blob-store.suite.js'
import { bytes, chunked, collect, digestFor, failingSource, readAll, stallingSource } from './helpers.js'

for (const directIO of [false, true]) {
  t.test(`BlobStore conformance, direct I/O ${directIO ? 'on' : 'off'}`, async (t) => {
    blobStoreSuite(t, async (t) => {
      const store = new FsBlobStore(t.testdir(), { directIO })
      await store.open()
      return store
    })
  })
}

t.test('on-disk layout: blobs/<alg>/<2 hex>/<hex>, read-only', async (t) => {
  const root = t.testdir()
  const store = new FsBlobStore(root)
  await store.open()
  const data = bytes(1000, 1)
  const a = await store.ingest(chunked(data))
  const b = await store.ingest(chunked(data), { algorithm: 'sha512' })
  for (const { digest } of [a, b]) {
    const [alg, hex] = digest.split(':') as [string, string]
    const path = join(root, 'blobs', alg, hex.slice(0, 2), hex)
    t.equal(store.pathOf(digest), path)
    t.ok((await readFile(path)).equals(data), path)
    t.equal((await stat(path)).mode & 0o777, 0o444)
  }
  t.same(await readdir(join(root, 'tmp')), [], 'no temp file left after success')
})

t.test('lastRead and storedAt: when a blob was last read, and when it was stored (GC keeps a fetch-through copy that just landed)', async (t) => {
  const store = new FsBlobStore(t.testdir())
  await store.open()
  const before = Date.now()
  const a = await store.ingest(chunked(bytes(1000, 2)))
  const stored = await store.storedAt(a.digest)
  t.ok(stored !== undefined && stored >= before - 1000 && stored <= Date.now() + 1000, 'stored: the time it was written')
  t.equal(store.lastRead(a.digest), undefined, 'not read yet')
  await readAll(await store.read(a.digest))
  t.ok(store.lastRead(a.digest)! >= before, 'read: counts from the read')
  t.equal(await store.storedAt(digestFor(bytes(10, 3))), undefined, 'a blob not here: undefined')
})

t.test('open() empties tmp/; list() skips strays; a new instance sees the blobs', async (t) => {
  const root = t.testdir()
  const store = new FsBlobStore(root)
  await store.open()
  const info = await store.ingest(chunked(bytes(5000, 2)))
  await writeFile(join(root, 'tmp', 'leftover-from-a-crash'), 'partial')
  await mkdir(join(root, 'blobs', 'sha256', 'zz'), { recursive: true })
  await writeFile(join(root, 'blobs', 'sha256', 'zz', 'not-a-digest'), 'x')
  await mkdir(join(root, 'blobs', 'md5'), { recursive: true })
  const again = new FsBlobStore(root)
  await again.open()
  t.same(await readdir(join(root, 'tmp')), [])
  t.same(await collect(again.list()), [info])
})

t.test('abort, failure and mismatch leave tmp/ empty', async (t) => {
  const root = t.testdir()
  const store = new FsBlobStore(root)
  await store.open()
  const slow = stallingSource(bytes(3_000_000, 3))
  const ac = new AbortController()
  const p = store.ingest(slow.source, { signal: ac.signal })
  await slow.delivered
  ac.abort()
  await t.rejects(p, { name: 'AbortError' })
  await t.rejects(store.ingest(failingSource(bytes(3_000_000, 4), new Error('boom'))), { message: 'boom' })
  await t.rejects(store.ingest(chunked(bytes(10, 5)), { expected: digestFor(bytes(10, 6)) }), { code: 'DIGEST_INVALID' })
  await t.rejects(store.ingest(chunked(bytes(3_000_000, 5)), { expectedSize: 100 }), { code: 'SIZE_INVALID' })
  t.same(await readdir(join(root, 'tmp')), [])
  slow.release()
})

t.test('a Readable source is destroyed on abort', async (t) => {
  const store = new FsBlobStore(t.testdir())
  await store.open()
  const src = new PassThrough()
  src.write(bytes(1000, 7))
  const ac = new AbortController()
  const p = store.ingest(src, { signal: ac.signal })
  setTimeout(() => { ac.abort() }, 20)
  await t.rejects(p, { name: 'AbortError' })
  t.ok(src.destroyed)
})

t.test('kill -9 at any moment leaves no partial blob visible', async (t) => {
  const root = t.testdir()
  const child = join(root, '..', `ingest-child-${process.pid}.ts`)
  const storeUrl = new URL('../../storage/blobs/fs-blob-store.js', import.meta.url).href
  await writeFile(child, `
    import { FsBlobStore } from ${JSON.stringify(storeUrl)}
    const store = new FsBlobStore(process.argv[2])
    await store.open()
    process.stdout.write('open\\n')
    for (let i = 0; ; i++) {
      const seed = i
      async function * src () {
        for (let j = 0; j < 40; j++) yield Buffer.alloc(256 * 1024, (seed + j) & 0xff)
      }
      await store.ingest(src())
    }
  `)
  t.teardown(() => rm(child, { force: true }))
  for (const delay of [5, 40, 120, 250, 400]) {
    const proc = spawn(process.execPath, ['--import', 'tsx', child, root], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>((resolve) => { proc.stdout.once('data', () => { resolve() }) })
    await new Promise((resolve) => setTimeout(resolve, delay))
    proc.kill('SIGKILL')
    await new Promise((resolve) => proc.once('exit', resolve))
  }
  const store = new FsBlobStore(root)
  await store.open()
  const listed = await collect(store.list())
  t.ok(listed.length > 0, `${listed.length} blobs committed before the kills`)
  for (const info of listed) {
    const data = await readAll(await store.read(info.digest))
    t.equal(digestFor(data), info.digest, `${info.digest.slice(0, 20)}… is whole`)
    t.equal(data.length, 40 * 256 * 1024)
  }
  t.same(await readdir(join(root, 'tmp')), [], 'partial ingests swept by open()')
})
