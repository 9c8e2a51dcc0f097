/**
 * Federated tags in the metadata state machine, on its own (issue 11, federated repositories):
 * the hybrid logical clock (cluster/peering/hlc.ts), and the rule that settles concurrent
 * changes of one tag at two sites: highest version (clock, then site id) wins, deletes
 * included. Two in-process "sites" (two state machines) make conflicting changes and then
 * exchange their feeds in either order: both end in the same state.
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../../cluster/metadata/queries.js'
import { PeeringQueries } from '../../cluster/peering/queries.js'
import { dumpState } from '../../cluster/metadata/snapshot.js'
import { compareVersions, merge, tick } from '../../cluster/peering/hlc.js'
import type { PeeringRecord, ShippedChange } from '../../cluster/peering/model.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { propertiesOf, userPropertiesOf } from '../../cluster/metadata/properties.js'
import { key } from '../../cluster/metadata/keys.js'
import { D1, M, MT, PEER, SITE_A, SITE_B, body } from './fixtures.js'


interface Site { id: string; sm: MetadataStateMachine; q: MetadataQueries; pq: PeeringQueries; kv: MemoryKV; other: string }

async function site (id: string, other: string): Promise<Site> {
  const kv = new MemoryKV()
  await kv.open()
  const s: Site = { id, other, kv, sm: new MetadataStateMachine(kv, { sync: false }), q: new MetadataQueries(kv), pq: new PeeringQueries(kv) }
  await ok(s, { type: 'InitCluster', clusterId: id, secret: 'x', at: 1 })
  const p: PeeringRecord = { name: 'other', site: other, members: [{ peerId: PEER, addrs: [] }], rules: { repos: [], direction: 'both', deletes: true, access: false }, initiator: id === SITE_B, createdAt: 1, updatedAt: 1 }
  await ok(s, { type: 'PutSitePeering', peering: p })
  // The blob is durable at both sites (the receiver makes it so before it applies a put).
  await ok(s, { type: 'LinkBlob', repo: 'r', digest: D1, size: 7, at: 1 })
  await ok(s, { type: 'AddHolder', digest: D1, size: 7, peerId: PEER })
  return s
}

async function ok (s: Site, command: Command, at?: number): Promise<any> {
  const r = await s.sm.apply({ command, ...(at !== undefined ? { at } : {}) })
  if (!r.ok) throw new Error(`${command.type}: ${r.code} ${r.message}`)
  return r.value
}

/** A push of manifest n with tags at command time `at`. */
async function push (s: Site, n: number, tags: string[], at: number): Promise<void> {
  await ok(s, { type: 'PutManifest', repo: 'r', digest: M(n), body: body(n), mediaType: MT, tags, blobs: [D1], manifests: [], at })
}

/** What `from`'s source would ship after `to`'s cursor (cluster/peering/source.ts, no rules). */
async function shipped (from: Site, after: number): Promise<ShippedChange[]> {
  const out: ShippedChange[] = []
  for (const e of await from.pq.feedAfter(after, 1000)) {
    const o = { origin: e.origin!, v: e.v! }
    if (e.op === 'put') {
      const n = Number(e.digest.slice(7, 8))
      const annotations = (await from.q.manifest(e.repo, e.digest))?.annotations
      out.push({ seq: e.seq, at: e.at, op: 'put', repo: e.repo, digest: e.digest, tags: e.tags, body: body(n), mediaType: MT, blobs: [D1], sizes: { [D1]: 7 }, manifests: [], ...(annotations !== undefined ? { annotations } : {}), ...o })
    } else if (e.op === 'untag') out.push({ seq: e.seq, at: e.at, op: 'untag', repo: e.repo, tag: e.tag, ...o })
    else if (e.op === 'delete') out.push({ seq: e.seq, at: e.at, op: 'delete', repo: e.repo, digest: e.digest, ...o })
    else if (e.op === 'props' && await from.q.manifest(e.repo, e.digest) !== undefined) out.push({ seq: e.seq, at: e.at, op: 'props', repo: e.repo, digest: e.digest, props: await userPropertiesOf(from.kv, e.repo, e.digest), ...o })
  }
  return out
}

