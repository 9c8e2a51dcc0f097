/**
 * Continuous reconciliation and feed trimming (issue 11, delivery: "neither a missed event
 * nor a partition of hours leaves the sites apart for good"), on two single-node sites:
 *   - a missed event: B re-peers A with wider rules; its cursor (kept across the re-peering)
 *     is past the entries the old rules filtered out, so the feed never brings them. B's
 *     periodic reconciliation finds the one repository that differs by summary hashes,
 *     compares only it, and repairs it;
 *   - a local push at B (a new tag, and a newer write of a tag that came from A) is left
 *     alone, and costs no repair: once known, rounds end at the root hash;
 *   - B, down while A's feed is trimmed past B's cursor (A keeps a tail of 3 entries), comes
 *     back with periodic reconciliation off: told its cursor is behind the trimmed feed, it
 *     reconciles, then streams on from the trimmed point.
 */
import t from 'tap'
import { checkImage, pushHttp, runCli, startTestCluster, waitFor } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'
import { caughtUp, manifestAt, sitePeer, siteList, siteStatus, siteToken, type SiteStatusDoc } from '../helpers/sites.js'

const metric = (text: string, name: string, labels: string): number => {
  const line = text.split('\n').find((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && labels.split(',').every((x) => l.includes(x)))
  return line === undefined ? 0 : Number(line.split(' ').at(-1))
}

t.test('reconciliation repairs what the feed missed, leaves local pushes alone, and catches up behind a trimmed feed', async (t) => {
  // A keeps a short tail of its feed; B reconciles every second.
  const a = await startTestCluster(t, { size: 1, env: { FLOTILLA_SITES_FEED_RETAIN: '3' } })
  const b = await startTestCluster(t, { size: 1, env: { FLOTILLA_SITES_RECONCILE_INTERVAL: '1s' } })
  const [A, B] = [a.nodes[0]!, b.nodes[0]!]
  const admin = (c: typeof a): string => `admin:${c.credentials.password}`

  // B receives keep/** only; A takes pushes in keep/app and other/app.
  t.equal((await sitePeer(b, A.url, await siteToken(a), 'site-a', ['--repos', 'keep/**', '--as', 'site-b'])).code, 0)
  const [kept, missed] = [image(), image({ layers: 2 })]
  t.equal((await pushHttp(A.url, a.credentials, 'keep/app', kept, 'v1')).outcome, 'ok')
  t.equal((await pushHttp(A.url, a.credentials, 'other/app', missed, 'v1')).outcome, 'ok')
  await caughtUp(b, 'site-a', a)
  t.equal((await manifestAt(b, B, 'other/app', 'v1')).status, 404, 'other/app was filtered out')

  await t.test('a missed event is repaired: only the differing repository is compared', async (t) => {
    // Re-peer with every repository: the cursor stays where it was (no duplicates), past other/app's entry.
    for (const [c, name] of [[b, 'site-a'], [a, 'site-b']] as const) {
      const rm = await runCli(['site', 'remove', name, '--node', c.nodes[0]!.url, '--user', admin(c)])
      t.equal(rm.code, 0, rm.stderr)
    }
    t.equal((await sitePeer(b, A.url, await siteToken(a), 'site-a', ['--as', 'site-b'])).code, 0)
    const st = await waitFor('reconciliation to repair other/app at B', async () => {
      const s = await siteStatus(b, 'site-a')
      return s.reconciliation?.lastRepair != null ? s : undefined
    }, 60_000, 200)
    t.same(await checkImage(B.url, b.credentials, 'other/app', missed, 'v1'), [], 'other/app:v1 pulls at B, blobs and all')
    t.ok(st.cursor!.seq >= 2, 'the cursor was past the missed entry all along')
    const r = st.reconciliation!.lastRepair!
    t.same([r.repos, r.reposCompared, r.repaired], [2, 1, { manifests: 1, tags: 1, untags: 0 }], 'of the 2 repositories A ships, only the one whose hash differed was compared')
    t.ok(r.requests <= 5, `a few requests, not a listing (${r.requests}: root, buckets, repositories of 1 bucket, 1 view, 1 manifest)`)
    const m = await (await fetch(`${B.url}/metrics`)).text()
    t.ok(metric(m, 'flotilla_site_reconcile_repairs_total', 'site="site-a",kind="manifest"') >= 1)
    t.ok(metric(m, 'flotilla_site_reconcile_rounds_total', 'site="site-a",outcome="repaired"') >= 1)
    const cli = await runCli(['site', 'status', 'site-a', '--node', B.url, '--user', admin(b)])
    t.equal(cli.code, 0, cli.stderr)
    t.match(cli.stdout, /reconciled\s+\S+: .*1 manifests, 1 tags, 0 tag deletes repaired/, 'site status shows the last reconciliation and what it repaired')
  })

  await t.test('a local push at B, and a newer local write of a tag from A, are left alone at no recurring cost', async (t) => {
    const [local, mine] = [image(), image()]
    t.equal((await pushHttp(B.url, b.credentials, 'keep/app', local, 'local')).outcome, 'ok')
    t.equal((await pushHttp(B.url, b.credentials, 'keep/app', mine, 'v1')).outcome, 'ok', 'B writes keep/app:v1 after A did (a newer version)')
    const before = await siteStatus(b, 'site-a')
    // Rounds that saw B's pushes (keep/app compared once), then rounds that end at the root.
    const settled = await waitFor('rounds after B\'s pushes to end at the root hash', async () => {
      const s = await siteStatus(b, 'site-a')
      return s.reconciliation!.rounds >= before.reconciliation!.rounds + 2 && s.reconciliation!.last?.inSync === true ? s : undefined
    }, 30_000, 200)
    t.same(settled.reconciliation!.repaired, before.reconciliation!.repaired, 'nothing repaired')
    const d0 = metric(await (await fetch(`${B.url}/metrics`)).text(), 'flotilla_site_reconcile_differences_total', 'site="site-a"')
    await waitFor('two more rounds', async () => (await siteStatus(b, 'site-a')).reconciliation!.rounds >= settled.reconciliation!.rounds + 2 ? true : undefined, 30_000, 200)
    const after = await siteStatus(b, 'site-a')
    t.same([after.reconciliation!.last!.inSync, after.reconciliation!.last!.reposCompared, after.reconciliation!.last!.requests], [true, 0, 1], 'a known difference costs one request (the root) a round')
    t.equal(metric(await (await fetch(`${B.url}/metrics`)).text(), 'flotilla_site_reconcile_differences_total', 'site="site-a"'), d0, 'no repository compared again')
    t.equal((await manifestAt(b, B, 'keep/app', 'local')).digest, local.digest, 'B\'s local tag stays')
    t.equal((await manifestAt(b, B, 'keep/app', 'v1')).digest, mine.digest, 'B\'s newer keep/app:v1 stands (federated tag version)')
    t.equal((await manifestAt(a, A, 'keep/app', 'v1')).digest, kept.digest, 'and nothing went back to A (pull)')
  })

  await t.test('B, behind A\'s trimmed feed, reconciles and resumes', async (t) => {
    await B.kill('SIGKILL')
    const imgs = Array.from({ length: 6 }, () => image())
    for (const [i, img] of imgs.entries()) t.equal((await pushHttp(A.url, a.credentials, `late/r${i % 3}`, img, `t${i}`)).outcome, 'ok')
    const cursor = (await siteStatus(a, 'site-b')).cursor
    t.equal(cursor, null, 'A does not receive from B')
    const head = (await siteList(a)).head
    // A keeps 3 entries: its feed is trimmed past B's cursor though B never acknowledged them.
    const trimmed = await waitFor('A to trim its feed past B\'s cursor', async () => {
      const n = metric(await (await fetch(`${A.url}/metrics`)).text(), 'flotilla_site_feed_trimmed_seq', '')
      return n >= head - 3 ? n : undefined
    }, 30_000, 200)
    // Periodic reconciliation off: only the trimmed-feed path can bring the images.
    const B2 = await b.restart(B, { env: { FLOTILLA_SITES_RECONCILE_INTERVAL: '0' } })
    const st: SiteStatusDoc = await caughtUp(b, 'site-a', a, 60_000, B2)
    t.ok(st.cursor!.seq >= head, `B's cursor moved from behind ${trimmed} to A's head ${head}`)
    for (const [i, img] of imgs.entries()) t.same(await checkImage(B2.url, b.credentials, `late/r${i % 3}`, img, `t${i}`), [], `late/r${i % 3}:t${i} at B`)
    t.ok(st.reconciliation!.rounds >= 1 && st.reconciliation!.repaired.manifests >= 1, `reconciled: ${JSON.stringify(st.reconciliation!.repaired)}`)
    t.same(st.failures, [], 'nothing refused')
  })
})
