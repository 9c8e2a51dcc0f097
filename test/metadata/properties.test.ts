/**
 * Properties and checksums in the state machine (cluster/metadata/properties.ts): the commands,
 * the inverted indexes, read-only annotation properties, and that every way a manifest or a blob
 * record goes (delete, promotion with move, GC) takes its index entries with it.
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { blobsByChecksum, checksumsOf, manifestsWithProperty, propertiesOf } from '../../cluster/metadata/properties.js'
import { dumpState, restoreState } from '../../cluster/metadata/snapshot.js'

const d = (c: string): string => 'sha256:' + c.repeat(64)
const body = Buffer.from('{}').toString('base64')
const MT = 'application/vnd.oci.image.manifest.v1+json'
const sha1 = (c: string): string => c.repeat(40)
const md5 = (c: string): string => c.repeat(32)

async function fresh (): Promise<{ kv: MemoryKV; apply: (c: Command) => Promise<any> }> {
  const kv = new MemoryKV()
  await kv.open()
  const sm = new MetadataStateMachine(kv, { sync: false })
  await sm.apply({ at: 0, command: { type: 'RebuildRefs', at: 0 } })
  return { kv, apply: async (c) => await sm.apply({ at: 1, command: c }) }
}

/** A repository with one layer and one manifest tagged v1 (annotated, with config labels). */
async function image (apply: (c: Command) => Promise<any>, repo = 'team/app'): Promise<void> {
  await apply({ type: 'LinkBlob', repo, digest: d('1'), size: 10, at: 1 })
  const r = await apply({
    type: 'PutManifest', repo, digest: d('m'), body, mediaType: MT, tags: ['v1'], blobs: [d('1')], manifests: [], at: 1,
    annotations: { 'org.opencontainers.image.source': 'https://example.com/app', long: 'x'.repeat(2000) },
    labels: { maintainer: 'ops', 'org.opencontainers.image.source': 'https://example.com/app' },
  })
  if (r.ok !== true) throw new Error(JSON.stringify(r))
}

async function withProp (kv: MemoryKV, k: string, v?: string): Promise<string[]> {
  const out: string[] = []
  for await (const m of manifestsWithProperty(kv, k, v)) out.push(`${m.repo}@${m.digest.slice(7, 8)}=${m.value}${m.readOnly ? ' ro' : ''}`)
  return out
}

async function count (kv: MemoryKV, prefix: string): Promise<number> {
  let n = 0
  for await (const _ of kv.entries(prefixRange(prefix))) n++
  return n
}

t.test('annotations and config labels are read-only properties, indexed both ways', async (t) => {
  const { kv, apply } = await fresh()
  await image(apply)
  t.same(await propertiesOf(kv, 'team/app', d('m')), [
    { key: 'maintainer', values: ['ops'], readOnly: true },
    { key: 'org.opencontainers.image.source', values: ['https://example.com/app'], readOnly: true },
  ], 'an annotation over 1024 characters is not indexed; the same pair as annotation and label comes once')
  t.same(await withProp(kv, 'maintainer', 'ops'), ['team/app@m=ops ro'])
  t.match(await apply({ type: 'RemoveProperties', repo: 'team/app', digest: d('m'), props: [{ key: 'maintainer' }], at: 2 }), { ok: false, code: 'DENIED', message: /read-only/ })
})

t.test('set adds values (multi-valued), replace swaps a key\'s user values, remove takes one or all', async (t) => {
  const { kv, apply } = await fresh()
  await image(apply)
  t.match(await apply({ type: 'SetProperties', repo: 'team/app', digest: d('m'), props: [{ key: 'qa', value: 'passed' }, { key: 'env', value: 'dev' }, { key: 'env', value: 'test' }], at: 2 }), { ok: true, value: { added: 3 } })
  t.match(await apply({ type: 'SetProperties', repo: 'team/app', digest: d('m'), props: [{ key: 'qa', value: 'passed' }], at: 2 }), { ok: true, value: { added: 0 } }, 'setting a pair again changes nothing')
  t.same((await propertiesOf(kv, 'team/app', d('m'))).find((p) => p.key === 'env'), { key: 'env', values: ['dev', 'test'], readOnly: false })
  t.same(await withProp(kv, 'env'), ['team/app@m=dev', 'team/app@m=test'], 'by key alone: every value')
  await apply({ type: 'SetProperties', repo: 'team/app', digest: d('m'), props: [{ key: 'env', value: 'prod' }], replace: true, at: 3 })
  t.same(await withProp(kv, 'env'), ['team/app@m=prod'], 'replace: the old values leave the index too')
  // A user may also set a pair the image already has: it stays read-only.
  await apply({ type: 'SetProperties', repo: 'team/app', digest: d('m'), props: [{ key: 'maintainer', value: 'ops' }], at: 3 })
  t.match(await apply({ type: 'RemoveProperties', repo: 'team/app', digest: d('m'), props: [{ key: 'maintainer', value: 'ops' }], at: 3 }), { ok: false, code: 'DENIED' })
  t.match(await apply({ type: 'RemoveProperties', repo: 'team/app', digest: d('m'), props: [{ key: 'env' }, { key: 'qa', value: 'passed' }], at: 4 }), { ok: true, value: { removed: 2 } })
  t.same(await withProp(kv, 'env'), [])
  t.same(await withProp(kv, 'qa'), [])
})

