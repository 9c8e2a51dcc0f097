/**
 * Binary encoding of Raft messages (the transport carries framed bytes) and of the
 * configuration changes stored in ENTRY_CONF entries.
 *
 * Message frame (integers are unsigned LEB128 varints up to 2^53, strings and byte arrays
 * are a varint length then the bytes):
 *
 *   u8 version (1) · u8 type · str from · str to · term · logTerm · index · commit · rejectHint
 *   u8 flags (1 reject, 2 force, 4 done, 8 context, 16 snapshot, 32 offset/total)
 *   varint n · n × (index · term · u8 type · bytes data)
 *   [bytes context] [snapshot: index · term · strs voters · strs learners · strs removed · bytes data]
 *   [offset · total]
 */
import { ErrBadMessage } from './errors.js'
import type { ConfChange, ConfChangeType, ConfState, Entry, Message, MessageType } from './types.js'

const VERSION = 1
const TYPES: MessageType[] = [
  'Vote', 'VoteResp', 'PreVote', 'PreVoteResp', 'App', 'AppResp', 'Heartbeat', 'HeartbeatResp',
  'Snap', 'TimeoutNow', 'ReadIndex', 'ReadIndexResp', 'Prop', 'TransferLeader'
]
const TYPE_CODE = new Map(TYPES.map((t, i) => [t, i]))

const F_REJECT = 1
const F_FORCE = 2
const F_DONE = 4
const F_CONTEXT = 8
const F_SNAPSHOT = 16
const F_OFFSET = 32

const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder('utf-8', { fatal: true })

class Writer {
  private buf = new Uint8Array(256)
  private pos = 0

  private reserve (n: number): void {
    if (this.pos + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
  }

  u8 (v: number): void {
    this.reserve(1)
    this.buf[this.pos++] = v
  }

  uint (v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`codec: bad unsigned integer ${v}`)
    this.reserve(8)
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80
      v = Math.floor(v / 0x80)
    }
    this.buf[this.pos++] = v
  }

  bytes (b: Uint8Array): void {
    this.uint(b.byteLength)
    this.reserve(b.byteLength)
    this.buf.set(b, this.pos)
    this.pos += b.byteLength
  }

  str (s: string): void { this.bytes(utf8.encode(s)) }

  strs (list: readonly string[]): void {
    this.uint(list.length)
    for (const s of list) this.str(s)
  }

  finish (): Uint8Array { return this.buf.slice(0, this.pos) }
}

class Reader {
  private pos = 0
  constructor (private readonly buf: Uint8Array) {}

  u8 (): number {
    if (this.pos >= this.buf.length) throw ErrBadMessage
    return this.buf[this.pos++]!
  }

  uint (): number {
    let v = 0
    let mul = 1
    for (let i = 0; i < 8; i++) {
      const b = this.u8()
      v += (b & 0x7f) * mul
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(v)) throw ErrBadMessage
        return v
      }
      mul *= 0x80
    }
    throw ErrBadMessage
  }

  bytes (): Uint8Array {
    const n = this.uint()
    if (this.pos + n > this.buf.length) throw ErrBadMessage
    const out = this.buf.slice(this.pos, this.pos + n)
    this.pos += n
    return out
  }

  str (): string {
    try {
      return fromUtf8.decode(this.bytes())
    } catch {
      throw ErrBadMessage
    }
  }

  strs (): string[] {
    const n = this.uint()
    const out: string[] = []
    for (let i = 0; i < n; i++) out.push(this.str())
    return out
  }

  end (): void {
    if (this.pos !== this.buf.length) throw ErrBadMessage
  }
}

