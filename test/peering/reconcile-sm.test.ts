/**
 * Continuous reconciliation on its own (issue 11, delivery): the summary hashes and the diff
 * that decides the repairs (cluster/peering/summary.ts), and the commands that apply them and
 * trim the feed (SiteRepair, SiteTrimFeed), on two in-process "sites" (state machines).
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../../cluster/metadata/queries.js'
import { PeeringQueries } from '../../cluster/peering/queries.js'
import { BUCKETS, bucketOf, childrenFirst, diffRepo, repoHash, repairs, summarize, type RepoView } from '../../cluster/peering/summary.js'
import type { PeeringRecord, PeeringRules, ShippedChange } from '../../cluster/peering/model.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { D1, M, MT, PEER, SITE_A, SITE_B, body } from './fixtures.js'

const ALL: PeeringRules = { repos: [], direction: 'pull', deletes: false, access: false }

interface Site { id: string; sm: MetadataStateMachine; q: MetadataQueries; pq: PeeringQueries }

async function ok (s: Site, command: Command, at?: number): Promise<any> {
  const r = await s.sm.apply({ command, ...(at !== undefined ? { at } : {}) })
  if (!r.ok) throw new Error(`${command.type}: ${r.code} ${r.message}`)
  return r.value
}

async function site (id: string, other: string, deletes = false): Promise<Site> {
  const kv = new MemoryKV()
  await kv.open()
  const s: Site = { id, sm: new MetadataStateMachine(kv, { sync: false }), q: new MetadataQueries(kv), pq: new PeeringQueries(kv) }
  await ok(s, { type: 'InitCluster', clusterId: id, secret: 'x', at: 1 })
  const p: PeeringRecord = { name: 'other', site: other, members: [{ peerId: PEER, addrs: [] }], rules: { ...ALL, deletes }, initiator: id === SITE_B, createdAt: 1, updatedAt: 1 }
  await ok(s, { type: 'PutSitePeering', peering: p })
  return s
}

async function push (s: Site, repo: string, n: number, tags: string[], at: number): Promise<void> {
  await ok(s, { type: 'LinkBlob', repo, digest: D1, size: 7, at })
  await ok(s, { type: 'AddHolder', digest: D1, size: 7, peerId: PEER })
  await ok(s, { type: 'PutManifest', repo, digest: M(n), body: body(n), mediaType: MT, tags, blobs: [D1], manifests: [], at })
}

/** What the sender's `manifests` answer holds (cluster/peering/reconcile.ts). */
async function puts (from: Site, repo: string, digests: string[]): Promise<Array<Extract<ShippedChange, { op: 'put' }>>> {
  const out: Array<Extract<ShippedChange, { op: 'put' }>> = []
  for (const d of digests) {
    const rec = (await from.q.manifest(repo, d))!
    out.push({ seq: 0, at: rec.at, op: 'put', repo, digest: d, tags: [], body: Buffer.from((await from.q.manifestBody(repo, d))!).toString('base64'), mediaType: rec.mediaType, blobs: rec.blobs, sizes: { [D1]: 7 }, manifests: rec.manifests, origin: from.id })
  }
  return out
}

/** One reconciliation of `to` with `from`, as the Reconciler does it (without the wire): the repos compared and the repairs' result. */
async function reconcile (to: Site, from: Site, rules: PeeringRules, at: number): Promise<{ compared: string[]; result: Array<Record<string, number>> }> {
  const [theirs, mine] = [await from.pq.summaries.summary(rules), await to.pq.summaries.summary(rules)]
  if (theirs.root === mine.root) return { compared: [], result: [] }
  const buckets = [...Array(BUCKETS).keys()].filter((i) => theirs.buckets[i] !== mine.buckets[i])
  const names = new Set([...theirs.repos.keys(), ...mine.repos.keys()].filter((r) => buckets.includes(bucketOf(r)) && theirs.repos.get(r) !== mine.repos.get(r)))
  const result: Array<Record<string, number>> = []
  for (const repo of [...names].sort()) {
    const d = diffRepo(from.id, await to.pq.summaries.view(repo, rules), await from.pq.summaries.view(repo, rules), rules.deletes)
    if (repairs(d) === 0) continue
    // The receiver makes the blobs durable here and records them held before it applies (SiteReceiver.fetchBlobs).
    if (d.fetch.length > 0) await ok(to, { type: 'AddHolder', digest: D1, size: 7, peerId: PEER })
    result.push(await ok(to, { type: 'SiteRepair', name: 'other', origin: from.id, manifests: await puts(from, repo, d.fetch), tags: d.tags.map((x) => ({ repo, ...x })), untags: d.untags.map((x) => ({ repo, ...x })), at }))
  }
  return { compared: [...names].sort(), result }
}

