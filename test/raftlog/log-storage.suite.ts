/**
 * The LogStorage conformance suite: every implementation runs it through a factory.
 * `reopen()` closes the store and opens a new one over the same durable state; `crash()`,
 * where the implementation can model one in-process, loses every write not yet synced.
 */
import type { Test } from 'tap'
import {
  ErrCompacted, ErrSnapOutOfDate, ErrUnavailable, isLogStorageError,
  type LogEntry, type LogStorage, type LogStorageErrorCode
} from '../../storage/raftlog/log-storage.js'

export interface LogStorageHarness {
  storage: LogStorage
  reopen (): Promise<LogStorage>
  crash?: () => Promise<LogStorage>
  cleanup (): Promise<void>
}

export type LogStorageFactory = () => Promise<LogStorageHarness>

const enc = new TextEncoder()

/** Entries lo..hi inclusive; terms[i - lo] or 1. */
export function ents (lo: number, hi: number, terms: number[] = []): LogEntry[] {
  const out: LogEntry[] = []
  for (let i = lo; i <= hi; i++) out.push({ index: i, term: terms[i - lo] ?? 1, type: 0, data: enc.encode(`e${i}`) })
  return out
}

const summary = (es: LogEntry[]): string[] => es.map(e => `${e.index}/${e.term}/${e.type}/${Buffer.from(e.data).toString()}`)

function throwsCode (t: Test, fn: () => unknown, code: LogStorageErrorCode, msg: string): void {
  try {
    fn()
    t.fail(`${msg}: expected ${code}, nothing thrown`)
  } catch (err) {
    t.ok(isLogStorageError(err, code), `${msg}: ${code}`)
  }
}

function randomBytes (n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i < n; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; out[i] = x & 0xff }
  return out
}

