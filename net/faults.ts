/**
 * Fault injection, for tests only (a node started with FLOTILLA_FAULT_INJECTION=1; absent
 * otherwise): the set of peers this node is cut off from. A blocked peer is refused by the
 * connection gater and by the node-to-node HTTP checks, its libp2p connections are closed,
 * and no HTTP request goes out to it. Blocking on both sides cuts the link both ways.
 */
export class Faults {
  private blocked = new Set<string>()
  private readonly listeners: Array<(blocked: readonly string[]) => void> = []

  /** Whether every path to `peerId` is cut. */
  blocks (peerId: string): boolean {
    return this.blocked.has(peerId)
  }

  /** The peers cut off now. */
  list (): string[] {
    return [...this.blocked].sort()
  }

  /** Cut this node off from exactly these peers (an empty list heals). */
  set (peers: Iterable<string>): void {
    this.blocked = new Set(peers)
    const now = this.list()
    for (const fn of this.listeners) fn(now)
  }

  heal (): void {
    this.set([])
  }

  /** Told of the blocked set after every change (to close connections to newly blocked peers). */
  onChange (fn: (blocked: readonly string[]) => void): void {
    this.listeners.push(fn)
  }
}
