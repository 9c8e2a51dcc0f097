/**
 * Strangers on probation. A member's connection gater admits members only; for a new node to
 * join through a member's libp2p address, it also lets an unknown peer connect, on probation:
 *
 * - only while a join token handed out by this cluster is unexpired (IssueJoinToken records);
 * - at most `maxPeers` strangers at once, and at most `maxPerAddress` from one source (an IPv4
 *   address, or an IPv6 /64, which one host commonly holds whole), so that one machine cannot
 *   take every slot and keep real joiners out;
 * - for `graceMs`: a peer that has not completed a join by then is disconnected.
 *
 * A stranger that has become a member (its join applied) no longer counts against either limit.
 *
 * A stranger on probation may use only the join protocol (cluster/join.ts): Raft, gossip and
 * the node-to-node HTTP routes ask `Cluster.admits`, which knows members only (gossipsub does
 * not even see a non-member: net/gossip-gate.ts). Removed peers never get here (the cluster
 * refuses them first).
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
  /** Strangers on probation at once from one source address (see sourceOf). Default 1. */
  maxPerAddress?: number
  /** How long a stranger has to complete a join. Default 10 s. */
  graceMs?: number
}

interface Entry { until: number; joined: boolean; working: number; timer: NodeJS.Timeout; source: string }

export class Probation {
  readonly maxPeers: number
  readonly maxPerAddress: number
  readonly graceMs: number
  private readonly peers = new Map<string, Entry>()

  constructor (private readonly opts: ProbationOptions) {
    this.maxPeers = opts.maxPeers ?? 4
    this.maxPerAddress = opts.maxPerAddress ?? 1
    this.graceMs = opts.graceMs ?? 10_000
  }

  /**
   * Whether a stranger may connect now, from the IP address `address` (undefined when the
   * transport names none: all such strangers share one source); starts its probation on its
   * first connection.
   */
  admit (peerId: string, address?: string): boolean {
    const now = Date.now()
    const e = this.peers.get(peerId)
    if (e !== undefined) return e.joined || now < e.until
    if (!this.opts.open()) return false
    const source = address === undefined ? '?' : sourceOf(address)
    if (this.pending() >= this.maxPeers || this.pending(source) >= this.maxPerAddress) return false
    const entry: Entry = { until: now + this.graceMs, joined: false, working: 0, timer: setTimeout(() => this.end(peerId, entry), this.graceMs), source }
    entry.timer.unref()
    this.peers.set(peerId, entry)
    return true
  }

  /** Strangers on probation now (from one source, given sourceOf's key): not members by now. */
  pending (source?: string): number {
    let n = 0
    for (const [peerId, e] of this.peers) {
      if (e.joined || (source !== undefined && e.source !== source)) continue
      if (!this.opts.isMember(peerId)) n++
    }
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

/**
 * The source a probation slot counts against, for an IP address: an IPv4 address as it is
 * (an IPv4-mapped IPv6 address too), an IPv6 address as its /64 (`2001:db8:0:1::/64`).
 */
export function sourceOf (address: string): string {
  const ip = address.replace(/%.*$/, '').toLowerCase()
  const mapped = /^(?:0*:)*:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(ip)
  if (mapped !== null) return mapped[1]!
  if (!ip.includes(':')) return ip
  const [head = '', tail] = ip.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`
}
