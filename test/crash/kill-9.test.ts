/**
 * Crash safety: `kill -9` the node in the middle of a 200 MiB upload and in the middle of
 * manifest PUTs, restart it on the same data, and check that everything acknowledged is
 * intact, nothing partial is visible, and the interrupted upload resumes.
 */
import t from 'tap'
import { request } from 'node:http'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
// Crash recovery, not access control: the nodes let anonymous callers do everything.
import { startFlotilla, tempDir, OPEN_ANONYMOUS, type RunningRegistry } from '../../scripts/lib/procs.js'
import { streamData, digestOfStream } from '../helpers/stream-data.js'
import { blob, errorCode, image, pushBlob, OCI_MANIFEST } from '../helpers/oci.js'

const SIZE = 200 * 1024 * 1024

/** Stream bytes [start, end) of `seed` as one PATCH; resolves with the status, or 0 if the connection died. */
function patchStream (url: string, seed: string, start: number, end: number, headers: Record<string, string> = {}, onProgress?: (sent: number) => void): Promise<number> {
  return new Promise((resolve) => {
    const u = new URL(url)
    const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'PATCH', headers: { 'Content-Type': 'application/octet-stream', ...headers } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', () => resolve(0))
    ;(async () => {
      let sent = start
      for await (const chunk of streamData(seed, start, end)) {
        if (req.destroyed) return
        if (!req.write(chunk)) await new Promise<void>((r) => { req.once('drain', r); req.once('close', r) })
        sent += chunk.length
        onProgress?.(sent)
      }
      req.end()
    })().catch(() => resolve(0))
  })
}

async function listFiles (dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name)
  } catch { return [] }
}

t.test('kill -9 during a 200 MiB upload: nothing partial is visible and the upload resumes', async (t) => {
  const dir = await tempDir()
  const dataDir = join(dir, 'data')
  let node: RunningRegistry = await startFlotilla({ dataDir, anonymous: OPEN_ANONYMOUS })
  t.teardown(async () => { await node.kill() })
  const digest = await digestOfStream('crash-upload', SIZE)

  const post = await fetch(`${node.url}/v2/crash/big/blobs/uploads/`, { method: 'POST' })
  t.equal(post.status, 202)
  const location = post.headers.get('location')!

  // Kill the node once about 80 MiB are on their way.
  let killed: Promise<void> | undefined
  const status = await patchStream(`${node.url}${location}`, 'crash-upload', 0, SIZE, {}, (sent) => {
    if (killed === undefined && sent >= 80 * 1024 * 1024) killed = node.kill('SIGKILL')
  })
  await killed
  t.equal(status, 0, 'the connection died with the node')

  node = await startFlotilla({ dataDir, anonymous: OPEN_ANONYMOUS })
  t.same(await listFiles(join(dataDir, 'tmp')), [], 'no temporary blob survives a restart')
  const early = await fetch(`${node.url}/v2/crash/big/blobs/${digest}`, { method: 'HEAD' })
  t.equal(early.status, 404, 'the unfinished blob is not visible')

  const st = await fetch(`${node.url}${location}`)
  t.equal(st.status, 204, 'the upload session survived the crash')
  const range = st.headers.get('range')!
  // `0-0` means "nothing yet" here: the kill came long after the first byte otherwise.
  const from = range === '0-0' ? 0 : Number(range.split('-')[1]) + 1
  t.ok(from < SIZE, `the node kept a prefix of ${from} bytes`)
  const resume = await patchStream(`${node.url}${location}`, 'crash-upload', from, SIZE,
    { 'Content-Range': `${from}-${SIZE - 1}`, 'Content-Length': String(SIZE - from) })
  t.equal(resume, 202, 'the rest of the upload is accepted from where it stopped')
  const put = await fetch(`${node.url}${location}?digest=${digest}`, { method: 'PUT' })
  t.equal(put.status, 201, 'the resumed upload verifies against the digest of the whole')
  const head = await fetch(`${node.url}/v2/crash/big/blobs/${digest}`, { method: 'HEAD' })
  t.equal(head.headers.get('content-length'), String(SIZE))
})

