/**
 * The leader's view of each follower (after etcd's tracker.Progress and Inflights): how far
 * its log matches, and how much may be sent to it without waiting.
 *
 * - probe: we do not know where the follower's log matches; send one append per heartbeat
 *   interval and wait for the answer.
 * - replicate: the follower is keeping up; stream appends optimistically, bounded by Inflights.
 * - snapshot: the follower needs a snapshot; send nothing else until it is installed.
 */
import type { NodeId } from './types.js'

export type ProgressState = 'probe' | 'replicate' | 'snapshot'

/** A bounded window of append messages sent but not yet acknowledged. */
export class Inflights {
  /** Last index of each in-flight message, oldest first, with its size in bytes. */
  private readonly queue: Array<{ index: number, bytes: number }> = []
  private bytesInFlight = 0

  constructor (readonly maxMessages: number, readonly maxBytes: number) {}

  add (index: number, bytes: number): void {
    this.queue.push({ index, bytes })
    this.bytesInFlight += bytes
  }

  /** Free every message whose last index is at or below `to`. */
  freeLE (to: number): void {
    let n = 0
    while (n < this.queue.length && this.queue[n]!.index <= to) {
      this.bytesInFlight -= this.queue[n]!.bytes
      n++
    }
    if (n > 0) this.queue.splice(0, n)
  }

  freeFirst (): void {
    const first = this.queue.shift()
    if (first !== undefined) this.bytesInFlight -= first.bytes
  }

  full (): boolean {
    return this.queue.length >= this.maxMessages || (this.maxBytes > 0 && this.bytesInFlight >= this.maxBytes)
  }

  count (): number { return this.queue.length }
  bytes (): number { return this.bytesInFlight }

  reset (): void {
    this.queue.length = 0
    this.bytesInFlight = 0
  }
}

export class Progress {
  match = 0
  next: number
  state: ProgressState = 'probe'
  /** In probe state: an append was sent; wait for its answer or the next heartbeat. */
  msgAppFlowPaused = false
  /** In snapshot state: the index of the snapshot being sent. */
  pendingSnapshot = 0
  /** Ticks spent in snapshot state without the follower acknowledging a chunk, to retry a snapshot whose chunks were lost. */
  snapshotTicks = 0
  /** In snapshot state: bytes of the snapshot sent, and bytes the follower holds from offset 0. */
  snapshotSent = 0
  snapshotAcked = 0
  /** Heard from since the last CheckQuorum round. */
  recentActive = false
  isLearner: boolean
  readonly inflights: Inflights

  constructor (next: number, isLearner: boolean, maxInflightMsgs: number, maxInflightBytes: number) {
    this.next = next
    this.isLearner = isLearner
    this.inflights = new Inflights(maxInflightMsgs, maxInflightBytes)
  }

  private resetState (state: ProgressState): void {
    this.msgAppFlowPaused = false
    this.pendingSnapshot = 0
    this.snapshotTicks = 0
    this.snapshotSent = 0
    this.snapshotAcked = 0
    this.state = state
    this.inflights.reset()
  }

  becomeProbe (): void {
    if (this.state === 'snapshot') {
      // Resume from after the snapshot, or from after what the follower has, whichever is later.
      const pending = this.pendingSnapshot
      this.resetState('probe')
      this.next = Math.max(this.match + 1, pending + 1)
    } else {
      this.resetState('probe')
      this.next = this.match + 1
    }
  }

  becomeReplicate (): void {
    this.resetState('replicate')
    this.next = this.match + 1
  }

  becomeSnapshot (snapshotIndex: number): void {
    this.resetState('snapshot')
    this.pendingSnapshot = snapshotIndex
  }

  /** An append of entries up to `last` (of `bytes` bytes) was sent. */
  sentEntries (last: number, entryCount: number, bytes: number): void {
    if (this.state === 'replicate') {
      if (entryCount > 0) {
        this.next = last + 1
        this.inflights.add(last, bytes)
      }
    } else if (this.state === 'probe') {
      this.msgAppFlowPaused = true
    }
  }

  /** The follower acknowledged up to n. Returns false if the ack is stale. */
  maybeUpdate (n: number): boolean {
    let updated = false
    if (this.match < n) {
      this.match = n
      updated = true
      this.msgAppFlowPaused = false
    }
    this.next = Math.max(this.next, n + 1)
    return updated
  }

  /**
   * The follower rejected an append at `rejected`; `matchHint` is where its log may match.
   * Returns false if the rejection is stale.
   */
  maybeDecrTo (rejected: number, matchHint: number): boolean {
    if (this.state === 'replicate') {
      // Stale unless it rejects the entry right after what we know matches.
      if (rejected <= this.match) return false
      this.next = this.match + 1
      return true
    }
    if (this.next - 1 !== rejected) return false
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1, 1)
    this.msgAppFlowPaused = false
    return true
  }

  /** Sending appends must wait: probing with one outstanding, a full window, or a snapshot. */
  isPaused (): boolean {
    switch (this.state) {
      case 'probe': return this.msgAppFlowPaused
      case 'replicate': return this.inflights.full()
      case 'snapshot': return true
    }
  }
}

/** Voters, learners and the progress of each (the leader's only). */
export interface Config {
  voters: Set<NodeId>
  learners: Set<NodeId>
}

export function quorum (n: number): number {
  return Math.floor(n / 2) + 1
}

/** Largest index acknowledged by a quorum of voters, given each voter's acknowledged index. */
export function committedIndex (voters: Iterable<NodeId>, acked: (id: NodeId) => number): number {
  const idx: number[] = []
  for (const v of voters) idx.push(acked(v))
  if (idx.length === 0) return Number.MAX_SAFE_INTEGER // no voters: nothing constrains commit
  idx.sort((a, b) => b - a)
  return idx[quorum(idx.length) - 1]!
}

export type VoteResult = 'won' | 'lost' | 'pending'

export function voteResult (voters: Iterable<NodeId>, votes: Map<NodeId, boolean>): VoteResult {
  let granted = 0
  let missing = 0
  let n = 0
  for (const v of voters) {
    n++
    const r = votes.get(v)
    if (r === undefined) missing++
    else if (r) granted++
  }
  const q = quorum(n)
  if (n === 0) return 'won'
  if (granted >= q) return 'won'
  if (granted + missing >= q) return 'pending'
  return 'lost'
}
