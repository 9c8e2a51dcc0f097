/**
 * Watches, on the leader, whether each follower's match index advances while the leader has
 * entries for it. A follower whose match stays put for `afterMs` is stalled: the caller logs
 * a warning naming the peer, the index and the cause, counts it, and shows it in the status.
 * No stall is silent: a frame that can never be delivered used to freeze a cluster with
 * nothing logged above debug.
 *
 * Pure: the caller passes the Raft status, the time and what the transport knows.
 */
import type { Status, ProgressStatus } from './raft/raft.js'

export interface Stall {
  peer: string
  /** The follower's match index, unchanged since `since`. */
  match: number
  /** The leader's last index when the stall was noticed. */
  lastIndex: number
  since: number
  cause: string
}

export type StallEvent =
  | { type: 'stalled'; stall: Stall }
  | { type: 'recovered'; stall: Stall; match: number }

/** What the transport knows of a peer: the last reason frames to it were lost. */
export type TransportView = (peer: string) => { message: string; at: number } | undefined

export class StallWatch {
  private readonly seen = new Map<string, { match: number; at: number }>()
  private readonly stalls = new Map<string, Stall>()

  constructor (private readonly afterMs = 5000) {}

  /** Feed the leader's status; returns the stalls that began or ended. */
  observe (st: Status, now: number, transport: TransportView): StallEvent[] {
    const events: StallEvent[] = []
    if (st.progress === undefined) {
      // Not the leader: nobody's progress is ours to judge.
      this.seen.clear()
      this.stalls.clear()
      return events
    }
    for (const peer of [...this.seen.keys()]) if (!st.progress.has(peer)) { this.seen.delete(peer); this.stalls.delete(peer) }
    for (const [peer, pr] of st.progress) {
      if (peer === st.id) continue
      const last = this.seen.get(peer)
      const behind = pr.match < st.lastIndex
      if (last === undefined || pr.match !== last.match || !behind) {
        this.seen.set(peer, { match: pr.match, at: now })
        const stall = this.stalls.get(peer)
        if (stall !== undefined) {
          this.stalls.delete(peer)
          events.push({ type: 'recovered', stall, match: pr.match })
        }
        continue
      }
      if (this.stalls.has(peer) || now - last.at < this.afterMs) continue
      const stall: Stall = { peer, match: pr.match, lastIndex: st.lastIndex, since: last.at, cause: causeOf(pr, transport(peer), last.at) }
      this.stalls.set(peer, stall)
      events.push({ type: 'stalled', stall })
    }
    return events
  }

  /** The stall of `peer` under way, if any. */
  stallOf (peer: string): Stall | undefined {
    return this.stalls.get(peer)
  }

  current (): Stall[] {
    return [...this.stalls.values()]
  }
}

/** The likeliest reason, in words an operator can act on. */
export function causeOf (pr: ProgressStatus, lastError: { message: string; at: number } | undefined, since: number): string {
  const parts: string[] = []
  if (lastError !== undefined && lastError.at >= since - 1000) parts.push(`frames to it are being lost: ${lastError.message}`)
  if (!pr.recentActive) parts.push('it has not answered within an election timeout (down, paused or cut off?)')
  if (pr.state === 'snapshot') parts.push('it is being sent a snapshot')
  else if (pr.state === 'probe') parts.push(`the leader is probing it at index ${pr.next}`)
  if (pr.inflight > 0 && pr.paused) parts.push(`${pr.inflight} appends (${pr.inflightBytes} bytes) await its acknowledgement`)
  if (parts.length === 0) parts.push('it acknowledges nothing new although it answers heartbeats')
  return parts.join('; ')
}
