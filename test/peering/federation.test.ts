/**
 * Federated repositories (issue 11): two single-node sites peered with `--direction both`,
 * each advertising a userspace TCP proxy in front of its libp2p port
 * (test/helpers/tcp-proxy.ts), so the test can cut the link both ways and heal it.
 *   - a push at either site reaches the other;
 *   - while the link is cut both sites take pushes, move the same tags to different
 *     manifests, and delete tags the other moves: once healed, both sites hold every
 *     acknowledged manifest, and every tag points at the same digest at both, settled by the
 *     documented rule (highest version wins, deletes included; the version is the hybrid
 *     logical clock of the change, then the site id): here, the change made later.
 */
import t from 'tap'
import { authFetch, checkImage, pushHttp, startTestCluster, type TestCluster } from '../helpers/cluster.js'
import { image, type Image } from '../helpers/oci.js'
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js'
import { caughtUp, manifestAt, sitePeer, siteStatus, siteToken } from '../helpers/sites.js'

/** A single-node site that other sites reach through its own proxy. */
async function proxiedSite (): Promise<{ site: TestCluster; proxy: TcpProxy }> {
  const proxy = await startTcpProxy({ target: { host: '127.0.0.1', port: 0 } })
  t.teardown(async () => { await proxy.close() })
  const site = await startTestCluster(t, { size: 1, env: { FLOTILLA_SITES_ADVERTISE: `127.0.0.1:${proxy.port}` } })
  proxy.retarget({ host: '127.0.0.1', port: site.nodes[0]!.p2pPort })
  return { site, proxy }
}

const [{ site: a, proxy: pa }, { site: b, proxy: pb }] = await Promise.all([proxiedSite(), proxiedSite()])
const A = a.nodes[0]!
const B = b.nodes[0]!

async function push (c: TestCluster, repo: string, img: Image, tag: string): Promise<void> {
  const r = await pushHttp(c.nodes[0]!.url, c.credentials, repo, img, tag)
  if (r.outcome !== 'ok') throw new Error(`push ${repo}:${tag}: ${JSON.stringify(r)}`)
}

async function deleteTag (c: TestCluster, repo: string, tag: string): Promise<void> {
  const res = await authFetch(`${c.nodes[0]!.url}/v2/${repo}/manifests/${tag}`, c.credentials, { method: 'DELETE' })
  await res.arrayBuffer()
  if (res.status !== 202) throw new Error(`DELETE ${repo}:${tag} answered ${res.status}`)
}

/** Both directions caught up: each site applied the other's whole feed as it is now. */
async function converged (): Promise<void> {
  await Promise.all([caughtUp(b, 'site-a', a, 90_000), caughtUp(a, 'site-b', b, 90_000)])
}

