/**
 * Search over the state machine's indexes (cluster/metadata/search.ts, search-index.ts,
 * search-query.ts): every criterion, their combinations, pages, the permission filter, the
 * indexes following every change (tag moves, deletes, pulls, promotion with properties), the
 * one-time backfill giving the same indexes, "latest", and the parser's errors.
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { MetadataSearch } from '../../cluster/metadata/search.js'
import { parseQuery } from '../../cluster/metadata/search-query.js'
import { FlotillaError } from '../../storage/errors.js'

const d = (c: string): string => 'sha256:' + c.repeat(64)
const OCI = 'application/vnd.oci.image.manifest.v1+json'
const INDEX = 'application/vnd.oci.image.index.v1+json'
const DOCKER = 'application/vnd.docker.distribution.manifest.v2+json'
const SBOM = 'application/vnd.example.sbom'
const NOW = Date.parse('2024-06-01T00:00:00Z')
const DAY = 86_400_000

/** Digest letter → label, to read results as `repo@label`. */
const LABELS: Record<string, string> = { 1: 'm1', 2: 'm2', 3: 'm3', 4: 'w1', 5: 'o1', 6: 'i1' }

async function world (): Promise<{ kv: MemoryKV; sm: MetadataStateMachine; apply: (c: Command) => Promise<void>; search: MetadataSearch }> {
  const kv = new MemoryKV()
  await kv.open()
  const sm = new MetadataStateMachine(kv, { sync: false })
  const apply = async (c: Command): Promise<void> => {
    const r = await sm.apply({ at: NOW, command: c })
    if (!r.ok) throw new Error(`${c.type}: ${r.message}`)
  }
  await apply({ type: 'RebuildRefs', at: 0 })
  await apply({ type: 'RebuildSearchIndex', at: 0 })
  const put = async (repo: string, c: string, o: { tags: string[]; at: number; bytes: number; mediaType?: string; blobs?: string[]; manifests?: string[]; artifactType?: string; created?: string }): Promise<void> => {
    for (const b of o.blobs ?? []) await apply({ type: 'LinkBlob', repo, digest: b, size: 100, at: o.at })
    await apply({
      type: 'PutManifest', repo, digest: d(c), body: Buffer.alloc(o.bytes, 1).toString('base64'), mediaType: o.mediaType ?? OCI, tags: o.tags,
      blobs: o.blobs ?? [], manifests: o.manifests ?? [], at: o.at,
      ...(o.artifactType !== undefined ? { artifactType: o.artifactType } : {}),
      ...(o.created !== undefined ? { annotations: { 'org.opencontainers.image.created': o.created } } : {}),
    })
  }
  await put('team/app', '1', { tags: ['v1.0.0', 'v1.0'], at: NOW - 30 * DAY, bytes: 500, blobs: [d('a')], created: '2024-01-01T00:00:00Z' })
  await put('team/app', '2', { tags: ['v1.2.0', 'latest'], at: NOW - 10 * DAY, bytes: 2000, blobs: [d('b')] })
  await put('team/app', '3', { tags: ['v2.0.0-rc.1'], at: NOW - 5 * DAY, bytes: 300, blobs: [d('c')], artifactType: SBOM, created: '2024-05-20T00:00:00Z' })
  await put('team/web', '4', { tags: ['v0.9', 'prod'], at: NOW - 20 * DAY, bytes: 900, blobs: [d('a')], mediaType: DOCKER })
  await put('other/tool', '5', { tags: ['1.0.0'], at: NOW - 2 * DAY, bytes: 700, blobs: [d('a')] })
  await put('team/app', '6', { tags: ['multi'], at: NOW - DAY, bytes: 400, mediaType: INDEX, manifests: [d('1'), d('2')] })
  await apply({ type: 'SetProperties', repo: 'team/app', digest: d('2'), props: [{ key: 'qa.status', value: 'approved' }, { key: 'build', value: '42' }, { key: 'released', value: '2024-05-01' }], at: NOW })
  await apply({ type: 'SetProperties', repo: 'team/app', digest: d('3'), props: [{ key: 'qa.status', value: 'rejected' }, { key: 'build', value: '7' }], at: NOW })
  await apply({ type: 'SetProperties', repo: 'team/web', digest: d('4'), props: [{ key: 'qa.status', value: 'approved' }, { key: 'build', value: '100' }], at: NOW })
  await apply({ type: 'RecordChecksums', sums: [{ digest: d('a'), sha1: 'a'.repeat(40), md5: 'a'.repeat(32) }, { digest: d('b'), sha1: 'b'.repeat(40), md5: 'b'.repeat(32) }] })
  await apply({ type: 'RecordPulls', pulls: [{ repo: 'team/app', digest: d('2'), at: NOW - DAY }, { repo: 'team/web', digest: d('4'), at: NOW - 15 * DAY }] })
  return { kv, sm, apply, search: new MetadataSearch(kv) }
}