t.test('bad input is refused with a reason, and an unknown manifest with MANIFEST_UNKNOWN', async (t) => {
  const { apply } = await fresh()
  await image(apply)
  const set = async (props: any): Promise<any> => await apply({ type: 'SetProperties', repo: 'team/app', digest: d('m'), props, at: 2 })
  t.match(await set([]), { ok: false, code: 'BAD_REQUEST' })
  t.match(await set([{ key: '', value: 'x' }]), { ok: false, code: 'BAD_REQUEST', message: /1-256 characters/ })
  t.match(await set([{ key: 'a\u0000b', value: 'x' }]), { ok: false, code: 'BAD_REQUEST', message: /control characters/ })
  t.match(await set([{ key: 'a', value: 'x'.repeat(1025) }]), { ok: false, code: 'BAD_REQUEST', message: /at most 1024/ })
  t.match(await apply({ type: 'SetProperties', repo: 'team/app', digest: d('9'), props: [{ key: 'a', value: 'b' }], at: 2 }), { ok: false, code: 'MANIFEST_UNKNOWN' })
  t.match(await apply({ type: 'RecordChecksums', sums: [{ digest: d('1'), sha1: 'XYZ', md5: md5('a') }] }), { ok: false, code: 'BAD_REQUEST' })
})

t.test('deleting a manifest removes its properties and their index entries', async (t) => {
  const { kv, apply } = await fresh()
  await image(apply)
  await apply({ type: 'SetProperties', repo: 'team/app', digest: d('m'), props: [{ key: 'qa', value: 'passed' }], at: 2 })
  t.ok(await count(kv, 'propidx\u0000') > 0)
  t.match(await apply({ type: 'DeleteManifest', repo: 'team/app', digest: d('m') }), { ok: true })
  t.same(await propertiesOf(kv, 'team/app', d('m')), [])
  t.equal(await count(kv, 'prop\u0000'), 0)
  t.equal(await count(kv, 'propidx\u0000'), 0, 'no index entry is left behind')
})

t.test('promotion carries user properties when asked; a move leaves none at the source', async (t) => {
  const { kv, apply } = await fresh()
  await image(apply, 'dev/app')
  await apply({ type: 'SetProperties', repo: 'dev/app', digest: d('m'), props: [{ key: 'qa', value: 'passed' }], at: 2 })
  t.match(await apply({ type: 'Promote', from: 'dev/app', to: 'stage/app', digest: d('m'), tags: ['v1'], move: false, at: 3 } as Command), { ok: true, value: { properties: 0 } })
  t.same(await withProp(kv, 'qa'), ['dev/app@m=passed'], 'without properties: only the read-only ones follow')
  t.same(await withProp(kv, 'maintainer'), ['dev/app@m=ops ro', 'stage/app@m=ops ro'])
  t.match(await apply({ type: 'Promote', from: 'dev/app', to: 'prod/app', digest: d('m'), tags: ['v1'], move: true, properties: true, at: 4 } as Command), { ok: true, value: { properties: 1 } })
  t.same(await withProp(kv, 'qa'), ['prod/app@m=passed'], 'moved: at the target, gone from the source')
  t.same(await propertiesOf(kv, 'dev/app', d('m')), [])
})

t.test('checksums: recorded in batches, found by either hash, forgotten with the blob by GC, kept by snapshots', async (t) => {
  const { kv, apply } = await fresh()
  await apply({ type: 'LinkBlob', repo: 'team/app', digest: d('1'), size: 10, at: 1 })
  await apply({ type: 'LinkBlob', repo: 'team/app', digest: d('2'), size: 10, at: 1 })
  const r = await apply({ type: 'RecordChecksums', sums: [{ digest: d('1'), sha1: sha1('a'), md5: md5('b') }, { digest: d('2'), sha1: sha1('a'), md5: md5('c') }, { digest: d('9'), sha1: sha1('d'), md5: md5('d') }] })
  t.match(r, { ok: true, value: { recorded: 2 } }, 'a blob the registry does not know is skipped')
  t.same(await checksumsOf(kv, d('1')), { sha1: sha1('a'), md5: md5('b') })
  t.same(await blobsByChecksum(kv, 'sha1', sha1('a').toUpperCase()), [d('1'), d('2')], 'same SHA-1 (as a test may fake): both; any case')
  t.same(await blobsByChecksum(kv, 'md5', md5('c')), [d('2')])
  t.same(await blobsByChecksum(kv, 'md5', md5('d')), [])

  // A snapshot copies every key: the indexes arrive on a new node as they are.
  const other = new MemoryKV(); await other.open()
  await restoreState(other, await dumpState(kv), { sync: false })
  t.same(await blobsByChecksum(other, 'md5', md5('b')), [d('1')])

  // Unlinked, then collected: the blob record goes, its checksums with it.
  await apply({ type: 'UnlinkBlob', repo: 'team/app', digest: d('1') })
  t.match(await apply({ type: 'CollectGarbage', before: 10, keep: [d('2')], at: 10 }), { ok: true })
  t.equal(await checksumsOf(kv, d('1')), undefined)
  t.same(await blobsByChecksum(kv, 'md5', md5('b')), [])
  t.same(await blobsByChecksum(kv, 'sha1', sha1('a')), [d('2')])
})
