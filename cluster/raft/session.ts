/**
 * Client sessions for exactly-once commands (Raft thesis §6.3). A client tags each command
 * with its id and a sequence number; a retry carries the same pair. The state machine applies
 * commands through a SessionTable, which runs a command once and answers retries from a cache.
 *
 * The table is part of the replicated state: it changes only through `apply`, and uses no
 * clock, only log indexes, so every replica (and every replay of the log) reaches the same
 * table. Snapshot it with the rest of the state (`toJSON` / `SessionTable.fromJSON`).
 *
 * Memory is bounded two ways:
 * - `ackedBelow`: the client promises it will never retry a seq below this (it has every
 *   answer), so those results are dropped. A retry below it is answered with 'stale'.
 * - `maxSessions`: beyond it, the session least recently used (by log index, then client id)
 *   is evicted. A later command of an evicted client with a seq other than its first is
 *   answered 'expired', since the table can no longer tell whether it ran.
 */

export interface SessionCommand {
  clientId: string
  seq: number
  /** Every seq below this has been answered; the client will not retry those. */
  ackedBelow: number
  payload: Uint8Array
}

export type SessionOutcome<R> =
  | { kind: 'applied', result: R }
  | { kind: 'duplicate', result: R }
  | { kind: 'stale' }
  | { kind: 'expired' }

interface Session<R> {
  /** Log index of the last command of this client. */
  lastIndex: number
  ackedBelow: number
  results: Map<number, R>
}

export interface SessionTableJSON<J> {
  sessions: Array<{ clientId: string, lastIndex: number, ackedBelow: number, results: Array<[number, J]> }>
  evicted: string[]
}

export class SessionTable<R> {
  private readonly sessions = new Map<string, Session<R>>()
  /** Clients whose session was evicted: their later commands are answered 'expired'. */
  private readonly evicted = new Set<string>()

  constructor (readonly maxSessions = 10_000) {
    if (maxSessions <= 0) throw new RangeError('maxSessions must be greater than 0')
  }

  /**
   * Apply command `cmd` found at log `index`: run `fn` unless this (clientId, seq) already
   * ran, in which case return the cached result.
   */
  apply (index: number, cmd: Omit<SessionCommand, 'payload'>, fn: () => R): SessionOutcome<R> {
    let s = this.sessions.get(cmd.clientId)
    if (s === undefined) {
      // A new session must start at its first command; anything else may already have run.
      if (this.evicted.has(cmd.clientId)) return { kind: 'expired' }
      s = { lastIndex: index, ackedBelow: 0, results: new Map() }
      this.sessions.set(cmd.clientId, s)
      this.evict()
    }
    s.lastIndex = index
    if (cmd.ackedBelow > s.ackedBelow) {
      s.ackedBelow = cmd.ackedBelow
      for (const seq of s.results.keys()) if (seq < s.ackedBelow) s.results.delete(seq)
    }
    if (s.results.has(cmd.seq)) return { kind: 'duplicate', result: s.results.get(cmd.seq) as R }
    if (cmd.seq < s.ackedBelow) return { kind: 'stale' }
    const result = fn()
    s.results.set(cmd.seq, result)
    return { kind: 'applied', result }
  }

  /** Whether the table holds a session for the client. */
  has (clientId: string): boolean {
    return this.sessions.has(clientId)
  }

  size (): number { return this.sessions.size }

  private evict (): void {
    while (this.sessions.size > this.maxSessions) {
      let victim: string | undefined
      let victimIndex = Infinity
      for (const [id, s] of this.sessions) {
        if (s.lastIndex < victimIndex || (s.lastIndex === victimIndex && victim !== undefined && id < victim)) {
          victim = id
          victimIndex = s.lastIndex
        }
      }
      if (victim === undefined) return
      this.sessions.delete(victim)
      this.evicted.add(victim)
    }
  }

  toJSON<J> (encode: (r: R) => J): SessionTableJSON<J> {
    const ids = [...this.sessions.keys()].sort()
    return {
      sessions: ids.map(clientId => {
        const s = this.sessions.get(clientId)!
        return {
          clientId,
          lastIndex: s.lastIndex,
          ackedBelow: s.ackedBelow,
          results: [...s.results.entries()].sort((a, b) => a[0] - b[0]).map(([seq, r]) => [seq, encode(r)] as [number, J])
        }
      }),
      evicted: [...this.evicted].sort()
    }
  }

  static fromJSON<R, J> (json: SessionTableJSON<J>, decode: (j: J) => R, maxSessions?: number): SessionTable<R> {
    const t = new SessionTable<R>(maxSessions)
    for (const s of json.sessions) {
      t.sessions.set(s.clientId, {
        lastIndex: s.lastIndex,
        ackedBelow: s.ackedBelow,
        results: new Map(s.results.map(([seq, j]) => [seq, decode(j)]))
      })
    }
    for (const id of json.evicted) t.evicted.add(id)
    return t
  }
}

const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder()

/**
 * Wire form of a SessionCommand inside a log entry:
 * u8 version (1) · u16 id length · id (UTF-8) · f64 seq · f64 ackedBelow · payload.
 */
export function encodeSessionCommand (cmd: SessionCommand): Uint8Array {
  const id = utf8.encode(cmd.clientId)
  if (id.byteLength > 0xffff) throw new RangeError('clientId too long')
  const out = new Uint8Array(1 + 2 + id.byteLength + 16 + cmd.payload.byteLength)
  const view = new DataView(out.buffer)
  out[0] = 1
  view.setUint16(1, id.byteLength)
  out.set(id, 3)
  view.setFloat64(3 + id.byteLength, cmd.seq)
  view.setFloat64(11 + id.byteLength, cmd.ackedBelow)
  out.set(cmd.payload, 19 + id.byteLength)
  return out
}

export function decodeSessionCommand (buf: Uint8Array): SessionCommand {
  if (buf.byteLength < 19 || buf[0] !== 1) throw new RangeError('not a session command')
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  const n = view.getUint16(1)
  if (buf.byteLength < 19 + n) throw new RangeError('truncated session command')
  return {
    clientId: fromUtf8.decode(buf.subarray(3, 3 + n)),
    seq: view.getFloat64(3 + n),
    ackedBelow: view.getFloat64(11 + n),
    payload: buf.slice(19 + n)
  }
}
