import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LevelLogStorage } from '../../storage/raftlog/level-log-storage.js'
import { logStorageSuite } from './log-storage.suite.js'

// Small chunks so the multi-chunk snapshot path is exercised by the suite's 2.5 MiB snapshot.
const opts = { snapshotChunkBytes: 256 * 1024 }

logStorageSuite(t, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'raftlog-'))
  let storage = new LevelLogStorage(dir, opts)
  await storage.open()
  return {
    get storage () { return storage },
    async reopen () {
      await storage.close()
      storage = new LevelLogStorage(dir, opts)
      await storage.open()
      return storage
    },
    // No in-process crash: LevelDB's lock forbids a second handle. See the kill -9 test below.
    async cleanup () {
      await storage.close()
      await rm(dir, { recursive: true, force: true })
    }
  }
})

t.test('level: kill -9 loses unsynced writes and keeps synced ones', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'raftlog-crash-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const child = fileURLToPath(new URL('./fixtures/level-crash-child.ts', import.meta.url))
  const r = spawnSync(process.execPath, ['--import', 'tsx', child, dir], { encoding: 'utf8' })
  t.equal(r.signal, 'SIGKILL', `child killed itself (stderr: ${r.stderr})`)
  const s = new LevelLogStorage(dir)
  await s.open()
  t.equal(s.lastIndex(), 50, 'synced entries survive, unsynced ones are gone')
  t.same(s.entries(48, 51).map(e => e.term), [1, 1, 1], 'no unsynced overwrite')
  t.same(s.initialState().hardState, { term: 1, vote: 'n1', commit: 50 })
  await s.close()
})

t.test('level: a failed open leaves nothing locked', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'raftlog-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const a = new LevelLogStorage(dir)
  await a.open()
  const b = new LevelLogStorage(dir)
  await t.rejects(b.open(), 'second handle on a locked dir')
  await a.close()
  await b.open()
  t.equal(b.lastIndex(), 0)
  await b.close()
})
