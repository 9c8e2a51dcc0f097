import t from 'tap'
import { checkOperations } from '../../cluster/lincheck/porcupine.js'
import { describeHistory, kvModel, type KvOperation } from '../../cluster/lincheck/kv-model.js'
import { SeededRand } from '../../cluster/raft/rand.js'

const INF = Infinity
const put = (c: number, key: string, value: string, call: number, ret: number): KvOperation =>
  ({ clientId: c, input: { op: 'put', key, value }, output: { op: 'put' }, call, return: ret })
const get = (c: number, key: string, value: string | null, call: number, ret: number): KvOperation =>
  ({ clientId: c, input: { op: 'get', key }, output: { op: 'get', value }, call, return: ret })
const cas = (c: number, key: string, from: string | null, to: string, ok: boolean, call: number, ret: number): KvOperation =>
  ({ clientId: c, input: { op: 'cas', key, from, to }, output: { op: 'cas', ok }, call, return: ret })

const check = (h: KvOperation[]): string => checkOperations(kvModel, h).result

t.test('Porcupine TestRegisterModel (6.824 quiz 2017, §VII)', async t => {
  // A read that overlaps the write may see either value.
  t.equal(check([
    put(0, 'x', '100', 0, 100),
    get(1, 'x', '100', 25, 75),
    get(2, 'x', null, 30, 60)
  ]), 'ok', 'both reads overlap the write: one before, one after')
  // Once a read returned the new value, a later read may not see the old one.
  t.equal(check([
    put(0, 'x', '200', 0, 100),
    get(1, 'x', '200', 10, 30),
    get(2, 'x', null, 40, 90)
  ]), 'illegal', 'stale read after a read saw the write')
})

t.test('concurrent puts and gets: orderings', async t => {
  const puts = [put(0, 'x', '1', 0, 10), put(1, 'x', '2', 5, 15)]
  t.equal(check([...puts, get(2, 'x', '1', 20, 25)]), 'ok', 'either put may be last: 1')
  t.equal(check([...puts, get(2, 'x', '2', 20, 25)]), 'ok', 'either put may be last: 2')
  t.equal(check([...puts, get(2, 'x', '2', 12, 14), get(3, 'x', '1', 16, 18)]), 'illegal', 'put 1 returned before a read saw 2: reads cannot flip back')
  t.equal(check([put(0, 'x', '1', 0, 20), put(1, 'x', '2', 5, 15), get(2, 'x', '2', 12, 14), get(3, 'x', '1', 16, 18)]), 'ok', 'but they can while put 1 is still pending')
  t.equal(check([...puts, get(2, 'x', '1', 11, 12), get(3, 'x', '2', 13, 14)]), 'ok', 'read 1 then 2 while put 2 is pending')
  t.equal(check([...puts, get(2, 'x', '1', 11, 12), get(3, 'x', '2', 13, 14), get(2, 'x', '1', 16, 17)]), 'illegal', 'then back to 1: illegal')
  t.equal(check([...puts, get(2, 'x', '3', 20, 25)]), 'illegal', 'a value nobody wrote')
  t.equal(check([get(0, 'x', null, 0, 1), put(1, 'x', '1', 2, 3), get(0, 'x', null, 4, 5)]), 'illegal', 'lost write: read after an acknowledged put sees nothing')
  t.equal(check([put(0, 'x', '1', 0, 10), get(1, 'x', '1', 0, 10), get(2, 'x', null, 0, 10)]), 'ok', 'all concurrent, same instants')
  t.equal(check([put(0, 'x', '1', 0, 5), get(1, 'x', null, 5, 6)]), 'ok', 'touching at one instant counts as concurrent')
})

t.test('compare-and-set', async t => {
  t.equal(check([
    put(0, 'x', 'a', 0, 1),
    cas(1, 'x', 'a', 'b', true, 2, 10),
    cas(2, 'x', 'a', 'c', true, 3, 9)
  ]), 'illegal', 'two swaps from the same value cannot both win')
  t.equal(check([
    put(0, 'x', 'a', 0, 1),
    cas(1, 'x', 'a', 'b', true, 2, 10),
    cas(2, 'x', 'a', 'c', false, 3, 9),
    get(3, 'x', 'b', 11, 12)
  ]), 'ok', 'one wins, one loses')
  t.equal(check([cas(0, 'x', null, 'a', true, 0, 1), get(1, 'x', 'a', 2, 3)]), 'ok', 'cas from absent')
  t.equal(check([cas(0, 'x', 'z', 'a', false, 0, 1), get(1, 'x', null, 2, 3)]), 'ok', 'failed cas changes nothing')
  t.equal(check([cas(0, 'x', 'z', 'a', true, 0, 1)]), 'illegal', 'cas cannot succeed on a mismatch')
})

