/**
 * Blobs: with one copy kept (cluster.replicas: 1), a node asked for a blob it lacks streams it
 * from the holder, to the client and into its own store at once; a ranged read is served too.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { authFetch, hasBlobOnDisk, startTestCluster, waitFor } from '../helpers/cluster.js'

t.test('a node that lacks a blob streams it from a holder and keeps a copy', async (t) => {
  const c = await startTestCluster(t, { size: 3, env: { FLOTILLA_REPLICAS: '1' } })
  const [n1, n2, n3] = c.nodes as [typeof c.nodes[0], typeof c.nodes[0], typeof c.nodes[0]]
  const data = randomBytes(6 * 1024 * 1024)
  const digest = 'sha256:' + createHash('sha256').update(data).digest('hex')
  const put = await authFetch(`${n1.url}/v2/ft/repo/blobs/uploads/?digest=${digest}`, c.credentials, { method: 'POST', body: data })
  t.equal(put.status, 201)
  // With one copy kept, placement may name another node, which then copies it: wait for quiet.
  await c.converged()
  await new Promise((resolve) => setTimeout(resolve, 1500))
  const holders: Array<typeof n1> = []
  for (const n of [n1, n2, n3]) if (await hasBlobOnDisk(n.dataDir, digest)) holders.push(n)
  const lacking = [n1, n2, n3].find((n) => !holders.includes(n))
  t.ok(lacking !== undefined, `some node lacks the blob (holders: ${holders.map((n) => n.name).join(', ')})`)
  if (lacking === undefined) return

  const ranged = await authFetch(`${lacking.url}/v2/ft/repo/blobs/${digest}`, c.credentials, { headers: { Range: 'bytes=100-199' } })
  t.equal(ranged.status, 206, 'a range of a blob this node lacks')
  t.ok(Buffer.from(await ranged.arrayBuffer()).equals(data.subarray(100, 200)), 'the right bytes')

  const res = await authFetch(`${lacking.url}/v2/ft/repo/blobs/${digest}`, c.credentials)
  t.equal(res.status, 200)
  t.equal(res.headers.get('docker-content-digest'), digest)
  const body = Buffer.from(await res.arrayBuffer())
  t.equal(createHash('sha256').update(body).digest('hex'), digest.slice(7), 'streamed from the holder, intact')
  await waitFor('the copy kept while serving', async () => (await hasBlobOnDisk(lacking.dataDir, digest)) ? true : undefined, 15_000)
  t.pass(`${lacking.name} kept a copy of what it served`)
})
