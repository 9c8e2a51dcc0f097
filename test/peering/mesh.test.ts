/**
 * A mesh of three single-node sites, every pair peered `--direction both` (issue 11: events
 * carry their origin site, so a mesh has no loops and no storms), and a fourth site peered
 * with one of them `--direction push`:
 *   - a push at any mesh site reaches the other two exactly once: each site's cursor for each
 *     origin counts one change applied, and no site's feed grows with what it received (a
 *     site ships only its own changes, so nothing comes back or goes round);
 *   - push, as seen from the site that ran `site peer` (D): D's images go to A, nothing of A
 *     comes to D, and A does not forward D's images to B and C (no forwarding: a site's
 *     images reach the sites peered with it directly).
 */
import t from 'tap'
import { authFetch, checkImage, pushHttp, startTestCluster, waitFor, type TestCluster } from '../helpers/cluster.js'
import { image, type Image } from '../helpers/oci.js'
import { caughtUp, manifestAt, siteList, siteStatus } from '../helpers/sites.js'

const [a, b, c, d] = await Promise.all([1, 2, 3, 4].map(async () => await startTestCluster(t, { size: 1 })))
const sites = { a: a!, b: b!, c: c! } as Record<'a' | 'b' | 'c', TestCluster>
const names = ['a', 'b', 'c'] as const

async function push (s: TestCluster, repo: string, img: Image, tag: string): Promise<void> {
  const r = await pushHttp(s.nodes[0]!.url, s.credentials, repo, img, tag)
  if (r.outcome !== 'ok') throw new Error(`push ${repo}:${tag}: ${JSON.stringify(r)}`)
}

/**
 * `x` peers with `y` (as `flotilla site peer` does, through the admin API: the CLI itself is
 * covered by two-sites.test.ts, and each CLI run costs a process start): each site names the
 * other by its letter.
 */
async function peer (x: 'a' | 'b' | 'c' | 'd', y: 'a' | 'b' | 'c', direction: string): Promise<void> {
  const [sx, sy] = [x === 'd' ? d! : sites[x], sites[y]]
  const tok = await authFetch(`${sy.nodes[0]!.url}/api/v1/sites/tokens`, sy.credentials, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  if (tok.status !== 201) throw new Error(`token at ${y}: ${tok.status} ${await tok.text()}`)
  const { token } = await tok.json() as { token: string }
  const res = await authFetch(`${sx.nodes[0]!.url}/api/v1/sites`, sx.credentials, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ address: sy.nodes[0]!.url, token, name: y, as: x, direction }) }, 30_000)
  if (res.status !== 201) throw new Error(`peering ${x} with ${y}: ${res.status} ${await res.text()}`)
}

const metric = async (s: TestCluster, re: RegExp): Promise<number> => {
  const text = await (await fetch(`${s.nodes[0]!.url}/metrics`)).text()
  return [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0)
}

/** Each site's feed head before the tests' pushes. */
const base: Record<string, number> = {}