t.test('summary hashes: content only, one differing repository changes only its bucket and the root', async (t) => {
  const v = (tags: Record<string, string>, manifests: string[], s = SITE_A): RepoView => ({ tags: Object.fromEntries(Object.entries(tags).map(([k, d]) => [k, { digest: d, v: { l: 5, c: 0, s } }])), tombstones: {}, manifests })
  t.equal(repoHash(v({ a: M(1) }, [M(1)])), repoHash(v({ a: M(1) }, [M(1)], SITE_B)), 'versions do not enter the hash: the same images hash the same whatever path they took')
  t.not(repoHash(v({ a: M(1) }, [M(1), M(2)])), repoHash(v({ a: M(1) }, [M(1)])), 'an extra manifest changes it')
  t.not(repoHash(v({ a: M(2) }, [M(1), M(2)])), repoHash(v({ a: M(1) }, [M(1), M(2)])), 'a tag on another digest changes it')
  t.equal(repoHash(v({}, [])), '', 'an empty repository has no hash (left out of the summary)')
  const repos = new Map(Array.from({ length: 200 }, (_, i) => [`team/r${i}`, repoHash(v({ a: M(1) }, [M(1)]))]))
  const one = summarize(repos)
  const changed = new Map(repos)
  changed.set('team/r7', repoHash(v({ a: M(2) }, [M(1), M(2)])))
  const two = summarize(changed)
  t.not(one.root, two.root)
  const differing = [...Array(BUCKETS).keys()].filter((i) => one.buckets[i] !== two.buckets[i])
  t.same(differing, [bucketOf('team/r7')], 'exactly the bucket of the changed repository differs')
  t.equal(summarize(new Map([...repos].reverse())).root, one.root, 'independent of order')
})

t.test('diffRepo: what is repaired and what is left alone', async (t) => {
  const A = SITE_A
  const theirs: RepoView = {
    tags: {
      moved: { digest: M(2), v: { l: 10, c: 0, s: A } },
      newer: { digest: M(2), v: { l: 10, c: 0, s: A } },
      foreign: { digest: M(2), v: { l: 10, c: 0, s: 'c0c0c0c0c0c0c0c0' } },
      missing: { digest: M(3), v: { l: 9, c: 0, s: A } },
      same: { digest: M(1), v: { l: 3, c: 0, s: A } },
      old: { digest: M(2) },
    },
    tombstones: { gone: { l: 12, c: 0, s: A }, stale: { l: 2, c: 0, s: A } },
    manifests: [M(1), M(2), M(3)],
  }
  const mine: RepoView = {
    tags: {
      moved: { digest: M(1), v: { l: 4, c: 0, s: A } },
      newer: { digest: M(1), v: { l: 11, c: 0, s: SITE_B } },
      foreign: { digest: M(1), v: { l: 4, c: 0, s: A } },
      same: { digest: M(1), v: { l: 3, c: 0, s: A } },
      local: { digest: M(4), v: { l: 20, c: 0, s: SITE_B } },
      gone: { digest: M(1), v: { l: 5, c: 0, s: A } },
      stale: { digest: M(1), v: { l: 6, c: 0, s: SITE_B } },
    },
    tombstones: {},
    manifests: [M(1), M(4)],
  }
  const d = diffRepo(A, mine, theirs, true)
  t.same(d.fetch, [M(2), M(3)], 'the manifests this site lacks are fetched')
  t.same(d.tags.map((x) => [x.tag, x.digest]), [['missing', M(3)], ['moved', M(2)], ['old', M(2)]], 'tags moved with a newer version of the sender\'s own (an unversioned one of the sender: the oldest version, which beats nothing here)')
  t.same(d.tags.find((x) => x.tag === 'moved')!.v, { l: 10, c: 0, s: A }, 'the sender\'s version is carried')
  t.same(d.untags, [{ tag: 'gone', v: { l: 12, c: 0, s: A } }], 'a tag deleted at the sender (its tombstone newer) goes, with --deletes')
  t.same(d.kept, { localManifests: 1, localTags: 1, newerHere: 2, foreign: 1 }, 'a local manifest and tag, a newer write here (tag and over an older tombstone), another site\'s change: left alone')
  const noDeletes = diffRepo(A, mine, theirs, false)
  t.same(noDeletes.untags, [], 'without --deletes no tag is removed')
  t.equal(noDeletes.kept.localTags, 3)
  t.equal(repairs(diffRepo(A, mine, mine, true)), 0, 'the same view: nothing to repair')
})

