/**
 * The core's view of its log (after etcd's raftLog/unstable): the persisted part, read
 * through a RaftLogReader, followed by an unstable tail of entries (and possibly a snapshot)
 * that the application has not yet persisted.
 */
import { ErrCompacted, ErrUnavailable, isStorageError, type RaftLogReader } from './storage.js'
import type { Entry, Snapshot } from './types.js'

export function entrySize (e: Entry): number {
  return e.data.byteLength
}

/** Keep a prefix of `ents` whose data sizes sum to at most maxBytes, but at least one entry. */
export function limitSize (ents: Entry[], maxBytes: number): Entry[] {
  if (ents.length === 0) return ents
  let size = entrySize(ents[0]!)
  let n = 1
  for (; n < ents.length; n++) {
    size += entrySize(ents[n]!)
    if (size > maxBytes) break
  }
  return n === ents.length ? ents : ents.slice(0, n)
}

/** Entries and a snapshot not yet persisted. entries[i] has index offset + i. */
export class Unstable {
  snapshot: Snapshot | undefined
  entries: Entry[] = []
  offset: number

  constructor (offset: number) {
    this.offset = offset
  }

  maybeFirstIndex (): number | undefined {
    return this.snapshot !== undefined ? this.snapshot.meta.index + 1 : undefined
  }

  maybeLastIndex (): number | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1
    if (this.snapshot !== undefined) return this.snapshot.meta.index
    return undefined
  }

  maybeTerm (i: number): number | undefined {
    if (i < this.offset) {
      if (this.snapshot !== undefined && this.snapshot.meta.index === i) return this.snapshot.meta.term
      return undefined
    }
    const last = this.maybeLastIndex()
    if (last === undefined || i > last) return undefined
    return this.entries[i - this.offset]!.term
  }

  /** Entries up to (i, t) are persisted. A mismatched term means they were replaced meanwhile. */
  stableTo (i: number, t: number): void {
    const gt = this.maybeTerm(i)
    if (gt === undefined || gt !== t || i < this.offset) return
    this.entries = this.entries.slice(i + 1 - this.offset)
    this.offset = i + 1
  }

  stableSnapTo (i: number): void {
    if (this.snapshot !== undefined && this.snapshot.meta.index === i) this.snapshot = undefined
  }

  restore (s: Snapshot): void {
    this.offset = s.meta.index + 1
    this.entries = []
    this.snapshot = s
  }

  truncateAndAppend (ents: Entry[]): void {
    const first = ents[0]!.index
    if (first === this.offset + this.entries.length) {
      // Plain append (the common case): push, so many small proposals stay linear.
      for (const e of ents) this.entries.push(e)
    } else if (first <= this.offset) {
      // Replaces the whole unstable tail (and possibly persisted entries after `first`).
      this.offset = first
      this.entries = ents.slice()
    } else {
      this.entries = this.entries.slice(0, first - this.offset).concat(ents)
    }
  }

  slice (lo: number, hi: number): Entry[] {
    return this.entries.slice(lo - this.offset, hi - this.offset)
  }
}

export class RaftLog {
  readonly storage: RaftLogReader
  readonly unstable: Unstable
  /** Highest index known committed on a quorum. */
  committed: number
  /** Highest index the application has applied. */
  applied: number

  constructor (storage: RaftLogReader) {
    this.storage = storage
    const first = storage.firstIndex()
    const last = storage.lastIndex()
    this.unstable = new Unstable(last + 1)
    this.committed = first - 1
    this.applied = first - 1
  }

