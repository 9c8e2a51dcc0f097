/**
 * Disk watermarks (issue 12, "Quotas and disk space") on a 3-node cluster of real processes:
 * one node above its high watermark (set at 0.0001% used, its real filesystem is above it)
 *   - says so in its status, its metrics and its log;
 *   - takes no upload itself: a monolithic and a chunked push through it land on nodes with
 *     room (its own disk gets none of those bytes), and the image is whole from every node;
 *   - keeps serving pulls; takes no replication copy;
 *   - with every node full, an upload gets 507 with a message that says what to do.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { authFetch, checkImage, hasBlobOnDisk, pushHttp, startTestCluster, waitFor } from '../helpers/cluster.js'
import { image, sha256 } from '../helpers/oci.js'

const c = await startTestCluster(t, { size: 3 })
const creds = c.credentials
const FULL = { FLOTILLA_DISK_HIGH_WATERMARK: '0.0001', FLOTILLA_DISK_LOW_WATERMARK: '0' }

t.test('a full node routes uploads to nodes with room, and keeps serving pulls', async (t) => {
  const full = await c.restart(c.nodes[2]!, { env: FULL })
  await c.converged({ voters: 3 })
  const st = await (await authFetch(`${full.url}/api/v1/cluster`, creds)).json() as { disk?: { full: boolean; usedPercent: number } }
  t.match(st.disk, { full: true }, 'its status says it is full')
  const metrics = await (await fetch(`${full.url}/metrics`)).text()
  t.match(metrics, /^flotilla_disk_full 1$/m, 'flotilla_disk_full is 1')
  t.match(await readFile(full.logFile, 'utf8'), /disk above the high watermark/, 'and it logged the alert')

  const img = image({ layers: 2, seed: `disk-${Date.now()}` })
  t.match(await pushHttp(full.url, creds, 'disk/app', img, 'v1', 60_000), { outcome: 'ok' }, 'a push through the full node is acknowledged')
  for (const b of [img.config, ...img.layers]) t.notOk(await hasBlobOnDisk(full.dataDir, b.digest), `${b.digest.slice(0, 19)} did not land on the full node`)

  // A chunked upload: the session opens elsewhere; its PATCH and PUT come back through the full node.
  const data = randomBytes(300_000)
  const open = await authFetch(`${full.url}/v2/disk/chunked/blobs/uploads/`, creds, { method: 'POST' })
  t.equal(open.status, 202, 'a chunked upload opens through the full node')
  let loc = new URL(open.headers.get('location')!, full.url).toString()
  const patch = await authFetch(loc, creds, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${data.length - 1}` }, body: data })
  t.equal(patch.status, 202, 'its PATCH through the full node is passed to the session\'s owner')
  loc = new URL(patch.headers.get('location')!, loc).toString()
  const put = await authFetch(`${loc}${loc.includes('?') ? '&' : '?'}digest=${sha256(data)}`, creds, { method: 'PUT' })
  t.equal(put.status, 201, 'and its PUT completes it')
  t.notOk(await hasBlobOnDisk(full.dataDir, sha256(data)), 'not on the full node\'s disk')
  const others = c.nodes.filter((n) => n !== full)
  await waitFor('the chunked blob on the two nodes with room', async () => (await Promise.all(others.map(async (n) => await hasBlobOnDisk(n.dataDir, sha256(data))))).every(Boolean) ? true : undefined, 30_000, 200)

  for (const n of c.nodes) t.same(await checkImage(n.url, creds, 'disk/app', img, 'v1'), [], `the image is whole from ${n.name}${n === full ? ' (the full node serves pulls)' : ''}`)
  await new Promise((resolve) => setTimeout(resolve, 1500))
  for (const b of [img.config, ...img.layers]) t.notOk(await hasBlobOnDisk(full.dataDir, b.digest), 'serving it kept no copy on the full node, nor did replication')
})

t.test('with every node full, an upload gets 507 and a message that says what to do', async (t) => {
  for (const n of [...c.nodes]) if (n !== c.nodes[2]) await c.restart(n, { env: FULL })
  await c.converged({ voters: 3 })
  const data = randomBytes(1000)
  const res = await authFetch(`${c.nodes[0]!.url}/v2/disk/none/blobs/uploads/?digest=${sha256(data)}`, creds, { method: 'POST', body: data })
  t.equal(res.status, 507)
  const body = await res.json() as { errors: Array<{ code: string; message: string }> }
  t.match(body.errors[0], { code: 'UNAVAILABLE', message: /full.*no other node has room: free space/ })
  const pull = await authFetch(`${c.nodes[0]!.url}/v2/disk/app/manifests/v1`, creds, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })
  t.equal(pull.status, 200, 'pulls still work')
})