export function encodeMessage (m: Message): Uint8Array {
  const w = new Writer()
  w.u8(VERSION)
  w.u8(TYPE_CODE.get(m.type)!)
  w.str(m.from)
  w.str(m.to)
  w.uint(m.term)
  w.uint(m.logTerm)
  w.uint(m.index)
  w.uint(m.commit)
  w.uint(m.rejectHint)
  const hasOffset = m.offset !== undefined || m.total !== undefined
  w.u8((m.reject ? F_REJECT : 0) | (m.force === true ? F_FORCE : 0) | (m.done === true ? F_DONE : 0) |
    (m.context !== undefined ? F_CONTEXT : 0) | (m.snapshot !== undefined ? F_SNAPSHOT : 0) | (hasOffset ? F_OFFSET : 0))
  w.uint(m.entries.length)
  for (const e of m.entries) {
    w.uint(e.index)
    w.uint(e.term)
    w.u8(e.type)
    w.bytes(e.data)
  }
  if (m.context !== undefined) w.bytes(m.context)
  if (m.snapshot !== undefined) {
    const { meta, data } = m.snapshot
    const conf = meta.conf as ConfState
    w.uint(meta.index)
    w.uint(meta.term)
    w.strs(conf.voters)
    w.strs(conf.learners)
    w.strs(conf.removed ?? [])
    w.bytes(data)
  }
  if (hasOffset) {
    w.uint(m.offset ?? 0)
    w.uint(m.total ?? 0)
  }
  return w.finish()
}

/** Decode one frame; throws ErrBadMessage on anything malformed. */
export function decodeMessage (buf: Uint8Array): Message {
  const r = new Reader(buf)
  if (r.u8() !== VERSION) throw ErrBadMessage
  const type = TYPES[r.u8()]
  if (type === undefined) throw ErrBadMessage
  const m: Message = {
    type,
    from: r.str(),
    to: r.str(),
    term: r.uint(),
    logTerm: r.uint(),
    index: r.uint(),
    commit: r.uint(),
    rejectHint: r.uint(),
    reject: false,
    entries: []
  }
  const flags = r.u8()
  m.reject = (flags & F_REJECT) !== 0
  if ((flags & F_FORCE) !== 0) m.force = true
  if ((flags & F_DONE) !== 0) m.done = true
  const n = r.uint()
  for (let i = 0; i < n; i++) {
    const index = r.uint()
    const term = r.uint()
    const etype = r.u8()
    if (etype > 1) throw ErrBadMessage
    m.entries.push({ index, term, type: etype, data: r.bytes() })
  }
  if ((flags & F_CONTEXT) !== 0) m.context = r.bytes()
  if ((flags & F_SNAPSHOT) !== 0) {
    const index = r.uint()
    const term = r.uint()
    const voters = r.strs()
    const learners = r.strs()
    const removed = r.strs()
    const conf: ConfState = removed.length > 0 ? { voters, learners, removed } : { voters, learners }
    m.snapshot = { meta: { index, term, conf }, data: r.bytes() }
  }
  if ((flags & F_OFFSET) !== 0) {
    m.offset = r.uint()
    m.total = r.uint()
  }
  r.end()
  return m
}

const CC_TYPES: ConfChangeType[] = ['addVoter', 'addLearner', 'promote', 'remove']

/** ConfChange as stored in an ENTRY_CONF entry: u8 version · u8 type · str node · str id. */
export function encodeConfChange (cc: ConfChange): Uint8Array {
  const w = new Writer()
  w.u8(VERSION)
  w.u8(CC_TYPES.indexOf(cc.type))
  w.str(cc.node)
  w.str(cc.id ?? '')
  return w.finish()
}

export function decodeConfChange (buf: Uint8Array): ConfChange {
  const r = new Reader(buf)
  if (r.u8() !== VERSION) throw ErrBadMessage
  const type = CC_TYPES[r.u8()]
  if (type === undefined) throw ErrBadMessage
  const node = r.str()
  const id = r.str()
  r.end()
  return id === '' ? { type, node } : { type, node, id }
}

/** Encoded size of an entry list, for tests of the byte bounds. */
export function entriesBytes (ents: readonly Entry[]): number {
  let n = 0
  for (const e of ents) n += e.data.byteLength
  return n
}
