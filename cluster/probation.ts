/**
 * Strangers on probation. A member's connection gater admits members only; for a new node to
 * join through a member's libp2p address, it also lets an unknown peer connect, on probation:
 *
 * - only while a join token handed out by this cluster is unexpired (IssueJoinToken records);
 * - at most `maxPeers` strangers at once;
 * - for `graceMs`: a peer that has not completed a join by then is disconnected.
 *
 * A stranger on probation may use only the join protocol (cluster/join.ts): Raft, gossip and
 * the node-to-node HTTP routes ask `Cluster.admits`, which knows members only. Removed peers
 * never get here (the cluster refuses them first).
 */

export interface ProbationOptions {
  /** Whether a join token is outstanding now. */
  open: () => boolean
  /** Whether the peer is a member by now (asked when its probation ends). */
  isMember: (peerId: string) => boolean
  /** Close every connection to the peer. */
  disconnect: (peerId: string, reason: string) => void
  /** Strangers on probation at once. Default 4. */
  maxPeers?: number
  /** How long a stranger has to complete a join. Default 10 s. */
  graceMs?: number
}

interface Entry { until: number; joined: boolean; working: number; timer: NodeJS.Timeout }

export class Probation {
  readonly maxPeers: number
  readonly graceMs: number
  private readonly peers = new Map<string, Entry>()

  constructor (private readonly opts: ProbationOptions) {
    this.maxPeers = opts.maxPeers ?? 4
    this.graceMs = opts.graceMs ?? 10_000
  }

  /** Whether a stranger may connect now; starts its probation on its first connection. */
  admit (peerId: string): boolean {
    const now = Date.now()
    const e = this.peers.get(peerId)
    if (e !== undefined) return e.joined || now < e.until
    if (!this.opts.open()) return false
    if (this.pending() >= this.maxPeers) return false
    const entry: Entry = { until: now + this.graceMs, joined: false, working: 0, timer: setTimeout(() => this.end(peerId, entry), this.graceMs) }
    entry.timer.unref()
    this.peers.set(peerId, entry)
    return true
  }

  /** Strangers on probation now. */
  pending (): number {
    let n = 0
    for (const e of this.peers.values()) if (!e.joined) n++
    return n
  }

  /** The peer completed a join: its connection stays (it is a member once AddPeer is applied here). */
  joined (peerId: string): void {
    const e = this.peers.get(peerId)
    if (e !== undefined) e.joined = true
  }

  /**
   * Run a join for the peer: its probation does not end while the join is under way (a join
   * waits for the leader; the exchange has its own timeout).
   */
  async working<T> (peerId: string, fn: () => Promise<T>): Promise<T> {
    const e = this.peers.get(peerId)
    if (e !== undefined) e.working++
    try {
      return await fn()
    } finally {
      if (e !== undefined) e.working--
    }
  }

  /** Forget a stranger without disconnecting it (the caller hangs up itself). */
  release (peerId: string): void {
    const e = this.peers.get(peerId)
    if (e === undefined || e.joined) return
    clearTimeout(e.timer)
    this.peers.delete(peerId)
  }

  /** End a stranger's probation now (a refused join, a protocol it may not use) and disconnect it. */
  refuse (peerId: string, reason: string): void {
    const e = this.peers.get(peerId)
    if (e === undefined || e.joined) return
    clearTimeout(e.timer)
    this.peers.delete(peerId)
    this.opts.disconnect(peerId, reason)
  }

  private end (peerId: string, entry: Entry): void {
    if (this.peers.get(peerId) !== entry) return
    if (entry.working > 0) {
      entry.timer = setTimeout(() => this.end(peerId, entry), 1000)
      entry.timer.unref()
      return
    }
    this.peers.delete(peerId)
    if (!entry.joined && !this.opts.isMember(peerId)) this.opts.disconnect(peerId, `no join within ${this.graceMs} ms`)
  }

  stop (): void {
    for (const e of this.peers.values()) clearTimeout(e.timer)
    this.peers.clear()
  }
}