const everyone = (): boolean => true

async function find (s: MetadataSearch, q: string, canRead: (repo: string) => boolean = everyone): Promise<string[]> {
  const out: string[] = []
  let cursor: string | undefined
  do {
    const page = await s.search(parseQuery(q, NOW), { limit: 2, canRead, ...(cursor !== undefined ? { cursor } : {}) })
    out.push(...page.items.map((h) => `${h.repo}@${LABELS[h.digest.slice(7, 8)] ?? h.digest}`))
    cursor = page.cursor
  } while (cursor !== undefined)
  return out
}

t.test('every criterion on its own', async (t) => {
  const { search: s } = await world()
  const cases: Array<[string, string[]]> = [
    ['name:team/*', ['team/app@m1', 'team/app@m2', 'team/app@m3', 'team/app@i1', 'team/web@w1']],
    ['name=team/web', ['team/web@w1']],
    ['name~oo', ['other/tool@o1']],
    ['tag:v1.*', ['team/app@m1', 'team/app@m2']],
    ['tag=prod', ['team/web@w1']],
    ['tag~rc', ['team/app@m3']],
    ['tag:*', ['other/tool@o1', 'team/app@m1', 'team/app@m2', 'team/app@m3', 'team/app@i1', 'team/web@w1']],
    [`digest:${d('2')}`, ['team/app@m2', 'team/app@i1']],
    [`digest:${d('a')}`, ['other/tool@o1', 'team/app@m1', 'team/web@w1']],
    [`sha1:${'a'.repeat(40)}`, ['other/tool@o1', 'team/app@m1', 'team/web@w1']],
    [`md5:${'B'.repeat(32)}`, ['team/app@m2']],
    ['prop:qa.status', ['team/app@m2', 'team/app@m3', 'team/web@w1']],
    ['prop:qa.status=approved', ['team/app@m2', 'team/web@w1']],
    ['prop:qa.status~ject', ['team/app@m3']],
    ['prop:build>=42', ['team/app@m2', 'team/web@w1']],
    ['prop:build<42', ['team/app@m3']],
    ['prop:released>2024-04-01', ['team/app@m2']],
    ['pushed>=now-7d', ['other/tool@o1', 'team/app@m3', 'team/app@i1']],
    [`pushed:${new Date(NOW - 25 * DAY).toISOString().slice(0, 10)}..${new Date(NOW - 6 * DAY).toISOString().slice(0, 10)}`, ['team/app@m2', 'team/web@w1']],
    ['created<2024-03-01', ['team/app@m1']],
    ['created>=2024-01-01', ['team/app@m1', 'team/app@m3']],
    ['pulled>=now-2d', ['team/app@m2']],
    ['pulled<now-2d', ['team/web@w1']],
    ['media:*docker*', ['team/web@w1']],
    [`media=${INDEX}`, ['team/app@i1']],
    ['type:*sbom', ['team/app@m3']],
    ['size>=900', ['team/app@m2', 'team/web@w1']],
    ['size:300..500', ['team/app@m3', 'team/app@i1']],
    ['size<1KiB', ['other/tool@o1', 'team/app@m1', 'team/app@m3', 'team/app@i1', 'team/web@w1']],
  ]
  for (const [q, want] of cases) t.same(await find(s, q), want, q)
})

t.test('AND, OR, NOT, parentheses, and criteria side by side', async (t) => {
  const { search: s } = await world()
  const cases: Array<[string, string[]]> = [
    ['name:team/* AND prop:qa.status=approved', ['team/app@m2', 'team/web@w1']],
    ['name:team/* prop:qa.status=approved tag:v1.*', ['team/app@m2']],
    ['name:team/app AND (prop:qa.status=approved OR tag:v2.*)', ['team/app@m2', 'team/app@m3']],
    ['tag=prod OR tag=multi OR name=other/tool', ['other/tool@o1', 'team/app@i1', 'team/web@w1']],
    ['name:team/* AND NOT media:*index*', ['team/app@m1', 'team/app@m2', 'team/app@m3', 'team/web@w1']],
    ['NOT tag:*', []],
    ['NOT name:team/*', ['other/tool@o1']],
    ['not (prop:qa.status or size>=700)', ['team/app@m1', 'team/app@i1']],
    [`digest:${d('a')} AND NOT (name=team/web OR pushed>=now-3d)`, ['team/app@m1']],
    ['(tag:v1.* OR tag:v0.*) AND (size<600 OR prop:build>50)', ['team/app@m1', 'team/web@w1']],
    // A name prefix in the root AND: the other criterion's source seeks to it (exact tag, property, digest, OR).
    ['name=team/web AND tag=prod', ['team/web@w1']],
    ['name=team/we AND tag=prod', []],
    ['name:team/a* AND prop:qa.status=approved', ['team/app@m2']],
    [`name:other/* AND digest:${d('a')}`, ['other/tool@o1']],
    ['name:team/w* AND (tag=prod OR tag=v1.0)', ['team/web@w1']],
  ]
  for (const [q, want] of cases) t.same(await find(s, q), want, q)
})