/** `to` receives everything new of `from`'s feed, applied at `at`. */
async function receive (to: Site, from: Site, at: number): Promise<{ applied: number; superseded: number; foreign: number; failed: number }> {
  const cur = await to.pq.cursor(from.id)
  const changes = await shipped(from, cur.seq)
  return await ok(to, { type: 'SiteApply', name: 'other', origin: from.id, changes, through: await from.pq.head(), originAt: 0, at })
}

async function tags (s: Site): Promise<Record<string, string | undefined>> {
  const out: Record<string, string | undefined> = {}
  for (const tag of ['t', 'u', 'd', 'e', 'x', 'y']) out[tag] = await s.q.resolveTag('r', tag)
  return out
}

t.test('the hybrid logical clock: time from the command, a counter within a millisecond, ties broken by site id', async (t) => {
  t.same(tick({ l: 0, c: 0 }, 1000), { l: 1000, c: 0 }, 'a later command time moves the physical part')
  t.same(tick({ l: 1000, c: 0 }, 1000), { l: 1000, c: 1 }, 'the same millisecond: the counter')
  t.same(tick({ l: 1000, c: 3 }, 900), { l: 1000, c: 4 }, 'a command time behind the clock (another node\'s clock, or a step back) never moves it back')
  t.same(merge({ l: 1000, c: 2 }, { l: 5000, c: 7 }, 1200), { l: 5000, c: 8 }, 'a change from a site whose clock is ahead: past it')
  t.same(merge({ l: 5000, c: 2 }, { l: 5000, c: 7 }, 1200), { l: 5000, c: 8 })
  t.same(merge({ l: 5000, c: 9 }, { l: 4000, c: 7 }, 1200), { l: 5000, c: 10 })
  t.same(merge({ l: 1000, c: 9 }, { l: 900, c: 7 }, 2000), { l: 2000, c: 0 }, 'the command time ahead of both')
  t.ok(compareVersions({ l: 1, c: 5, s: SITE_B }, { l: 2, c: 0, s: SITE_A }) < 0, 'physical time first')
  t.ok(compareVersions({ l: 2, c: 1, s: SITE_A }, { l: 2, c: 0, s: SITE_B }) > 0, 'then the counter')
  t.ok(compareVersions({ l: 2, c: 0, s: SITE_B }, { l: 2, c: 0, s: SITE_A }) > 0, 'then the site id')
})

t.test('each change in the feed carries its origin site and a version that only grows', async (t) => {
  const a = await site(SITE_A, SITE_B)
  await push(a, 1, ['t'], 1000)
  await push(a, 2, ['t'], 1000)
  await push(a, 3, ['u'], 900)
  await ok(a, { type: 'DeleteTag', repo: 'r', tag: 'u' }, 950)
  const feed = await a.pq.feedAfter(0, 10)
  t.same(feed.map((e) => e.origin), [SITE_A, SITE_A, SITE_A, SITE_A])
  t.same(feed.map((e) => [e.v!.l, e.v!.c]), [[1000, 0], [1000, 1], [1000, 2], [1000, 3]], 'versions grow even when command times do not')
  t.same(await a.pq.tagVersion('r', 't'), { l: 1000, c: 1, s: SITE_A }, 'the tag records the version of its last write')
  t.same(await a.pq.tagVersion('r', 'u'), { l: 1000, c: 3, s: SITE_A, deleted: true }, 'a deleted tag keeps its delete\'s version')
})

