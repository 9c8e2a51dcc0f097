// The storage contract the core owns (cluster/raft/storage.ts): storage/raftlog's stores fit it
// without importing it, and their errors are recognized by code, as the core needs.
import t, { type Test } from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RaftLog } from '../../cluster/raft/raft-log.js'
import {
  ErrCompacted, ErrUnavailable, STORAGE_ERROR_CODES, isStorageError, type RaftStorage
} from '../../cluster/raft/storage.js'
import { RaftError } from '../../cluster/raft/errors.js'
import { LevelLogStorage } from '../../storage/raftlog/level-log-storage.js'
import * as stored from '../../storage/raftlog/log-storage.js'
import { MemoryLogStorage } from '../../storage/raftlog/memory-log-storage.js'

const ents = (lo: number, hi: number) =>
  Array.from({ length: hi - lo + 1 }, (_, k) => ({ index: lo + k, term: 1, type: 0, data: new Uint8Array([k]) }))

t.test('every error code the store throws is one the core recognizes, and nothing else is', async t => {
  t.same([...STORAGE_ERROR_CODES].sort(), ['RAFT_LOG_BAD_RANGE', 'RAFT_LOG_COMPACTED', 'RAFT_LOG_CORRUPT',
    'RAFT_LOG_GAP', 'RAFT_LOG_NOT_OPEN', 'RAFT_LOG_SNAP_OUT_OF_DATE', 'RAFT_LOG_UNAVAILABLE'])
  for (const code of STORAGE_ERROR_CODES) {
    t.ok(isStorageError(new stored.LogStorageError(code, 'x'), code), code)
  }
  t.ok(isStorageError(stored.ErrCompacted, 'RAFT_LOG_COMPACTED'), "the store's ErrCompacted")
  t.ok(isStorageError(stored.ErrUnavailable, 'RAFT_LOG_UNAVAILABLE'), "the store's ErrUnavailable")
  t.ok(isStorageError(stored.ErrSnapOutOfDate, 'RAFT_LOG_SNAP_OUT_OF_DATE'), "the store's ErrSnapOutOfDate")
  t.notOk(isStorageError(stored.ErrCompacted, 'RAFT_LOG_UNAVAILABLE'), 'a different code does not match')
  t.ok(isStorageError(ErrCompacted, 'RAFT_LOG_COMPACTED'), "the core's own ErrCompacted")
  t.ok(isStorageError(ErrUnavailable, 'RAFT_LOG_UNAVAILABLE'), "the core's own ErrUnavailable")
  for (const other of [new Error('x'), Object.assign(new Error('x'), { code: 'ENOENT' }),
    new RaftError('RAFT_TIMEOUT', 'x'), null, undefined, 'RAFT_LOG_COMPACTED', { code: 7 }]) {
    t.notOk(isStorageError(other), `not a storage error: ${String(other)}`)
  }
})

async function contract (t: Test, s: RaftStorage): Promise<void> {
  s.append(ents(1, 6))
  s.compact(3)
  const code = (fn: () => unknown) => { try { fn(); return 'none' } catch (err) { return isStorageError(err) ? err.code : 'other' } }
  t.equal(code(() => s.term(2)), 'RAFT_LOG_COMPACTED', 'term below the compaction point')
  t.equal(code(() => s.entries(3, 4)), 'RAFT_LOG_COMPACTED', 'entries at the compaction point')
  t.equal(code(() => s.term(7)), 'RAFT_LOG_UNAVAILABLE', 'term past the end')
  t.equal(code(() => s.createSnapshot(9, { voters: ['a'], learners: [] }, new Uint8Array())), 'RAFT_LOG_UNAVAILABLE', 'snapshot past the end')
  s.createSnapshot(5, { voters: ['a'], learners: [], removed: ['z'] }, new Uint8Array([1]))
  t.equal(code(() => s.createSnapshot(4, { voters: ['a'], learners: [] }, new Uint8Array())), 'RAFT_LOG_SNAP_OUT_OF_DATE', 'older snapshot')
  t.same(s.snapshot().meta.conf.removed, ['z'], 'the snapshot keeps the core\'s removed ids')
  await s.sync()

  // The core's log over the store: compaction and the end of the log read as "no term".
  const log = new RaftLog(s)
  t.equal(log.termOrZero(1), 0, 'compacted term reads as 0')
  t.equal(log.termOrZero(9), 0, 'missing term reads as 0')
  t.equal(log.termOrZero(4), 1)
  t.notOk(log.matchTerm(2, 1), 'a compacted index never matches')
  t.same(log.findConflictByTerm(2, 1), { index: 2, term: 0 }, 'fast backtracking stops at the compaction point')
}

t.test('MemoryLogStorage fits RaftStorage', async t => {
  await contract(t, new MemoryLogStorage())
})

t.test('LevelLogStorage fits RaftStorage', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'raft-storage-'))
  const s = new LevelLogStorage(dir)
  await s.open()
  try {
    await contract(t, s)
  } finally {
    await s.close()
    await rm(dir, { recursive: true, force: true })
  }
})
