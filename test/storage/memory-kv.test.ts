import t from 'tap'
import { prefixRange } from '../../storage/kv/kv.js'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { kvSuite } from './kv.suite.js'

kvSuite(t, async () => {
  const kv = new MemoryKV()
  await kv.open()
  return { kv }
})

t.test('prefixRange bounds', async (t) => {
  t.same(prefixRange('repo/'), { gte: 'repo/', lt: 'repo0' })
  t.same(prefixRange('a\ud7ff'), { gte: 'a\ud7ff', lt: 'a\ue000' }, 'skips the surrogate block')
  t.same(prefixRange('x\u{10ffff}'), { gte: 'x\u{10ffff}', lt: 'y' }, 'carries past the largest code point')
})
