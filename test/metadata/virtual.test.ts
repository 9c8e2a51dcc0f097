/**
 * Virtual repositories in the state machine (cluster/metadata/virtual.ts, issue 13 part 2):
 * created and replaced by PutVirtual, removed by DeleteVirtual; a prefix overlapping another
 * virtual or stored repositories, a virtual in a virtual (cycles), a default that is not a
 * member and malformed prefixes are refused; nothing may be created under a virtual prefix.
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../../cluster/metadata/queries.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { resolve, virtualOwning, type VirtualRepo } from '../../cluster/metadata/virtual.js'

const d = (c: string): string => 'sha256:' + c.repeat(64)

async function fresh (): Promise<{ q: MetadataQueries; apply: (c: Command) => Promise<any> }> {
  const kv = new MemoryKV()
  await kv.open()
  const sm = new MetadataStateMachine(kv, { sync: false })
  return { q: new MetadataQueries(kv), apply: async (c) => await sm.apply({ at: 1, command: c }) }
}
const put = (v: Partial<VirtualRepo> & { name: string }): Extract<Command, { type: 'PutVirtual' }> => ({ type: 'PutVirtual', virtual: { prefix: 'dev/', members: ['team-a/', 'hub/'], defaultMember: 'team-a/', ...v }, at: 1 })

t.test('resolution order: a name under the prefix stands for each member, in order; pushes go to the default', async (t) => {
  const v: VirtualRepo = { name: 'dev', prefix: 'dev/', members: ['team-a/', 'hub/'], defaultMember: 'team-a/' }
  t.same(resolve(v, 'dev/app'), { rest: 'app', members: ['team-a/app', 'hub/app'], push: 'team-a/app' })
  t.same(resolve(v, 'dev/library/alpine').members, ['team-a/library/alpine', 'hub/library/alpine'], 'nested names keep their path')
  t.equal(virtualOwning([v], 'dev/app'), v)
  t.equal(virtualOwning([v], 'dev'), undefined, 'the bare name dev is not under dev/')
  t.equal(virtualOwning([v], 'devx/app'), undefined, 'devx/ is another namespace')
})

t.test('created, listed, replaced and removed through commands', async (t) => {
  const { q, apply } = await fresh()
  t.match(await apply(put({ name: 'dev' })), { ok: true, value: { created: true } })
  t.same(await q.virtuals(), [{ name: 'dev', prefix: 'dev/', members: ['team-a/', 'hub/'], defaultMember: 'team-a/' }])
  t.match(await apply(put({ name: 'dev', members: ['hub/', 'team-a/'] })), { ok: true, value: { created: false } }, 'the same name replaces it')
  t.same((await q.virtuals())[0]!.members, ['hub/', 'team-a/'], 'in the new order')
  t.match(await apply({ type: 'DeleteVirtual', name: 'dev', at: 1 }), { ok: true })
  t.same(await q.virtuals(), [])
  t.match(await apply({ type: 'DeleteVirtual', name: 'dev', at: 1 }), { ok: false, code: 'NOT_FOUND', message: /no virtual repository named dev/ })
})

t.test('bad input is refused with a message that names the fix', async (t) => {
  const { q, apply } = await fresh()
  const cases: Array<[Partial<VirtualRepo> & { name: string }, RegExp]> = [
    [{ name: 'dev', prefix: 'dev' }, /prefix "dev" must be a repository namespace ending in "\/"/],
    [{ name: 'dev', prefix: 'Dev/' }, /prefix "Dev\/"/],
    [{ name: 'dev', members: [] }, /members must be one or more prefixes/],
    [{ name: 'dev', members: ['team-a/', 'team-a/'] }, /listed twice/],
    [{ name: 'dev', members: ['team-a/', 'team-a/sub/'] }, /overlap: one lies inside the other/],
    [{ name: 'dev', members: ['dev/x/'], defaultMember: 'dev/x/' }, /overlaps the virtual prefix dev\/ itself/],
    [{ name: 'dev', defaultMember: 'team-b/' }, /defaultMember must be one of the members \(team-a\/, hub\/\)/],
    [{ name: 'bad name!' }, /name must be letters/],
  ]
  for (const [v, why] of cases) t.match(await apply(put(v)), { ok: false, code: 'BAD_REQUEST', message: why }, why.source)
  t.match(await apply({ type: 'PutVirtual', virtual: { ...put({ name: 'dev' }).virtual, extra: 1 } as unknown as VirtualRepo, at: 1 }), { ok: false, code: 'BAD_REQUEST', message: /unknown field "extra"/ })
  t.same(await q.virtuals(), [], 'nothing was recorded')
})

t.test('a prefix overlapping another virtual, or stored repositories, and a virtual in a virtual are refused', async (t) => {
  const { apply } = await fresh()
  t.match(await apply(put({ name: 'dev' })), { ok: true })
  t.match(await apply(put({ name: 'dev2', prefix: 'dev/sub/' })), { ok: false, code: 'ALREADY_EXISTS', message: /overlaps dev\/ of virtual repository dev/ })
  t.match(await apply(put({ name: 'all', prefix: 'all/', members: ['dev/'], defaultMember: 'dev/' })), { ok: false, code: 'BAD_REQUEST', message: /a virtual cannot contain another virtual/ }, 'a member that is a virtual')
  t.match(await apply(put({ name: 'all', prefix: 'all/', members: ['dev/sub/'], defaultMember: 'dev/sub/' })), { ok: false, code: 'BAD_REQUEST', message: /a virtual cannot contain another virtual/ }, 'a member inside a virtual prefix')
  t.match(await apply(put({ name: 'ta', prefix: 'team-a/', members: ['x/'], defaultMember: 'x/' })), { ok: false, code: 'BAD_REQUEST', message: /virtual repository dev has member team-a\/, which overlaps team-a\// }, 'a prefix that is another virtual\'s member: the cycle from the other side')
  await apply({ type: 'LinkBlob', repo: 'stuff/app', digest: d('1'), size: 10, at: 1 })
  t.match(await apply(put({ name: 'stuff', prefix: 'stuff/' })), { ok: false, code: 'ALREADY_EXISTS', message: /repository stuff\/app is stored under stuff\// }, 'a local namespace')
})

t.test('nothing is created under a virtual prefix: not by a push, a link or an upload', async (t) => {
  const { q, apply } = await fresh()
  t.match(await apply(put({ name: 'dev' })), { ok: true })
  t.match(await apply({ type: 'LinkBlob', repo: 'dev/app', digest: d('1'), size: 10, at: 1 }), { ok: false, code: 'NAME_INVALID', message: /dev\/app is under dev\/, the prefix of virtual repository dev: .* use team-a\/app/ })
  t.match(await apply({ type: 'LinkBlob', repo: 'team-a/app', digest: d('1'), size: 10, at: 1 }), { ok: true }, 'the member itself is a plain repository')
  t.match(await apply({ type: 'PutManifest', repo: 'dev/app', digest: d('2'), body: Buffer.from('{}').toString('base64'), mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: ['1'], blobs: [], manifests: [], at: 1 }), { ok: false, code: 'NAME_INVALID' })
  t.notOk(await q.repoExists('dev/app'))
})

t.test('remote and virtual repositories never claim the same names; a remote may be a member, never the default', async (t) => {
  const { q, apply } = await fresh()
  const hub = { name: 'hub', prefix: 'hub/', upstream: 'https://registry.example', ttlSeconds: 300, allow: ['**'], block: [], at: 1 }
  t.ok((await apply({ type: 'PutRemote', remote: hub, at: 1 })).ok, 'remote hub/')
  t.match(await apply(put({ name: 'cache', prefix: 'hub/x/', members: ['team-a/'], defaultMember: 'team-a/' })), { ok: false, code: 'ALREADY_EXISTS', message: /remote repository hub/ }, 'a virtual prefix inside the remote\'s')
  t.match(await apply(put({ name: 'dev' })), { ok: true }, 'a virtual with the remote as a member')
  t.match(await apply(put({ name: 'pull', prefix: 'pull/', members: ['hub/', 'team-a/'], defaultMember: 'hub/' })), { ok: false, code: 'BAD_REQUEST', message: /read-only cache/ }, 'the remote as the default member (pushes go there)')
  t.match(await apply({ type: 'PutRemote', remote: { ...hub, name: 'dev-cache', prefix: 'dev/cache/' }, at: 2 }), { ok: false, code: 'ALREADY_EXISTS', message: /virtual repository dev/ }, 'a remote prefix inside a virtual\'s')
  t.match(await apply({ type: 'PutRemote', remote: { ...hub, name: 'team', prefix: 'team-a/' }, at: 2 }), { ok: false, code: 'ALREADY_EXISTS', message: /pushes through virtual repository dev/ }, 'a remote over a virtual\'s default member')
  t.same((await q.virtuals()).map((v) => v.name), ['dev'], 'only the first virtual exists')
})
