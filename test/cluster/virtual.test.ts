/**
 * Virtual repositories in a cluster (issue 13, part 2): the definition is a command through the
 * Raft log, so a virtual created through one node resolves through every other at once: a
 * read there that would miss catches up with the log and looks again (src/http/routes.ts),
 * and a push through the other node lands in the default member.
 */
import t from 'tap'
import { authFetch, checkImage, pushHttp, startTestCluster } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'

const c = await startTestCluster(t, { size: 2 })
const creds = c.credentials

t.test('created through one node, pulled and pushed through the other right away', async (t) => {
  const [a, b] = c.live() as [typeof c.nodes[0], typeof c.nodes[0]]
  const first = image({ seed: 'team-a' })
  const second = image({ seed: 'hub' })
  t.match(await pushHttp(a.url, creds, 'team-a/app', first, '1'), { outcome: 'ok' })
  t.match(await pushHttp(a.url, creds, 'hub/app', second, '2'), { outcome: 'ok' })
  const put = await authFetch(`${a.url}/api/v1/virtuals/dev`, creds, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prefix: 'dev/', members: ['team-a/', 'hub/'], defaultMember: 'team-a/' }) })
  t.equal(put.status, 201, await put.text())
  // No waiting: b may not have applied the command yet when these arrive.
  t.same(await checkImage(b.url, creds, 'dev/app', first, '1'), [], 'dev/app:1 is team-a/app:1 through the other node')
  t.same(await checkImage(b.url, creds, 'dev/app', second, '2'), [], 'dev/app:2 is hub/app:2')
  const tags = await authFetch(`${b.url}/v2/dev/app/tags/list`, creds)
  t.same(await tags.json(), { name: 'dev/app', tags: ['1', '2'] })
  const third = image({ seed: 'pushed' })
  t.match(await pushHttp(b.url, creds, 'dev/app', third, '3'), { outcome: 'ok' }, 'a push through the virtual name on the other node')
  t.same(await checkImage(a.url, creds, 'team-a/app', third, '3'), [], 'landed in team-a/app, seen on the first node')
  const list = await authFetch(`${b.url}/api/v1/virtuals`, creds)
  t.same(await list.json(), { virtuals: [{ name: 'dev', prefix: 'dev/', members: ['team-a/', 'hub/'], defaultMember: 'team-a/' }] })
})
