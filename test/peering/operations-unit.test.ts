/**
 * Operating a peering, in-process (issue 11: `site set`, --access, --bandwidth, `site explain`):
 * rule versions in the state machine (the later wins at both sites, whichever message comes
 * first); users, groups and grants on the change feed and applied from another site (the same
 * user updated, a different user of the same name kept, a grant to it left out); the token
 * bucket's waits and the throughput meter; explain's classification of each state.
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { PeeringQueries } from '../../cluster/peering/queries.js'
import { AccessQueries } from '../../cluster/access/queries.js'
import { shipAccess, type ShippedAccess } from '../../cluster/peering/access-feed.js'
import { patchRules } from '../../cluster/peering/rules.js'
import { classify, RateMeter, TokenBucket, type ReceiverView, type SourceView } from '../../cluster/peering/ops.js'
import type { FeedEntry, PeeringRecord, PeeringRules } from '../../cluster/peering/model.js'
import type { Command } from '../../cluster/metadata/commands.js'

const PEER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const SITE_A = '00112233aabbccdd'
const SITE_B = '99887766aabbccdd'
const rules = (r: Partial<PeeringRules> = {}): PeeringRules => ({ repos: [], direction: 'pull', deletes: false, access: true, ...r })
const peering = (p: Partial<PeeringRecord> = {}): PeeringRecord => ({ name: 'site-a', site: SITE_A, members: [{ peerId: PEER, addrs: ['/ip4/127.0.0.1/tcp/23001'] }], rules: rules(), initiator: true, createdAt: 1, updatedAt: 1, ...p })

async function site (id: string): Promise<{ sm: MetadataStateMachine; pq: PeeringQueries; aq: AccessQueries }> {
  const kv = new MemoryKV()
  await kv.open()
  const sm = new MetadataStateMachine(kv, { sync: false })
  await ok(sm, { type: 'InitCluster', clusterId: id, secret: 'c2VjcmV0', at: 1 })
  return { sm, pq: new PeeringQueries(kv), aq: new AccessQueries(kv) }
}

async function ok (sm: MetadataStateMachine, command: Command): Promise<any> {
  const r = await sm.apply({ command })
  if (!r.ok) throw new Error(`${command.type}: ${r.code} ${r.message}`)
  return r.value
}

t.test('SetSiteRules: the later version wins whichever arrives first; the tie goes to the larger site id; confirmation only for the version told', async (t) => {
  const { sm, pq } = await site(SITE_B)
  await ok(sm, { type: 'PutSitePeering', peering: peering() })
  const v = await ok(sm, { type: 'SetSiteRules', name: 'site-a', rules: rules({ tags: 'v*' }), rulesAt: 100, by: SITE_B, synced: false, at: 100 })
  t.equal(v.kept, false)
  t.same({ ...(await pq.peering('site-a'))!.rules }, rules({ tags: 'v*' }))
  t.equal((await pq.peering('site-a'))!.rulesSynced, false, 'not yet confirmed')
  // The other site set rules earlier (its message arrives late): ours stand, and the answer says so.
  const old = await ok(sm, { type: 'SetSiteRules', name: 'site-a', rules: rules({ deletes: true }), rulesAt: 90, by: SITE_A, synced: true, at: 101 })
  t.match(old, { kept: true, rulesAt: 100, by: SITE_B, rules: { tags: 'v*' } })
  // Same time at both: the larger site id wins at both sites.
  t.equal((await ok(sm, { type: 'SetSiteRules', name: 'site-a', rules: rules({ deletes: true }), rulesAt: 100, by: SITE_A, synced: true, at: 102 })).kept, true, SITE_A + ' < ' + SITE_B)
  await ok(sm, { type: 'SiteRulesSynced', name: 'site-a', rulesAt: 99, at: 103 })
  t.equal((await pq.peering('site-a'))!.rulesSynced, false, 'a confirmation of another version changes nothing')
  await ok(sm, { type: 'SiteRulesSynced', name: 'site-a', rulesAt: 100, at: 104 })
  t.equal((await pq.peering('site-a'))!.rulesSynced, true)
  const later = await ok(sm, { type: 'SetSiteRules', name: 'site-a', rules: rules({ access: false }), rulesAt: 200, by: SITE_A, synced: true, at: 105 })
  t.equal(later.kept, false, 'a later version from the other site replaces ours')
  t.equal((await pq.peering('site-a'))!.rules.access, false)
  const bad = await sm.apply({ command: { type: 'SetSiteRules', name: 'site-a', rules: rules({ repos: ['UPPER'] }), rulesAt: 300, by: SITE_B, synced: false, at: 106 } })
  t.match(bad, { ok: false, code: 'BAD_REQUEST' })
  t.match(await sm.apply({ command: { type: 'SetSiteRules', name: 'nope', rules: rules(), rulesAt: 300, by: SITE_B, synced: false, at: 106 } }), { ok: false, code: 'NOT_FOUND' })
  // A direction given at the site that did not initiate is as seen from there.
  t.equal(patchRules(peering({ initiator: false }), { direction: 'push' }).direction, 'pull')
  t.equal(patchRules(peering({ initiator: true }), { direction: 'push' }).direction, 'push')
  t.same(patchRules(peering({ rules: rules({ tags: 'v*', bandwidth: 5 }) }), { tags: null, bandwidth: null }), rules(), 'null clears tags and bandwidth')
})

t.test('--access on the feed: users, groups, members, grants; hashes travel; a user that exists at both stays the local one', async (t) => {
  const a = await site(SITE_A)
  await ok(a.sm, { type: 'CreateUser', name: 'carol', passwordHash: '$argon2id$carol1', admin: false, at: 10 })
  await ok(a.sm, { type: 'CreateUser', name: 'dave', passwordHash: '$argon2id$dave-a', admin: false, at: 11 })
  await ok(a.sm, { type: 'CreateGroup', name: 'readers', members: ['carol', 'dave'], at: 12 })
  await ok(a.sm, { type: 'PutPermission', target: { name: 'read', repositories: ['team/**'], users: { dave: ['write'], carol: ['read'] }, groups: { readers: ['read'] }, updatedAt: 13 } })
  await ok(a.sm, { type: 'SetPassword', name: 'carol', passwordHash: '$argon2id$carol2', at: 14 })
  const feed = await a.pq.feedAfter(0, 100)
  t.same(feed.map((e) => e.op === 'access' ? `${e.kind} ${e.name}${e.user !== undefined ? ' ' + e.user : ''}` : e.op), ['user carol', 'user dave', 'group readers', 'member readers carol', 'member readers dave', 'perm read', 'user carol'])
  const shipped = await Promise.all(feed.map(async (e) => await shipAccess(a.aq, SITE_A, e as FeedEntry & { op: 'access' })))
  t.match(shipped[0], { record: { name: 'carol', passwordHash: '$argon2id$carol2', origin: SITE_A } }, 'a user ships as it is now, its hash included, with its origin')
  t.notOk(JSON.stringify(shipped).includes('password"'), 'no password field: there is none to ship')

  const b = await site(SITE_B)
  await ok(b.sm, { type: 'PutSitePeering', peering: peering() })
  await ok(b.sm, { type: 'CreateUser', name: 'dave', passwordHash: '$argon2id$dave-b', admin: false, at: 5 })
  const r = await ok(b.sm, { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: shipped, through: shipped.length, originAt: 14, at: 20 })
  t.match(r, { applied: 5, failed: 2 }, 'all but the other dave and his membership applied (the grant applied in part)')
  t.match(await b.aq.user('carol'), { passwordHash: '$argon2id$carol2', origin: SITE_A }, 'carol arrived with her hash and origin')
  t.equal((await b.aq.user('dave'))!.passwordHash, '$argon2id$dave-b', 'B\'s own dave is kept')
  t.same((await b.aq.group('readers'))!.members, ['carol'], 'A\'s dave is not made a member at B')
  t.same((await b.aq.permission('read'))!.users, { carol: ['read'] }, 'nor given A\'s grant to its dave')
  const failures = await b.pq.failures(SITE_A)
  t.same(failures.map((f) => `${f.ref} ${f.code}`).sort(), ['member readers dave ALREADY_EXISTS', 'perm read ALREADY_EXISTS', 'user dave ALREADY_EXISTS'])

  // The same user changed later at A: its new hash replaces B's and bumps the password version; an older change does not.
  const v1 = (await b.aq.user('carol'))!.passwordVersion
  const newer: ShippedAccess = { seq: 8, at: 30, op: 'access', kind: 'user', name: 'carol', userOrigin: SITE_A, record: { ...(await b.aq.user('carol'))!, passwordHash: '$argon2id$carol3', updatedAt: 30 } }
  const older: ShippedAccess = { ...newer, seq: 9, record: { ...(newer.record as object), passwordHash: '$argon2id$stale', updatedAt: 1 } as ShippedAccess['record'] }
  await ok(b.sm, { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: [newer, older], through: 9, originAt: 30, at: 31 })
  t.match(await b.aq.user('carol'), { passwordHash: '$argon2id$carol3', passwordVersion: v1 + 1 })
  // A delete of carol (same user) removes her; a delete of dave (A's dave) leaves B's.
  await ok(b.sm, { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: [{ seq: 10, at: 40, op: 'access', kind: 'user', name: 'carol', userOrigin: SITE_A, record: null }, { seq: 11, at: 40, op: 'access', kind: 'user', name: 'dave', userOrigin: SITE_A, record: null }], through: 11, originAt: 40, at: 41 })
  t.equal(await b.aq.user('carol'), undefined)
  t.ok(await b.aq.user('dave'), 'B\'s dave stays')
  // With access off in B's record, access changes are passed over.
  await ok(b.sm, { type: 'SetSiteRules', name: 'site-a', rules: rules({ access: false }), rulesAt: 50, by: SITE_B, synced: true, at: 50 })
  await ok(b.sm, { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: [{ ...newer, seq: 12, name: 'erin', record: { ...(newer.record as object), name: 'erin' } as ShippedAccess['record'] }], through: 12, originAt: 50, at: 51 })
  t.equal(await b.aq.user('erin'), undefined, 'no user arrives with access off')
  // A received user does not go back into B's feed (no loops), but a user made at B does.
  const head = await b.pq.head()
  await ok(b.sm, { type: 'CreateUser', name: 'frank', passwordHash: '$argon2id$f', admin: false, at: 60 })
  t.match(await b.pq.feedAfter(head, 10), [{ op: 'access', kind: 'user', name: 'frank' }])
  t.equal((await b.pq.feedAfter(0, 100)).filter((e) => e.op === 'access' && e.name === 'carol').length, 0, 'carol (received) is not in B\'s feed')
})

t.test('the token bucket makes takers wait at least what the rate asks, concurrent ones included; the meter counts a sliding window', async (t) => {
  const rate = 1_000_000
  const bucket = new TokenBucket(rate, 50_000)
  const t0 = Date.now()
  t.equal(await bucket.take(50_000), 0, 'the burst passes at once')
  const waits = await Promise.all([bucket.take(40_000), bucket.take(40_000)])
  // Two takers of 40 kB after the burst: a debt of 80 kB at 1 MB/s is 80 ms at least, however loaded the machine.
  t.ok(Date.now() - t0 >= 79, `both waited for the debt to be paid (${Date.now() - t0} ms)`)
  t.ok(waits[1]! > waits[0]!, `the later taker waits for the earlier one's bytes too (${waits.map((w) => w.toFixed(0)).join(', ')} ms)`)
  const m = new RateMeter()
  m.add(1000, 10_000)
  m.add(1000, 10_500)
  t.equal(m.rate(11_000), 2000, 'the first second: bytes over the time since the first byte')
  m.add(10_000, 15_000)
  t.equal(m.rate(15_000), 12_000 / 5)
  t.equal(m.rate(30_000), 0, 'old buckets fall out of the window')
})

t.test('explain: each state from the source\'s and the receiver\'s views', async (t) => {
  const p = peering({ rules: rules({ access: false }) })
  const src = (s: Partial<SourceView> = {}): SourceView => ({ digest: 'sha256:m2', seq: 10, at: 1000, blobs: [{ digest: 'sha256:b1', size: 100 }, { digest: 'sha256:b2', size: 50 }], head: 12, receivedFrom: null, ...s })
  const rcv = (r: Partial<ReceiverView> = {}): ReceiverView => ({ cursor: { seq: 4, originAt: 0, at: 0, applied: 4 }, digest: 'sha256:m1', landed: null, failure: null, held: ['sha256:b2'], live: { connected: true, lastError: null, waitingFor: {} }, ...r })
  t.match(classify('in', p, 'tags (v*)', undefined, undefined, undefined), { state: 'filtered', rule: 'tags (v*)' })
  t.match(classify('in', p, undefined, src(), rcv(), undefined, 3000), { state: 'backlog', behindEntries: 6, lagSeconds: 2, blobs: [{ digest: 'sha256:b1', bytesLeft: 100 }] })
  t.match(classify('in', p, undefined, src(), rcv({ live: { connected: true, lastError: null, waitingFor: { 'sha256:b1': 30 } } }), undefined), { state: 'waiting-for-blobs', blobs: [{ digest: 'sha256:b1', size: 100, bytesLeft: 30 }] })
  t.match(classify('in', p, undefined, src(), rcv({ live: { connected: false, lastError: { message: 'cannot reach', at: 5 }, waitingFor: {} } }), undefined), { state: 'blocked', error: { message: 'cannot reach' } })
  t.match(classify('in', p, undefined, src(), rcv({ cursor: { seq: 10, originAt: 0, at: 0, applied: 10 }, digest: 'sha256:m2', landed: { digest: 'sha256:m2', seq: 10, originAt: 1000, at: 2000 } }), undefined), { state: 'replicated', replicatedAt: new Date(2000).toISOString() })
  t.match(classify('in', p, undefined, src(), rcv({ failure: { seq: 10, op: 'put', repo: 'r', ref: 'sha256:m2', code: 'TAG_IMMUTABLE', message: 'no', at: 7 } }), undefined), { state: 'blocked', error: { code: 'TAG_IMMUTABLE' } })
  t.match(classify('in', p, undefined, src({ seq: null, receivedFrom: SITE_B }), rcv(), undefined), { state: 'not-forwarded' })
  t.match(classify('in', p, undefined, src({ digest: null }), rcv({ digest: null }), undefined), { state: 'absent' })
  t.match(classify('in', p, undefined, src(), rcv({ cursor: { seq: 11, originAt: 0, at: 0, applied: 11 } }), undefined), { state: 'diverged' })
  t.match(classify('out', p, undefined, src(), undefined, 'cannot reach x'), { state: 'unknown', error: { message: 'cannot reach x' } })
})