t.test('concurrent updates of one tag at two sites converge to the same value at both, whatever the order of arrival', async (t) => {
  for (const aFirst of [true, false]) {
    const a = await site(SITE_A, SITE_B)
    const b = await site(SITE_B, SITE_A)
    // Made while the sites cannot see each other.
    await push(a, 1, ['t'], 1000) // same millisecond as B's: B's site id is higher, B wins t
    await push(b, 2, ['t'], 1000)
    await push(a, 3, ['u'], 2000) // A's is later: A wins u
    await push(b, 4, ['u'], 1500)
    if (aFirst) { await receive(a, b, 3000); await receive(b, a, 3000) } else { await receive(b, a, 3000); await receive(a, b, 3000) }
    const [ta, tb] = [await tags(a), await tags(b)]
    t.same(ta, tb, `arrival ${aFirst ? 'A first' : 'B first'}: the same tags at both`)
    t.equal(ta.t, M(2), 't: the same clock, the higher site id wins')
    t.equal(ta.u, M(3), 'u: the later clock wins')
    for (const n of [1, 2, 3, 4]) t.ok(await a.q.manifest('r', M(n)) !== undefined && await b.q.manifest('r', M(n)) !== undefined, `manifest ${n} is at both by digest, whichever tag won`)
    t.equal(await a.pq.head(), 2, 'what A received is not in its feed (it ships its own changes only)')
  }
})

t.test('a change made after receiving always wins over what was received (causality)', async (t) => {
  const a = await site(SITE_A, SITE_B)
  const b = await site(SITE_B, SITE_A)
  // B's clock runs ten minutes ahead of A's (within the allowed skew).
  await push(b, 1, ['t'], 600_000)
  t.match(await receive(a, b, 1000), { applied: 1, superseded: 0 })
  t.equal(await a.q.resolveTag('r', 't'), M(1))
  // A moves the tag later (its command time is still behind B's clock): the merged clock makes it newer.
  await push(a, 2, ['t'], 2000)
  t.match(await receive(b, a, 600_500), { applied: 1, superseded: 0 })
  t.equal(await b.q.resolveTag('r', 't'), M(2), 'A\'s move reached B and won')
})

t.test('delete racing an update: highest version wins, the delete included', async (t) => {
  for (const aFirst of [true, false]) {
    const a = await site(SITE_A, SITE_B)
    const b = await site(SITE_B, SITE_A)
    await push(a, 1, ['d', 'e'], 1000)
    await receive(b, a, 1100)
    // Cut. d: deleted at A, then moved at B later (the update wins). e: moved at B, then deleted at A later (the delete wins).
    await ok(a, { type: 'DeleteTag', repo: 'r', tag: 'd' }, 2000)
    await push(b, 2, ['d'], 3000)
    await push(b, 3, ['e'], 2500)
    await ok(a, { type: 'DeleteTag', repo: 'r', tag: 'e' }, 3500)
    let superseded = 0
    if (aFirst) { superseded += (await receive(a, b, 4000)).superseded; superseded += (await receive(b, a, 4000)).superseded } else { superseded += (await receive(b, a, 4000)).superseded; superseded += (await receive(a, b, 4000)).superseded }
    const [ta, tb] = [await tags(a), await tags(b)]
    t.same(ta, tb, `arrival ${aFirst ? 'A first' : 'B first'}: the same tags at both`)
    t.equal(ta.d, M(2), 'd: the update made after the delete wins')
    t.equal(ta.e, undefined, 'e: the delete made after the update wins (its tombstone keeps the older update out)')
    t.equal(superseded, 2, 'the two losing changes were counted as superseded')
    t.ok(await a.q.manifest('r', M(3)) !== undefined, 'the manifest of the losing update is still there by digest')
  }
})

