/**
 * RaftApplier.barrier: concurrent linearizable reads share ReadIndex rounds, and a read never
 * rides on a round that started before it was asked for (its read index could miss a write
 * committed in between).
 */
import t from 'tap'
import { RaftApplier } from '../../cluster/metadata/raft-applier.js'
import type { RaftDriver } from '../../cluster/raft/driver.js'
import { ErrTimeout } from '../../cluster/raft/errors.js'

/** A driver whose ReadIndex rounds the test completes by hand, in order. */
function fakeDriver (): { driver: RaftDriver; rounds: Array<{ resolve: () => void; reject: (e: unknown) => void }> } {
  const rounds: Array<{ resolve: () => void; reject: (e: unknown) => void }> = []
  const driver = {
    linearizableRead: async () => await new Promise<void>((resolve, reject) => { rounds.push({ resolve, reject }) }),
  } as unknown as RaftDriver
  return { driver, rounds }
}

const tick = async (): Promise<void> => await new Promise((resolve) => setImmediate(resolve))

t.test('concurrent reads share rounds; a read asked during a round waits for the next one', async (t) => {
  const { driver, rounds } = fakeDriver()
  const a = new RaftApplier(driver)
  const done: string[] = []
  const first = a.barrier().then(() => done.push('first'))
  await tick()
  t.equal(rounds.length, 1, 'the first read starts a round')
  const later = Array.from({ length: 10 }, async (_, i) => await a.barrier().then(() => done.push(`later-${i}`)))
  await tick()
  t.equal(rounds.length, 1, 'reads asked during the round start no round of their own yet')
  rounds[0]!.resolve()
  await first
  await tick()
  t.same(done, ['first'], 'the round under way answers only the read that started it')
  t.equal(rounds.length, 2, 'one next round for the ten reads that waited')
  rounds[1]!.resolve()
  await Promise.all(later)
  t.equal(done.length, 11, 'all of them answered by it')
})

t.test('a failed round fails its readers, and the next round is independent', async (t) => {
  const { driver, rounds } = fakeDriver()
  const a = new RaftApplier(driver)
  const first = a.barrier()
  await tick()
  const second = a.barrier()
  // Not one of the retryable errors (ErrTimeout is retried until the deadline): it fails the round at once.
  rounds[0]!.reject(new Error('storage failed'))
  await t.rejects(first, { code: 'UNAVAILABLE' }, 'the reader of the failed round gets 503')
  await tick()
  t.equal(rounds.length, 2, 'the waiting read gets its own round')
  rounds[1]!.resolve()
  await t.resolves(second)
})

t.test('local reads skip the round', async (t) => {
  const { driver, rounds } = fakeDriver()
  await new RaftApplier(driver, { localReads: true }).barrier()
  t.equal(rounds.length, 0)
})

t.test('a ReadIndex the leader never answers is asked again within a second, not after 5 s (etcd read loop)', async (t) => {
  const timeouts: number[] = []
  const driver = {
    linearizableRead: async (opts: { timeoutMs?: number } = {}) => {
      timeouts.push(opts.timeoutMs ?? Infinity)
      // The first request is dropped (a leader that stepped down); the driver times it out.
      if (timeouts.length === 1) return await new Promise<void>((_resolve, reject) => setTimeout(() => reject(ErrTimeout), opts.timeoutMs))
    },
  } as unknown as RaftDriver
  const t0 = Date.now()
  await new RaftApplier(driver).barrier()
  t.equal(timeouts.length, 2, 'asked twice')
  t.equal(timeouts[0], 500, 'the first request waits 500 ms')
  t.ok(Date.now() - t0 < 1500, `answered after ${Date.now() - t0} ms`)
})