t.test('unknown outcomes: a write that may or may not have happened', async t => {
  const maybe = (c: number, value: string, call: number): KvOperation =>
    ({ clientId: c, input: { op: 'put', key: 'x', value }, output: undefined, call, return: INF })
  t.equal(check([maybe(0, '1', 0), get(1, 'x', null, 5, 6), get(1, 'x', '1', 7, 8)]), 'ok', 'not yet, then visible')
  t.equal(check([maybe(0, '1', 0), get(1, 'x', null, 5, 6), get(1, 'x', null, 7, 8)]), 'ok', 'never happened')
  t.equal(check([maybe(0, '1', 0), get(1, 'x', '1', 5, 6), get(1, 'x', null, 7, 8)]), 'illegal', 'once seen, it cannot be undone')
  t.equal(check([maybe(0, '1', 0), put(1, 'x', '2', 0, 5), get(2, 'x', '1', 10, 11)]), 'ok', 'an unknown write may land after a known one')
  t.equal(check([maybe(0, '1', 0), put(1, 'x', '2', 0, 5), get(2, 'x', '1', 10, 11), get(2, 'x', '2', 12, 13)]), 'illegal', 'but only once')
  t.equal(check([get(1, 'x', '1', 0, 1), maybe(0, '1', 2)]), 'illegal', 'not before it was called')
  t.equal(check([maybe(0, '1', 0), maybe(1, '2', 0), get(2, 'x', '2', 5, 6), get(2, 'x', '1', 7, 8), get(2, 'x', '1', 9, 10)]), 'ok', 'two unknown writes in either order')
  t.equal(check([maybe(0, '1', 0), maybe(1, '2', 0), get(2, 'x', '2', 5, 6), get(2, 'x', '1', 7, 8), get(2, 'x', '2', 9, 10)]), 'illegal', 'each at most once')
  const maybeCas: KvOperation = { clientId: 3, input: { op: 'cas', key: 'x', from: null, to: 'c' }, output: undefined, call: 0, return: INF }
  t.equal(check([maybeCas, put(0, 'x', 'a', 1, 2), get(1, 'x', 'c', 3, 4)]), 'illegal', 'an unknown cas still obeys its condition (x was a, not absent)')
  t.equal(check([maybeCas, get(1, 'x', 'c', 3, 4), put(0, 'x', 'a', 5, 6)]), 'ok', 'an unknown cas that matched')
})

t.test('P-compositionality: each key alone', async t => {
  const h = [
    put(0, 'a', '1', 0, 1), get(1, 'a', '1', 2, 3),
    put(0, 'b', '1', 0, 1), get(1, 'b', null, 2, 3),
    put(0, 'c', '1', 0, 1)
  ]
  const r = checkOperations(kvModel, h)
  t.equal(r.result, 'illegal')
  t.equal(r.partitions, 3)
  t.same(r.failedPartition?.map(o => o.input.key), ['b', 'b'], 'reports the failing key')
  t.match(describeHistory(r.failedPartition!), /get\(b\) -> null/)
  t.equal(checkOperations(kvModel, []).result, 'ok', 'empty history')
})

t.test('budget: gives up with unknown rather than running forever', async t => {
  const h = [put(0, 'x', '1', 0, 10), put(1, 'x', '2', 0, 10), get(2, 'x', '2', 11, 12)]
  t.equal(checkOperations(kvModel, h, { maxSteps: 1 }).result, 'unknown')
  t.throws(() => check([put(0, 'x', '1', 5, 4)]), RangeError, 'return before call')
})

/**
 * Histories generated from a real atomic store: every operation takes effect at a random
 * instant between its call and return, so the history is linearizable by construction.
 */
