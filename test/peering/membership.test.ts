/**
 * A site's members change, and its peer learns of it over the link (issue 11: "when a node
 * joins or leaves a site, its peers learn of it over the link"): each pull names the asking
 * site's members and each answer the answering site's; each site records the other's through
 * its log, so a node that joins either site is pinned at the other, and can then ship or serve.
 */
import t from 'tap'
import { pushHttp, startTestCluster, waitFor, checkImage } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'
import { caughtUp, sitePeer, siteList, siteStatus, siteToken } from '../helpers/sites.js'

t.test('a node joining the receiving site, then the sending site, is pinned at the other', async (t) => {
  const a = await startTestCluster(t, { size: 1 })
  const b = await startTestCluster(t, { size: 1 })
  t.equal((await sitePeer(b, a.nodes[0]!.url, await siteToken(a), 'site-a')).code, 0)
  const b2 = await b.join()
  await waitFor('A to pin B\'s new member', async () => {
    const ms = (await siteList(a)).peerings[0]!.members.map((m) => m.peerId)
    return ms.includes(b2.peerId) && ms.length === 2 ? true : undefined
  }, 60_000, 200)
  t.pass('A pinned the node that joined B')
  const a2 = await a.join()
  await waitFor('B to pin A\'s new member', async () => {
    const ms = (await siteStatus(b, 'site-a')).members.map((m) => m.peerId)
    return ms.includes(a2.peerId) && ms.length === 2 ? true : undefined
  }, 60_000, 200)
  t.pass('B pinned the node that joined A')
  // Every member of either site can now take part: the flow goes on, read at B's new node.
  const img = image({ layers: 2 })
  t.equal((await pushHttp(a2.url, a.credentials, 'grown/app', img, 'v1')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  t.same(await checkImage(b2.url, b.credentials, 'grown/app', img, 'v1'), [])
})
