/**
 * Peering in the metadata state machine, on its own (issue 11, step 1): the change feed a site
 * records for its own changes, peering records, and applying another site's changes with the
 * cursor in one command, idempotent on (origin site, origin sequence). Snapshots carry it all.
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../../cluster/metadata/queries.js'
import { PeeringQueries } from '../../cluster/peering/queries.js'
import { dumpState, restoreState } from '../../cluster/metadata/snapshot.js'
import { filteredBy, receives, sends, type PeeringRecord, type PeeringRules, type ShippedChange } from '../../cluster/peering/model.js'
import type { Command } from '../../cluster/metadata/commands.js'

const D1 = 'sha256:' + '1'.repeat(64)
const M1 = 'sha256:' + 'a'.repeat(64)
const M2 = 'sha256:' + 'b'.repeat(64)
const body = Buffer.from('{"schemaVersion":2}').toString('base64')
const MT = 'application/vnd.oci.image.manifest.v1+json'
const PEER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const SITE_A = '00112233aabbccdd'

async function fresh (): Promise<{ kv: MemoryKV; sm: MetadataStateMachine; q: MetadataQueries; pq: PeeringQueries }> {
  const kv = new MemoryKV()
  await kv.open()
  return { kv, sm: new MetadataStateMachine(kv, { sync: false }), q: new MetadataQueries(kv), pq: new PeeringQueries(kv) }
}

const rules = (r: Partial<PeeringRules> = {}): PeeringRules => ({ repos: [], direction: 'pull', deletes: false, access: false, ...r })
const peering = (p: Partial<PeeringRecord> = {}): PeeringRecord => ({ name: 'site-a', site: SITE_A, members: [{ peerId: PEER, addrs: ['/ip4/127.0.0.1/tcp/23001'] }], rules: rules(), initiator: true, createdAt: 1, updatedAt: 1, ...p })

async function ok (sm: MetadataStateMachine, command: Command): Promise<unknown> {
  const r = await sm.apply({ command })
  if (!r.ok) throw new Error(`${command.type}: ${r.code} ${r.message}`)
  return r.value
}

const putCmd = (digest: string, tags: string[]): Command => ({ type: 'PutManifest', repo: 'r', digest, body, mediaType: MT, tags, blobs: [D1], manifests: [], at: 5 })
const shippedPut = (seq: number, digest: string, tags: string[], repo = 'r'): ShippedChange => ({ seq, at: 100 + seq, op: 'put', repo, digest, tags, body, mediaType: MT, blobs: [D1], sizes: { [D1]: 7 }, manifests: [] })

t.test('the change feed: one entry per replicable change, numbered in commit order, tag moves included', async (t) => {
  const { sm, pq } = await fresh()
  await ok(sm, { type: 'LinkBlob', repo: 'r', digest: D1, size: 7, at: 1 })
  t.equal(await pq.head(), 0, 'linking a blob is not a replicable change (blobs follow manifests)')
  await ok(sm, putCmd(M1, ['v1']))
  await ok(sm, putCmd(M2, ['v1', 'latest']))
  await ok(sm, { type: 'DeleteTag', repo: 'r', tag: 'latest' })
  await ok(sm, { type: 'DeleteManifest', repo: 'r', digest: M1 })
  const feed = await pq.feedAfter(0, 100)
  t.same(feed.map(({ origin: _o, v: _v, ...e }) => e), [
    { op: 'put', repo: 'r', digest: M1, tags: ['v1'], seq: 1, at: 5 },
    { op: 'put', repo: 'r', digest: M2, tags: ['v1', 'latest'], seq: 2, at: 5 },
    { op: 'untag', repo: 'r', tag: 'latest', seq: 3, at: 0 },
    { op: 'delete', repo: 'r', digest: M1, seq: 4, at: 0 },
  ], 'both manifests of the moved tag v1 are in the feed by digest')
  t.equal(await pq.head(), 4)
  t.same((await pq.feedAfter(2, 1)).map((e) => e.seq), [3], 'read after a cursor, limited')
  const refused = await sm.apply({ command: { type: 'DeleteTag', repo: 'r', tag: 'nope' } })
  t.equal(refused.ok, false)
  t.equal(await pq.head(), 4, 'a refused command adds nothing to the feed')
})

t.test('a promotion is in the feed as a put of the target (writes, not command types, make the feed)', async (t) => {
  const { sm, pq } = await fresh()
  await ok(sm, { type: 'LinkBlob', repo: 'r', digest: D1, size: 7, at: 1 })
  await ok(sm, putCmd(M1, ['v1']))
  await ok(sm, { type: 'Promote', from: 'r', digest: M1, to: 'prod/r', tags: ['1.0'], move: false, at: 9 })
  const last = (await pq.feedAfter(1, 10))
  t.same(last.map((e) => e.op === 'put' ? [e.repo, e.digest, e.tags] : e.op), [['prod/r', M1, ['1.0']]])
})

t.test('peering records: validated, one per name and per remote site, removable', async (t) => {
  const { sm, pq } = await fresh()
  t.same(await ok(sm, { type: 'PutSitePeering', peering: peering() }), peering())
  const dupName = await sm.apply({ command: { type: 'PutSitePeering', peering: peering({ site: 'ffffffffffffffff' }) } })
  t.match(dupName, { ok: false, code: 'ALREADY_EXISTS' })
  const dupSite = await sm.apply({ command: { type: 'PutSitePeering', peering: peering({ name: 'other' }) } })
  t.match(dupSite, { ok: false, code: 'ALREADY_EXISTS', message: /peered already, as site-a/ })
  for (const bad of [peering({ name: 'Bad Name' }), peering({ name: 'x', site: 'zz' }), peering({ name: 'x', site: '0011223344556677', rules: rules({ repos: ['BAD'] }) }), peering({ name: 'x', site: '0011223344556677', members: [] }), peering({ name: 'x', site: '0011223344556677', rules: rules({ direction: 'sideways' as never }) })]) {
    t.match(await sm.apply({ command: { type: 'PutSitePeering', peering: bad } }), { ok: false, code: 'BAD_REQUEST' }, `refused: ${JSON.stringify(bad).slice(0, 60)}`)
  }
  await ok(sm, { type: 'SetSiteMembers', name: 'site-a', members: [{ peerId: PEER, addrs: [] }], at: 3 })
  t.same((await pq.peering('site-a'))?.members, [{ peerId: PEER, addrs: [] }])
  await ok(sm, { type: 'RemoveSitePeering', name: 'site-a', at: 4 })
  t.same(await pq.peerings(), [])
  t.match(await sm.apply({ command: { type: 'RemoveSitePeering', name: 'site-a', at: 4 } }), { ok: false, code: 'NOT_FOUND' })
})

t.test('SiteApply: changes and cursor in one command, a resend changes nothing, received changes are not fed on', async (t) => {
  const { sm, q, pq } = await fresh()
  await ok(sm, { type: 'PutSitePeering', peering: peering() })
  // No member holds D1 yet: the put is refused (recorded), the cursor moves on.
  const early = await ok(sm, { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: [shippedPut(1, M1, ['v1'])], through: 1, originAt: 101, at: 10 })
  t.same(early, { applied: 0, failed: 1, superseded: 0, foreign: 0, cursor: 1 })
  t.match(await pq.failures(SITE_A), [{ seq: 1, code: 'MANIFEST_BLOB_UNKNOWN' }], 'the refusal is recorded, with its cause')
  await ok(sm, { type: 'AddHolder', digest: D1, size: 7, peerId: PEER })
  const cmd: Command = { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: [shippedPut(2, M1, ['v1']), shippedPut(3, M2, ['v1'])], through: 5, originAt: 105, at: 11 }
  t.same(await ok(sm, cmd), { applied: 2, failed: 0, superseded: 0, foreign: 0, cursor: 5 }, 'entries 4 and 5 were filtered at the source: the cursor passes them')
  t.equal(await q.resolveTag('r', 'v1'), M2)
  t.ok(await q.manifest('r', M1), 'the first manifest of the moved tag is there by digest')
  t.same(await q.linkedBlob('r', D1), { size: 7, at: 103 }, 'the blob is linked into the repository (at: the last change that linked it)')
  t.same(await pq.cursor(SITE_A), { seq: 5, originAt: 105, at: 11, applied: 2 })
  t.same(await ok(sm, cmd), { applied: 0, failed: 0, superseded: 0, foreign: 0, cursor: 5 }, 'the same command again (a resend after a crash) does nothing')
  t.same(await ok(sm, { ...cmd, through: 6, changes: [shippedPut(3, M1, ['v1']), shippedPut(6, M1, ['old'])] } as Command), { applied: 1, failed: 0, superseded: 0, foreign: 0, cursor: 6 }, 'of a batch overlapping the cursor, only the new changes apply')
  t.equal(await q.resolveTag('r', 'v1'), M2, 'the change at seq 3 was not applied twice')
  t.equal(await pq.head(), 0, 'changes from another site never enter this site\'s feed (no loops in a mesh)')
  t.match(await sm.apply({ command: { type: 'SiteApply', name: 'nope', origin: SITE_A, changes: [], through: 9, originAt: 0, at: 1 } }), { ok: false, code: 'NOT_FOUND' })
  t.match(await sm.apply({ command: { type: 'SiteApply', name: 'site-a', origin: 'ffffffffffffffff', changes: [], through: 9, originAt: 0, at: 1 } }), { ok: false, code: 'BAD_REQUEST' })
})

t.test('deletes apply only when the peering says so', async (t) => {
  for (const deletes of [false, true]) {
    const { sm, q } = await fresh()
    await ok(sm, { type: 'PutSitePeering', peering: peering({ rules: rules({ deletes }) }) })
    await ok(sm, { type: 'AddHolder', digest: D1, size: 7, peerId: PEER })
    await ok(sm, { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: [shippedPut(1, M1, ['v1', 'v2']), { seq: 2, at: 102, op: 'untag', repo: 'r', tag: 'v2' }, { seq: 3, at: 103, op: 'delete', repo: 'r', digest: M1 }], through: 3, originAt: 3, at: 1 })
    t.equal(await q.manifest('r', M1) === undefined, deletes, `deletes ${deletes}: manifest ${deletes ? 'deleted' : 'kept'}`)
  }
})

t.test('snapshots carry peerings, the feed and cursors', async (t) => {
  const a = await fresh()
  await ok(a.sm, { type: 'LinkBlob', repo: 'r', digest: D1, size: 7, at: 1 })
  await ok(a.sm, putCmd(M1, ['v1']))
  await ok(a.sm, { type: 'PutSitePeering', peering: peering() })
  await ok(a.sm, { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: [], through: 42, originAt: 0, at: 1 })
  const b = await fresh()
  await restoreState(b.kv, await dumpState(a.kv), { sync: false })
  t.same(await b.pq.peerings(), [peering()])
  t.same(await b.pq.feedAfter(0, 10), await a.pq.feedAfter(0, 10))
  t.equal(await b.pq.head(), 1)
  t.equal((await b.pq.cursor(SITE_A)).seq, 42)
})

t.test('rules: repository include and exclude patterns, tag glob, deletes; directions', async (t) => {
  const r = rules({ repos: ['team/**', '!team/secret/**'], tags: 'v*' })
  t.equal(filteredBy(r, { op: 'put', repo: 'team/app', digest: M1, tags: ['v1'] }), undefined)
  t.match(filteredBy(r, { op: 'put', repo: 'team/secret/x', digest: M1, tags: ['v1'] }), /repos/)
  t.match(filteredBy(r, { op: 'put', repo: 'other', digest: M1, tags: ['v1'] }), /repos/)
  t.match(filteredBy(r, { op: 'put', repo: 'team/app', digest: M1, tags: ['latest'] }), /tags/)
  t.equal(filteredBy(r, { op: 'put', repo: 'team/app', digest: M1, tags: [] }), undefined, 'an untagged manifest (an index child) ships with its repository')
  t.match(filteredBy(r, { op: 'delete', repo: 'team/app', digest: M1 }), /deletes/)
  t.equal(filteredBy(rules({ repos: ['!x'] }), { op: 'put', repo: 'y', digest: M1, tags: [] }), undefined, 'excludes only: everything else ships')
  t.same([receives({ initiator: true, rules: rules() }), sends({ initiator: true, rules: rules() })], [true, false], 'pull: the initiator receives')
  t.same([receives({ initiator: false, rules: rules() }), sends({ initiator: false, rules: rules() })], [false, true], 'pull: the other site sends')
  t.same([receives({ initiator: false, rules: rules({ direction: 'push' }) }), receives({ initiator: true, rules: rules({ direction: 'both' }) })], [true, true])
})

t.test('a tag this site keeps immutable: the manifest comes by digest without it, the refusal is recorded', async (t) => {
  const { sm, q, pq } = await fresh()
  await ok(sm, { type: 'PutSitePeering', peering: peering() })
  await ok(sm, { type: 'AddHolder', digest: D1, size: 7, peerId: PEER })
  await ok(sm, { type: 'SetImmutable', pattern: 'r', immutable: true, at: 1 })
  await ok(sm, { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: [shippedPut(1, M1, ['v1'])], through: 1, originAt: 1, at: 1 })
  t.same(await ok(sm, { type: 'SiteApply', name: 'site-a', origin: SITE_A, changes: [shippedPut(2, M2, ['v1'])], through: 2, originAt: 2, at: 2 }), { applied: 1, failed: 0, superseded: 0, foreign: 0, cursor: 2 })
  t.equal(await q.resolveTag('r', 'v1'), M1, 'the immutable tag did not move')
  t.ok(await q.manifest('r', M2), 'the moved-to manifest is here by digest')
  t.match(await pq.failures(SITE_A), [{ seq: 2, code: 'TAG_IMMUTABLE' }])
})