t.test('a manifest delete racing a newer tag on it: the older tags go, the manifest stays for the newer tag', async (t) => {
  const a = await site(SITE_A, SITE_B)
  const b = await site(SITE_B, SITE_A)
  await push(a, 1, ['x'], 1000)
  await push(a, 2, [], 1001)
  await receive(b, a, 1100)
  await ok(a, { type: 'DeleteManifest', repo: 'r', digest: M(1) }, 2000)
  await ok(a, { type: 'DeleteManifest', repo: 'r', digest: M(2) }, 2001)
  await push(b, 1, ['y'], 3000) // B tags the same manifest after A deleted it
  await receive(b, a, 4000)
  await receive(a, b, 4000)
  const [ta, tb] = [await tags(a), await tags(b)]
  t.same(ta, tb)
  t.same([ta.x, ta.y], [undefined, M(1)], 'x (older than the delete) is gone; y (newer) points at the manifest')
  t.ok(await a.q.manifest('r', M(1)) !== undefined && await b.q.manifest('r', M(1)) !== undefined, 'the manifest is at both')
  t.ok(await a.q.manifest('r', M(2)) === undefined && await b.q.manifest('r', M(2)) === undefined, 'a manifest nothing newer holds is deleted at both')
})

t.test('events carry their origin: a change of another site than the peered one, or of this site, is passed over', async (t) => {
  const a = await site(SITE_A, SITE_B)
  const b = await site(SITE_B, SITE_A)
  await push(b, 1, ['t'], 1000)
  const [own] = await shipped(b, 0)
  const third = { ...own!, seq: 2, origin: '0123456789abcdef', v: { l: 2000, c: 0, s: '0123456789abcdef' } }
  const mine = { ...own!, seq: 3, origin: SITE_A, v: { l: 2000, c: 0, s: SITE_A } }
  const noVersion = { ...own!, seq: 4, v: { l: -1, c: 0, s: SITE_B } }
  const r = await ok(a, { type: 'SiteApply', name: 'other', origin: SITE_B, changes: [own!, third, mine, noVersion], through: 4, originAt: 0, at: 5000 })
  t.same(r, { applied: 1, failed: 1, superseded: 0, foreign: 2, cursor: 4 }, 'only B\'s own change applied; the forwarded and the echoed ones passed over')
  t.match(await a.pq.failures(SITE_B), [{ seq: 4, code: 'BAD_REQUEST', message: /no valid version/ }], 'a malformed version is refused and recorded')
})

t.test('a site whose clock runs far ahead: its changes wait (refused, not passed over) until the clocks agree', async (t) => {
  const a = await site(SITE_A, SITE_B)
  const b = await site(SITE_B, SITE_A)
  await push(b, 1, ['t'], 10_000_000)
  const early = await a.sm.apply({ command: { type: 'SiteApply', name: 'other', origin: SITE_B, changes: await shipped(b, 0), through: 1, originAt: 0, at: 1000 } })
  t.match(early, { ok: false, code: 'BAD_REQUEST', message: /min ahead of this site's clock: sync the sites' clocks/ })
  t.equal((await a.pq.cursor(SITE_B)).seq, 0, 'the cursor did not move: the change is not lost')
  t.equal(await a.q.resolveTag('r', 't'), undefined)
  t.match(await receive(a, b, 9_500_000), { applied: 1 }, 'applied once the receiving clock is within reach')
  t.equal(await a.q.resolveTag('r', 't'), M(1))
})

