/**
 * The link between two sites goes where `sites.advertise` says (issue 11: "tests set it to
 * point through their proxy"): site A advertises a userspace TCP proxy (test/helpers/tcp-proxy.ts)
 * in front of its libp2p port, with latency added. Cutting the proxy shows at B as
 * disconnected with the last error and its time; pushes at A meanwhile arrive once the link
 * heals (B reconnects with backoff and resumes from its cursor).
 */
import t from 'tap'
import { checkImage, pushHttp, startTestCluster, waitFor } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'
import { startTcpProxy } from '../helpers/tcp-proxy.js'
import { caughtUp, sitePeer, siteList, siteStatus, siteToken } from '../helpers/sites.js'

t.test('through a proxy A advertises: cut, then heal; nothing acknowledged at A is lost', async (t) => {
  // The proxy listens first (A advertises it from its start), and points at A's libp2p port once A runs.
  const proxy = await startTcpProxy({ target: { host: '127.0.0.1', port: 0 }, latencyMs: 5 })
  t.teardown(async () => { await proxy.close() })
  const a = await startTestCluster(t, { size: 1, env: { FLOTILLA_SITES_ADVERTISE: `127.0.0.1:${proxy.port}` } })
  proxy.retarget({ host: '127.0.0.1', port: a.nodes[0]!.p2pPort })
  const b = await startTestCluster(t, { size: 1 })
  t.equal((await sitePeer(b, a.nodes[0]!.url, await siteToken(a), 'site-a')).code, 0)
  const st = await siteStatus(b, 'site-a')
  t.same(st.members[0]!.addrs, [`/ip4/127.0.0.1/tcp/${proxy.port}`], 'B pinned the address A advertises for other sites')

  const first = image({ layers: 2 })
  t.equal((await pushHttp(a.nodes[0]!.url, a.credentials, 'wan/app', first, 'v1')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  t.same(await checkImage(b.nodes[0]!.url, b.credentials, 'wan/app', first, 'v1'), [])
  t.ok(proxy.bytes() > 0, 'the bytes went through the proxy')

  proxy.cut()
  const during = [image(), image()]
  for (const [i, img] of during.entries()) t.equal((await pushHttp(a.nodes[0]!.url, a.credentials, 'wan/app', img, `cut${i}`)).outcome, 'ok', 'A takes pushes while the link is cut')
  const down = await waitFor('B to see the link down', async () => {
    const s = await siteStatus(b, 'site-a')
    return s.connected === false && s.lastError !== null ? s : undefined
  }, 60_000, 200)
  t.match(down.lastError!.message, /cannot reach|closed|reset|refused|abort/i, `the last error says why: ${down.lastError!.message}`)
  t.ok(Date.parse(down.lastError!.at) > 0, 'and when')
  const metrics = await (await fetch(`${b.nodes[0]!.url}/metrics`)).text()
  t.match(metrics, /flotilla_site_connected\{site="site-a"\} 0/)
  t.match(metrics, /flotilla_site_errors_total\{site="site-a"\} [1-9]/)

  proxy.heal()
  const back = await caughtUp(b, 'site-a', a, 90_000)
  t.equal(back.connected, true)
  for (const [i, img] of during.entries()) t.same(await checkImage(b.nodes[0]!.url, b.credentials, 'wan/app', img, `cut${i}`), [], `wan/app:cut${i}, pushed during the cut, arrived after it`)
  t.equal(back.cursor!.applied, 3, 'each change applied once')
  t.equal((await siteList(a)).peerings[0]!.sending, true)
})
