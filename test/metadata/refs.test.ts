/**
 * GC's reference counts (cluster/metadata/refs.ts): kept by every command in the same batch,
 * equal at every step to a recount from scratch, and what a collection removes.
 */
import t from 'tap'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { prefixRange } from '../../storage/kv/kv.js'

const body = Buffer.from('{"schemaVersion":2}').toString('base64')
const blob = (i: number): string => 'sha256:' + String(i % 10).repeat(64)
const man = (i: number): string => 'sha256:' + 'abcdef'[i % 6]!.repeat(64)

async function fresh (): Promise<{ kv: MemoryKV; sm: MetadataStateMachine }> {
  const kv = new MemoryKV()
  await kv.open()
  const sm = new MetadataStateMachine(kv, { sync: false })
  t.ok((await sm.apply({ at: 0, command: { type: 'RebuildRefs', at: 0 } })).ok)
  return { kv, sm }
}

/** The GC keys of a store, `since` left out (a recount cannot know when each began). */
async function refsOf (kv: MemoryKV): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  for (const p of ['bref\u0000', 'mref\u0000', 'unref\u0000', 'orphan\u0000']) {
    for await (const [k, v] of kv.entries(prefixRange(p))) {
      const { since: _since, ...rest } = JSON.parse(Buffer.from(v).toString()) as Record<string, unknown>
      out[k.replaceAll('\u0000', '/')] = rest
    }
  }
  return out
}

/** A deterministic pseudo-random sequence (no Math.random: a failure replays). */
function rng (seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => { x ^= x << 13; x >>>= 0; x ^= x >> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32 }
}

t.test('after every command, the kept counts equal a recount from scratch (300 random commands, 5 seeds)', async (t) => {
  for (let seed = 1; seed <= 5; seed++) {
    const { kv, sm } = await fresh()
    const r = rng(seed)
    const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!
    const repos = ['a', 'b', 'c/d']
    for (let i = 1; i <= 300; i++) {
      const repo = pick(repos)
      const k = r()
      let c: Command
      if (k < 0.3) c = { type: 'LinkBlob', repo, digest: blob(Math.floor(r() * 10)), size: 100, at: i }
      else if (k < 0.55) {
        // Content-addressed: one digest always references the same things (two of them the same blob).
        const m = Math.floor(r() * 6)
        const blobs = [blob(m), blob(m + 3), blob(m)]
        const manifests = m >= 4 ? [man(m - 4)] : []
        c = { type: 'PutManifest', repo, digest: man(m), body, mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: r() < 0.5 ? [pick(['x', 'y'])] : [], blobs, manifests, at: i }
      } else if (k < 0.7) c = { type: 'DeleteManifest', repo, digest: man(Math.floor(r() * 6)) }
      else if (k < 0.8) c = { type: 'DeleteTag', repo, tag: pick(['x', 'y']) }
      else if (k < 0.88) c = { type: 'UnlinkBlob', repo, digest: blob(Math.floor(r() * 10)) }
      else if (k < 0.94) c = { type: 'AddHolder', digest: blob(Math.floor(r() * 10)), size: 100, peerId: 'n1' }
      else c = { type: 'Promote', from: repo, to: pick(repos), digest: man(Math.floor(r() * 6)), tags: [], move: r() < 0.5, at: i } as unknown as Command
      await sm.apply({ at: i, command: c })
      const kept = await refsOf(kv)
      // Recount on a copy: apply RebuildRefs to a second machine over a cloned store.
      const clone = new MemoryKV()
      await clone.open()
      const ops = []
      for await (const [key, value] of kv.entries({})) ops.push({ type: 'put' as const, key, value })
      await clone.batch(ops, { sync: false })
      await new MetadataStateMachine(clone, { sync: false }).apply({ at: i, command: { type: 'RebuildRefs', at: i } })
      const counted = await refsOf(clone)
      if (JSON.stringify(kept) !== JSON.stringify(counted)) {
        t.same(kept, counted, `seed ${seed}, command ${i} (${c.type} ${JSON.stringify(c).slice(0, 200)}): kept counts equal the recount`)
        return
      }
    }
    t.pass(`seed ${seed}: 300 commands, counts right after each`)
  }
})

