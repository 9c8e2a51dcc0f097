/**
 * (unit, one module: cluster/backup/sessions.ts over an in-memory KV) a backup's snapshot as of
 * one applied index, its hold on the blobs against GC, and the lease that lets go of them when
 * the client stops renewing (a backup client that died), with the metrics each end records.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { InUse } from '../../cluster/gc/collector.js'
import { BackupSessions } from '../../cluster/backup/sessions.js'
import { decodeState } from '../../cluster/metadata/snapshot.js'
import { encodeJSON } from '../../cluster/metadata/state-machine.js'

const A = 'sha256:' + 'a'.repeat(64)
const B = 'sha256:' + 'b'.repeat(64)

async function setup (leaseMs: number): Promise<{ kv: MemoryKV; inUse: InUse; s: BackupSessions; barriers: () => number }> {
  const kv = new MemoryKV()
  await kv.batch([
    { type: 'put', key: 'sm\u0000applied', value: encodeJSON({ index: 42 }) },
    { type: 'put', key: 'cluster\u0000info', value: encodeJSON({ clusterId: 'c1', secret: 's' }) },
    { type: 'put', key: `blob\u0000${A}`, value: encodeJSON({ size: 10, links: 1 }) },
    { type: 'put', key: `blob\u0000${B}`, value: encodeJSON({ size: 20, links: 1 }) },
    { type: 'put', key: 'member\u0000p1', value: encodeJSON({ peerId: 'p1', p2p: [], http: 'http://x', at: 1 }) },
  ])
  const inUse = new InUse()
  let n = 0
  const s = new BackupSessions({ kv, inUse, nodeId: 'p1', conf: () => ({ voters: ['p1'], learners: [] }), sink: { submit: async () => { throw new Error('no commands') }, barrier: async () => { n++ } }, leaseMs })
  return { kv, inUse, s, barriers: () => n }
}

t.test('a snapshot as of one applied index, its checksum, membership and blobs; writes after it are not in it', async (t) => {
  const { kv, s, barriers, inUse } = await setup(60_000)
  const info = await s.begin()
  t.equal(barriers(), 1, 'a barrier first: every acknowledged write is in it')
  t.equal(info.index, 42)
  t.equal(info.clusterId, 'c1')
  t.same(info.membership.voters, ['p1'])
  t.same(info.membership.members.map((m) => m.peerId), ['p1'])
  t.same(info.blobs, [{ digest: A, size: 10 }, { digest: B, size: 20 }])
  await kv.batch([{ type: 'put', key: `blob\u0000sha256:${'c'.repeat(64)}`, value: encodeJSON({ size: 5, links: 1 }) }])
  const data = s.snapshot(info.id)
  t.equal(createHash('sha256').update(data).digest('hex'), info.snapshot.sha256, 'the checksum is the bytes served')
  t.equal(data.byteLength, info.snapshot.bytes)
  t.equal([...decodeState(data)].filter(([k]) => k.startsWith('blob\u0000')).length, 2, 'a blob recorded later is not in it')
  t.same(inUse.list().sort(), [A, B], 'its blobs are held against GC')
  t.equal(s.knows(info.id, A), 10)
  t.equal(s.knows(info.id, 'sha256:' + 'c'.repeat(64)), undefined, 'only its own blobs are served through it')
  s.finish(info.id, true)
  t.same(inUse.list(), [], 'released when it ends')
  t.throws(() => s.snapshot(info.id), { code: 'NOT_FOUND' }, 'an ended backup is gone')
  const metrics = await Promise.all(s.all().map(async (m) => (await m.get()) as { name: string; values: Array<{ value: number; labels: Record<string, string> }> }))
  const last = metrics.find((m) => m.name === 'flotilla_backup_last_success_timestamp_seconds')!
  t.ok(last.values[0]!.value > Date.now() / 1000 - 60, 'the last success is recorded')
})

t.test('a backup whose client stops renewing lets go of its blobs when the lease lapses', async (t) => {
  const { s, inUse } = await setup(300)
  const info = await s.begin()
  t.equal(inUse.list().length, 2)
  // Renewed while the client lives: still held after more than one lease.
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 150))
    s.renew(info.id)
  }
  t.equal(inUse.list().length, 2, 'held while renewed')
  const deadline = Date.now() + 10_000
  while (inUse.list().length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(inUse.list(), [], 'released once the lease lapsed')
  t.throws(() => s.renew(info.id), { code: 'NOT_FOUND' }, 'a lapsed backup cannot be renewed')
  const metrics = await Promise.all(s.all().map(async (m) => (await m.get()) as { name: string; values: Array<{ value: number; labels: Record<string, string> }> }))
  const count = metrics.find((m) => m.name === 'flotilla_backup_duration_seconds')!.values.find((v) => (v as { metricName?: string }).metricName === 'flotilla_backup_duration_seconds_count' && v.labels.outcome === 'expired')
  t.equal(count?.value, 1, 'counted as expired')
})