t.test('childrenFirst: an index after the children it references', async (t) => {
  const ms = [{ digest: 'i2', manifests: ['i1'] }, { digest: 'i1', manifests: ['c1', 'c2'] }, { digest: 'c2', manifests: [] }, { digest: 'c1', manifests: [] }]
  const order = childrenFirst(ms).map((m) => m.digest)
  t.ok(order.indexOf('c1') < order.indexOf('i1') && order.indexOf('c2') < order.indexOf('i1') && order.indexOf('i1') < order.indexOf('i2'), order.join(' '))
  t.equal(order.length, 4)
})

t.test('SiteRepair brings a receiver level with the sender, never over a newer tag here; local pushes cost no repair', async (t) => {
  const a = await site(SITE_A, SITE_B)
  const b = await site(SITE_B, SITE_A)
  for (let i = 0; i < 20; i++) await push(a, `team/r${i}`, 1, ['v1'], 1000 + i)
  await push(a, 'team/r3', 2, ['v2', 'latest'], 2000)
  // B misses everything (no feed shipped): a round compares every repository, repairs them all.
  const first = await reconcile(b, a, ALL, 3000)
  t.equal(first.compared.length, 20)
  t.same(first.result.reduce((s, r) => s + r.manifests!, 0), 21, 'every manifest fetched')
  t.same(first.result.reduce((s, r) => s + r.tags!, 0), 22, 'every tag set')
  t.equal((await b.pq.summaries.summary(ALL)).root, (await a.pq.summaries.summary(ALL)).root, 'the sites agree')
  t.same(await b.pq.tagVersion('team/r3', 'latest'), await a.pq.tagVersion('team/r3', 'latest'), 'with the sender\'s version')
  t.equal(await b.pq.head(), 0, 'repairs never enter the receiver\'s feed (nothing is shipped back or forwarded)')

  // A moves one tag; B moved the same tag later: B's write stands. Another tag, moved at A only, is repaired.
  await push(a, 'team/r5', 3, ['v1', 'v9'], 4000)
  await push(b, 'team/r5', 4, ['v1'], 5000)
  const second = await reconcile(b, a, ALL, 6000)
  t.same(second.compared, ['team/r5'], 'only the changed repository is looked at')
  t.same(second.result, [{ manifests: 1, tags: 1, untags: 0, superseded: 0, failed: 0, errors: [] }], 'A\'s manifest and its other tag come')
  t.equal(await b.q.resolveTag('team/r5', 'v1'), M(4), 'B\'s newer write of v1 stands')
  t.equal(await b.q.resolveTag('team/r5', 'v9'), M(3))
  // A SiteRepair carrying an older version than the tag's here is applied without effect.
  const stale = await ok(b, { type: 'SiteRepair', name: 'other', origin: SITE_A, manifests: [], tags: [{ repo: 'team/r5', tag: 'v1', digest: M(3), v: { l: 4000, c: 0, s: SITE_A } }], untags: [], at: 7000 })
  t.same([stale.tags, stale.superseded], [0, 1])
  t.equal(await b.q.resolveTag('team/r5', 'v1'), M(4))
  const third = await reconcile(b, a, ALL, 8000)
  t.same(third.result, [], 'the difference that is left (B\'s newer tag, its local manifest) repairs nothing')
  // A repair with another site's version is refused (a site repairs its own changes only).
  const r = await b.sm.apply({ command: { type: 'SiteRepair', name: 'other', origin: SITE_A, manifests: [], tags: [{ repo: 'team/r5', tag: 'x', digest: M(3), v: { l: 9000, c: 0, s: SITE_B } }], untags: [], at: 9000 } })
  t.same(r.ok && (r.value as { failed: number }).failed, 1, 'counted as failed')
  t.equal(await b.q.resolveTag('team/r5', 'x'), undefined)
  // A manifest whose blobs are not durable here is refused: visible only once they are.
  const D2 = 'sha256:' + 'a'.repeat(64)
  const unheld = await ok(b, { type: 'SiteRepair', name: 'other', origin: SITE_A, manifests: [{ seq: 0, at: 1, op: 'put', repo: 'team/new', digest: M(7), tags: [], body: body(7), mediaType: MT, blobs: [D2], sizes: { [D2]: 3 }, manifests: [], origin: SITE_A }], tags: [], untags: [], at: 9500 })
  t.same([unheld.manifests, unheld.failed], [0, 1])
  t.equal(await b.q.manifest('team/new', M(7)), undefined, 'not visible')
})