t.test('a collection unlinks what is unreferenced past the grace, forgets blobs nobody links, and keeps what is in use', async (t) => {
  const { kv, sm } = await fresh()
  const apply = async (at: number, command: Command): Promise<unknown> => await sm.apply({ at, command })
  await apply(10, { type: 'LinkBlob', repo: 'r', digest: blob(1), size: 10, holder: 'n1', at: 10 })
  await apply(10, { type: 'LinkBlob', repo: 'r', digest: blob(2), size: 20, holder: 'n1', at: 10 })
  await apply(10, { type: 'LinkBlob', repo: 'r', digest: blob(3), size: 30, holder: 'n1', at: 10 })
  await apply(11, { type: 'PutManifest', repo: 'r', digest: man(0), body, mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: ['v1'], blobs: [blob(1), blob(2)], manifests: [], at: 11 })
  await apply(12, { type: 'LinkBlob', repo: 's', digest: blob(2), size: 20, at: 12 })
  // blob 3: linked at 10, referenced by nothing. Delete the manifest at 20: blobs 1 and 2 become unreferenced in r.
  await apply(20, { type: 'DeleteManifest', repo: 'r', digest: man(0) })
  const refs = await refsOf(kv)
  t.same(Object.keys(refs).sort(), [`unref/r/${blob(1)}`, `unref/r/${blob(2)}`, `unref/r/${blob(3)}`, `unref/s/${blob(2)}`].sort(), 'every link is unreferenced now')

  const early = await sm.apply({ at: 30, command: { type: 'CollectGarbage', before: 15, keep: [], at: 30 } }) as { value: { unlinked: unknown[]; blobs: Array<{ digest: string }> } }
  t.same(early.value.unlinked, [{ repo: 'r', digest: blob(3) }, { repo: 's', digest: blob(2) }].sort((a, b) => a.repo.localeCompare(b.repo)), 'grace: only links unreferenced since before 15 go (blob 3 since 10, blob 2 in s since 12)')
  t.same(early.value.blobs.map((b) => b.digest), [blob(3)], 'blob 3 is linked nowhere now: forgotten with its holders')
  t.equal(await kv.get(`holder\u0000${blob(3)}\u0000n1`), undefined, 'its holder record is gone')

  const kept = await sm.apply({ at: 40, command: { type: 'CollectGarbage', before: 40, keep: [blob(1)], at: 40 } }) as { value: { unlinked: unknown[]; blobs: Array<{ digest: string }>; bytes: number } }
  t.same(kept.value.unlinked, [{ repo: 'r', digest: blob(2) }], 'blob 1 is in use (keep): its link stays')
  t.same(kept.value.blobs.map((b) => b.digest), [blob(2)], 'blob 2 goes')
  t.equal(kept.value.bytes, 20, 'with its size counted')
  t.same(Object.keys(await refsOf(kv)), [`unref/r/${blob(1)}`], 'only blob 1\'s entry is left')

  t.same(await apply(41, { type: 'LinkBlob', repo: 'q', digest: blob(2), size: 20, mount: true, at: 41 }), { ok: false, code: 'BLOB_UNKNOWN', message: `blob ${blob(2)} is no longer in the registry: upload it` }, 'a mount of a forgotten blob is refused (the client uploads it)')
  t.same(await apply(42, { type: 'LinkBlob', repo: 'q', digest: blob(1), size: 10, mount: true, at: 42 }), { ok: true }, 'a mount of a known blob links it')
  const preview = await sm.preview({ type: 'CollectGarbage', before: 100, keep: [], at: 100 }) as { value: { blobs: Array<{ digest: string }> } }
  t.same(preview.value.blobs.map((b) => b.digest), [blob(1)], 'a dry run names what would go')
  t.ok(await kv.get(`link\u0000q\u0000${blob(1)}`) !== undefined, 'and changes nothing')
})