t.test('a mesh of 3 sites: a push at any site reaches the other two exactly once', async (t) => {
  await Promise.all([peer('b', 'a', 'both'), peer('c', 'a', 'both'), peer('c', 'b', 'both')])
  // Each feed already holds the site's own access changes (its first admin): counted from here.
  for (const x of names) base[x] = (await siteList(sites[x])).head
  const imgs = { a: image(), b: image(), c: image() }
  await Promise.all(names.map(async (x) => await push(sites[x], `mesh/${x}`, imgs[x], 'v1')))
  // Every site applied every other's feed, as it stands after the three pushes.
  await Promise.all(names.flatMap((x) => names.filter((y) => y !== x).map(async (y) => await caughtUp(sites[x], y, sites[y], 60_000))))
  for (const x of names) {
    for (const y of names) t.same(await checkImage(sites[x].nodes[0]!.url, sites[x].credentials, `mesh/${y}`, imgs[y], 'v1'), [], `mesh/${y}:v1 (pushed at ${y}) is at ${x}`)
    for (const y of names.filter((n) => n !== x)) {
      const st = await siteStatus(sites[x], y)
      t.equal(st.cursor!.applied, 1, `${x} applied ${y}'s one change once`)
    }
    t.equal((await siteList(sites[x])).head, base[x]! + 1, `${x}'s feed holds its own push only: nothing received is shipped on`)
    t.equal(await metric(sites[x], /flotilla_site_changes_applied_total\{site="[abc]"\} (\d+)/g), 2, `${x}: two changes applied in all (one from each other site)`)
    t.equal(await metric(sites[x], /flotilla_site_changes_skipped_total\{[^}]*\} (\d+)/g), 0, `${x}: nothing passed over`)
  }
  // A second round, after the mesh settled: still exactly once each (no echo arrives later).
  const again = image()
  await push(sites.b, 'mesh/b', again, 'v2')
  await Promise.all([caughtUp(sites.a, 'b', sites.b), caughtUp(sites.c, 'b', sites.b), caughtUp(sites.b, 'a', sites.a), caughtUp(sites.b, 'c', sites.c)])
  for (const x of ['a', 'c'] as const) {
    t.same(await checkImage(sites[x].nodes[0]!.url, sites[x].credentials, 'mesh/b', again, 'v2'), [], `mesh/b:v2 at ${x}`)
    t.equal((await siteStatus(sites[x], 'b')).cursor!.applied, 2, `${x} applied b's two changes, once each`)
  }
  t.same([(await siteList(sites.a)).head, (await siteList(sites.c)).head], [base.a! + 1, base.c! + 1], 'a and c shipped nothing on')
})

t.test('push, as seen from the site that peers: its images go to the other site, nothing comes back, nothing is forwarded', async (t) => {
  await peer('d', 'a', 'push')
  const atD = await siteStatus(d!, 'a')
  const atA = await siteStatus(sites.a, 'd')
  t.same([atD.receiving, atD.sending, atD.cursor], [false, true, null], 'D sends and does not receive')
  t.same([atA.receiving, atA.sending], [true, false], 'A receives from D and does not send')
  const fromD = image()
  await push(d!, 'push/d', fromD, 'v1')
  const st = await caughtUp(sites.a, 'd', d!, 60_000)
  t.same(await checkImage(sites.a.nodes[0]!.url, sites.a.credentials, 'push/d', fromD, 'v1'), [], 'D\'s push reached A')
  t.equal(st.cursor!.applied, 1, 'applied once at A')
  // A takes a push after D peered: it goes to B and C (the mesh), and never to D.
  const fromA = image()
  await push(sites.a, 'push/a', fromA, 'v1')
  await Promise.all([caughtUp(sites.b, 'a', sites.a), caughtUp(sites.c, 'a', sites.a)])
  t.equal((await manifestAt(sites.b, sites.b.nodes[0]!, 'push/a', 'v1')).status, 200, 'A\'s push reached B (the reference point in time)')
  for (const repo of ['push/a', 'mesh/a']) t.equal((await manifestAt(d!, d!.nodes[0]!, repo, 'v1')).status, 404, `${repo} (A's) did not come to D`)
  t.equal(await metric(d!, /flotilla_site_changes_applied_total\{[^}]*\} (\d+)/g), 0, 'D applied nothing')
  t.equal((await siteStatus(d!, 'a')).lastServed !== null, true, 'A pulled from D')
  // D's image is A's by receipt, not A's own change: A does not ship it to B and C.
  for (const x of ['b', 'c'] as const) t.equal((await manifestAt(sites[x], sites[x].nodes[0]!, 'push/d', 'v1')).status, 404, `push/d is not forwarded to ${x}`)
  t.equal((await siteList(sites.a)).head, base.a! + 2, 'A\'s feed holds its own two pushes, not D\'s')
  // The feed head lag at D's peer A is 0, and A is connected to D.
  await waitFor('A connected to D', async () => (await siteStatus(sites.a, 'd')).connected === true ? true : undefined)
})
