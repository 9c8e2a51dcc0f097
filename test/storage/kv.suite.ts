/**
 * Conformance suite for KV: every implementation runs it through its own *.test.ts.
 * `factory(t)` returns a fresh, opened, empty store, closed by the factory's own teardown;
 * `reopen`, for stores that persist, closes it and opens a new instance on the same storage.
 */
import type { Test } from 'tap'
import { prefixRange, type KV, type KVRange } from '../../storage/kv/kv.js'
import { collect } from './helpers.js'

export interface KVHarness {
  kv: KV
  reopen?: () => Promise<KV>
}

export type KVFactory = (t: Test) => Promise<KVHarness>

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array | undefined): string | undefined => b === undefined ? undefined : new TextDecoder().decode(b)

async function putAll (kv: KV, keys: string[]): Promise<void> {
  await kv.batch(keys.map((key) => ({ type: 'put', key, value: enc(`v:${key}`) })))
}

async function keysIn (kv: KV, range: KVRange): Promise<string[]> {
  return (await collect(kv.entries(range))).map(([k]) => k)
}

export function kvSuite (t: Test, factory: KVFactory): void {
  t.test('get, put, del', async (t) => {
    const { kv } = await factory(t)
    t.equal(await kv.get('a'), undefined)
    await kv.batch([{ type: 'put', key: 'a', value: enc('1') }])
    t.equal(dec(await kv.get('a')), '1')
    t.type(await kv.get('a'), Uint8Array)
    await kv.batch([{ type: 'put', key: 'a', value: enc('2') }])
    t.equal(dec(await kv.get('a')), '2', 'overwritten')
    await kv.batch([{ type: 'del', key: 'a' }])
    t.equal(await kv.get('a'), undefined)
    await kv.batch([{ type: 'del', key: 'never-there' }])
    await kv.batch([])
    t.same(await collect(kv.entries({})), [])
  })

  t.test('values are bytes, and copied on the way in', async (t) => {
    const { kv } = await factory(t)
    const value = new Uint8Array([0, 255, 1, 128, 0])
    await kv.batch([{ type: 'put', key: 'bin', value }])
    value[0] = 42
    t.same([...(await kv.get('bin'))!], [0, 255, 1, 128, 0])
    await kv.batch([{ type: 'put', key: 'empty', value: new Uint8Array(0) }])
    t.equal((await kv.get('empty'))?.length, 0, 'an empty value is not a missing one')
  })

  t.test('keys are ordered by their UTF-8 bytes, not UTF-16 units', async (t) => {
    const { kv } = await factory(t)
    // '\uffff' is EF BF BF and '😀' is F0 9F 98 80: bytes put '\uffff' first, JS string order the reverse.
    const keys = ['b', 'a', 'A', 'é', '\uffff', '😀', 'a\u0000', 'aa', 'a/b', '0', '~']
    await putAll(kv, keys)
    const expected = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)))
    t.same(await keysIn(kv, {}), expected)
    t.same(await keysIn(kv, { reverse: true }), [...expected].reverse())
    t.same(await keysIn(kv, { gt: '\uffff' }), ['😀'], 'a bound between them')
  })

  t.test('ranges: gte, gt, lt, lte, limit, reverse', async (t) => {
    const { kv } = await factory(t)
    await putAll(kv, ['a', 'b', 'c', 'd', 'e'])
    t.same(await keysIn(kv, { gte: 'b' }), ['b', 'c', 'd', 'e'])
    t.same(await keysIn(kv, { gt: 'b' }), ['c', 'd', 'e'])
    t.same(await keysIn(kv, { lt: 'd' }), ['a', 'b', 'c'])
    t.same(await keysIn(kv, { lte: 'd' }), ['a', 'b', 'c', 'd'])
    t.same(await keysIn(kv, { gte: 'b', lt: 'd' }), ['b', 'c'])
    t.same(await keysIn(kv, { gt: 'b', lte: 'd' }), ['c', 'd'])
    t.same(await keysIn(kv, { gte: 'bb', lte: 'cc' }), ['c'], 'bounds need not be keys')
    t.same(await keysIn(kv, { gte: 'd', lt: 'b' }), [], 'an inverted range is empty')
    t.same(await keysIn(kv, { gt: 'c', lt: 'c' }), [])
    t.same(await keysIn(kv, { gte: 'c', lte: 'c' }), ['c'])
    t.same(await keysIn(kv, { limit: 2 }), ['a', 'b'])
    t.same(await keysIn(kv, { limit: 0 }), [])
    t.same(await keysIn(kv, { limit: -1 }), ['a', 'b', 'c', 'd', 'e'], 'negative: no limit')
    t.same(await keysIn(kv, { limit: Infinity }), ['a', 'b', 'c', 'd', 'e'])
    t.same(await keysIn(kv, { reverse: true, limit: 2 }), ['e', 'd'], 'limit counts from the top')
    t.same(await keysIn(kv, { reverse: true, gt: 'a', lt: 'e' }), ['d', 'c', 'b'])
    t.same(await keysIn(kv, { reverse: true, gte: 'b', lte: 'd', limit: 2 }), ['d', 'c'])
    t.same((await collect(kv.entries({ gte: 'c', limit: 1 }))).map(([k, v]) => [k, dec(v)]), [['c', 'v:c']], 'values come along')
  })

  t.test('prefixRange', async (t) => {
    const { kv } = await factory(t)
    await putAll(kv, ['p', 'p/', 'p/a', 'p/z', 'p/\uffff', 'p/😀', 'p/😀/x', 'p0', 'p.', 'q', 'o'])
    t.same(await keysIn(kv, prefixRange('p/')), ['p/', 'p/a', 'p/z', 'p/\uffff', 'p/😀', 'p/😀/x'], 'includes keys beyond U+FFFF')
    t.same(await keysIn(kv, { ...prefixRange('p/'), reverse: true, limit: 2 }), ['p/😀/x', 'p/😀'])
    t.same(await keysIn(kv, prefixRange('p/😀')), ['p/😀', 'p/😀/x'], 'a prefix ending beyond U+FFFF')
    t.same(await keysIn(kv, prefixRange('')), await keysIn(kv, {}), 'the empty prefix covers everything')
    t.same(await keysIn(kv, prefixRange('r')), [])
  })

  t.test('a batch applies in order and all at once', async (t) => {
    const { kv } = await factory(t)
    await putAll(kv, ['keep', 'gone'])
    await kv.batch([
      { type: 'put', key: 'x', value: enc('1') },
      { type: 'del', key: 'x' },
      { type: 'del', key: 'y' },
      { type: 'put', key: 'y', value: enc('2') },
      { type: 'del', key: 'gone' },
      { type: 'put', key: 'z', value: enc('3') },
      { type: 'put', key: 'z', value: enc('4') },
    ], { sync: true })
    t.same((await collect(kv.entries({}))).map(([k, v]) => [k, dec(v)]), [['keep', 'v:keep'], ['y', '2'], ['z', '4']])
    // An op that cannot be applied fails the whole batch: the ops before it are not applied either.
    await t.rejects(kv.batch([
      { type: 'put', key: 'partial', value: enc('1') },
      { type: 'del', key: 'keep' },
      { type: 'put', key: undefined as unknown as string, value: enc('bad') },
    ]))
    t.equal(await kv.get('partial'), undefined)
    t.equal(dec(await kv.get('keep')), 'v:keep')
  })

  t.test('entries() reads a snapshot taken when it is called', async (t) => {
    const { kv } = await factory(t)
    await putAll(kv, ['a', 'b', 'c', 'd', 'e'])
    const untouched = kv.entries({})
    const started = kv.entries({})[Symbol.asyncIterator]()
    const first = await started.next()
    t.same(first.value?.[0], 'a')
    await kv.batch([
      { type: 'put', key: 'c', value: enc('changed') },
      { type: 'del', key: 'd' },
      { type: 'put', key: 'bb', value: enc('new') },
      { type: 'put', key: 'f', value: enc('new') },
    ])
    const expected = [['a', 'v:a'], ['b', 'v:b'], ['c', 'v:c'], ['d', 'v:d'], ['e', 'v:e']]
    t.same((await collect(untouched)).map(([k, v]) => [k, dec(v)]), expected, 'not yet started')
    const rest: Array<[string, string | undefined]> = []
    for (let r = await started.next(); r.done !== true; r = await started.next()) rest.push([r.value[0], dec(r.value[1])])
    t.same(rest, expected.slice(1), 'half-way through')
    t.same(await keysIn(kv, {}), ['a', 'b', 'bb', 'c', 'e', 'f'], 'a new call sees the writes')
  })

  t.test('writes interleaved with a slow reader', async (t) => {
    const { kv } = await factory(t)
    await putAll(kv, Array.from({ length: 200 }, (_, i) => `k${String(i).padStart(3, '0')}`))
    const seen: string[] = []
    const writes: Array<Promise<void>> = []
    for await (const [k] of kv.entries(prefixRange('k'))) {
      seen.push(k)
      writes.push(kv.batch([{ type: 'del', key: k }, { type: 'put', key: `k${k}`, value: enc('x') }]))
    }
    await Promise.all(writes)
    t.equal(seen.length, 200, 'neither the deletes nor the new keys show')
    t.equal(new Set(seen).size, 200)
    t.equal((await keysIn(kv, prefixRange('kk'))).length, 200)
  })

  t.test('stopping early', async (t) => {
    const { kv } = await factory(t)
    await putAll(kv, ['a', 'b', 'c'])
    for await (const [k] of kv.entries({})) if (k === 'b') break
    const unused = kv.entries({})
    t.ok(unused)
    t.same(await keysIn(kv, { gte: 'b' }), ['b', 'c'])
  })

  t.test('data survives a reopen', async (t) => {
    const h = await factory(t)
    if (h.reopen === undefined) {
      t.pass('nothing to reopen: this store does not persist')
      return
    }
    await h.kv.batch([{ type: 'put', key: 'durable', value: enc('yes') }], { sync: true })
    await h.kv.batch([{ type: 'put', key: 'lazy', value: enc('also') }, { type: 'del', key: 'nothing' }])
    const kv = await h.reopen()
    t.equal(dec(await kv.get('durable')), 'yes')
    t.equal(dec(await kv.get('lazy')), 'also', 'an unsynced write survives a clean close')
    t.same(await keysIn(kv, {}), ['durable', 'lazy'])
  })
}