t.test('both: a push at either site reaches the other', async (t) => {
  const res = await sitePeer(b, A.url, await siteToken(a), 'site-a', ['--direction', 'both', '--deletes', '--as', 'site-b'])
  t.equal(res.code, 0, res.stderr)
  t.match(res.stdout, /as site-a \(both/)
  const [atB, atA] = [await siteStatus(b, 'site-a'), await siteStatus(a, 'site-b')]
  t.same([atB.receiving, atB.sending, atA.receiving, atA.sending], [true, true, true, true], 'both: each site receives and sends')
  const [fromA, fromB] = [image(), image()]
  await push(a, 'fed/app', fromA, 'a1')
  await push(b, 'fed/app', fromB, 'b1')
  await converged()
  for (const c of [a, b]) {
    t.same(await checkImage(c.nodes[0]!.url, c.credentials, 'fed/app', fromA, 'a1'), [], `fed/app:a1 (pushed at A) at ${c === a ? 'A' : 'B'}`)
    t.same(await checkImage(c.nodes[0]!.url, c.credentials, 'fed/app', fromB, 'b1'), [], `fed/app:b1 (pushed at B) at ${c === a ? 'A' : 'B'}`)
  }
  // Received changes are not shipped back: each site applied exactly the other's one change.
  t.equal((await siteStatus(b, 'site-a')).cursor!.applied, 1)
  t.equal((await siteStatus(a, 'site-b')).cursor!.applied, 1)
})

t.test('the link cut while both sites take pushes and race on tags, then healed: both converge to the same tags, nothing acknowledged lost', async (t) => {
  const base = image()
  await push(a, 'fed/race', base, 'd')
  await push(a, 'fed/race', base, 'e')
  await converged()
  t.equal((await manifestAt(b, B, 'fed/race', 'e')).digest, base.digest, 'B has d and e before the cut')

  pa.cut()
  pb.cut()
  const img = { x: image(), y: image(), z: image(), w: image(), p: image(), q: image() }
  // Concurrent updates of one tag (each site unaware of the other's): the later one wins at both.
  await push(a, 'fed/app', img.x, 't')
  await push(b, 'fed/app', img.y, 't') // later: wins
  await push(b, 'fed/app', img.z, 'u')
  await push(a, 'fed/app', img.w, 'u') // later: wins
  // A delete racing an update: highest version wins, the delete included.
  await deleteTag(a, 'fed/race', 'd')
  await push(b, 'fed/race', img.p, 'd') // the update came later: d points at p at both
  await push(b, 'fed/race', img.q, 'e')
  await deleteTag(a, 'fed/race', 'e') // the delete came later: e is gone at both
  // More pushes at both sides while cut: all acknowledged, all must arrive.
  const more = { a: [image(), image(), image()], b: [image(), image(), image()] }
  for (const [i, m] of more.a.entries()) await push(a, 'fed/cut', m, `a${i}`)
  for (const [i, m] of more.b.entries()) await push(b, 'fed/cut', m, `b${i}`)
  // The premise: neither site saw the other's changes while cut.
  t.equal((await manifestAt(b, B, 'fed/app', img.x.digest)).status, 404, 'A\'s update had not reached B during the cut')
  t.equal((await manifestAt(a, A, 'fed/app', img.y.digest)).status, 404, 'B\'s update had not reached A during the cut')
  pa.heal()
  pb.heal()
  await converged()

  for (const [c, name, node] of [[a, 'A', A], [b, 'B', B]] as const) {
    t.equal((await manifestAt(c, node, 'fed/app', 't')).digest, img.y.digest, `${name}: fed/app:t is B's later update`)
    t.equal((await manifestAt(c, node, 'fed/app', 'u')).digest, img.w.digest, `${name}: fed/app:u is A's later update`)
    t.equal((await manifestAt(c, node, 'fed/race', 'd')).digest, img.p.digest, `${name}: fed/race:d, updated after it was deleted, points at the update`)
    t.equal((await manifestAt(c, node, 'fed/race', 'e')).status, 404, `${name}: fed/race:e, deleted after it was updated, is gone`)
    for (const [k, m] of Object.entries(img)) t.equal((await manifestAt(c, node, k === 'p' || k === 'q' ? 'fed/race' : 'fed/app', m.digest)).status, 200, `${name}: manifest ${k} is there by digest, winner or not`)
    for (const [i, m] of more.a.entries()) t.same(await checkImage(node.url, c.credentials, 'fed/cut', m, `a${i}`), [], `${name}: fed/cut:a${i} (acknowledged at A during the cut)`)
    for (const [i, m] of more.b.entries()) t.same(await checkImage(node.url, c.credentials, 'fed/cut', m, `b${i}`), [], `${name}: fed/cut:b${i} (acknowledged at B during the cut)`)
  }
  const [atB, atA] = [await siteStatus(b, 'site-a'), await siteStatus(a, 'site-b')]
  t.same([atB.failures, atA.failures], [[], []], 'nothing refused at either site')
  // The losing changes were applied without effect, and counted: 2 at each site (a tag update and a delete at B, two updates at A).
  for (const [c, name] of [[a, 'site-b'], [b, 'site-a']] as const) {
    const metrics = await (await fetch(`${c.nodes[0]!.url}/metrics`)).text()
    t.match(metrics, new RegExp(`flotilla_site_changes_skipped_total\\{site="${name}",reason="superseded"\\} 2\\n`), `${name}: two superseded changes counted`)
  }
})
