import t from 'tap'
import { LevelKV } from '../../storage/kv/level-kv.js'
import { kvSuite } from './kv.suite.js'

kvSuite(t, async (t) => {
  const dir = t.testdir()
  let kv = new LevelKV(dir)
  await kv.open()
  t.teardown(async () => { await kv.close() })
  return {
    kv,
    reopen: async () => {
      await kv.close()
      kv = new LevelKV(dir)
      await kv.open()
      return kv
    },
  }
})

t.test('a second instance on the same directory is refused while the first is open', async (t) => {
  const dir = t.testdir()
  const a = new LevelKV(dir)
  await a.open()
  t.teardown(async () => { await a.close() })
  const b = new LevelKV(dir)
  await t.rejects(b.open(), { cause: { code: 'LEVEL_LOCKED' } })
})
