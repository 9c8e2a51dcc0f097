// Message and ConfChange encoding; the seeded PRNG.
import t from 'tap'
import { decodeConfChange, decodeMessage, encodeConfChange, encodeMessage } from '../../cluster/raft/codec.js'
import { ErrBadMessage } from '../../cluster/raft/errors.js'
import { SeededRand, seedFor } from '../../cluster/raft/rand.js'
import type { ConfState, Message } from '../../cluster/raft/types.js'

const base: Message = { type: 'App', from: 'node-a', to: 'node-b', term: 7, logTerm: 6, index: 2 ** 40, commit: 12, entries: [], reject: false, rejectHint: 0 }

t.test('every message kind round-trips', async t => {
  const msgs: Message[] = [
    { ...base, entries: [{ index: 3, term: 6, type: 0, data: new Uint8Array([1, 2, 3]) }, { index: 4, term: 7, type: 1, data: encodeConfChange({ type: 'remove', node: 'x' }) }] },
    { ...base, type: 'AppResp', reject: true, rejectHint: 5, logTerm: 2 },
    { ...base, type: 'Vote', force: true },
    { ...base, type: 'PreVoteResp', reject: true },
    { ...base, type: 'Heartbeat', context: new Uint8Array([9]) },
    { ...base, type: 'HeartbeatResp', context: new Uint8Array(0) },
    { ...base, type: 'Snap', snapshot: { meta: { index: 9, term: 3, conf: { voters: ['a', 'b'], learners: ['c'] } }, data: new Uint8Array([1, 2]) }, offset: 4, total: 6, done: true },
    { ...base, type: 'Snap', snapshot: { meta: { index: 9, term: 3, conf: { voters: ['a'], learners: [], removed: ['z'] } as ConfState }, data: new Uint8Array(0) }, offset: 0, total: 0, done: true },
    { ...base, type: 'TimeoutNow' },
    { ...base, type: 'ReadIndex', term: 0, context: new TextEncoder().encode('ctx') },
    { ...base, type: 'ReadIndexResp', context: new Uint8Array([1]) },
    { ...base, type: 'Prop', term: 0, entries: [{ index: 0, term: 0, type: 0, data: new Uint8Array([5]) }] },
    { ...base, type: 'TransferLeader' },
    { ...base, type: 'VoteResp' },
    { ...base, type: 'PreVote' }
  ]
  for (const m of msgs) t.same(decodeMessage(encodeMessage(m)), m, m.type)
})

t.test('malformed frames are rejected with ErrBadMessage', async t => {
  const good = encodeMessage(base)
  t.throws(() => decodeMessage(good.subarray(0, good.length - 1)), ErrBadMessage, 'truncated')
  t.throws(() => decodeMessage(new Uint8Array([...good, 0])), ErrBadMessage, 'trailing bytes')
  t.throws(() => decodeMessage(new Uint8Array([2, ...good.subarray(1)])), ErrBadMessage, 'unknown version')
  t.throws(() => decodeMessage(new Uint8Array([1, 99])), ErrBadMessage, 'unknown type')
  t.throws(() => decodeMessage(new Uint8Array(0)), ErrBadMessage, 'empty')
})

t.test('configuration changes round-trip', async t => {
  for (const cc of [{ type: 'addVoter' as const, node: 'a' }, { type: 'addLearner' as const, node: 'b', id: 'p-1' }, { type: 'promote' as const, node: 'c' }, { type: 'remove' as const, node: 'd' }]) {
    t.same(decodeConfChange(encodeConfChange(cc)), cc)
  }
})

t.test('the seeded PRNG replays from its seed and stays in range', async t => {
  const a = new SeededRand(42)
  const b = new SeededRand(42)
  const xs = Array.from({ length: 100 }, () => a.intn(10))
  t.same(xs, Array.from({ length: 100 }, () => b.intn(10)), 'same seed, same sequence')
  t.ok(xs.every(x => x >= 0 && x < 10))
  t.ok(new Set(xs).size === 10, 'covers the range')
  t.not(seedFor(1, 'a'), seedFor(1, 'b'), 'nodes get different seeds')
  t.throws(() => a.intn(0))
})
