/**
 * The simulation's replicated state machine: a string key-value store whose commands carry
 * a client id and sequence number, so a retried command is applied once. It also keeps a
 * running hash of every applied entry, which the invariant checker compares across nodes.
 */
import type { Entry } from '../raft/types.js'
import { ENTRY_NORMAL } from '../raft/types.js'

export interface KvCommand {
  /** Client id. */
  c: string
  /** The client's sequence number: commands with s <= the last applied one are duplicates. */
  s: number
  k: string
  v: string
}

const enc = new TextEncoder()
const dec = new TextDecoder()

export function encodeCommand (cmd: KvCommand): Uint8Array {
  return enc.encode(JSON.stringify(cmd))
}

export function decodeCommand (data: Uint8Array): KvCommand {
  return JSON.parse(dec.decode(data)) as KvCommand
}

/** FNV-1a over the entry's term, type and data, chained onto `h`. */
export function chainHash (h: number, e: Entry): number {
  h = Math.imul(h ^ (e.term & 0xffff), 0x01000193) >>> 0
  h = Math.imul(h ^ (e.term >>> 16), 0x01000193) >>> 0
  h = Math.imul(h ^ e.type, 0x01000193) >>> 0
  for (let i = 0; i < e.data.length; i++) h = Math.imul(h ^ e.data[i]!, 0x01000193) >>> 0
  return h
}

interface SnapshotBody { kv: Array<[string, string]>, seq: Array<[string, number]>, hash: number }

export class KvStateMachine {
  kv = new Map<string, string>()
  lastSeq = new Map<string, number>()
  applied = 0
  hash = 0x811c9dc5

  /** Apply one committed entry; returns the command when it is a new (not duplicate) write. */
  apply (e: Entry): KvCommand | null {
    if (e.index !== this.applied + 1) throw new Error(`state machine: applying ${e.index} after ${this.applied}`)
    this.applied = e.index
    this.hash = chainHash(this.hash, e)
    if (e.type !== ENTRY_NORMAL || e.data.length === 0) return null
    const cmd = decodeCommand(e.data)
    if ((this.lastSeq.get(cmd.c) ?? 0) >= cmd.s) return null
    this.lastSeq.set(cmd.c, cmd.s)
    this.kv.set(cmd.k, cmd.v)
    return cmd
  }

  snapshot (): Uint8Array {
    const body: SnapshotBody = { kv: [...this.kv], seq: [...this.lastSeq], hash: this.hash }
    return enc.encode(JSON.stringify(body))
  }

  restore (data: Uint8Array, index: number): void {
    const body = JSON.parse(dec.decode(data)) as SnapshotBody
    this.kv = new Map(body.kv)
    this.lastSeq = new Map(body.seq)
    this.hash = body.hash
    this.applied = index
  }
}
