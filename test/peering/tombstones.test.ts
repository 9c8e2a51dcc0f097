/**
 * Tombstones of federated tags (cluster/peering/hlc.ts) do not pile up for ever: a node with a
 * short `sites.tombstoneTtl` forgets a deleted tag's version once it is older than that,
 * through its log, on a real single-node site with no peering (every site keeps them).
 */
import t from 'tap'
import { authFetch, pushHttp, startTestCluster, waitFor } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'

const c = await startTestCluster(t, { size: 1, env: { FLOTILLA_SITES_TOMBSTONE_TTL: '2s' } })
const n = c.nodes[0]!

const purged = async (): Promise<number> => {
  const m = await (await authFetch(`${n.url}/metrics`, c.credentials)).text()
  return Number(/^flotilla_site_tombstones_purged_total (\S+)$/m.exec(m)?.[1] ?? NaN)
}

t.test('a deleted tag\'s tombstone is forgotten after sites.tombstoneTtl; a live tag is untouched', async (t) => {
  t.equal(await purged(), 0, 'the counter is exported, at 0')
  const img = image({ layers: 1 })
  t.equal((await pushHttp(n.url, c.credentials, 'team/app', img, 'gone')).outcome, 'ok')
  t.equal((await pushHttp(n.url, c.credentials, 'team/app', img, 'kept')).outcome, 'ok')
  const del = await authFetch(`${n.url}/v2/team/app/manifests/gone`, c.credentials, { method: 'DELETE' })
  t.equal(del.status, 202, 'the tag is deleted')
  await waitFor('the tombstone purged', async () => await purged() >= 1 ? true : undefined, 30_000, 250)
  t.equal(await purged(), 1, 'exactly the one deleted tag')
  const kept = await authFetch(`${n.url}/v2/team/app/manifests/kept`, c.credentials, { headers: { accept: img.mediaType } })
  t.equal(kept.status, 200, 'the live tag still resolves')
  const gone = await authFetch(`${n.url}/v2/team/app/manifests/gone`, c.credentials, { headers: { accept: img.mediaType } })
  t.equal(gone.status, 404, 'the deleted one stays deleted')
})
