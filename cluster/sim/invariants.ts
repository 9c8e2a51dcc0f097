/**
 * Safety invariants of a Raft cluster, checked as the simulation runs. Each check is
 * incremental: it looks at what just happened (a Ready, a sync, an apply) against a record
 * of what the cluster has done so far. A failed check throws InvariantViolation.
 */
import type { Entry } from '../raft/types.js'
import { chainHash } from './kv-state-machine.js'

export class InvariantViolation extends Error {
  static override name = 'InvariantViolation'
  constructor (readonly invariant: string, detail: string) {
    super(`${invariant}: ${detail}`)
    this.name = 'InvariantViolation'
  }
}

function fail (invariant: string, detail: string): never {
  throw new InvariantViolation(invariant, detail)
}

const entryHash = (e: Entry): number => chainHash(0x811c9dc5, e)

interface DiskRecord { term: number, commit: number, votes: Map<number, string> }

export class SafetyChecker {
  /** Election Safety: the one leader of each term. */
  private readonly leaders = new Map<number, string>()
  /** Log Matching: entry (index, term) → its content hash and the term before it. */
  private readonly entries = new Map<string, { hash: number, prevTerm: number | undefined }>()
  /** State Machine Safety: what was applied at each index, and the running hash after it. */
  private readonly applied = new Map<number, { term: number, hash: number, chain: number }>()
  maxApplied = 0
  /** Per node: what its disk held at the last sync. */
  private readonly disks = new Map<string, DiskRecord>()
  /** Highest commit index any node reported while in each term. */
  private readonly commitInTerm = new Map<number, number>()
  elections = 0

  /** At most one leader per term. */
  leader (node: string, term: number): void {
    const prev = this.leaders.get(term)
    if (prev !== undefined && prev !== node) fail('election safety', `two leaders in term ${term}: ${prev} and ${node}`)
    if (prev === undefined) this.elections++
    this.leaders.set(term, node)
  }

  /**
   * Entries a node just made durable. Two entries with the same index and term must hold the
   * same command and follow the same term: by induction, logs that share an entry share
   * everything before it.
   */
  persisted (node: string, ents: Entry[], termOf: (i: number) => number | undefined): void {
    for (let k = 0; k < ents.length; k++) {
      const e = ents[k]!
      const prevTerm = k > 0 ? ents[k - 1]!.term : termOf(e.index - 1)
      const key = `${e.index}:${e.term}`
      const h = entryHash(e)
      const seen = this.entries.get(key)
      if (seen === undefined) {
        this.entries.set(key, { hash: h, prevTerm })
        continue
      }
      if (seen.hash !== h) fail('log matching', `${node} holds a different entry at index ${e.index} term ${e.term}`)
      if (seen.prevTerm !== undefined && prevTerm !== undefined && seen.prevTerm !== prevTerm) {
        fail('log matching', `${node}: entry ${e.index}/${e.term} follows term ${prevTerm}, elsewhere term ${seen.prevTerm}`)
      }
      if (seen.prevTerm === undefined && prevTerm !== undefined) seen.prevTerm = prevTerm
    }
  }

  /** A node's synced hard state: term and commit never go back on disk, a vote is never changed. */
  synced (node: string, hs: { term: number, vote: string | null, commit: number }): void {
    let d = this.disks.get(node)
    if (d === undefined) this.disks.set(node, d = { term: 0, commit: 0, votes: new Map() })
    if (hs.term < d.term) fail('durable term', `${node}'s term on disk went from ${d.term} to ${hs.term}`)
    if (hs.commit < d.commit) fail('commit never goes back', `${node}'s commit on disk went from ${d.commit} to ${hs.commit}`)
    if (hs.vote !== null) {
      const v = d.votes.get(hs.term)
      if (v !== undefined && v !== hs.vote) fail('durable vote', `${node} voted for ${v} and then ${hs.vote} in term ${hs.term}`)
      d.votes.set(hs.term, hs.vote)
    }
    d.term = hs.term
    d.commit = hs.commit
  }

  /** A node applied `e`, its state machine's running hash now `chain`. Every node applies the same. */
  apply (node: string, e: Entry, chain: number): void {
    const seen = this.applied.get(e.index)
    const h = entryHash(e)
    if (seen === undefined) {
      this.applied.set(e.index, { term: e.term, hash: h, chain })
      if (e.index > this.maxApplied) this.maxApplied = e.index
      return
    }
    if (seen.term !== e.term || seen.hash !== h) {
      fail('state machine safety', `${node} applied ${e.index}/${e.term}, another node applied ${e.index}/${seen.term} there (committed entry changed)`)
    }
    if (seen.chain !== chain) fail('applied prefix', `${node}'s state after applying ${e.index} differs from another node's`)
  }

  /** A node installed a snapshot at `index`: its state must be what others had there. */
  restored (node: string, index: number, chain: number): void {
    const seen = this.applied.get(index)
    if (seen !== undefined && seen.chain !== chain) fail('applied prefix', `${node}'s snapshot at ${index} differs from the state others applied`)
  }

  /** A node in `term` knows entries up to `commit` are committed: by a leader of `term` or earlier. */
  commitSeen (term: number, commit: number): void {
    if (commit > (this.commitInTerm.get(term) ?? 0)) this.commitInTerm.set(term, commit)
  }

  /**
   * Leader Completeness: a leader of term L holds every entry committed in an earlier term.
   * (A stale leader of an older term may lack entries committed later; that is allowed.)
   */
  newLeaderLog (node: string, term: number, termAt: (i: number) => number | undefined, firstIndex: number): void {
    let upTo = 0
    for (const [t, c] of this.commitInTerm) if (t < term && c > upTo) upTo = c
    for (let i = Math.max(firstIndex, 1); i <= Math.min(upTo, this.maxApplied); i++) {
      const seen = this.applied.get(i)
      if (seen === undefined) continue
      const t = termAt(i)
      if (t !== seen.term) fail('leader completeness', `new leader ${node} has ${t === undefined ? 'no entry' : `term ${t}`} at committed index ${i} (term ${seen.term})`)
    }
  }
}
