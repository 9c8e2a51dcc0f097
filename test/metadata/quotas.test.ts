/**
 * Storage quotas in the state machine (cluster/metadata/quotas.ts): usage counts each blob once
 * per namespace, follows every way a link comes and goes, and a command that passes a quota is
 * refused whole.
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../../cluster/metadata/queries.js'
import type { Command } from '../../cluster/metadata/commands.js'

const d = (c: string): string => 'sha256:' + c.repeat(64)
const body = Buffer.from('{}').toString('base64')

async function fresh (): Promise<{ sm: MetadataStateMachine; q: MetadataQueries; apply: (c: Command) => Promise<any> }> {
  const kv = new MemoryKV()
  await kv.open()
  const sm = new MetadataStateMachine(kv, { sync: false })
  await sm.apply({ at: 0, command: { type: 'RebuildRefs', at: 0 } })
  return { sm, q: new MetadataQueries(kv), apply: async (c) => await sm.apply({ at: 1, command: c }) }
}
const used = async (q: MetadataQueries, name = 'a'): Promise<number | undefined> => (await q.quotas()).find((x) => x.name === name)?.usedBytes

t.test('a blob counts once per namespace, however many of its repositories link it', async (t) => {
  const { q, apply } = await fresh()
  await apply({ type: 'LinkBlob', repo: 'team-a/x', digest: d('1'), size: 100, at: 1 })
  t.match(await apply({ type: 'PutQuota', quota: { name: 'a', repositories: ['team-a/**'], maxBytes: 1000 }, at: 1 }), { ok: true, value: { usedBytes: 100 } }, 'a new quota counts what is there')
  await apply({ type: 'LinkBlob', repo: 'team-a/y', digest: d('1'), size: 100, at: 1 })
  t.equal(await used(q), 100, 'the same blob in a second repository: still 100')
  await apply({ type: 'LinkBlob', repo: 'team-b/z', digest: d('2'), size: 500, at: 1 })
  t.equal(await used(q), 100, 'another namespace does not count')
  await apply({ type: 'UnlinkBlob', repo: 'team-a/x', digest: d('1') })
  t.equal(await used(q), 100, 'unlinked from one repository, still in the other')
  await apply({ type: 'UnlinkBlob', repo: 'team-a/y', digest: d('1') })
  t.equal(await used(q), 0, 'gone from the namespace')
})

t.test('a link that passes the quota is refused whole, naming the quota; a promotion too', async (t) => {
  const { q, apply } = await fresh()
  await apply({ type: 'PutQuota', quota: { name: 'a', repositories: ['team-a/**'], maxBytes: 1000 }, at: 1 })
  t.match(await apply({ type: 'LinkBlob', repo: 'team-a/x', digest: d('1'), size: 900, at: 1 }), { ok: true })
  const r = await apply({ type: 'LinkBlob', repo: 'team-a/x', digest: d('2'), size: 200, at: 1 })
  t.match(r, { ok: false, code: 'QUOTA_EXCEEDED', message: /quota a \(team-a\/\*\*\) is 1000 bytes: this would use 1100 bytes/ })
  t.equal(await q.linkedBlob('team-a/x', d('2')), undefined, 'nothing of the refused command is written')
  t.equal(await used(q), 900)
  // A promotion from outside brings blobs in: held to the same quota.
  await apply({ type: 'LinkBlob', repo: 'other/src', digest: d('3'), size: 300, at: 1 })
  await apply({ type: 'PutManifest', repo: 'other/src', digest: d('m'), body, mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: ['v1'], blobs: [d('3')], manifests: [], at: 1 })
  t.match(await apply({ type: 'Promote', from: 'other/src', to: 'team-a/app', digest: d('m'), tags: ['v1'], move: false, at: 2 } as Command), { ok: false, code: 'QUOTA_EXCEEDED' })
  t.equal(await q.manifest('team-a/app', d('m')), undefined, 'the promotion is refused whole')
})

t.test('a quota lowered below use: no new manifest there until space is freed; GC frees it', async (t) => {
  const { q, apply } = await fresh()
  await apply({ type: 'LinkBlob', repo: 'team-a/x', digest: d('1'), size: 600, at: 1 })
  await apply({ type: 'LinkBlob', repo: 'team-a/x', digest: d('2'), size: 600, at: 1 })
  await apply({ type: 'PutQuota', quota: { name: 'a', repositories: ['team-a/**'], maxBytes: 1000 }, at: 1 })
  t.equal(await used(q), 1200)
  t.match(await apply({ type: 'PutManifest', repo: 'team-a/x', digest: d('m'), body, mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: ['v1'], blobs: [d('1')], manifests: [], at: 2 }), { ok: false, code: 'QUOTA_EXCEEDED', message: /no new manifest/ })
  const gc = await apply({ type: 'CollectGarbage', before: 5, keep: [], at: 5 })
  t.equal(gc.value.unlinked.length, 2, 'GC unlinks the unreferenced blobs')
  t.equal(await used(q), 0, 'and the namespace\'s usage drops with them')
  t.match(await apply({ type: 'DeleteQuota', name: 'a', at: 6 }), { ok: true })
  t.same(await q.quotas(), [])
  t.match(await apply({ type: 'DeleteQuota', name: 'a', at: 6 }), { ok: false, code: 'NOT_FOUND' })
})
