import t from 'tap'
import { MemoryLogDisk, MemoryLogStorage } from '../../storage/raftlog/memory-log-storage.js'
import { ents, logStorageSuite } from './log-storage.suite.js'

logStorageSuite(t, async () => {
  // The disk object is what survives: reopen and crash both build on it.
  const disk = new MemoryLogDisk()
  let storage = new MemoryLogStorage(disk)
  return {
    get storage () { return storage },
    async reopen () {
      await storage.close()
      storage = new MemoryLogStorage(disk)
      await storage.open()
      return storage
    },
    async crash () {
      storage.crash()
      return storage
    },
    async cleanup () {}
  }
})

t.test('memory: usable without open(), for pure-core tests', t => {
  const s = new MemoryLogStorage()
  s.append(ents(1, 2))
  t.equal(s.lastIndex(), 2)
  t.end()
})

t.test('memory: crash() then a new store over the same disk agree', async t => {
  const disk = new MemoryLogDisk()
  const s = new MemoryLogStorage(disk)
  s.append(ents(1, 4))
  s.syncNow()
  s.append(ents(5, 6))
  t.ok(s.dirty)
  const other = new MemoryLogStorage(disk)
  t.equal(other.lastIndex(), 4, 'the disk holds only synced writes')
  s.crash()
  t.equal(s.lastIndex(), 4)
  t.notOk(s.dirty)
  t.equal(disk.syncs, 1)
  await s.sync()
  t.equal(disk.syncs, 1, 'a sync with nothing to write does not count')
})
