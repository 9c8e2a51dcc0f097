/**
 * Online garbage collection (issue 12) on a 3-node cluster of real processes:
 *   - `flotilla gc --dry-run` names what would go and changes nothing; the grace keeps what was
 *     unreferenced too recently;
 *   - `flotilla gc --grace 0s`, run through a follower, deletes the bytes of a deleted image's
 *     own blobs on every node, keeps a layer another image shares, and every remaining image is
 *     pullable from every node; the space freed is what became unreferenced;
 *   - a node that is down is named as pending and deletes its bytes when it comes back;
 *   - the same image pushed again after its collection works (nothing half-deleted remains).
 */
import t from 'tap'
import { authFetch, checkImage, hasBlobOnDisk, pushHttp, runCli, startTestCluster, waitFor, type ClusterNode } from '../helpers/cluster.js'
import { blob, descriptor, image, sha256, OCI_MANIFEST, type Image } from '../helpers/oci.js'

const c = await startTestCluster(t, { size: 3 })
const creds = c.credentials
const user = `${creds.username}:${creds.password}`

/** An image sharing its first layer with `base`, plus one layer of its own. */
function sharing (base: Image, seed: string): Image {
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }), base.config.mediaType)
  const own = blob(`own layer of ${seed} ${'x'.repeat(5000)}`)
  const layers = [base.layers[0]!, own]
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: layers.map(descriptor) }))
  return { config, layers, manifest, digest: sha256(manifest), mediaType: OCI_MANIFEST }
}

async function onDisks (digest: string, nodes: ClusterNode[] = c.nodes): Promise<string[]> {
  const out: string[] = []
  for (const n of nodes) if (await hasBlobOnDisk(n.dataDir, digest)) out.push(n.name)
  return out
}

async function gc (via: ClusterNode, ...args: string[]): Promise<{ code: number | null; doc: any; stderr: string }> {
  const res = await runCli(['gc', '--node', via.url, '--user', user, '--json', ...args], { timeoutMs: 180_000 })
  let doc: unknown
  try { doc = JSON.parse(res.stdout) } catch { doc = undefined }
  return { code: res.code, doc, stderr: res.stderr }
}

const a = image({ layers: 2, seed: `gc-a-${Date.now()}` })
const b = sharing(a, `gc-b-${Date.now()}`)
const onlyA = [a.config, a.layers[1]!]

t.test('dry run and grace: nothing goes while referenced, or unreferenced too recently', async (t) => {
  const leader = await c.leader()
  t.match(await pushHttp(leader.url, creds, 'gc/a', a, 'v1'), { outcome: 'ok' }, 'image a pushed')
  t.match(await pushHttp(leader.url, creds, 'gc/b', b, 'v1'), { outcome: 'ok' }, 'image b (sharing a layer with a) pushed')
  for (const x of [...a.layers, a.config, ...b.layers, b.config]) {
    await waitFor(`${x.digest} on all 3 nodes`, async () => (await onDisks(x.digest)).length === 3 ? true : undefined, 60_000, 200)
  }
  const follower = c.nodes.find((n) => n !== leader)!
  const none = await gc(follower, '--dry-run', '--grace', '0s')
  t.equal(none.code, 0, `gc --dry-run exits 0: ${none.stderr}`)
  t.match(none.doc, { dryRun: true, blobs: [], bytes: 0 }, 'nothing is garbage while both images are referenced')

  const del = await authFetch(`${leader.url}/v2/gc/a/manifests/${a.digest}`, creds, { method: 'DELETE' })
  t.equal(del.status, 202, 'image a deleted')
  const dry = await gc(follower, '--dry-run', '--grace', '0s')
  t.same(dry.doc.blobs.map((x: { digest: string }) => x.digest).sort(), onlyA.map((x) => x.digest).sort(), 'the dry run names a\'s own config and layer, not the shared layer')
  t.equal(dry.doc.bytes, onlyA.reduce((s, x) => s + x.size, 0), 'and their bytes')
  t.equal((await onDisks(a.config.digest)).length, 3, 'a dry run deletes nothing')

  const graced = await gc(follower, '--grace', '1h')
  t.equal(graced.code, 0, `gc --grace 1h exits 0: ${graced.stderr}`)
  t.match(graced.doc, { dryRun: false, blobs: [], unlinked: 0 }, 'unreferenced for seconds, not an hour: kept')
  t.equal((await onDisks(a.config.digest)).length, 3, 'still on every disk')
})