t.test('pages: every match once, in order, the cursor opaque and checked', async (t) => {
  const { search: s } = await world()
  const all = await s.search(parseQuery('tag:*', NOW), { limit: 100, canRead: everyone })
  t.equal(all.items.length, 6)
  t.equal(all.cursor, undefined, 'no cursor when nothing more follows')
  const first = await s.search(parseQuery('tag:*', NOW), { limit: 4, canRead: everyone })
  t.equal(first.items.length, 4)
  t.ok(first.cursor !== undefined)
  const second = await s.search(parseQuery('tag:*', NOW), { limit: 4, canRead: everyone, cursor: first.cursor! })
  t.same([...first.items, ...second.items], all.items, 'the second page goes on where the first stopped')
  t.equal(second.cursor, undefined)
  const exact = await s.search(parseQuery('tag:*', NOW), { limit: 6, canRead: everyone })
  t.equal(exact.cursor, undefined, 'a page that takes the last match exactly has no cursor')
  await t.rejects(s.search(parseQuery('tag:*', NOW), { limit: 4, canRead: everyone, cursor: 'not-a-cursor' }), { code: 'BAD_REQUEST', message: /cursor/ })
})

t.test('only repositories the caller may read, whatever the criterion', async (t) => {
  const { search: s } = await world()
  const teamOnly = (repo: string): boolean => repo.startsWith('team/')
  t.same(await find(s, `sha1:${'a'.repeat(40)}`, teamOnly), ['team/app@m1', 'team/web@w1'])
  t.same(await find(s, 'tag:1.*', teamOnly), [], 'another repository\'s match is not shown')
  t.same(await find(s, 'NOT name=team/app', teamOnly), ['team/web@w1'])
  t.same(await find(s, 'name:*', () => false), [])
})

t.test('the indexes follow tag moves, deletes, pulls and promotion with properties', async (t) => {
  const { search: s, apply, kv } = await world()
  // `latest` moves from m2 to m3.
  await apply({ type: 'PutManifest', repo: 'team/app', digest: d('3'), body: Buffer.alloc(300, 1).toString('base64'), mediaType: OCI, tags: ['latest'], blobs: [d('c')], manifests: [], artifactType: SBOM, annotations: { 'org.opencontainers.image.created': '2024-05-20T00:00:00Z' }, at: NOW })
  t.same(await find(s, 'tag=latest'), ['team/app@m3'])
  const tagsOf = async (digest: string): Promise<string[][]> => (await s.search(parseQuery(`digest:${digest}`, NOW), { limit: 10, canRead: everyone })).items.filter((h) => h.digest === digest).map((h) => h.tags)
  t.same(await tagsOf(d('2')), [['v1.2.0']], 'a moved tag leaves its old manifest\'s tags')
  t.same(await tagsOf(d('3')), [['latest', 'v2.0.0-rc.1']])
  t.same(await find(s, 'pushed>=now-1h'), ['team/app@m3'], 'pushed again: its push time moved in the index')
  await apply({ type: 'DeleteTag', repo: 'team/web', tag: 'prod' })
  t.same(await find(s, 'tag=prod'), [])
  await apply({ type: 'RecordPulls', pulls: [{ repo: 'team/web', digest: d('4'), at: NOW }] })
  t.same(await find(s, 'pulled>=now-1h'), ['team/web@w1'])
  t.same(await find(s, 'pulled<now-2d'), [], 'the old pull time left the index')
  // Promotion with properties: the copy in prod/app is found by its properties.
  await apply({ type: 'Promote', from: 'team/app', digest: d('2'), to: 'prod/app', tags: ['v1.2.0'], move: false, properties: true, at: NOW })
  t.same(await find(s, 'prop:qa.status=approved'), ['prod/app@m2', 'team/app@m2', 'team/web@w1'], 'properties survive promotion, and search finds them')
  t.same(await find(s, 'name:prod/* AND tag:v1.*'), ['prod/app@m2'])
  await apply({ type: 'DeleteManifest', repo: 'team/app', digest: d('2') })
  t.same(await find(s, `digest:${d('2')}`), ['prod/app@m2', 'team/app@i1'], 'a deleted manifest leaves every index (the index i1 still names it)')
  t.same(await find(s, `md5:${'b'.repeat(32)}`), ['prod/app@m2'])
  // Nothing is left over for the deleted manifest in any index.
  for await (const [k] of kv.entries(prefixRange('sx\u0000'))) if (k.includes(`team/app\u0000${d('2')}`)) t.fail(`left over: ${k.replace(/\u0000/g, '␀')}`)
  // And what all those changes left is what a backfill computes from scratch.
  const dump = async (): Promise<string[]> => { const out: string[] = []; for await (const [k, v] of kv.entries(prefixRange('sx\u0000'))) out.push(`${k}=${Buffer.from(v).toString()}`); return out }
  const kept = await dump()
  await kv.batch(kept.map((e) => ({ type: 'del' as const, key: e.slice(0, e.indexOf('=')) })))
  await apply({ type: 'RebuildSearchIndex', at: NOW })
  t.same(await dump(), kept, 'the indexes kept through moves, deletes, pulls and a promotion equal a rebuild')
})