t.test('a manifest PUT racing a collection: applied after it, it is refused with a clear error', async (t) => {
  const { sm } = await fresh()
  await sm.apply({ at: 1, command: { type: 'LinkBlob', repo: 'r', digest: blob(1), size: 10, holder: 'n1', at: 1 } })
  await sm.apply({ at: 5, command: { type: 'CollectGarbage', before: 5, keep: [], at: 5 } })
  const res = await sm.apply({ at: 6, command: { type: 'PutManifest', repo: 'r', digest: man(0), body, mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: ['v1'], blobs: [blob(1)], manifests: [], at: 6 } })
  t.match(res, { ok: false, code: 'MANIFEST_BLOB_UNKNOWN' }, 'the manifest never points at a collected blob')
})

t.test('a store from before the counts: GC refuses until RebuildRefs has run', async (t) => {
  const kv = new MemoryKV()
  await kv.open()
  const sm = new MetadataStateMachine(kv, { sync: false })
  await sm.apply({ at: 1, command: { type: 'LinkBlob', repo: 'r', digest: blob(1), size: 10, at: 1 } })
  await sm.apply({ at: 1, command: { type: 'PutManifest', repo: 'r', digest: man(0), body, mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: [], blobs: [blob(1)], manifests: [], at: 1 } })
  t.match(await sm.apply({ at: 2, command: { type: 'CollectGarbage', before: 2, keep: [], at: 2 } }), { ok: false, code: 'UNAVAILABLE' })
  t.match(await sm.apply({ at: 3, command: { type: 'RebuildRefs', at: 3 } }), { ok: true, value: { manifests: 1, unref: 0, orphans: 0 } })
  t.same(await refsOf(kv), { [`bref/r/${blob(1)}`]: { n: 1 } }, 'the recount finds the manifest\'s reference')
})

t.test('a collection in batches: each command does at most `limit`, and says when more is left', async (t) => {
  const { kv, sm } = await fresh()
  for (let i = 0; i < 5; i++) await sm.apply({ at: 1, command: { type: 'LinkBlob', repo: 'r', digest: blob(i), size: 10, holder: 'n1', at: 1 } })
  const seen: string[] = []
  for (let round = 0; round < 10; round++) {
    const res = await sm.apply({ at: 9, command: { type: 'CollectGarbage', before: 5, keep: [], limit: 2, at: 9 } }) as { value: { unlinked: unknown[]; blobs: Array<{ digest: string }>; more: boolean } }
    t.ok(res.value.unlinked.length <= 2 && res.value.blobs.length <= 2, `round ${round}: at most 2 of each`)
    seen.push(...res.value.blobs.map((b) => b.digest))
    if (!res.value.more) break
  }
  t.same(seen.sort(), [0, 1, 2, 3, 4].map(blob).sort(), 'every blob collected once, over several commands')
  t.same(await refsOf(kv), {}, 'nothing left')
})

t.test('a batch that unlinks blobs while older orphans wait: every blob is forgotten, none left linked nowhere', async (t) => {
  // Batches used to take the sorted union of both and stop at the limit: blobs this batch
  // left unlinked that sorted after the orphans were cut off with no orphan record, and
  // stayed forever (metadata and bytes).
  const { kv, sm } = await fresh()
  for (let i = 0; i < 3; i++) {
    await sm.apply({ at: 1, command: { type: 'LinkBlob', repo: 'r', digest: blob(i), size: 10, holder: 'n1', at: 1 } })
    await sm.apply({ at: 1, command: { type: 'UnlinkBlob', repo: 'r', digest: blob(i) } })
  }
  for (let i = 7; i < 10; i++) await sm.apply({ at: 2, command: { type: 'LinkBlob', repo: 's', digest: blob(i), size: 10, holder: 'n1', at: 2 } })
  const seen: string[] = []
  for (let round = 0; round < 10; round++) {
    const res = await sm.apply({ at: 9, command: { type: 'CollectGarbage', before: 5, keep: [], limit: 3, at: 9 } }) as { value: { blobs: Array<{ digest: string }>; more: boolean } }
    seen.push(...res.value.blobs.map((b) => b.digest))
    if (!res.value.more) break
  }
  t.same(seen.sort(), [0, 1, 2, 7, 8, 9].map(blob).sort(), 'the orphans and the blobs unlinked in the batches are all forgotten')
  const left: string[] = []
  for await (const [k] of kv.entries(prefixRange('blob\u0000'))) left.push(k)
  t.same(left, [], 'no blob record is left')
  t.same(await refsOf(kv), {}, 'nor any GC key')
})
