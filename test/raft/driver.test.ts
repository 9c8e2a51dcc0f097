// The driver: persist → send → apply → advance over real timers, an in-memory transport and
// the in-memory log storage (with crash()).
import t from 'tap'
import { RaftDriver, type DriverOptions } from '../../cluster/raft/driver.js'
import { MemoryHub } from '../../cluster/raft/memory-transport.js'
import { ErrProposalDropped, ErrStopped, isRaftError } from '../../cluster/raft/errors.js'
import type { Transport } from '../../cluster/raft/transport.js'
import { MemoryLogDisk, MemoryLogStorage } from '../../storage/raftlog/memory-log-storage.js'
import type { Entry, Snapshot } from '../../cluster/raft/types.js'

const enc = (s: string) => new TextEncoder().encode(s)
const dec = (b: Uint8Array) => new TextDecoder().decode(b)

/** A tiny key-value state machine: "k=v" sets k and returns the previous value. */
class KV {
  map = new Map<string, string>()
  applied: number[] = []
  async apply (e: Entry): Promise<unknown> {
    const [k, v] = dec(e.data).split('=') as [string, string]
    const prev = this.map.get(k) ?? null
    this.map.set(k, v)
    this.applied.push(e.index)
    return prev
  }

  async snapshot (): Promise<Uint8Array> { return enc(JSON.stringify([...this.map])) }
  async restore (s: Snapshot): Promise<void> { this.map = new Map(JSON.parse(dec(s.data)) as Array<[string, string]>) }
}

/** Storage wrapper that fails the test if a message leaves before the state it depends on is durable. */
class CheckedStorage extends MemoryLogStorage {
  critical = false
  override append (entries: Entry[]): void { if (entries.length > 0) this.critical = true; super.append(entries) }
  override setHardState (hs: { term: number, vote: string | null, commit: number }): void {
    const prev = this.initialState().hardState
    if (hs.term !== prev.term || hs.vote !== prev.vote) this.critical = true
    super.setHardState(hs)
  }

  override applySnapshot (s: Snapshot): void { this.critical = true; super.applySnapshot(s) }
  override async sync (): Promise<void> { await super.sync(); this.critical = false }
}

interface Member { id: string, driver: RaftDriver, kv: KV, storage: CheckedStorage, disk: MemoryLogDisk, violations: number }

function member (hub: MemoryHub, id: string, opts: Partial<DriverOptions> & { disk?: MemoryLogDisk } = {}): Member {
  const disk = opts.disk ?? new MemoryLogDisk()
  const storage = new CheckedStorage(disk)
  const kv = new KV()
  const inner = hub.connect(id)
  const m: Member = { id, kv, storage, disk, violations: 0, driver: undefined as unknown as RaftDriver }
  const transport: Transport = {
    send (to, bytes) {
      if (storage.critical) m.violations++
      inner.send(to, bytes)
    },
    onMessage (h) { inner.onMessage(h) }
  }
  m.driver = new RaftDriver({
    id,
    storage,
    transport,
    apply: e => kv.apply(e),
    restore: s => kv.restore(s),
    takeSnapshot: () => kv.snapshot(),
    tickMs: 2,
    requestTimeoutMs: 3000,
    seed: id.charCodeAt(0),
    raft: { electionTick: 10, heartbeatTick: 1 },
    ...opts
  })
  return m
}

async function cluster (ids: string[], opts: Partial<DriverOptions> = {}) {
  const hub = new MemoryHub()
  const members = ids.map(id => member(hub, id, { bootstrap: ids, ...opts }))
  for (const m of members) await m.driver.start()
  return { hub, members }
}

async function until (cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time')
    await new Promise(resolve => setTimeout(resolve, 2))
  }
}

async function leaderOf (members: Member[]): Promise<Member> {
  await until(() => members.filter(m => m.driver.isLeader).length === 1)
  return members.find(m => m.driver.isLeader)!
}

async function stopAll (members: Member[]) {
  for (const m of members) await m.driver.stop()
}

t.test('driver: proposals on the leader and on a follower resolve with the apply result', async t => {
  const { members } = await cluster(['a', 'b', 'c'])
  const leader = await leaderOf(members)
  t.equal(await leader.driver.propose(enc('x=1')), null)
  const follower = members.find(m => m !== leader)!
  t.equal(await follower.driver.propose(enc('x=2')), '1', 'forwarded, applied, answered on the follower')
  await until(() => members.every(m => m.kv.map.get('x') === '2'))
  t.same(members.map(m => m.kv.applied), members.map(() => leader.kv.applied), 'same entries applied in the same order')
  t.ok(members.every(m => m.violations === 0), 'no message left before its state was synced')
  await stopAll(members)
})

t.test('driver: a linearizable read on a follower sees every acknowledged write', async t => {
  const { members } = await cluster(['a', 'b', 'c'])
  const leader = await leaderOf(members)
  const follower = members.find(m => m !== leader)!
  for (let i = 0; i < 20; i++) {
    await leader.driver.propose(enc(`k=${i}`))
    await follower.driver.linearizableRead()
    t.equal(follower.kv.map.get('k'), String(i), `read ${i} after write ${i}`)
  }
  await stopAll(members)
})

t.test('driver: concurrent proposals share syncs (group commit)', async t => {
  const { members } = await cluster(['a', 'b', 'c'])
  const leader = await leaderOf(members)
  const before = leader.driver.syncs
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => leader.driver.propose(enc(`k${i}=v`))))
  t.equal(results.length, 200)
  const syncs = leader.driver.syncs - before
  t.ok(syncs < 50, `${syncs} syncs for 200 proposals`)
  t.ok(members.every(m => m.violations === 0))
  await stopAll(members)
})

