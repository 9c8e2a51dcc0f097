/**
 * The checksum service (cluster/checksums/service.ts) on a real blob store and LevelDB-free
 * metadata: a blob this node committed is hashed in a worker thread and recorded, several in
 * one RecordChecksums command; a blob another node committed is left to it; older blobs with no
 * sums are backfilled; the sums are those of node:crypto over the same bytes.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { Readable } from 'node:stream'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { FsBlobStore } from '../../storage/blobs/fs-blob-store.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { LocalApplier } from '../../cluster/metadata/applier.js'
import type { Command, CommandResult } from '../../cluster/metadata/commands.js'
import { checksumsOf } from '../../cluster/metadata/properties.js'
import { ChecksumService, WriteActivity } from '../../cluster/checksums/service.js'
import { waitFor } from '../helpers/cluster.js'

const SELF = 'peer-self'

async function setup (t: { teardown: (fn: () => Promise<void>) => void }, deferMs = 60_000, flushMs = 50, yieldTo?: { activity: WriteActivity; maxYieldMs: number }): Promise<{ kv: MemoryKV; blobs: FsBlobStore; svc: ChecksumService; submitted: Command[]; apply: (c: Command) => Promise<CommandResult> }> {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-checksums-'))
  const kv = new MemoryKV()
  await kv.open()
  const blobs = new FsBlobStore(dir)
  await blobs.open()
  const sm = new MetadataStateMachine(kv, { sync: false })
  const applier = new LocalApplier(sm)
  const submitted: Command[] = []
  const svc = new ChecksumService({
    kv, blobs, peerId: SELF, log: pino({ level: 'silent' }), workers: 1, flushMs, deferMs, backfillBytesPerSecond: 0, backfillIntervalMs: 0, ...yieldTo,
    sink: { submit: async (c) => { submitted.push(c); return await applier.submit(c) }, barrier: async () => await applier.barrier() },
  })
  // What the node does: every applied command goes to the service.
  const apply = async (c: Command): Promise<CommandResult> => { const r = await applier.submit(c); if (r.ok) svc.onApplied(c); return r }
  t.teardown(async () => { await svc.stop(); await rm(dir, { recursive: true, force: true }) })
  return { kv, blobs, svc, submitted, apply }
}

const sums = (b: Buffer): { sha1: string; md5: string } => ({ sha1: createHash('sha1').update(b).digest('hex'), md5: createHash('md5').update(b).digest('hex') })

t.test('blobs this node committed are hashed after the commit and recorded together', async (t) => {
  // No flush on a timer here (the 2-node test covers it): the three are flushed at once, once computed.
  const { kv, blobs, svc, submitted, apply } = await setup(t, 60_000, 600_000)
  const computed = async (): Promise<number> => (await svc.computed.get()).values.find((v) => v.labels.why === 'commit')?.value ?? 0
  const data = [randomBytes(3 * 1024 * 1024), randomBytes(1000), randomBytes(10)]
  const digests: string[] = []
  for (const d of data) {
    const info = await blobs.ingest(Readable.from([d]))
    digests.push(info.digest)
    await apply({ type: 'LinkBlob', repo: 'team/app', digest: info.digest, size: info.size, holder: SELF, at: 1 })
  }
  await waitFor('three blobs hashed', async () => await computed() === 3 ? true : undefined, 30_000)
  t.equal(svc.backlog(), 3, 'computed, not recorded yet')
  await svc.flush()
  t.equal(submitted.filter((c) => c.type === 'RecordChecksums').length, 1, 'one command for the three')
  for (const [i, d] of digests.entries()) t.same(await checksumsOf(kv, d), sums(data[i]!), `blob ${i}: node:crypto's sums`)
  t.equal(svc.backlog(), 0)
  t.equal((await svc.bytesHashed.get()).values[0]?.value, data.reduce((n, d) => n + d.length, 0), 'bytes hashed counted')
})

t.test('a blob another node committed, or mounted here, is not hashed here', async (t) => {
  const { blobs, submitted, apply } = await setup(t)
  const info = await blobs.ingest(Readable.from([randomBytes(100)]))
  await apply({ type: 'LinkBlob', repo: 'team/app', digest: info.digest, size: info.size, holder: 'peer-other', at: 1 })
  await apply({ type: 'LinkBlob', repo: 'team/other', digest: info.digest, size: info.size, mount: true, at: 1 })
  // The service works asynchronously: a marker blob committed here afterwards shows it has run.
  const marker = await blobs.ingest(Readable.from([randomBytes(100)]))
  await apply({ type: 'LinkBlob', repo: 'team/app', digest: marker.digest, size: marker.size, holder: SELF, at: 1 })
  await waitFor('the marker recorded', async () => submitted.some((c) => c.type === 'RecordChecksums') ? true : undefined, 30_000)
  const recorded = submitted.flatMap((c) => c.type === 'RecordChecksums' ? c.sums.map((s) => s.digest) : [])
  t.same(recorded, [marker.digest])
})

t.test('a blob that arrived here otherwise (another site, a fetch) is hashed after a delay if nobody has', async (t) => {
  const { kv, blobs, svc, apply } = await setup(t, 100)
  const data = randomBytes(5000)
  const info = await blobs.ingest(Readable.from([data]))
  await apply({ type: 'AddHolder', digest: info.digest, size: info.size, peerId: SELF })
  t.same(await waitFor('sums of the arrival', async () => await checksumsOf(kv, info.digest), 30_000), sums(data))
  t.equal(await svc.computed.get().then((m) => m.values.find((v) => v.labels.why === 'arrival')?.value), 1)
  // One whose sums some other node recorded meanwhile is not hashed again.
  const known = await blobs.ingest(Readable.from([randomBytes(100)]))
  await apply({ type: 'AddHolder', digest: known.digest, size: known.size, peerId: SELF })
  await apply({ type: 'RecordChecksums', sums: [{ digest: known.digest, sha1: 'a'.repeat(40), md5: 'b'.repeat(32) }] })
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.same(await checksumsOf(kv, known.digest), { sha1: 'a'.repeat(40), md5: 'b'.repeat(32) })
  t.equal(await svc.computed.get().then((m) => m.values.find((v) => v.labels.why === 'arrival')?.value), 1)
})

t.test('older blobs without sums are backfilled when this node is their first holder', async (t) => {
  const { kv, blobs, svc } = await setup(t)
  const mine = randomBytes(2048)
  const info = await blobs.ingest(Readable.from([mine]))
  const other = await blobs.ingest(Readable.from([randomBytes(2048)]))
  // Recorded before checksums existed: holders, no sums. `other` has an earlier holder than us.
  const sm = new MetadataStateMachine(kv, { sync: false })
  await sm.apply({ command: { type: 'AddHolder', digest: info.digest, size: info.size, peerId: SELF } })
  await sm.apply({ command: { type: 'AddHolder', digest: other.digest, size: other.size, peerId: SELF } })
  await sm.apply({ command: { type: 'AddHolder', digest: other.digest, size: other.size, peerId: 'peer-a' } })
  t.equal(await svc.backfill(), 1, 'the first round: only the blob this node holds first')
  await svc.flush()
  t.same(await checksumsOf(kv, info.digest), sums(mine))
  t.equal(await checksumsOf(kv, other.digest), undefined, 'left to its first holder, for now')
  t.equal(await svc.backfill(), 1, 'the next round: its first holder did not, so this one does')
  await svc.flush()
  t.ok(await checksumsOf(kv, other.digest))
  t.equal(await svc.backfill(), 0, 'nothing left')
})

t.test('hashing yields to uploads under way, for at most maxYieldMs', async (t) => {
  const activity = new WriteActivity()
  const { kv, blobs, apply } = await setup(t, 60_000, 20, { activity, maxYieldMs: 60_000 })
  const data = randomBytes(4096)
  const info = await blobs.ingest(Readable.from([data]))
  activity.begin()
  await apply({ type: 'LinkBlob', repo: 'team/app', digest: info.digest, size: info.size, holder: SELF, at: 1 })
  await new Promise((resolve) => setTimeout(resolve, 600))
  t.equal(await checksumsOf(kv, info.digest), undefined, 'not hashed while an upload is under way')
  activity.end()
  await waitFor('hashed once the uploads ended', async () => await checksumsOf(kv, info.digest), 30_000)
  t.same(await checksumsOf(kv, info.digest), sums(data))

  // Uploads that never stop: the sums come anyway once the blob has waited maxYieldMs.
  const busy = new WriteActivity()
  const other = await setup(t, 60_000, 20, { activity: busy, maxYieldMs: 300 })
  const more = randomBytes(2048)
  const b = await other.blobs.ingest(Readable.from([more]))
  busy.begin()
  await other.apply({ type: 'LinkBlob', repo: 'team/app', digest: b.digest, size: b.size, holder: SELF, at: 1 })
  await waitFor('hashed after maxYieldMs', async () => await checksumsOf(other.kv, b.digest), 30_000)
  t.same(await checksumsOf(other.kv, b.digest), sums(more), 'while the upload is still under way')
  busy.end()
})