export function logStorageSuite (t: Test, factory: LogStorageFactory): void {
  const withStore = (name: string, fn: (t: Test, h: LogStorageHarness) => Promise<void> | void): void => {
    t.test(name, async t => {
      const h = await factory()
      try { await fn(t, h) } finally { await h.cleanup() }
    })
  }

  withStore('empty store', (t, { storage: s }) => {
    t.equal(s.firstIndex(), 1)
    t.equal(s.lastIndex(), 0)
    t.equal(s.term(0), 0, 'term of the compaction point of an empty log is 0')
    throwsCode(t, () => s.term(1), 'RAFT_LOG_UNAVAILABLE', 'term past the end')
    t.same(s.entries(1, 1), [], 'empty range')
    throwsCode(t, () => s.entries(0, 1), 'RAFT_LOG_COMPACTED', 'entries at index 0')
    t.same(s.initialState(), { hardState: { term: 0, vote: null, commit: 0 }, conf: { voters: [], learners: [] } })
    t.equal(s.snapshot().meta.index, 0)
    t.equal(s.snapshot().data.byteLength, 0)
  })

  withStore('sentinels are the exported objects', (t, { storage: s }) => {
    t.throws(() => s.term(5), ErrUnavailable)
    try { s.term(5) } catch (err) { t.equal(err, ErrUnavailable) }
    s.append(ents(1, 5))
    s.compact(3)
    try { s.term(1) } catch (err) { t.equal(err, ErrCompacted) }
  })

  withStore('append and read back', (t, { storage: s }) => {
    s.append(ents(1, 5, [1, 1, 2, 2, 3]))
    t.equal(s.firstIndex(), 1)
    t.equal(s.lastIndex(), 5)
    t.same(s.entries(1, 6).map(e => e.term), [1, 1, 2, 2, 3])
    t.same(summary(s.entries(2, 4)), ['2/1/0/e2', '3/2/0/e3'])
    t.equal(s.term(3), 2)
    t.equal(s.term(5), 3)
    throwsCode(t, () => s.term(6), 'RAFT_LOG_UNAVAILABLE', 'term(last+1)')
    throwsCode(t, () => s.entries(1, 7), 'RAFT_LOG_UNAVAILABLE', 'hi past last+1')
    throwsCode(t, () => s.entries(4, 3), 'RAFT_LOG_BAD_RANGE', 'lo > hi')
    t.same(s.entries(6, 6), [], 'empty range at the end')
    s.append(ents(6, 7, [3, 3]))
    t.equal(s.lastIndex(), 7, 'appending at last+1 extends')
    s.append([{ index: 8, term: 3, type: 1, data: enc.encode('conf') }])
    t.equal(s.entries(8, 9)[0]!.type, 1, 'entry type kept')
  })

  withStore('§5.3 a conflicting append truncates the suffix', (t, { storage: s }) => {
    s.append(ents(1, 5, [1, 1, 1, 1, 1]))
    s.append(ents(3, 3, [4]))
    t.equal(s.lastIndex(), 3, 'entries after the conflict are gone')
    t.equal(s.term(3), 4)
    t.equal(s.term(2), 1, 'the prefix is kept')
    throwsCode(t, () => s.term(4), 'RAFT_LOG_UNAVAILABLE', 'old entry 4 gone')
    s.append(ents(2, 6, [1, 4, 4, 4, 5]))
    t.same(s.entries(1, 7).map(e => e.term), [1, 1, 4, 4, 4, 5], 'overlapping append rewrites from its first index')
    s.append(ents(1, 2, [1, 1]))
    t.equal(s.lastIndex(), 2, 'even identical entries drop the suffix (the core only appends what differs)')
    throwsCode(t, () => s.append(ents(4, 5)), 'RAFT_LOG_GAP', 'append past last+1')
    throwsCode(t, () => s.append([...ents(3, 3), ...ents(5, 5)]), 'RAFT_LOG_GAP', 'non-contiguous batch')
    t.equal(s.lastIndex(), 2, 'a rejected append changes nothing')
    s.append([])
    t.equal(s.lastIndex(), 2, 'empty append is a no-op')
  })

  withStore('entries with maxBytes', (t, { storage: s }) => {
    // data is "e1".."e9": 2 bytes each
    s.append(ents(1, 9))
    t.equal(s.entries(1, 10, 5).length, 2, '2+2 fits in 5, a third does not')
    t.equal(s.entries(1, 10, 6).length, 3, 'exactly at the limit fits')
    t.equal(s.entries(1, 10, 0).length, 1, 'always at least one entry')
    t.equal(s.entries(1, 10, 1).length, 1, 'always at least one entry, even oversized')
    t.equal(s.entries(1, 10).length, 9, 'no limit')
    t.equal(s.entries(3, 10, 1000).length, 7)
    t.same(s.entries(4, 4, 0), [], 'empty range stays empty')
  })

  withStore('hard state', (t, { storage: s }) => {
    s.setHardState({ term: 3, vote: 'n2', commit: 0 })
    t.same(s.initialState().hardState, { term: 3, vote: 'n2', commit: 0 })
    const hs = { term: 4, vote: null, commit: 7 }
    s.setHardState(hs)
    hs.commit = 99
    t.same(s.initialState().hardState, { term: 4, vote: null, commit: 7 }, 'stored by value')
    const got = s.initialState().hardState
    got.term = 100
    t.equal(s.initialState().hardState.term, 4, 'returned by value')
  })

  withStore('compaction', (t, { storage: s }) => {
    s.append(ents(1, 10, [1, 1, 2, 2, 3, 3, 3, 4, 4, 4]))
    s.compact(5)
    t.equal(s.firstIndex(), 6)
    t.equal(s.lastIndex(), 10)
    t.equal(s.term(5), 3, 'the compaction point keeps its term')
    throwsCode(t, () => s.term(4), 'RAFT_LOG_COMPACTED', 'term below the compaction point')
    throwsCode(t, () => s.entries(5, 7), 'RAFT_LOG_COMPACTED', 'entries at the compaction point')
    t.same(s.entries(6, 11).map(e => e.index), [6, 7, 8, 9, 10])
    throwsCode(t, () => s.compact(5), 'RAFT_LOG_COMPACTED', 'compact again at the same index')
    throwsCode(t, () => s.compact(11), 'RAFT_LOG_UNAVAILABLE', 'compact past the end')
    s.append(ents(3, 8, [1, 2, 2, 3, 5, 5]))
    t.equal(s.term(5), 3, 'compacted part of an append is skipped')
    t.same(s.entries(6, 9).map(e => e.term), [3, 5, 5], 'entries from the compaction point on rewritten')
    t.equal(s.lastIndex(), 8)
    s.append(ents(1, 4))
    t.equal(s.lastIndex(), 8, 'an append entirely below the compaction point is a no-op')
    s.compact(8)
    t.equal(s.firstIndex(), 9)
    t.equal(s.lastIndex(), 8, 'compacting everything leaves an empty live log')
    t.equal(s.term(8), 5)
    s.append(ents(9, 9, [6]))
    t.equal(s.lastIndex(), 9)
  })

  withStore('createSnapshot', (t, { storage: s }) => {
    s.append(ents(1, 10, [1, 1, 2, 2, 3, 3, 3, 4, 4, 4]))
    const conf = { voters: ['a', 'b', 'c'], learners: ['d'] }
    const data = enc.encode('state@7')
    const snap = s.createSnapshot(7, conf, data)
    t.same(snap.meta, { index: 7, term: 3, conf })
    t.same(s.snapshot().meta, snap.meta)
    t.same(Buffer.from(s.snapshot().data).toString(), 'state@7')
    t.equal(s.firstIndex(), 1, 'creating a snapshot does not compact')
    t.same(s.initialState().conf, conf, 'initial conf comes from the snapshot')
    throwsCode(t, () => s.createSnapshot(7, conf, data), 'RAFT_LOG_SNAP_OUT_OF_DATE', 'same index')
    throwsCode(t, () => s.createSnapshot(5, conf, data), 'RAFT_LOG_SNAP_OUT_OF_DATE', 'older index')
    throwsCode(t, () => s.createSnapshot(11, conf, data), 'RAFT_LOG_UNAVAILABLE', 'past the end')
    s.compact(7)
    t.equal(s.firstIndex(), 8)
    t.equal(s.snapshot().meta.index, 7)
    s.compact(9)
    throwsCode(t, () => s.createSnapshot(8, conf, data), 'RAFT_LOG_COMPACTED', 'newer than the snapshot but its term is compacted away')
  })

  withStore('applySnapshot replaces the log', (t, { storage: s }) => {
    s.append(ents(1, 5))
    s.setHardState({ term: 1, vote: 'a', commit: 3 })
    const conf = { voters: ['a', 'b'], learners: [] }
    s.applySnapshot({ meta: { index: 10, term: 3, conf }, data: enc.encode('snap10') })
    t.equal(s.firstIndex(), 11)
    t.equal(s.lastIndex(), 10)
    t.equal(s.term(10), 3, 'term at the snapshot index')
    throwsCode(t, () => s.term(9), 'RAFT_LOG_COMPACTED', 'below the snapshot')
    throwsCode(t, () => s.entries(10, 11), 'RAFT_LOG_COMPACTED', 'entries at the snapshot index')
    throwsCode(t, () => s.term(11), 'RAFT_LOG_UNAVAILABLE', 'past the snapshot')
    t.same(s.initialState().conf, conf)
    t.same(s.initialState().hardState, { term: 1, vote: 'a', commit: 3 }, 'hard state is the caller’s to set')
    throwsCode(t, () => s.applySnapshot({ meta: { index: 10, term: 3, conf }, data: new Uint8Array() }), 'RAFT_LOG_SNAP_OUT_OF_DATE', 'same index')
    throwsCode(t, () => s.applySnapshot({ meta: { index: 4, term: 1, conf }, data: new Uint8Array() }), 'RAFT_LOG_SNAP_OUT_OF_DATE', 'older')
    throwsCode(t, () => s.append(ents(12, 12)), 'RAFT_LOG_GAP', 'gap after the snapshot')
    s.append(ents(11, 12, [3, 3]))
    t.equal(s.lastIndex(), 12)
    // A snapshot inside the current log also replaces it entirely (etcd semantics).
    s.applySnapshot({ meta: { index: 11, term: 3, conf }, data: enc.encode('snap11') })
    t.equal(s.lastIndex(), 11)
    t.equal(s.firstIndex(), 12)
  })

  withStore('reopen: synced and cleanly closed writes persist', async (t, h) => {
    let s = h.storage
    s.append(ents(1, 10, [1, 1, 2, 2, 3, 3, 3, 4, 4, 4]))
    s.setHardState({ term: 4, vote: 'b', commit: 8 })
    await s.sync()
    s = await h.reopen()
    t.equal(s.lastIndex(), 10)
    t.same(summary(s.entries(1, 11)), summary(ents(1, 10, [1, 1, 2, 2, 3, 3, 3, 4, 4, 4])))
    t.same(s.initialState(), { hardState: { term: 4, vote: 'b', commit: 8 }, conf: { voters: [], learners: [] } })

    // truncation and compaction must persist their deletions
    s.append(ents(4, 5, [5, 5]))
    s.createSnapshot(3, { voters: ['a', 'b'], learners: ['c'] }, enc.encode('s3'))
    s.compact(2)
    // no sync: a clean close makes writes durable too
    s = await h.reopen()
    t.equal(s.firstIndex(), 3)
    t.equal(s.lastIndex(), 5)
    t.equal(s.term(2), 1)
    t.same(s.entries(3, 6).map(e => e.term), [2, 5, 5])
    throwsCode(t, () => s.term(6), 'RAFT_LOG_UNAVAILABLE', 'truncated entries stay gone after reopen')
    t.same(s.snapshot().meta, { index: 3, term: 2, conf: { voters: ['a', 'b'], learners: ['c'] } })
    t.equal(Buffer.from(s.snapshot().data).toString(), 's3')
  })

  withStore('reopen: large snapshots round-trip and shrink', async (t, h) => {
    let s = h.storage
    const big = randomBytes(2.5 * 1024 * 1024 + 17, 42)
    const conf = { voters: ['a'], learners: [] }
    s.applySnapshot({ meta: { index: 100, term: 7, conf }, data: big })
    s.append(ents(101, 103, [7, 7, 7]))
    await s.sync()
    s = await h.reopen()
    t.equal(s.snapshot().meta.index, 100)
    t.equal(s.snapshot().data.byteLength, big.byteLength)
    t.ok(Buffer.from(s.snapshot().data).equals(Buffer.from(big)), 'snapshot bytes equal')
    t.equal(s.firstIndex(), 101)
    t.equal(s.lastIndex(), 103)
    t.equal(s.term(100), 7)

    const small = randomBytes(1000, 7)
    s.createSnapshot(102, conf, small)
    await s.sync()
    s = await h.reopen()
    t.equal(s.snapshot().meta.index, 102)
    t.ok(Buffer.from(s.snapshot().data).equals(Buffer.from(small)), 'a smaller snapshot replaces all of the bigger one')
  })

  withStore('reopen: extra configuration fields survive (the core adds `removed`)', async (t, h) => {
    let s = h.storage
    s.append(ents(1, 3))
    const conf = { voters: ['a'], learners: ['b'], removed: ['old'] }
    s.createSnapshot(2, conf, enc.encode('x'))
    conf.removed.push('mutated later')
    t.same(s.snapshot().meta.conf, { voters: ['a'], learners: ['b'], removed: ['old'] }, 'stored by value')
    s = await h.reopen()
    t.same(s.snapshot().meta.conf, { voters: ['a'], learners: ['b'], removed: ['old'] })
    t.same(s.initialState().conf, { voters: ['a'], learners: ['b'], removed: ['old'] })
  })

  withStore('sync: group commit of concurrent callers', async (t, h) => {
    let s = h.storage
    s.append(ents(1, 1))
    const p1 = s.sync()
    s.append(ents(2, 2))
    const p2 = s.sync()
    const p3 = s.sync()
    s.setHardState({ term: 1, vote: 'a', commit: 2 })
    const p4 = s.sync()
    await Promise.all([p1, p2, p3, p4])
    await s.sync() // nothing pending resolves too
    s = await h.reopen()
    t.equal(s.lastIndex(), 2)
    t.same(s.initialState().hardState, { term: 1, vote: 'a', commit: 2 })
  })

  withStore('closed store refuses reads and writes', async (t, h) => {
    await h.storage.close()
    throwsCode(t, () => h.storage.lastIndex(), 'RAFT_LOG_NOT_OPEN', 'read after close')
    throwsCode(t, () => h.storage.append(ents(1, 1)), 'RAFT_LOG_NOT_OPEN', 'write after close')
    await h.storage.open()
    t.equal(h.storage.lastIndex(), 0, 'open again')
  })

  withStore('crash: unsynced writes are lost, synced ones survive', async (t, h) => {
    if (h.crash === undefined) {
      t.pass('this implementation cannot crash in-process; see its own crash test')
      return
    }
    let s = h.storage
    s.append(ents(1, 3, [1, 1, 1]))
    s.setHardState({ term: 1, vote: 'a', commit: 2 })
    await s.sync()
    s.append(ents(3, 5, [2, 2, 2]))
    s.setHardState({ term: 2, vote: 'b', commit: 3 })
    s = await h.crash()
    t.equal(s.lastIndex(), 3, 'unsynced appends lost')
    t.same(s.entries(1, 4).map(e => e.term), [1, 1, 1], 'the unsynced truncation is undone too')
    t.same(s.initialState().hardState, { term: 1, vote: 'a', commit: 2 })

    s.compact(2)
    s.applySnapshot({ meta: { index: 9, term: 3, conf: { voters: ['a'], learners: [] } }, data: enc.encode('x') })
    s = await h.crash()
    t.equal(s.firstIndex(), 1, 'unsynced compaction and snapshot lost')
    t.equal(s.snapshot().meta.index, 0)

    s.append(ents(4, 6, [1, 1, 1]))
    await s.sync()
    s.compact(3)
    await s.sync()
    s.append(ents(7, 7, [1]))
    s = await h.crash()
    t.equal(s.firstIndex(), 4)
    t.equal(s.lastIndex(), 6)
    t.equal(s.term(3), 1)
  })
}
