// Client sessions: deduplication of retried commands (Raft thesis §6.3).
import t from 'tap'
import { SessionTable, decodeSessionCommand, encodeSessionCommand } from '../../cluster/raft/session.js'

t.test('§6.3 a retried command is applied once and answered from the cache', async t => {
  const table = new SessionTable<number>()
  let counter = 0
  const inc = () => ++counter
  t.same(table.apply(1, { clientId: 'c1', seq: 1, ackedBelow: 0 }, inc), { kind: 'applied', result: 1 })
  t.same(table.apply(2, { clientId: 'c1', seq: 1, ackedBelow: 0 }, inc), { kind: 'duplicate', result: 1 }, 'retry')
  t.same(table.apply(3, { clientId: 'c1', seq: 2, ackedBelow: 1 }, inc), { kind: 'applied', result: 2 })
  t.same(table.apply(4, { clientId: 'c2', seq: 1, ackedBelow: 0 }, inc), { kind: 'applied', result: 3 }, 'other client, own sequence')
  t.equal(counter, 3, 'ran three times for four commands')
})

t.test('§6.3 results the client acknowledged are dropped; retrying them is stale', async t => {
  const table = new SessionTable<string>()
  table.apply(1, { clientId: 'c', seq: 1, ackedBelow: 0 }, () => 'r1')
  table.apply(2, { clientId: 'c', seq: 2, ackedBelow: 0 }, () => 'r2')
  table.apply(3, { clientId: 'c', seq: 3, ackedBelow: 3 }, () => 'r3')
  t.same(table.apply(4, { clientId: 'c', seq: 1, ackedBelow: 3 }, () => 'again'), { kind: 'stale' })
  t.same(table.apply(5, { clientId: 'c', seq: 3, ackedBelow: 3 }, () => 'again'), { kind: 'duplicate', result: 'r3' })
})

t.test('§6.3 eviction is deterministic and an evicted client gets expired, not a second run', async t => {
  const run = () => {
    const table = new SessionTable<number>(2)
    table.apply(1, { clientId: 'a', seq: 1, ackedBelow: 0 }, () => 1)
    table.apply(2, { clientId: 'b', seq: 1, ackedBelow: 0 }, () => 2)
    table.apply(3, { clientId: 'a', seq: 2, ackedBelow: 0 }, () => 3)
    table.apply(4, { clientId: 'c', seq: 1, ackedBelow: 0 }, () => 4) // evicts b (least recent)
    return table
  }
  const t1 = run()
  t.notOk(t1.has('b'))
  t.ok(t1.has('a') && t1.has('c'))
  t.same(t1.apply(5, { clientId: 'b', seq: 1, ackedBelow: 0 }, () => 99), { kind: 'expired' })
  t.same(JSON.stringify(run().toJSON(r => r)), JSON.stringify(run().toJSON(r => r)), 'replicas agree')
})

t.test('§6.3 the table survives a snapshot round trip', async t => {
  const table = new SessionTable<string>()
  table.apply(7, { clientId: 'x', seq: 4, ackedBelow: 2 }, () => 'four')
  const copy = SessionTable.fromJSON(JSON.parse(JSON.stringify(table.toJSON(r => r))), (j: string) => j)
  t.same(copy.apply(8, { clientId: 'x', seq: 4, ackedBelow: 2 }, () => 'again'), { kind: 'duplicate', result: 'four' })
})

t.test('session commands encode and decode', async t => {
  const cmd = { clientId: 'client-é', seq: 2 ** 40, ackedBelow: 17, payload: new Uint8Array([1, 2, 3]) }
  t.same(decodeSessionCommand(encodeSessionCommand(cmd)), cmd)
  t.throws(() => decodeSessionCommand(new Uint8Array([9, 9])))
})
