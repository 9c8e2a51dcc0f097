/**
 * The metadata state as one byte string, for Raft snapshots: every key and value in key
 * order, each length-prefixed. A new or far-behind node installs it in place of its own.
 *
 *   repeat: [u32 key length][key utf8][u32 value length][value]
 */
import type { KV, KVOp } from '../../storage/kv/kv.js'

export async function dumpState (kv: KV): Promise<Uint8Array> {
  const parts: Buffer[] = []
  let size = 0
  for await (const [k, v] of kv.entries({})) size += pushEntry(parts, k, v)
  return Buffer.concat(parts, size)
}

/** One entry in the dump format, onto `parts`; answers its length. */
function pushEntry (parts: Buffer[], k: string, v: Uint8Array): number {
  const kb = Buffer.from(k, 'utf8')
  const head = Buffer.alloc(4)
  head.writeUInt32BE(kb.length)
  const vhead = Buffer.alloc(4)
  vhead.writeUInt32BE(v.byteLength)
  parts.push(head, kb, vhead, Buffer.from(v.buffer, v.byteOffset, v.byteLength))
  return 8 + kb.length + v.byteLength
}

/** The entries of a dumped state, in order; throws on a truncated dump. */
export function * decodeState (data: Uint8Array): Generator<[string, Uint8Array]> {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  let off = 0
  while (off < buf.length) {
    if (off + 4 > buf.length) throw new Error('snapshot truncated in a key length')
    const klen = buf.readUInt32BE(off); off += 4
    if (off + klen > buf.length) throw new Error('snapshot truncated in a key')
    const key = buf.toString('utf8', off, off + klen); off += klen
    if (off + 4 > buf.length) throw new Error('snapshot truncated in a value length')
    const vlen = buf.readUInt32BE(off); off += 4
    if (off + vlen > buf.length) throw new Error('snapshot truncated in a value')
    yield [key, new Uint8Array(buf.subarray(off, off + vlen))]
    off += vlen
  }
}

/** The dump format for a list of entries (what dumpState writes). */
export function encodeState (entries: Iterable<[string, Uint8Array]>): Uint8Array {
  const parts: Buffer[] = []
  let size = 0
  for (const [k, v] of entries) size += pushEntry(parts, k, v)
  return Buffer.concat(parts, size)
}

/** Replace everything in `kv` with the dumped state, in one atomic batch. */
export async function restoreState (kv: KV, data: Uint8Array, opts: { sync: boolean }): Promise<void> {
  const ops: KVOp[] = []
  for await (const [k] of kv.entries({})) ops.push({ type: 'del', key: k })
  for (const [key, value] of decodeState(data)) ops.push({ type: 'put', key, value })
  await kv.batch(ops, opts)
}
