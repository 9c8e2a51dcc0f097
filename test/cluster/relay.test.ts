/**
 * Upload chains (cluster/replication/upload-mirror.ts, issue 10 item 16 "Fan-out"), on a
 * 5-node cluster of real processes: the node taking a push sends the bytes to the first node
 * of the blob's chain only, and each node relays them to the next while it stores them.
 *   - a monolithic and a chunked push reach every node; the origin's egress
 *     (flotilla_replication_bytes_sent_total) is one copy, the whole cluster's N-1: no node
 *     needed a second transfer; the blob's 201 came with the quorum confirmed
 *     (flotilla_upload_chain_commits_total{outcome="quorum"}) and W copies on disk;
 *   - a hop frozen mid-push (SIGSTOP) is cut by its predecessor, not by the origin; the push
 *     completes, and the nodes after it get the blob through replication while it is frozen;
 *   - a hop killed mid-push: the push is acknowledged, its manifest too (W copies), and the
 *     nodes after the dead one get the blob.
 */
import t from 'tap'
import http from 'node:http'
import https from 'node:https'
import { createHash, randomBytes } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { authFetch, basicAuth, hasBlobOnDisk, sleep, startTestCluster, putLayerManifest, testTls, waitFor, type ClusterNode } from '../helpers/cluster.js'
import { rank } from '../../cluster/replication/replicator.js'

const c = await startTestCluster(t, { size: 5 })
const creds = c.credentials
const MiB = 1 << 20

function sha256 (data: Buffer): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex')
}

async function disksHolding (digest: string, nodes: ClusterNode[] = c.nodes): Promise<ClusterNode[]> {
  const out: ClusterNode[] = []
  for (const n of nodes) if (await hasBlobOnDisk(n.dataDir, digest)) out.push(n)
  return out
}

const names = (nodes: ClusterNode[]): string => nodes.map((n) => n.name).join(', ')

/** The counters a node exports about replication (its /metrics). */
async function counters (n: ClusterNode): Promise<{ mirrors: number; blobs: number; quorum: number; short: number }> {
  const res = await fetch(`${n.url}/metrics`, { signal: AbortSignal.timeout(5000) })
  const text = await res.text()
  const read = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN)
  return {
    mirrors: read(/^flotilla_replication_bytes_sent_total\{route="mirrors"\} (\S+)$/m),
    blobs: read(/^flotilla_replication_bytes_sent_total\{route="blobs"\} (\S+)$/m),
    quorum: read(/^flotilla_upload_chain_commits_total\{outcome="quorum"\} (\S+)$/m),
    short: read(/^flotilla_upload_chain_commits_total\{outcome="short"\} (\S+)$/m),
  }
}

async function allCounters (nodes: ClusterNode[]): Promise<Map<ClusterNode, Awaited<ReturnType<typeof counters>>>> {
  return new Map(await Promise.all(nodes.map(async (n) => [n, await counters(n)] as const)))
}

/** Mirror sessions a node holds now (DATA/uploads/mirror-*), with their sizes. */
async function mirrorSessions (n: ClusterNode): Promise<Array<{ name: string; size: number }>> {
  const dir = join(n.dataDir, 'uploads')
  const out: Array<{ name: string; size: number }> = []
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    if (!f.startsWith('mirror-')) continue
    const s = await stat(join(dir, f)).catch(() => undefined)
    if (s !== undefined) out.push({ name: f, size: s.size })
  }
  return out
}

/** The chain of a monolithic push of `digest` to `origin`: the other nodes in rendezvous order. */
function chainOf (digest: string, origin: ClusterNode, nodes: ClusterNode[] = c.nodes): ClusterNode[] {
  const byId = new Map(nodes.map((n) => [n.peerId, n]))
  return rank(digest, nodes.map((n) => n.peerId)).filter((p) => p !== origin.peerId).map((p) => byId.get(p)!)
}

const putManifest = async (base: string, repo: string, layer: { digest: string; size: number }): Promise<{ status: number; ms: number; body: string }> => await putLayerManifest(base, creds, repo, layer, 150_000)

