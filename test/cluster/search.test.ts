/**
 * Search in a cluster (issue 14: "works the same on a single node and in a cluster"): the
 * indexes are kept by every member's state machine, and a search or latest lookup on any node
 * reads after a barrier, so a property set through one node and a push through another are
 * found at once, the same from every node.
 */
import t from 'tap'
import { authFetch, pushHttp, startTestCluster } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'

const c = await startTestCluster(t, { size: 3 })
const creds = c.credentials

async function get (url: string): Promise<any> {
  const res = await authFetch(url, creds, {}, 30_000)
  const body = await res.json() as unknown
  if (res.status !== 200) throw new Error(`${url}: ${res.status} ${JSON.stringify(body)}`)
  return body
}

t.test('every node answers the same, at once, whichever node took the change', async (t) => {
  const [n1, n2, n3] = c.nodes as [typeof c.nodes[0], typeof c.nodes[0], typeof c.nodes[0]]
  const a = image({ seed: `search-a-${Date.now()}` })
  const b = image({ seed: `search-b-${Date.now()}` })
  t.equal((await pushHttp(n1.url, creds, 'team/app', a, 'v1.0.0')).outcome, 'ok')
  t.equal((await pushHttp(n2.url, creds, 'team/app', b, 'v1.1.0')).outcome, 'ok')
  const res = await authFetch(`${n3.url}/api/v1/properties`, creds, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ image: 'team/app:v1.0.0', properties: [{ key: 'qa.status', value: 'approved' }] }) }, 30_000)
  t.equal(res.status, 200, await res.text())
  const q = encodeURIComponent('name:team/* AND (prop:qa.status=approved OR tag:v1.1.*)')
  const answers = await Promise.all(c.nodes.map(async (n) => await get(`${n.url}/api/v1/search?q=${q}`)))
  t.same(answers[0].items.map((h: { tags: string[] }) => h.tags).sort(), [['v1.0.0'], ['v1.1.0']], 'the push from n2 and the property set through n3, seen from n1')
  t.same(answers[1], answers[0], 'n2 answers the same')
  t.same(answers[2], answers[0], 'n3 answers the same')
  const latest = await Promise.all(c.nodes.map(async (n) => await get(`${n.url}/api/v1/latest/team/app?prop=qa.status=approved`)))
  for (const l of latest) t.match(l, { tag: 'v1.0.0', digest: a.digest })
  const newest = await get(`${n1.url}/api/v1/latest/team/app`)
  t.match(newest, { tag: 'v1.1.0', digest: b.digest })
})
