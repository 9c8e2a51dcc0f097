/**
 * GC drops fetch-through copies (issue 12: "Fetch-through copies kept outside a blob's
 * placement are removed"). Two real nodes with cluster.replicas 1: each blob belongs on one
 * of them. A pull from the other streams the blob through and keeps a copy there. The sweep
 * keeps that copy while it is being read (gc.copyIdle, 6 s here), then drops it: first its
 * holder record through the log, then the file. The placement's copy stays, and the image is
 * still whole from both nodes.
 */
import t from 'tap'
import { authFetch, checkImage, hasBlobOnDisk, pushHttp, runCli, sleep, startTestCluster, waitFor } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'
import { placement } from '../../cluster/replication/replicator.js'

const IDLE_MS = 6_000
const c = await startTestCluster(t, { size: 2, env: { FLOTILLA_REPLICAS: '1', FLOTILLA_GC_COPY_IDLE: `${IDLE_MS / 1000}s` } })
const creds = c.credentials
const user = `${creds.username}:${creds.password}`

async function gc (): Promise<{ nodes: Array<{ peerId: string; ok: boolean; deleted: number; copies?: number }>; blobs: unknown[] }> {
  const res = await runCli(['gc', '--node', c.nodes[0]!.url, '--user', user, '--json'], { timeoutMs: 120_000 })
  if (res.code !== 0) throw new Error(`flotilla gc failed: ${res.stderr}`)
  return JSON.parse(res.stdout)
}

t.test('a copy kept outside the placement goes once unread for gc.copyIdle; the placement keeps its own', async (t) => {
  const img = image({ layers: 1, seed: `gc-copies-${Date.now()}` })
  t.equal((await pushHttp(c.nodes[0]!.url, creds, 'copies/app', img, 'v1')).outcome, 'ok', 'pushed')
  const layer = img.layers[0]!.digest
  const owner = placement(layer, c.nodes.map((n) => n.peerId), 1)[0]
  const home = c.nodes.find((n) => n.peerId === owner)!
  const other = c.nodes.find((n) => n.peerId !== owner)!
  await waitFor('the layer on its placement\'s disk', async () => await hasBlobOnDisk(home.dataDir, layer) ? true : undefined, 30_000)

  // A whole read from the other node streams it through and keeps a copy there. The copy's idle
  // time starts when it lands: after readStart, and by landedBy at the latest.
  const readStart = Date.now()
  const res = await authFetch(`${other.url}/v2/copies/app/blobs/${layer}`, creds)
  t.equal(res.status, 200, 'served by the node outside the placement')
  t.equal(Buffer.from(await res.arrayBuffer()).length, img.layers[0]!.size, 'whole')
  await waitFor('the fetch-through copy on the other node\'s disk', async () => await hasBlobOnDisk(other.dataDir, layer) ? true : undefined, 30_000)
  const landedBy = Date.now()

  const first = await gc()
  const early = first.nodes.find((n) => n.peerId === other.peerId)
  t.ok(early?.ok, 'the other node swept')
  if (Date.now() - readStart < IDLE_MS) {
    t.equal(early?.copies ?? 0, 0, 'a copy read within gc.copyIdle is kept')
    t.ok(await hasBlobOnDisk(other.dataDir, layer), 'and still on disk')
  } else {
    t.comment('the machine was too slow to check the copy is kept while fresh: the sweep came after gc.copyIdle')
  }

  await sleep(Math.max(0, landedBy + IDLE_MS + 500 - Date.now()))
  const second = await gc()
  const swept = second.nodes.find((n) => n.peerId === other.peerId)
  // On a slow machine the first sweep already came after gc.copyIdle and dropped it.
  t.ok((early?.copies ?? 0) + (swept?.copies ?? 0) >= 1, `the other node dropped its copy: ${JSON.stringify([early, swept])}`)
  t.notOk(await hasBlobOnDisk(other.dataDir, layer), 'the copy is gone from its disk')
  t.ok(await hasBlobOnDisk(home.dataDir, layer), 'the placement keeps its copy')
  t.same(second.blobs, [], 'nothing referenced was forgotten')
  for (const n of c.nodes) t.same(await checkImage(n.url, creds, 'copies/app', img, 'v1'), [], `the image is whole from ${n.name}`)
})