t.test('the one-time backfill builds the same indexes as applying commands did', async (t) => {
  const { kv, sm, search: s } = await world()
  const snapshot = async (): Promise<string[]> => { const out: string[] = []; for await (const [k, v] of kv.entries(prefixRange('sx\u0000'))) out.push(`${k}=${Buffer.from(v).toString()}`); return out }
  const before = await snapshot()
  t.ok(before.length > 20)
  // A store from before the indexes: no sx␀ keys at all.
  await kv.batch(before.map((e) => ({ type: 'del' as const, key: e.slice(0, e.indexOf('=')) })))
  t.equal(await s.ready(), false, 'not ready: searches wait for the backfill')
  const r = await sm.apply({ at: NOW, command: { type: 'RebuildSearchIndex', at: NOW } })
  t.match(r, { ok: true, value: { manifests: 6, tags: 9 } })
  t.equal(await s.ready(), true)
  t.same(await snapshot(), before)
  const again = await sm.apply({ at: NOW, command: { type: 'RebuildSearchIndex', at: NOW } })
  t.match(again, { ok: true, value: { manifests: 0, tags: 0 } }, 'a second backfill (another node asking too) changes nothing')
})

t.test('latest: by version or push time, a tag pattern, a property', async (t) => {
  const { search: s } = await world()
  t.match(await s.latest('team/app', { by: 'semver' }), { tag: 'v2.0.0-rc.1', digest: d('3'), version: '2.0.0-rc.1' }, 'a pre-release of 2.0.0 is above 1.2.0')
  t.match(await s.latest('team/app', { by: 'semver', match: 'v1.*' }), { tag: 'v1.2.0', version: '1.2.0' })
  t.match(await s.latest('team/app', { by: 'semver', prop: { key: 'qa.status', value: 'approved' } }), { tag: 'v1.2.0', digest: d('2') })
  t.match(await s.latest('team/app', { by: 'time' }), { tag: 'multi', digest: d('6') })
  t.match(await s.latest('team/app', { by: 'time', match: 'v*' }), { tag: 'v2.0.0-rc.1' })
  t.equal(await s.latest('team/app', { by: 'semver', prop: { key: 'qa.status', value: 'nope' } }), undefined)
  t.equal(await s.latest('no/such', { by: 'time' }), undefined)
})

t.test('a malformed query is refused, naming the position', async (t) => {
  const bad = (q: string, re: RegExp): void => {
    try {
      parseQuery(q, NOW)
      t.fail(`${q} parsed`)
    } catch (err) {
      t.ok(err instanceof FlotillaError && err.code === 'BAD_REQUEST', q)
      t.match((err as Error).message, re, q)
    }
  }
  bad('name:a AND (tag:b', /position 18: expected \) to close the \( at position 12/)
  bad('colour:red', /position 1: unknown field "colour"/)
  bad('size>abc', /position 6: "abc" is not a size/)
  bad('pushed<yesterday', /position 8: .*not a time/)
  bad('name:a OR', /position 10: expected a criterion/)
  bad('tag:x )', /position 7: unexpected \)/)
  bad('digest:sha256:zz', /position 8: .*not a digest/)
  bad('sha1:abc', /sha1 takes 40 hexadecimal digits/)
  bad('prop:k>soon', /compares numbers or dates/)
  bad('name>3', /name takes : = ~, not >/)
  bad('', /the query is empty/)
  bad('prop:note="open', /quoted value is not closed/)
  t.same(parseQuery('prop:note="two (words)"', NOW), { op: 'is', c: { field: 'prop', key: 'note', is: { op: '=', value: 'two (words)' } }, text: 'prop:note=two (words)' }, 'quotes keep spaces and parentheses')
})