t.test('kill -9 during a monolithic upload leaves no blob and no temp file', async (t) => {
  const dir = await tempDir()
  const dataDir = join(dir, 'data')
  let node: RunningRegistry = await startFlotilla({ dataDir, anonymous: OPEN_ANONYMOUS })
  t.teardown(async () => { await node.kill() })
  const digest = await digestOfStream('crash-mono', SIZE)
  const u = new URL(`${node.url}/v2/crash/mono/blobs/uploads/?digest=${digest}`)
  await new Promise<void>((resolve) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: 'POST', headers: { 'Content-Length': String(SIZE) } }, (res) => { res.resume() })
    req.on('error', () => resolve())
    req.on('close', () => resolve())
    ;(async () => {
      let sent = 0
      for await (const chunk of streamData('crash-mono', 0, SIZE)) {
        if (!req.write(chunk)) await new Promise<void>((r) => { req.once('drain', r); req.once('close', r) })
        sent += chunk.length
        if (sent >= 60 * 1024 * 1024) { await node.kill('SIGKILL'); break }
      }
    })().catch(() => resolve())
  })
  node = await startFlotilla({ dataDir, anonymous: OPEN_ANONYMOUS })
  t.same(await listFiles(join(dataDir, 'tmp')), [], 'the temp file was swept at start')
  const head = await fetch(`${node.url}/v2/crash/mono/blobs/${digest}`, { method: 'HEAD' })
  t.equal(head.status, 404)
  const blobs = await listFiles(join(dataDir, 'blobs'))
  t.notOk(blobs.some((f) => digest.endsWith(f)), 'no partial blob file under its digest')
})

t.test('kill -9 during manifest PUTs: every acknowledged tag survives, none dangles', async (t) => {
  const dir = await tempDir()
  const dataDir = join(dir, 'data')
  let node: RunningRegistry = await startFlotilla({ dataDir, anonymous: OPEN_ANONYMOUS })
  t.teardown(async () => { await node.kill() })
  const img = image({ layers: 2, seed: 'crash-manifest' })
  for (const b of [img.config, ...img.layers]) await pushBlob(node.url, 'crash/man', b)

  const acked: string[] = []
  let stop = false
  const writers = Array.from({ length: 4 }, async (_, w) => {
    for (let i = 0; !stop && i < 10_000; i++) {
      const tag = `w${w}-${i}`
      try {
        const res = await fetch(`${node.url}/v2/crash/man/manifests/${tag}`, { method: 'PUT', headers: { 'Content-Type': OCI_MANIFEST }, body: img.manifest })
        await res.arrayBuffer()
        if (res.status === 201) acked.push(tag)
      } catch { return }
    }
  })
  await new Promise((r) => setTimeout(r, 1500))
  await node.kill('SIGKILL')
  stop = true
  await Promise.all(writers)
  t.ok(acked.length > 10, `${acked.length} manifest PUTs were acknowledged before the crash`)

  node = await startFlotilla({ dataDir, anonymous: OPEN_ANONYMOUS })
  const list = await (await fetch(`${node.url}/v2/crash/man/tags/list`)).json() as { tags: string[] }
  const have = new Set(list.tags)
  const lost = acked.filter((tag) => !have.has(tag))
  t.same(lost, [], 'no acknowledged tag was lost')
  for (const tag of list.tags.slice(0, 50)) {
    const res = await fetch(`${node.url}/v2/crash/man/manifests/${tag}`)
    t.equal(res.headers.get('docker-content-digest'), img.digest)
    await res.arrayBuffer()
  }
  for (const b of [img.config, ...img.layers]) {
    const res = await fetch(`${node.url}/v2/crash/man/blobs/${b.digest}`)
    t.ok(Buffer.from(await res.arrayBuffer()).equals(b.data), 'referenced blobs are intact')
  }
  const more = blob('after the crash')
  t.equal((await pushBlob(node.url, 'crash/man', more)).status, 201, 'the node accepts new pushes')
  const missing = await fetch(`${node.url}/v2/crash/man/blobs/${blob('never').digest}`)
  t.equal(await errorCode(missing), 'BLOB_UNKNOWN')
})
