/**
 * Issue 13, remote repositories, one module at a time: the remote record's checks and name
 * matching (cluster/remote/model.ts), credentials encrypted with the cluster key (secret.ts),
 * and the state machine's PutRemote / DeleteRemote / RemoteTagChecked and partial manifests.
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../../cluster/metadata/queries.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { checkRemote, remoteAllows, remoteOf, upstreamName, type RemoteRecord } from '../../cluster/remote/model.js'
import { decryptSecret, encryptSecret } from '../../cluster/remote/secret.js'

const remote = (over: Partial<RemoteRecord> = {}): RemoteRecord => ({ name: 'hub', prefix: 'hub/', upstream: 'https://registry-1.docker.io', ttlSeconds: 300, allow: ['**'], block: [], at: 1, ...over })

t.test('checkRemote refuses what cannot work, naming the field', async (t) => {
  t.doesNotThrow(() => { checkRemote(remote()) })
  t.doesNotThrow(() => { checkRemote(remote({ prefix: 'mirrors/quay/', upstream: 'http://10.0.0.5:5000' })) })
  for (const [over, why] of [
    [{ prefix: 'hub' }, /prefix/],
    [{ prefix: 'Hub/' }, /prefix/],
    [{ upstream: 'ftp://x' }, /http/],
    [{ upstream: 'https://x/v2/' }, /bare origin/],
    [{ upstream: 'https://u:p@x' }, /bare origin/],
    [{ ttlSeconds: -1 }, /ttlSeconds/],
    [{ allow: ['/bad'] }, /allow/],
    [{ username: 'me' }, /both a username and a password/],
  ] as Array<[Partial<RemoteRecord>, RegExp]>) t.throws(() => { checkRemote(remote(over)) }, { message: why }, JSON.stringify(over))
})

t.test('a name finds its remote by prefix; allow and block patterns apply to the upstream name', async (t) => {
  const list = [remote(), remote({ name: 'quay', prefix: 'quay/' })]
  t.equal(remoteOf('hub/library/alpine', list)?.name, 'hub')
  t.equal(remoteOf('quay/coreos/etcd', list)?.name, 'quay')
  t.equal(remoteOf('hubble/app', list), undefined, 'a prefix is whole components')
  t.equal(remoteOf('hub', list), undefined)
  t.equal(upstreamName(list[0]!, 'hub/library/alpine'), 'library/alpine')
  t.equal(upstreamName(list[0]!, 'hub/alpine'), 'library/alpine', 'Docker Hub: official images are under library/')
  t.equal(upstreamName(remote({ upstream: 'http://127.0.0.1:5000' }), 'hub/alpine'), 'alpine', 'elsewhere the name stays')
  const r = remote({ allow: ['library/*'], block: ['library/evil'] })
  t.ok(remoteAllows(r, 'library/alpine'))
  t.notOk(remoteAllows(r, 'library/evil'), 'block wins')
  t.notOk(remoteAllows(r, 'someone/app'), 'not allowed')
})

t.test('credentials: AES-GCM under a key from the cluster secret', async (t) => {
  const key = { clusterId: 'c1', secret: 'cluster-secret' }
  const enc = encryptSecret('hunter2-token', key)
  t.match(enc, /^v1:/)
  t.notOk(enc.includes('hunter2'))
  t.equal(decryptSecret(enc, key), 'hunter2-token')
  t.not(encryptSecret('hunter2-token', key), enc, 'a fresh IV each time')
  t.throws(() => decryptSecret(enc, { clusterId: 'c1', secret: 'another cluster' }), 'another cluster\'s key cannot read it')
})

t.test('state machine: remotes, their checked tags, and manifests cached before their blobs', async (t) => {
  const kv = new MemoryKV()
  const sm = new MetadataStateMachine(kv, { sync: false })
  const q = new MetadataQueries(kv)
  const apply = async (command: Command): Promise<{ ok: boolean; code?: string; message?: string }> => await sm.apply({ command }) as { ok: boolean; code?: string; message?: string }
  t.ok((await apply({ type: 'PutRemote', remote: remote(), at: 1 })).ok)
  const clash = await apply({ type: 'PutRemote', remote: remote({ name: 'other', prefix: 'hub/library/' }), at: 2 })
  t.equal(clash.code, 'ALREADY_EXISTS', 'overlapping prefixes are refused')
  t.ok((await apply({ type: 'PutRemote', remote: remote({ ttlSeconds: 60 }), at: 3 })).ok, 'replacing a remote is no overlap with itself')
  t.same((await q.remotes()).map((r) => [r.name, r.ttlSeconds]), [['hub', 60]])
  const blob = 'sha256:' + 'a'.repeat(64)
  const digest = 'sha256:' + 'b'.repeat(64)
  const put: Command = { type: 'PutManifest', repo: 'hub/library/alpine', digest, body: Buffer.from('{}').toString('base64'), mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: ['3'], blobs: [blob], manifests: [], at: 10 }
  t.equal((await apply(put)).code, 'MANIFEST_BLOB_UNKNOWN', 'a pushed manifest needs its blobs')
  const feed = async (): Promise<number> => { let n = 0; for await (const _ of kv.entries(prefixRange('feed\u0000'))) n++; return n }
  const before = await feed()
  t.ok((await apply({ ...put, partial: true })).ok, 'a cached one gets them when first pulled')
  t.equal(await feed(), before, 'a cached manifest is not shipped to peered sites (each site fronts the upstream itself)')
  t.same(await q.tagInfo('hub/library/alpine', '3'), { digest, checkedAt: 10 })
  t.ok((await apply({ type: 'RemoteTagChecked', repo: 'hub/library/alpine', tag: '3', digest, at: 50 })).ok)
  t.same(await q.tagInfo('hub/library/alpine', '3'), { digest, checkedAt: 50 }, 'checked again: the TTL starts over')
  t.ok((await apply({ type: 'RemoteTagChecked', repo: 'hub/library/alpine', tag: '3', digest: 'sha256:' + 'c'.repeat(64), at: 90 })).ok)
  t.same(await q.tagInfo('hub/library/alpine', '3'), { digest, checkedAt: 50 }, 'a check of another digest changes nothing')
  t.ok((await apply({ type: 'DeleteRemote', name: 'hub', at: 100 })).ok)
  t.equal((await apply({ type: 'DeleteRemote', name: 'hub', at: 101 })).code, 'NOT_FOUND')
})
