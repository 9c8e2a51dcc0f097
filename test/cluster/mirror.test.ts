/**
 * Upload mirroring (cluster/replication/upload-mirror.ts): the owner of an upload sends its
 * bytes down a chain of peers while they arrive (each relays them to the next), so the blob
 * PUT's 201 already means "durable on the write quorum" and the manifest PUT does not wait
 * for a second transfer (test/cluster/relay.test.ts: the chain on 5 nodes).
 *   - a chunked upload (POST, PATCH with Content-Range, PUT) and a monolithic POST ?digest=
 *     are on two disks the moment they are acknowledged;
 *   - a wrong digest and a cancelled upload leave nothing behind on the mirrors;
 *   - a mirror that is frozen (SIGSTOP) is skipped or dropped: the upload completes, and the
 *     blob reaches the quorum through ordinary replication.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { authFetch, hasBlobOnDisk, sleep, startTestCluster, putLayerManifest, waitFor, type ClusterNode } from '../helpers/cluster.js'

const c = await startTestCluster(t, { size: 3 })
const creds = c.credentials

function sha256 (data: Buffer): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex')
}

async function disksHolding (digest: string, nodes: ClusterNode[] = c.nodes): Promise<string[]> {
  const out: string[] = []
  for (const n of nodes) if (await hasBlobOnDisk(n.dataDir, digest)) out.push(n.name)
  return out
}

/** Upload sessions a node holds for mirrors (DATA/uploads/mirror-*). */
async function mirrorSessions (n: ClusterNode): Promise<string[]> {
  return (await readdir(join(n.dataDir, 'uploads')).catch(() => [] as string[])).filter((f) => f.startsWith('mirror-'))
}

async function droppedIn (n: ClusterNode): Promise<boolean> {
  return (await readFile(n.logFile, 'utf8')).includes('upload mirror dropped')
}

async function open (base: string, repo: string): Promise<string> {
  const res = await authFetch(`${base}/v2/${repo}/blobs/uploads/`, creds, { method: 'POST' })
  if (res.status !== 202) throw new Error(`POST answered ${res.status}`)
  return new URL(res.headers.get('location')!, base).toString()
}

