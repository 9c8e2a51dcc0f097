/**
 * A small list read from the metadata on most requests (remote repositories, virtual
 * repositories): kept in memory, dropped when a command changing it is applied on this node
 * (`invalidate`, from the node's apply hook), and after `maxAgeMs` anyway, since a snapshot
 * installed from the leader changes it with no such command.
 */
export class CachedList<T> {
  private list: Promise<T[]> | undefined
  private at = 0

  constructor (private readonly read: () => Promise<T[]>, private readonly maxAgeMs = 5_000) {}

  invalidate (): void { this.list = undefined }

  async get (): Promise<T[]> {
    if (this.list === undefined || Date.now() - this.at > this.maxAgeMs) { this.list = this.read(); this.at = Date.now() }
    const l = this.list
    try {
      return await l
    } catch (err) {
      // A failed read is not kept: the next caller reads again.
      if (this.list === l) this.list = undefined
      throw err
    }
  }
}