/**
 * POST ?digest= whose body the caller writes piece by piece (`feed`), so that something can
 * happen to the cluster mid-push. Resolves with the status.
 */
async function streamedPost (base: string, repo: string, digest: string, size: number, feed: (write: (b: Buffer) => Promise<void>) => Promise<void>): Promise<number> {
  const url = new URL(`${base}/v2/${repo}/blobs/uploads/?digest=${digest}`)
  // An https:// node (FLOTILLA_TEST_TLS=1) is reached with the test CA.
  const tls = url.protocol === 'https:' ? { ca: (await testTls()).caPem } : undefined
  return await new Promise<number>((resolve, reject) => {
    const req = (tls !== undefined ? https.request : http.request)({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'POST', headers: { authorization: basicAuth(creds), 'content-type': 'application/octet-stream', 'content-length': size }, ...tls }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    const write = async (b: Buffer): Promise<void> => {
      if (!req.write(b)) await new Promise((resolve) => req.once('drain', resolve))
    }
    feed(write).then(() => req.end(), (err: unknown) => { req.destroy(err as Error); reject(err) })
  })
}

async function logOf (n: ClusterNode): Promise<string> {
  return await readFile(n.logFile, 'utf8')
}

t.test('a monolithic push travels down one chain: every node gets it, the origin sends one copy', async (t) => {
  const origin = c.nodes[0]!
  const data = randomBytes(32 * MiB)
  const digest = sha256(data)
  const before = await allCounters(c.nodes)
  const res = await authFetch(`${origin.url}/v2/relay/mono/blobs/uploads/?digest=${digest}`, creds, { method: 'POST', body: data }, 60_000)
  t.equal(res.status, 201, 'the blob PUT is acknowledged')
  const atAck = await disksHolding(digest)
  t.ok(atAck.length >= 3, `on W = 3 disks or more at the 201 (${names(atAck)})`)
  const o = await counters(origin)
  t.equal(o.quorum - before.get(origin)!.quorum, 1, 'the origin had W-1 = 2 confirmations from its chain before the 201')
  await waitFor('the blob on all 5 nodes', async () => (await disksHolding(digest)).length === 5 ? true : undefined, 30_000, 50)
  await sleep(500)
  const after = await allCounters(c.nodes)
  const sent = (n: ClusterNode): number => (after.get(n)!.mirrors - before.get(n)!.mirrors + after.get(n)!.blobs - before.get(n)!.blobs) / data.length
  t.ok(sent(origin) >= 0.99 && sent(origin) <= 1.25, `the origin sent ${sent(origin).toFixed(3)} copies (at most 1.25)`)
  const total = c.nodes.reduce((sum, n) => sum + sent(n), 0)
  t.ok(total <= 4.1, `the cluster sent ${total.toFixed(3)} copies in all for 4 new ones: no node needed a second transfer`)
  t.ok(c.nodes.every((n) => after.get(n)!.blobs === before.get(n)!.blobs), 'no background copy was needed')
  const chain = chainOf(digest, origin)
  t.ok(sent(chain.at(-1)!) < 0.01, `the last hop (${chain.at(-1)!.name}) sent nothing on`)
  const m = await putManifest(origin.url, 'relay/mono', { digest, size: data.length })
  t.equal(m.status, 201, `the manifest PUT is acknowledged at once (${m.ms} ms)`)
  for (const n of c.nodes) t.same(await mirrorSessions(n), [], `${n.name} keeps no mirror session`)
})

t.test('a chunked push (POST, PATCH, PUT) travels down one chain too', async (t) => {
  const origin = c.nodes[1]!
  const data = randomBytes(24 * MiB)
  const digest = sha256(data)
  const before = await allCounters(c.nodes)
  const open = await authFetch(`${origin.url}/v2/relay/chunked/blobs/uploads/`, creds, { method: 'POST' })
  t.equal(open.status, 202)
  let loc = new URL(open.headers.get('location')!, origin.url).toString()
  const part = 8 * MiB
  for (let off = 0; off < data.length; off += part) {
    const chunk = data.subarray(off, off + part)
    const res = await authFetch(loc, creds, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': `${off}-${off + chunk.length - 1}` }, body: chunk }, 30_000)
    t.equal(res.status, 202, `PATCH at ${off}`)
    loc = new URL(res.headers.get('location')!, loc).toString()
  }
  const put = await authFetch(`${loc}${loc.includes('?') ? '&' : '?'}digest=${digest}`, creds, { method: 'PUT' }, 30_000)
  t.equal(put.status, 201, 'the upload completes')
  t.ok((await disksHolding(digest)).length >= 3, 'on W disks at the 201')
  t.equal((await counters(origin)).quorum - before.get(origin)!.quorum, 1, 'with the quorum confirmed down the chain')
  await waitFor('the blob on all 5 nodes', async () => (await disksHolding(digest)).length === 5 ? true : undefined, 30_000, 50)
  await sleep(500)
  const after = await allCounters(c.nodes)
  const sent = (n: ClusterNode): number => (after.get(n)!.mirrors - before.get(n)!.mirrors + after.get(n)!.blobs - before.get(n)!.blobs) / data.length
  t.ok(sent(origin) <= 1.25, `the origin sent ${sent(origin).toFixed(3)} copies`)
  const total = c.nodes.reduce((sum, n) => sum + sent(n), 0)
  t.ok(total <= 4.1, `the cluster sent ${total.toFixed(3)} copies in all`)
  for (const n of c.nodes) t.same(await mirrorSessions(n), [], `${n.name} keeps no mirror session`)
})

/**
 * Random data whose chain from `origin` suits a test: a node other than `avoid` (the leader)
 * in second place, and `last`, when given, in last place.
 */
function dataWithMiddle (origin: ClusterNode, avoid: ClusterNode, size: number, last?: ClusterNode): { data: Buffer; digest: string; chain: ClusterNode[] } {
  for (;;) {
    const data = randomBytes(size)
    const digest = sha256(data)
    const chain = chainOf(digest, origin)
    if (chain[1] !== avoid && (last === undefined || chain.at(-1) === last)) return { data, digest, chain }
  }
}

/** The node frozen by the test before the last: its predecessors skip it for 30 s after. */
let recentlyFrozen: ClusterNode | undefined

t.test('a hop frozen mid-push is cut by its predecessor; the nodes after it get the blob while it is frozen', async (t) => {
  const leader = await c.leader()
  const origin = c.nodes.find((n) => n !== leader)!
  const { data, digest, chain } = dataWithMiddle(origin, leader, 48 * MiB)
  const [h1, h2, h3, h4] = chain as [ClusterNode, ClusterNode, ClusterNode, ClusterNode]
  recentlyFrozen = h2
  t.comment(`chain: ${origin.name} → ${names(chain)}; freezing ${h2.name}`)
  const originLog0 = (await logOf(origin)).length
  const t0 = Date.now()
  let frozenAt = 0
  const status = await streamedPost(origin.url, 'relay/frozen', digest, data.length, async (write) => {
    await write(data.subarray(0, 8 * MiB))
    await waitFor(`${h3.name} to receive bytes through ${h2.name}`, async () => (await mirrorSessions(h3)).some((s) => s.size > 0) ? true : undefined, 10_000, 20)
    h2.pause()
    frozenAt = Date.now()
    for (let off = 8 * MiB; off < data.length; off += MiB) await write(data.subarray(off, off + MiB))
  })
  try {
    t.equal(status, 201, `the push completes ${Date.now() - frozenAt} ms after ${h2.name} froze (${Date.now() - t0} ms in all)`)
    t.ok(Date.now() - frozenAt < 15_000, 'held back a few seconds at most')
    const holders = await disksHolding(digest)
    t.ok(holders.includes(origin) && holders.includes(h1), `on the origin and the first hop at the 201 (${names(holders)})`)
    t.match(await logOf(h1), new RegExp(`"peer":"${h2.peerId}".*upload mirror dropped`), `${h1.name} cut the chain at ${h2.name}`)
    const originLog = (await logOf(origin)).slice(originLog0)
    t.notMatch(originLog, /upload mirror dropped/, `${origin.name} kept its first hop: the stall was cut where it happened`)
    const m = await putManifest(origin.url, 'relay/frozen', { digest, size: data.length })
    t.equal(m.status, 201, `the manifest is acknowledged (${m.ms} ms): W copies with ${h2.name} frozen`)
    await waitFor(`${h3.name} and ${h4.name} to get the blob while ${h2.name} is frozen`, async () => (await disksHolding(digest, [h3, h4])).length === 2 ? true : undefined, 60_000, 200)
    t.pass(`${h3.name} and ${h4.name} hold the blob (replication), ${h2.name} still frozen`)
  } finally {
    h2.resume()
  }
  await waitFor(`${h2.name} to get the blob after it thaws`, async () => (await hasBlobOnDisk(h2.dataDir, digest)) ? true : undefined, 60_000, 200)
  await waitFor('every mirror session to go', async () => (await Promise.all(c.nodes.map(mirrorSessions))).every((s) => s.length === 0) ? true : undefined, 30_000, 200)
  t.pass(`${h2.name} got the blob once thawed, and no node keeps a mirror session`)
})

t.test('a hop killed mid-push: the push and its manifest are acknowledged, the nodes after it get the blob', async (t) => {
  await c.converged({ voters: 5 })
  const leader = await c.leader()
  // The node frozen before is skipped by the nodes that cut it, for a while: it goes last.
  const origin = c.nodes.find((n) => n !== leader && n !== recentlyFrozen)!
  const { data, digest, chain } = dataWithMiddle(origin, leader, 48 * MiB, recentlyFrozen)
  const [h1, h2, h3, h4] = chain as [ClusterNode, ClusterNode, ClusterNode, ClusterNode]
  t.comment(`chain: ${origin.name} → ${names(chain)}; killing ${h2.name}`)
  const before = await counters(origin)
  const status = await streamedPost(origin.url, 'relay/killed', digest, data.length, async (write) => {
    await write(data.subarray(0, 8 * MiB))
    await waitFor(`${h3.name} to receive bytes through ${h2.name}`, async () => (await mirrorSessions(h3)).some((s) => s.size > 0) ? true : undefined, 10_000, 20)
    await h2.kill('SIGKILL')
    for (let off = 8 * MiB; off < data.length; off += MiB) await write(data.subarray(off, off + MiB))
  })
  t.equal(status, 201, 'the push is acknowledged')
  const live = c.nodes.filter((n) => n !== h2)
  t.ok((await disksHolding(digest, live)).length >= 2, 'on the origin and the first hop at least')
  const m = await putManifest(origin.url, 'relay/killed', { digest, size: data.length })
  t.equal(m.status, 201, `the manifest PUT is acknowledged (${m.ms} ms): W = 3 durable copies among the 4 live nodes`)
  t.ok((await disksHolding(digest, live)).length >= 3, 'on 3 disks when the manifest is acknowledged')
  await waitFor(`${h3.name} and ${h4.name} (after the dead hop) to get the blob`, async () => (await disksHolding(digest, [h3, h4])).length === 2 ? true : undefined, 60_000, 200)
  t.pass(`${h1.name}, ${h3.name} and ${h4.name} hold the blob`)
  await sleep(1000)
  const after = await counters(origin)
  const copies = (after.mirrors - before.mirrors + after.blobs - before.blobs) / data.length
  t.ok(copies <= 3.05, `the origin sent ${copies.toFixed(2)} copies in all (the chain's first hop, then replication's share)`)
  t.equal(after.short - before.short, 1, 'the origin counted the commit short of its quorum')
  await waitFor('every mirror session on the live nodes to go', async () => (await Promise.all(live.map(mirrorSessions))).every((s) => s.length === 0) ? true : undefined, 30_000, 200)
  t.pass('no live node keeps a mirror session')
})