t.test('gc --grace 0s through a follower deletes the garbage on every node and nothing else', async (t) => {
  const leader = await c.leader()
  const follower = c.nodes.find((n) => n !== leader)!
  const res = await gc(follower, '--grace', '0s')
  t.equal(res.code, 0, `gc exits 0: ${res.stderr}`)
  t.same(res.doc.blobs.map((x: { digest: string }) => x.digest).sort(), onlyA.map((x) => x.digest).sort(), 'a\'s own blobs are collected')
  t.equal(res.doc.nodes.length, 3, 'every node swept')
  t.ok(res.doc.nodes.every((n: { ok: boolean }) => n.ok), 'and answered')
  t.same(res.doc.pending, [], 'none pending')
  const freed = res.doc.nodes.reduce((s: number, n: { bytes: number }) => s + n.bytes, 0)
  t.equal(freed, 3 * onlyA.reduce((s, x) => s + x.size, 0), 'the space freed is what became unreferenced, on each of the 3 nodes')
  for (const x of onlyA) t.same(await onDisks(x.digest), [], `${x.digest.slice(0, 19)} is on no disk`)
  t.equal((await onDisks(a.layers[0]!.digest)).length, 3, 'the shared layer stays on every disk')
  for (const n of c.nodes) t.same(await checkImage(n.url, creds, 'gc/b', b, 'v1'), [], `image b is whole from ${n.name}`)
  const gone = await authFetch(`${leader.url}/v2/gc/a/blobs/${a.config.digest}`, creds)
  t.equal(gone.status, 404, 'a collected blob answers 404 BLOB_UNKNOWN')
  const human = await runCli(['gc', '--node', follower.url, '--user', user, '--dry-run'], { timeoutMs: 60_000 })
  t.match(human.stdout, /would collect 0 blob\(s\)/, `the table for people: ${human.stdout}`)
})

t.test('a node down during gc is pending, and deletes its bytes when it comes back', async (t) => {
  const leader = await c.leader()
  const down = c.nodes.find((n) => n !== leader)!
  const img = image({ layers: 1, seed: `gc-c-${Date.now()}` })
  t.match(await pushHttp(leader.url, creds, 'gc/c', img, 'v1'), { outcome: 'ok' })
  for (const x of [img.config, ...img.layers]) await waitFor(`${x.digest} on all 3`, async () => (await onDisks(x.digest)).length === 3 ? true : undefined, 60_000, 200)
  await down.stop()
  t.equal((await authFetch(`${leader.url}/v2/gc/c/manifests/${img.digest}`, creds, { method: 'DELETE' })).status, 202)
  const res = await gc(leader, '--grace', '0s')
  t.equal(res.code, 0, `gc exits 0 with a node down: ${res.stderr}`)
  t.same(res.doc.pending, [down.peerId], 'the node that is down is pending')
  t.equal(res.doc.blobs.length, 2, 'the image\'s config and layer are collected')
  const live = c.nodes.filter((n) => n !== down)
  for (const x of [img.config, ...img.layers]) t.same(await onDisks(x.digest, live), [], 'gone from the live nodes')
  t.equal((await onDisks(img.layers[0]!.digest, [down])).length, 1, 'still on the node that was down')
  const back = await c.restart(down)
  await waitFor('the returning node to delete its bytes', async () => (await onDisks(img.layers[0]!.digest, [back])).length === 0 && (await onDisks(img.config.digest, [back])).length === 0 ? true : undefined, 60_000, 250)
  t.pass('it deleted them once it had caught up')
  for (const n of c.live()) t.same(await checkImage(n.url, creds, 'gc/b', b, 'v1'), [], `image b is still whole from ${n.name}`)
})

t.test('an image collected and pushed again is whole on every node', async (t) => {
  const leader = await c.leader()
  t.match(await pushHttp(leader.url, creds, 'gc/a', a, 'v2'), { outcome: 'ok' }, 'image a pushed again')
  for (const n of c.live()) {
    await waitFor(`image a on ${n.name}`, async () => (await checkImage(n.url, creds, 'gc/a', a, 'v2')).length === 0 ? true : undefined, 60_000, 250)
  }
  t.pass('pullable from every node')
  const res = await gc(leader, '--grace', '0s')
  t.same(res.doc.blobs, [], 'nothing of it is garbage now')
})
