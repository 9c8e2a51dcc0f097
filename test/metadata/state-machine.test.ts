/**
 * The metadata state machine on its own: each command's effect and refusal, deduplication of
 * retried commands, and determinism (two machines fed one log end in identical states).
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../../cluster/metadata/queries.js'
import type { Command, Envelope } from '../../cluster/metadata/commands.js'

const D1 = 'sha256:' + '1'.repeat(64)
const D2 = 'sha256:' + '2'.repeat(64)
const M1 = 'sha256:' + 'a'.repeat(64)
const M2 = 'sha256:' + 'b'.repeat(64)
const body = Buffer.from('{"schemaVersion":2}').toString('base64')

function put (digest: string, tags: string[], extra: Partial<Extract<Command, { type: 'PutManifest' }>> = {}): Command {
  return { type: 'PutManifest', repo: 'r', digest, body, mediaType: 'application/vnd.oci.image.manifest.v1+json', tags, blobs: [D1], manifests: [], at: 1, ...extra }
}

async function fresh (): Promise<{ kv: MemoryKV; sm: MetadataStateMachine; q: MetadataQueries }> {
  const kv = new MemoryKV()
  await kv.open()
  return { kv, sm: new MetadataStateMachine(kv, { sync: false }), q: new MetadataQueries(kv) }
}

t.test('LinkBlob closes its upload and counts repositories; UnlinkBlob undoes it', async (t) => {
  const { sm, q } = await fresh()
  t.same(await sm.apply({ command: { type: 'CreateUpload', id: 'up1', repo: 'r', owner: 'n1', algorithm: 'sha256', at: 1 } }), { ok: true })
  t.same(await sm.apply({ command: { type: 'LinkBlob', repo: 'other', digest: D1, size: 5, uploadId: 'up1', at: 2 } }), { ok: false, code: 'BLOB_UPLOAD_UNKNOWN', message: 'upload up1 is unknown in other' }, 'an upload links only into its own repository')
  t.same(await sm.apply({ command: { type: 'LinkBlob', repo: 'r', digest: D1, size: 5, uploadId: 'up1', at: 2 } }), { ok: true })
  t.equal(await q.upload('up1'), undefined)
  t.same(await q.linkedBlob('r', D1), { size: 5, at: 2 })
  await sm.apply({ command: { type: 'LinkBlob', repo: 's', digest: D1, size: 5, at: 3 } })
  await sm.apply({ command: { type: 'LinkBlob', repo: 's', digest: D1, size: 5, at: 3 } })
  t.same(await q.knownBlob(D1), { size: 5, links: 2 }, 'a repeated link counts once')
  t.same(await sm.apply({ command: { type: 'UnlinkBlob', repo: 's', digest: D1 } }), { ok: true })
  t.same(await q.knownBlob(D1), { size: 5, links: 1 })
  t.equal((await sm.apply({ command: { type: 'UnlinkBlob', repo: 's', digest: D1 } })).ok, false)
  t.same((await q.repositories()).items, ['r', 's'])
})

t.test('PutManifest checks references at apply time, tags, retags and records referrers', async (t) => {
  const { sm, q } = await fresh()
  const missing = await sm.apply({ command: put(M1, ['v1']) })
  t.equal(missing.ok === false && missing.code, 'MANIFEST_BLOB_UNKNOWN')
  t.same((await q.repositories()).items, [], 'a refused command changes nothing')
  await sm.apply({ command: { type: 'LinkBlob', repo: 'r', digest: D1, size: 5, at: 1 } })
  t.same(await sm.apply({ command: put(M1, ['v1', 'latest']) }), { ok: true })
  t.equal(await q.resolveTag('r', 'latest'), M1)
  t.same(await sm.apply({ command: put(M2, ['latest'], { subject: M1, artifactType: 'x/sig', annotations: { a: 'b' } }) }), { ok: true })
  t.equal(await q.resolveTag('r', 'latest'), M2, 'the tag moved')
  t.same(await q.tagsOfManifest('r', M1), ['v1'], 'the reverse index followed the move')
  t.same(await q.referrers('r', M1), [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: M2, size: 19, artifactType: 'x/sig', annotations: { a: 'b' } }])
  t.same(await q.referrers('r', M1, 'x/other'), [])
  const child = await sm.apply({ command: put('sha256:' + 'c'.repeat(64), [], { blobs: [], manifests: [M1, 'sha256:' + 'd'.repeat(64)] }) })
  t.equal(child.ok === false && child.code, 'MANIFEST_BLOB_UNKNOWN', 'an index needs its children')
})

t.test('DeleteManifest removes its tags and its referrer entry; DeleteTag only the tag', async (t) => {
  const { sm, q } = await fresh()
  await sm.apply({ command: { type: 'LinkBlob', repo: 'r', digest: D1, size: 5, at: 1 } })
  await sm.apply({ command: put(M1, ['a', 'b']) })
  await sm.apply({ command: put(M2, ['c'], { subject: M1 }) })
  t.same(await sm.apply({ command: { type: 'DeleteTag', repo: 'r', tag: 'a' } }), { ok: true })
  t.same((await q.tags('r')).items, ['b', 'c'])
  t.ok(await q.manifest('r', M1))
  await sm.apply({ command: { type: 'DeleteManifest', repo: 'r', digest: M2 } })
  t.same(await q.referrers('r', M1), [])
  t.same((await q.tags('r')).items, ['b'])
  await sm.apply({ command: { type: 'DeleteManifest', repo: 'r', digest: M1 } })
  t.same((await q.tags('r')).items, [])
  t.equal(await q.manifestBody('r', M1), undefined)
  const again = await sm.apply({ command: { type: 'DeleteManifest', repo: 'r', digest: M1 } })
  t.equal(again.ok === false && again.code, 'MANIFEST_UNKNOWN')
  const tag = await sm.apply({ command: { type: 'DeleteTag', repo: 'r', tag: 'nope' } })
  t.equal(tag.ok === false && tag.code, 'MANIFEST_UNKNOWN')
})

t.test('a retried command (same client and sequence) is answered once and applied once', async (t) => {
  const { sm, q } = await fresh()
  const link: Envelope = { clientId: 'c1', seq: 1, command: { type: 'LinkBlob', repo: 'r', digest: D1, size: 5, at: 1 } }
  t.same(await sm.apply(link), { ok: true })
  await sm.apply({ clientId: 'c2', seq: 1, command: { type: 'UnlinkBlob', repo: 'r', digest: D1 } })
  t.same(await sm.apply(link), { ok: true }, 'the retry gets the first answer')
  t.equal(await q.linkedBlob('r', D1), undefined, 'and does not link the blob again')
  const stale = await sm.apply({ clientId: 'c1', seq: 0, command: link.command })
  t.equal(stale.ok, false, 'an older sequence is refused')
})

t.test('IssueJoinToken records a join token until it expires; later issues drop expired ones', async (t) => {
  const { sm, q } = await fresh()
  t.equal(await q.joinTokensOpenUntil(), 0, 'no token handed out yet')
  t.same(await sm.apply({ command: { type: 'IssueJoinToken', id: 'a', expiresAt: 1000, at: 100 } }), { ok: true })
  t.same(await sm.apply({ command: { type: 'IssueJoinToken', id: 'b', expiresAt: 5000, at: 200 } }), { ok: true })
  t.same(await q.joinToken('a'), { expiresAt: 1000 })
  t.equal(await q.joinTokensOpenUntil(), 5000, 'open until the latest expiry')
  // Time is the command's: at 1000 token a is expired and forgotten, b stays.
  t.same(await sm.apply({ command: { type: 'IssueJoinToken', id: 'c', expiresAt: 3000, at: 1000 } }), { ok: true })
  t.equal(await q.joinToken('a'), undefined, 'the expired token is dropped')
  t.same(await q.joinToken('b'), { expiresAt: 5000 })
  t.same(await q.joinToken('c'), { expiresAt: 3000 })
  t.equal(await q.joinTokensOpenUntil(), 5000)
  const born = await sm.apply({ command: { type: 'IssueJoinToken', id: 'd', expiresAt: 900, at: 900 } })
  t.equal(born.ok === false && born.code, 'BAD_REQUEST', 'a token expired at birth is refused')
  const noId = await sm.apply({ command: { type: 'IssueJoinToken', id: '', expiresAt: 9000, at: 900 } })
  t.equal(noId.ok === false && noId.code, 'BAD_REQUEST', 'a token needs an id')
  t.equal(await q.joinToken('d'), undefined, 'a refused command records nothing')
})

t.test('determinism: two machines applying one log reach identical states', async (t) => {
  const a = await fresh()
  const b = await fresh()
  const log: Envelope[] = [
    { command: { type: 'CreateUpload', id: 'u1', repo: 'r', owner: 'n', algorithm: 'sha256', at: 10 } },
    { command: { type: 'LinkBlob', repo: 'r', digest: D1, size: 5, uploadId: 'u1', at: 11 } },
    { command: { type: 'LinkBlob', repo: 'r', digest: D2, size: 6, at: 12 } },
    { command: put(M1, ['x', 'y']) },
    { command: put(M2, ['y'], { subject: M1 }) },
    { command: { type: 'DeleteTag', repo: 'r', tag: 'x' } },
    { command: { type: 'UnlinkBlob', repo: 'r', digest: D2 } },
    { command: { type: 'DeleteManifest', repo: 'r', digest: 'sha256:' + 'f'.repeat(64) } },
    { command: { type: 'IssueJoinToken', id: 'j1', expiresAt: 20, at: 13 } },
    { command: { type: 'IssueJoinToken', id: 'j2', expiresAt: 40, at: 30 } },
  ]
  for (const [i, e] of log.entries()) {
    t.same(await a.sm.apply(e, i + 1), await b.sm.apply(e, i + 1))
  }
  const dump = async (kv: MemoryKV): Promise<Array<[string, string]>> => {
    const out: Array<[string, string]> = []
    for await (const [k, v] of kv.entries({})) out.push([k, Buffer.from(v).toString('base64')])
    return out
  }
  t.same(await dump(a.kv), await dump(b.kv))
  t.equal(await a.sm.appliedIndex(), log.length)
})