function generate (seed: number, n: number, clients: number, keys: number): KvOperation[] {
  const rand = new SeededRand(seed)
  const store = new Map<string, string>()
  const free = Array.from({ length: clients }, () => 0)
  type Pending = { op: KvOperation, at: number, unknown: boolean }
  const pending: Pending[] = []
  let written = 0
  for (let i = 0; i < n; i++) {
    const c = rand.intn(clients)
    const call = free[c]! + rand.intn(5)
    const at = call + rand.intn(10)
    const ret = at + rand.intn(10)
    free[c] = ret + 1
    const key = `k${rand.intn(keys)}`
    const kind = rand.intn(3)
    const unknown = rand.intn(20) === 0
    const input = kind === 0 ? { op: 'put' as const, key, value: `v${++written}` } : kind === 1 ? { op: 'get' as const, key } : { op: 'cas' as const, key, from: `v${rand.intn(written + 1)}`, to: `v${++written}` }
    pending.push({ op: { clientId: c, input, output: undefined, call, return: unknown ? INF : ret }, at: unknown && rand.intn(2) === 0 ? INF : at, unknown })
  }
  // Run the operations in linearization-point order against the store.
  for (const p of [...pending].sort((a, b) => a.at - b.at)) {
    if (p.at === INF) continue // an unknown operation that never happened
    const inp = p.op.input
    const cur = store.get(inp.key) ?? null
    if (inp.op === 'put') {
      store.set(inp.key, inp.value)
      p.op.output = { op: 'put' }
    } else if (inp.op === 'get') {
      p.op.output = { op: 'get', value: cur }
    } else {
      const ok = cur === inp.from
      if (ok) store.set(inp.key, inp.to)
      p.op.output = { op: 'cas', ok }
    }
  }
  return pending.map(p => p.op)
}

t.test('generated linearizable histories pass; corrupted ones fail', async t => {
  for (let seed = 1; seed <= 40; seed++) {
    const h = generate(seed, 300, 6, 3)
    const r = checkOperations(kvModel, h)
    if (r.result !== 'ok') { t.fail(`seed ${seed}: ${r.result}\n${describeHistory(r.failedPartition ?? [])}`); continue }
    // A read of a value nobody ever wrote.
    const reads = h.filter(o => o.input.op === 'get' && o.return !== INF)
    const bad = structuredClone(h)
    const victim = bad[h.indexOf(reads[seed % reads.length]!)]!
    victim.output = { op: 'get', value: 'never-written' }
    t.equal(checkOperations(kvModel, bad).result, 'illegal', `seed ${seed}: corrupted read caught`)
  }
})

t.test('a long, concurrent history checks quickly', async t => {
  const h = generate(99, 5000, 10, 8)
  const start = performance.now()
  const r = checkOperations(kvModel, h)
  const ms = performance.now() - start
  t.equal(r.result, 'ok')
  t.ok(ms < 5000, `5000 operations in ${ms.toFixed(0)} ms`)
})

t.test('many unknown puts that no read observed do not blow up the search (seed 1820)', async t => {
  const ops: KvOperation[] = []
  // 60 puts whose outcome is unknown, all concurrent with everything after them.
  for (let i = 0; i < 60; i++) ops.push({ clientId: i % 5, input: { op: 'put', key: 'k', value: `lost${i}` }, output: undefined, call: i, return: Infinity })
  ops.push({ clientId: 9, input: { op: 'put', key: 'k', value: 'a' }, output: { op: 'put' }, call: 100, return: 101 })
  ops.push({ clientId: 9, input: { op: 'get', key: 'k' }, output: { op: 'get', value: 'a' }, call: 102, return: 103 })
  // One unknown put that a read did observe: it must be kept, and the read explained by it.
  ops.push({ clientId: 8, input: { op: 'put', key: 'k', value: 'seen' }, output: undefined, call: 104, return: Infinity })
  ops.push({ clientId: 9, input: { op: 'get', key: 'k' }, output: { op: 'get', value: 'seen' }, call: 105, return: 106 })
  const ok = checkOperations(kvModel, ops, { maxSteps: 100_000 })
  t.equal(ok.result, 'ok')
  // A read of a value nobody wrote is still caught.
  ops.push({ clientId: 9, input: { op: 'get', key: 'k' }, output: { op: 'get', value: 'never' }, call: 107, return: 108 })
  t.equal(checkOperations(kvModel, ops, { maxSteps: 100_000 }).result, 'illegal')
  // And a read that goes back to a value overwritten in real time is caught too.
  ops.pop()
  ops.push({ clientId: 9, input: { op: 'get', key: 'k' }, output: { op: 'get', value: 'a' }, call: 107, return: 108 })
  t.equal(checkOperations(kvModel, ops, { maxSteps: 100_000 }).result, 'illegal')
})