t.test('with --deletes a tag deleted at the sender goes, by its tombstone; a local tag never known there stays', async (t) => {
  const rules = { ...ALL, deletes: true }
  const a = await site(SITE_A, SITE_B, true)
  const b = await site(SITE_B, SITE_A, true)
  await push(a, 'd/r', 1, ['keep', 'drop'], 1000)
  await reconcile(b, a, rules, 2000)
  await push(b, 'd/r', 2, ['mine'], 2500)
  await ok(a, { type: 'DeleteTag', repo: 'd/r', tag: 'drop' }, 3000)
  const r = await reconcile(b, a, rules, 4000)
  t.same(r.result.map((x) => x.untags), [1])
  t.equal(await b.q.resolveTag('d/r', 'drop'), undefined, 'the deleted tag went')
  t.equal(await b.q.resolveTag('d/r', 'mine'), M(2), 'B\'s own tag stayed')
  t.equal((await b.pq.tagVersion('d/r', 'drop'))?.deleted, true, 'the tombstone is recorded here too')
})

t.test('SiteTrimFeed forgets the feed through a point, never past the head, in bounded batches', async (t) => {
  const a = await site(SITE_A, SITE_B)
  for (let i = 0; i < 10; i++) await push(a, 'f/r', i % 9 + 1, [`t${i}`], 1000 + i)
  const head = await a.pq.head()
  t.ok(head >= 10)
  t.same(await ok(a, { type: 'SiteTrimFeed', through: 4, at: 2000 }), { trimmed: 4 })
  t.equal(await a.pq.trimmed(), 4)
  t.equal((await a.pq.feedAfter(0, 100))[0]!.seq, 5, 'the entries through 4 are gone')
  t.same(await ok(a, { type: 'SiteTrimFeed', through: 2, at: 2001 }), { trimmed: 4 }, 'never moves back')
  t.same(await ok(a, { type: 'SiteTrimFeed', through: head + 100, at: 2002 }), { trimmed: head }, 'clamped to the head')
  t.same(await a.pq.feedAfter(0, 100), [])
  await push(a, 'f/r', 1, ['again'], 3000)
  t.equal((await a.pq.feedAfter(head, 100))[0]!.seq, head + 1, 'the feed goes on numbering after the trim')
  const bad = await a.sm.apply({ command: { type: 'SiteTrimFeed', through: -1, at: 1 } })
  t.equal(bad.ok, false)
})

t.test('wellFormedPut: only a manifest whose body hashes to its digest, with well-formed references, is proposed', async (t) => {
  const { wellFormedPut } = await import('../../cluster/peering/reconcile.js')
  const raw = Buffer.from('{"schemaVersion":2}')
  const digest = 'sha256:' + (await import('node:crypto')).createHash('sha256').update(raw).digest('hex')
  const good = { seq: 0, at: 1, op: 'put' as const, repo: 'r', digest, tags: [], body: raw.toString('base64'), mediaType: MT, blobs: [D1], sizes: {}, manifests: [] }
  t.ok(wellFormedPut(good))
  t.notOk(wellFormedPut({ ...good, body: Buffer.from('{"schemaVersion":3}').toString('base64') }), 'another body')
  t.notOk(wellFormedPut({ ...good, blobs: ['../etc'] }), 'a bad blob reference')
  t.notOk(wellFormedPut({ ...good, manifests: 'x' as unknown as string[] }), 'not a list')
})