t.test('driver: no leader means the proposal is dropped at once; stop rejects what waits', async t => {
  const hub = new MemoryHub()
  const m = member(hub, 'a', { bootstrap: ['a', 'b', 'c'] })
  await m.driver.start()
  await t.rejects(m.driver.propose(enc('x=1')), ErrProposalDropped)
  const pending = m.driver.proposeConfChange({ type: 'addLearner', node: 'z' })
  await m.driver.stop()
  const err = await pending.then(() => undefined, (e: unknown) => e)
  t.ok(isRaftError(err, 'RAFT_PROPOSAL_DROPPED') || err === ErrStopped, 'dropped or stopped')
  await t.rejects(m.driver.propose(enc('x')), ErrStopped)
})

t.test('driver: a leader cut off from the quorum fails its pending proposals', async t => {
  const { hub, members } = await cluster(['a', 'b', 'c'])
  const leader = await leaderOf(members)
  hub.isolate(leader.id)
  const p = leader.driver.propose(enc('lost=1'))
  const err = await p.then(() => undefined, (e: unknown) => e)
  t.ok(isRaftError(err, 'RAFT_LEADERSHIP_LOST') || isRaftError(err, 'RAFT_TIMEOUT'), `failed with ${String(err)}`)
  const others = members.filter(m => m !== leader)
  const next = await leaderOf(others)
  hub.heal()
  t.equal(await next.driver.propose(enc('after=1')), null)
  await stopAll(members)
})

t.test('driver: compaction, and a lagging follower restored from a snapshot', async t => {
  const { hub, members } = await cluster(['a', 'b', 'c'], { snapshotEvery: 5, keepEntries: 0 })
  const leader = await leaderOf(members)
  const lagging = members.find(m => m !== leader)!
  hub.isolate(lagging.id)
  await until(() => leader.driver.status().progress!.get(lagging.id) !== undefined)
  for (let i = 0; i < 20; i++) await leader.driver.propose(enc(`k${i}=${i}`))
  t.ok(leader.storage.firstIndex() > 2, 'the leader compacted its log')
  hub.heal()
  await until(() => lagging.kv.map.get('k19') === '19')
  t.same([...lagging.kv.map].sort(), [...leader.kv.map].sort(), 'follower state equals the leader\'s')
  t.ok(lagging.storage.snapshot().meta.index > 0, 'it installed a snapshot')
  await stopAll(members)
})

t.test('driver: an acknowledged write survives a crash of a single-node cluster (etcd #14370)', async t => {
  const hub = new MemoryHub()
  const disk = new MemoryLogDisk()
  const m = member(hub, 'solo', { bootstrap: ['solo'], disk })
  await m.driver.start()
  await leaderOf([m])
  t.equal(await m.driver.propose(enc('x=acked')), null)
  await m.driver.stop()
  m.storage.crash() // lose everything not synced
  hub.disconnect('solo')
  const again = member(hub, 'solo', { disk })
  await again.driver.start()
  await until(() => again.kv.map.get('x') === 'acked')
  t.pass('replayed from disk')
  await again.driver.stop()
})

t.test('driver: addMember adds a learner, waits for it to catch up, then promotes it', async t => {
  const { hub, members } = await cluster(['a', 'b', 'c'])
  const leader = await leaderOf(members)
  for (let i = 0; i < 10; i++) await leader.driver.propose(enc(`k${i}=${i}`))
  const d = member(hub, 'd')
  await d.driver.start()
  const conf = await leader.driver.addMember('d')
  t.same(conf.voters, ['a', 'b', 'c', 'd'])
  await until(() => d.kv.map.get('k9') === '9')
  const removed = await leader.driver.removeMember('d')
  t.same(removed.voters, ['a', 'b', 'c'])
  await stopAll([...members, d])
})

// Issue 15: an entry the transport cannot carry must never enter the log, where the leader
// would retry it forever while nothing after it commits.
t.test('driver: a proposal over maxEntryBytes is refused on the leader and on a follower, before it is proposed', async t => {
  const { members } = await cluster(['a', 'b', 'c'], { raft: { electionTick: 10, heartbeatTick: 1, maxEntryBytes: 1024 } })
  const leader = await leaderOf(members)
  const follower = members.find(m => m !== leader)!
  t.equal(await leader.driver.propose(enc('k=' + 'x'.repeat(900))), null, 'an entry within the limit commits')
  const last = leader.driver.status().lastIndex
  for (const m of [leader, follower]) {
    await t.rejects(m.driver.propose(enc('k=' + 'y'.repeat(2000))), { code: 'RAFT_PROPOSAL_TOO_LARGE' }, `refused on the ${m === leader ? 'leader' : 'follower'}`)
  }
  t.equal(leader.driver.status().lastIndex, last, 'nothing was appended')
  t.ok(leader.driver.maxProposalBytes < 1024, `the driver says what fits (${leader.driver.maxProposalBytes} bytes)`)

  const { RaftApplier } = await import('../../cluster/metadata/raft-applier.js')
  const applier = new RaftApplier(follower.driver)
  await t.rejects(applier.submit({ type: 'DeleteTag', repo: 'r'.repeat(2000), tag: 't' }), { code: 'COMMAND_TOO_LARGE', message: /over the \d+ bytes the cluster can replicate/ }, 'the metadata layer answers 413 naming the limit')
  t.equal(await follower.driver.propose(enc('k=after')), '' + 'x'.repeat(900), 'the cluster still commits')
  await stopAll(members)
})