t.test('deterministic: two members applying the same log reach the same state, clock included', async (t) => {
  const log: Array<{ command: Command; at: number }> = [
    { command: { type: 'PutManifest', repo: 'r', digest: M(1), body: body(1), mediaType: MT, tags: ['t'], blobs: [D1], manifests: [], at: 1000 }, at: 1000 },
    { command: { type: 'DeleteTag', repo: 'r', tag: 't' }, at: 1500 },
    { command: { type: 'SiteApply', name: 'other', origin: SITE_B, changes: [{ seq: 1, at: 9000, op: 'untag', repo: 'r', tag: 'u', origin: SITE_B, v: { l: 9000, c: 4, s: SITE_B } }], through: 1, originAt: 0, at: 2000 }, at: 2000 },
    { command: { type: 'PutManifest', repo: 'r', digest: M(2), body: body(2), mediaType: MT, tags: ['t'], blobs: [D1], manifests: [], at: 2100 }, at: 2100 },
  ]
  const dumps: string[] = []
  for (let i = 0; i < 2; i++) {
    const s = await site(SITE_A, SITE_B)
    for (const e of log) {
      const r = await s.sm.apply({ command: e.command, at: e.at })
      t.equal(r.ok, true, `${e.command.type} applied`)
    }
    dumps.push(Buffer.from(await dumpState(s.kv)).toString('base64'))
    if (i === 0) {
      const last = (await s.pq.feedAfter(0, 10)).at(-1)!
      t.same(last.v, { l: 9000, c: 6, s: SITE_A }, 'the push after receiving B\'s change is versioned past it, from command times only')
    }
    // Let the wall clock move between the two replays: it must not matter.
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  t.equal(dumps[0], dumps[1], 'byte-identical state')
})

/** A site's properties of manifest n, as `key=value` strings (read-only ones marked `ro:`). */
async function props (s: Site, n: number): Promise<string[]> {
  return (await propertiesOf(s.kv, 'r', M(n))).flatMap((p) => p.values.map((v) => `${p.readOnly ? 'ro:' : ''}${p.key}=${v}`))
}

t.test('user properties ship with their manifest: set, replaced and removed at one site, the same at the other', async (t) => {
  const a = await site(SITE_A, SITE_B)
  const b = await site(SITE_B, SITE_A)
  await ok(a, { type: 'PutManifest', repo: 'r', digest: M(1), body: body(1), mediaType: MT, tags: ['t'], blobs: [D1], manifests: [], annotations: { 'org.opencontainers.image.source': 'git' }, at: 1000 })
  await ok(a, { type: 'SetProperties', repo: 'r', digest: M(1), props: [{ key: 'qa', value: 'passed' }, { key: 'team', value: 'web' }], at: 1100 })
  const feed = await a.pq.feedAfter(0, 10)
  t.match(feed.map((e) => e.op), ['put', 'props'], 'the push ships its manifest (its read-only annotation with it), the properties as a change of their own')
  t.match(await receive(b, a, 1200), { applied: 2, failed: 0 })
  t.same(await props(b, 1), ['org.opencontainers.image.source=git', 'qa=passed', 'team=web'].map((p) => p.startsWith('org.') ? 'ro:' + p : p), 'B has A\'s properties, the annotation read-only')
  await ok(a, { type: 'SetProperties', repo: 'r', digest: M(1), props: [{ key: 'qa', value: 'failed' }], replace: true, at: 1300 })
  await ok(a, { type: 'RemoveProperties', repo: 'r', digest: M(1), props: [{ key: 'team' }], at: 1400 })
  t.match(await receive(b, a, 1500), { applied: 2, failed: 0 })
  t.same(await props(b, 1), ['ro:org.opencontainers.image.source=git', 'qa=failed'], 'a replaced value and a removed key: the same at B')
  t.same(await userPropertiesOf(b.kv, 'r', M(1)), await userPropertiesOf(a.kv, 'r', M(1)))
})

t.test('properties changed at both sites: the later set wins at both, whatever the order of arrival', async (t) => {
  for (const order of ['a first', 'b first']) {
    const a = await site(SITE_A, SITE_B)
    const b = await site(SITE_B, SITE_A)
    await push(a, 1, ['t'], 1000)
    await receive(b, a, 1100)
    await ok(a, { type: 'SetProperties', repo: 'r', digest: M(1), props: [{ key: 'stage', value: 'dev' }], at: 2000 })
    await ok(b, { type: 'SetProperties', repo: 'r', digest: M(1), props: [{ key: 'stage', value: 'prod' }, { key: 'owner', value: 'ops' }], at: 3000 })
    if (order === 'a first') { await receive(b, a, 4000); await receive(a, b, 4100) } else { await receive(a, b, 4000); await receive(b, a, 4100) }
    t.same(await props(a, 1), ['owner=ops', 'stage=prod'], `${order}: A ends with B's later set`)
    t.same(await props(b, 1), ['owner=ops', 'stage=prod'], `${order}: B keeps its own later set`)
  }
})

t.test('properties of a manifest the receiver does not have are passed over; a deleted manifest takes its properties\' version with it', async (t) => {
  const a = await site(SITE_A, SITE_B)
  const b = await site(SITE_B, SITE_A)
  await push(a, 1, ['t'], 1000)
  await ok(a, { type: 'SetProperties', repo: 'r', digest: M(1), props: [{ key: 'k', value: 'v' }], at: 1100 })
  // B gets the properties change alone (its put filtered out, say): nothing to attach them to.
  const only = (await shipped(a, 0)).filter((c) => c.op === 'props')
  t.match(await ok(b, { type: 'SiteApply', name: 'other', origin: SITE_A, changes: only, through: 2, originAt: 0, at: 1200 }), { applied: 1, failed: 0 })
  t.same(await props(b, 1), [])
  t.not(await a.kv.get(key.propVersion('r', M(1))), undefined, 'A versions the properties it changed')
  await ok(a, { type: 'DeleteManifest', repo: 'r', digest: M(1) }, 1300)
  t.equal(await a.kv.get(key.propVersion('r', M(1))), undefined, 'the version went with the manifest')
  t.same((await a.pq.feedAfter(2, 10)).map((e) => e.op), ['delete'], 'the delete ships no properties change')
})

t.test('tombstones past their TTL are forgotten through the log, only while they are still that tombstone', async (t) => {
  const a = await site(SITE_A, SITE_B)
  await push(a, 1, ['old', 'back', 'live', 'newer'], 1000)
  for (const tag of ['old', 'back', 'newer']) await ok(a, { type: 'DeleteTag', repo: 'r', tag }, 2000)
  const found = (await a.pq.tombstonesBefore(5000, undefined, 100)).found
  t.same(found.map((f) => f.tag).sort(), ['back', 'newer', 'old'], 'the scan finds the deleted tags\' versions, not the live one')
  t.same((await a.pq.tombstonesBefore(1500, undefined, 100)).found, [], 'none older than the cutoff')
  // After the scan: 'back' is pushed again (a live tag, its version no tombstone any more), and
  // the purge names 'newer' with another version than its tombstone's.
  await push(a, 2, ['back'], 3000)
  const stale = found.find((f) => f.tag === 'newer')!
  const tags = found.map((f) => ({ repo: f.repo, tag: f.tag, v: f.tag === 'newer' ? { ...stale.v, c: stale.v.c + 7 } : { l: f.v.l, c: f.v.c, s: f.v.s } }))
  t.match(await ok(a, { type: 'SitePurgeTombstones', tags, at: 6000 }), { purged: 1 }, 'only the tombstone still as found, with the same version')
  t.equal(await a.kv.get('tagver\u0000r\u0000old'), undefined, 'old\'s tombstone is gone')
  t.not(await a.kv.get('tagver\u0000r\u0000back'), undefined, 'a tag written again keeps its version')
  t.not(await a.kv.get('tagver\u0000r\u0000newer'), undefined, 'a tombstone of another version stays')
  t.not(await a.kv.get('tagver\u0000r\u0000live'), undefined, 'a live tag\'s version stays')
  t.equal(await a.q.resolveTag('r', 'back'), M(2))
  // Resumable scans: one key at a time still finds every tombstone, and ends with next undefined.
  const seen: string[] = []
  let from: string | undefined
  for (let i = 0; i < 10; i++) {
    const r = await a.pq.tombstonesBefore(5000, from, 1)
    seen.push(...r.found.map((f) => f.tag))
    from = r.next
    if (from === undefined) break
  }
  t.same(seen, ['newer'], 'a scan resumed key by key finds what is left')
  t.equal(from, undefined, 'and ends')
  const r = await a.sm.apply({ command: { type: 'SitePurgeTombstones', tags: Array.from({ length: 2001 }, (_, i) => ({ repo: 'r', tag: `t${i}`, v: { l: 1, c: 0, s: SITE_A } })), at: 7000 } })
  t.match(r, { ok: false, code: 'BAD_REQUEST' }, 'a batch over the limit is refused')
})