async function patchChunks (location: string, data: Buffer, chunks: number): Promise<string> {
  const size = Math.ceil(data.length / chunks)
  let loc = location
  for (let off = 0; off < data.length; off += size) {
    const part = data.subarray(off, off + size)
    const res = await authFetch(loc, creds, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': `${off}-${off + part.length - 1}` }, body: part }, 30_000)
    if (res.status !== 202) throw new Error(`PATCH at ${off} answered ${res.status}: ${await res.text()}`)
    loc = new URL(res.headers.get('location')!, loc).toString()
  }
  return loc
}

const putManifest = async (base: string, repo: string, layer: { digest: string; size: number }): Promise<{ status: number; ms: number; body: string }> => await putLayerManifest(base, creds, repo, layer, 60_000)

t.test('a chunked upload is durable on the write quorum when its PUT answers 201', async (t) => {
  const n1 = c.nodes[0]!
  const data = randomBytes(24 << 20)
  const digest = sha256(data)
  const loc = await patchChunks(await open(n1.url, 'mirror/chunked'), data, 3)
  const put = await authFetch(`${loc}${loc.includes('?') ? '&' : '?'}digest=${digest}`, creds, { method: 'PUT' }, 30_000)
  t.equal(put.status, 201, 'the upload completes')
  const holders = await disksHolding(digest)
  t.ok(holders.length >= 2, `on two disks at the 201, no replication pass needed (${holders.join(', ')})`)
  t.ok(holders.includes(n1.name), 'one of them the owner')
  const m = await putManifest(n1.url, 'mirror/chunked', { digest, size: data.length })
  t.equal(m.status, 201, `the manifest PUT is acknowledged (${m.ms} ms)`)
  t.ok(m.ms < 2000, 'without waiting for a copy')
  await waitFor('the third copy', async () => (await disksHolding(digest)).length === 3 ? true : undefined, 30_000)
  for (const n of c.nodes) t.same(await mirrorSessions(n), [], `${n.name} keeps no mirror session`)
})

t.test('a monolithic POST ?digest= is mirrored too', async (t) => {
  const n2 = c.nodes[1]!
  const data = randomBytes(8 << 20)
  const digest = sha256(data)
  const res = await authFetch(`${n2.url}/v2/mirror/mono/blobs/uploads/?digest=${digest}`, creds, { method: 'POST', body: data }, 30_000)
  t.equal(res.status, 201)
  const holders = await disksHolding(digest)
  t.ok(holders.length >= 2, `on two disks at the 201 (${holders.join(', ')})`)
})

t.test('a wrong digest or a cancel leaves no mirrored bytes behind', async (t) => {
  const n1 = c.nodes[0]!
  const data = randomBytes(4 << 20)
  const wrong = sha256(Buffer.from('something else'))
  const loc = await patchChunks(await open(n1.url, 'mirror/bad'), data, 2)
  const put = await authFetch(`${loc}${loc.includes('?') ? '&' : '?'}digest=${wrong}`, creds, { method: 'PUT' })
  t.equal(put.status, 400, 'the PUT with a wrong digest is refused')
  t.equal((await put.json() as { errors: Array<{ code: string }> }).errors[0]?.code, 'DIGEST_INVALID')
  t.same(await disksHolding(sha256(data)), [], 'no node keeps the bytes as a blob')
  t.same(await disksHolding(wrong), [], 'nor under the claimed digest')
  await waitFor('mirror sessions to go', async () => (await Promise.all(c.nodes.map(mirrorSessions))).every((s) => s.length === 0) ? true : undefined, 10_000)
  t.pass('the mirrors dropped their copies of the failed upload')

  const loc2 = await patchChunks(await open(n1.url, 'mirror/cancel'), randomBytes(2 << 20), 1)
  const mirrored = await waitFor('a mirror session', async () => {
    const all = (await Promise.all(c.nodes.map(mirrorSessions))).flat()
    return all.length > 0 ? all : undefined
  }, 10_000)
  t.ok(mirrored.length >= 1 && mirrored.length <= 2, `the chain's peers mirror the open upload (${mirrored.length} seen)`)
  const del = await authFetch(loc2, creds, { method: 'DELETE' })
  t.equal(del.status, 204, 'the upload is cancelled')
  await waitFor('the mirror session to go', async () => (await Promise.all(c.nodes.map(mirrorSessions))).every((s) => s.length === 0) ? true : undefined, 10_000)
  t.pass('the cancel reached the mirror')
})

t.test('a frozen mirror is skipped or dropped; the upload completes and the quorum comes from replication', async (t) => {
  const leader = await c.leader()
  const owner = c.nodes.find((n) => n !== leader)!
  const frozen = c.nodes.find((n) => n !== leader && n !== owner)!
  let uploads = 0
  frozen.pause()
  try {
    // Each upload's mirror is picked by its id: upload until one has met the frozen node.
    for (let i = 0; i < 3 || (!await droppedIn(owner) && !await droppedIn(leader) && i < 10); i++) {
      uploads = i + 1
      const data = randomBytes(16 << 20)
      const digest = sha256(data)
      const t0 = Date.now()
      const loc = await patchChunks(await open(owner.url, `mirror/frozen-${i}`), data, 1)
      const put = await authFetch(`${loc}${loc.includes('?') ? '&' : '?'}digest=${digest}`, creds, { method: 'PUT' }, 30_000)
      t.equal(put.status, 201, `upload ${i + 1} completes in ${Date.now() - t0} ms with ${frozen.name} frozen`)
      t.ok(Date.now() - t0 < 15_000, 'a frozen mirror holds it back a few seconds at most')
      const m = await putManifest(owner.url, `mirror/frozen-${i}`, { digest, size: data.length })
      t.equal(m.status, 201, `its manifest is acknowledged (${m.ms} ms): the leader copied the blob`)
      t.ok((await disksHolding(digest, [owner, leader])).length === 2, 'on the owner and the leader')
    }
  } finally {
    frozen.resume()
  }
  t.ok(await droppedIn(owner) || await droppedIn(leader), `${owner.name} or ${leader.name} (whichever came before it in a chain) dropped the frozen mirror (log: "upload mirror dropped")`)
  await sleep(500)
  await waitFor(`${frozen.name} to get every blob`, async () => {
    for (let i = 0; i < uploads; i++) {
      const res = await authFetch(`${frozen.url}/v2/mirror/frozen-${i}/manifests/v1`, creds, { method: 'HEAD' }).catch(() => undefined)
      if (res?.status !== 200) return undefined
    }
    return true
  }, 60_000, 500)
  t.pass(`${frozen.name} serves every image after it thaws`)
})