  firstIndex (): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex()
  }

  lastIndex (): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex()
  }

  lastTerm (): number {
    return this.term(this.lastIndex())
  }

  /** Term of entry i. Throws ErrCompacted below firstIndex()-1, ErrUnavailable past lastIndex(). */
  term (i: number): number {
    const u = this.unstable.maybeTerm(i)
    if (u !== undefined) return u
    const dummy = this.firstIndex() - 1
    if (i < dummy) throw ErrCompacted
    if (i > this.lastIndex()) throw ErrUnavailable
    return this.storage.term(i)
  }

  /** Term of entry i, or 0 when it is compacted or not there. */
  termOrZero (i: number): number {
    try {
      return this.term(i)
    } catch (err) {
      if (isStorageError(err, 'RAFT_LOG_COMPACTED') || isStorageError(err, 'RAFT_LOG_UNAVAILABLE')) return 0
      throw err
    }
  }

  matchTerm (i: number, t: number): boolean {
    try {
      return this.term(i) === t
    } catch (err) {
      if (isStorageError(err)) return false
      throw err
    }
  }

  /** §5.4.1: is a log ending at (lasti, term) at least as up to date as ours? */
  isUpToDate (lasti: number, term: number): boolean {
    const lt = this.lastTerm()
    return term > lt || (term === lt && lasti >= this.lastIndex())
  }

  /**
   * Follower append (§5.3): if our entry at `index` has `logTerm`, drop what conflicts with
   * `ents`, append the rest, advance commit. Returns the new last index, or undefined on mismatch.
   */
  maybeAppend (index: number, logTerm: number, committed: number, ents: Entry[]): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined
    const lastNew = index + ents.length
    const ci = this.findConflict(ents)
    if (ci !== 0) {
      if (ci <= this.committed) throw new Error(`raft: entry ${ci} conflicts with committed entry ${this.committed}`)
      this.append(ents.slice(ci - (index + 1)))
    }
    this.commitTo(Math.min(committed, lastNew))
    return lastNew
  }

  append (ents: Entry[]): number {
    if (ents.length === 0) return this.lastIndex()
    const after = ents[0]!.index - 1
    if (after < this.committed) throw new Error(`raft: append after ${after} is below committed ${this.committed}`)
    this.unstable.truncateAndAppend(ents)
    return this.lastIndex()
  }

  /**
   * First index in `ents` whose term differs from ours, or the first new index; 0 when every
   * entry is already in the log.
   */
  findConflict (ents: Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index
    }
    return 0
  }

  /**
   * The largest (index, term) with index <= `index` and term <= `term` in our log: the leader
   * can skip every index above it when probing (fast backtracking).
   */
  findConflictByTerm (index: number, term: number): { index: number, term: number } {
    for (; index > 0; index--) {
      let t: number
      try {
        t = this.term(index)
      } catch (err) {
        if (isStorageError(err)) return { index, term: 0 }
        throw err
      }
      if (t <= term) return { index, term: t }
    }
    return { index: 0, term: 0 }
  }

  unstableEntries (): Entry[] {
    return this.unstable.entries.slice()
  }

  /** Committed entries not yet applied, up to maxBytes (at least one). */
  nextCommittedEnts (maxBytes: number): Entry[] {
    const off = Math.max(this.applied + 1, this.firstIndex())
    if (this.committed + 1 > off) return this.slice(off, this.committed + 1, maxBytes)
    return []
  }

  hasNextCommittedEnts (): boolean {
    return this.committed > Math.max(this.applied, this.firstIndex() - 1)
  }

  hasPendingSnapshot (): boolean {
    return this.unstable.snapshot !== undefined
  }

  snapshot (): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot()
  }

  commitTo (c: number): void {
    if (c > this.committed) {
      if (c > this.lastIndex()) throw new Error(`raft: commit ${c} is out of range [last ${this.lastIndex()}]`)
      this.committed = c
    }
  }

  appliedTo (i: number): void {
    if (i === 0) return
    if (this.committed < i || i < this.applied) {
      throw new Error(`raft: applied ${i} is out of range [prev ${this.applied}, committed ${this.committed}]`)
    }
    this.applied = i
  }

  stableTo (i: number, t: number): void { this.unstable.stableTo(i, t) }
  stableSnapTo (i: number): void { this.unstable.stableSnapTo(i) }

  /** Commit `maxIndex` if it is of `term` (§5.4.2: only entries of the leader's term are counted). */
  maybeCommit (maxIndex: number, term: number): boolean {
    if (maxIndex > this.committed && this.termOrZero(maxIndex) === term) {
      this.commitTo(maxIndex)
      return true
    }
    return false
  }

  restore (s: Snapshot): void {
    this.committed = s.meta.index
    this.unstable.restore(s)
  }

  /** Entries from i to the end, up to maxBytes. Throws ErrCompacted if i is compacted. */
  entries (i: number, maxBytes: number): Entry[] {
    if (i > this.lastIndex()) return []
    return this.slice(i, this.lastIndex() + 1, maxBytes)
  }

  /** Entries [lo, hi) from storage and the unstable tail, up to maxBytes (at least one). */
  slice (lo: number, hi: number, maxBytes = Infinity): Entry[] {
    if (lo === hi) return []
    const fi = this.firstIndex()
    if (lo < fi) throw ErrCompacted
    if (hi > this.lastIndex() + 1) throw ErrUnavailable
    let ents: Entry[] = []
    if (lo < this.unstable.offset) {
      const stored = this.storage.entries(lo, Math.min(hi, this.unstable.offset), maxBytes === Infinity ? undefined : maxBytes)
      // Storage stopped early because of the size limit: do not add unstable entries after a gap.
      if (stored.length < Math.min(hi, this.unstable.offset) - lo) return stored
      ents = stored
    }
    if (hi > this.unstable.offset) {
      const u = this.unstable.slice(Math.max(lo, this.unstable.offset), hi)
      ents = ents.length > 0 ? ents.concat(u) : u
    }
    return maxBytes === Infinity ? ents : limitSize(ents, maxBytes)
  }

  /** Every entry from firstIndex(), for tests and diagnostics. */
  allEntries (): Entry[] {
    return this.entries(this.firstIndex(), Infinity)
  }
}
