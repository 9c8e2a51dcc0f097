/**
 * An in-memory LogStorage for tests and the deterministic simulation.
 *
 * "Durable" state lives in a MemoryLogDisk, which survives the store: `sync()` copies the
 * live state to it, `crash()` throws away everything not yet synced (power loss), and a new
 * store over the same disk sees exactly what was synced. Unlike the level store it is open
 * once constructed, so pure-core tests need no await.
 */
import { LogStorageError, type HardState, type LogEntry, type LogStorage, type Snapshot } from './log-storage.js'
import { LogState, LogStateStorage, emptySnapshot, type LogChange } from './log-state.js'

/** What a node would find on its disk after a power cut. */
export class MemoryLogDisk {
  hardState: HardState = { term: 0, vote: null, commit: 0 }
  snap: Snapshot = emptySnapshot()
  start = { index: 0, term: 0 }
  live: LogEntry[] = []
  /** Number of sync() calls that wrote something (for tests of group commit). */
  syncs = 0
}

export class MemoryLogStorage extends LogStateStorage implements LogStorage {
  readonly disk: MemoryLogDisk
  private state!: LogState
  private isOpen = true
  /** Lowest log index written since the last sync; Infinity when none. */
  private dirtyFrom = Infinity
  /** The compaction point moved since the last sync: copy the whole log. */
  private rebase = false
  private dirtyMeta = false

  constructor (disk: MemoryLogDisk = new MemoryLogDisk()) {
    super()
    this.disk = disk
    this.load()
  }

  private load (): void {
    const d = this.disk
    this.state = LogState.restore({ ...d.hardState }, d.snap, { ...d.start }, d.live.slice())
    this.dirtyFrom = Infinity
    this.rebase = false
    this.dirtyMeta = false
  }

  protected check (): LogState {
    if (!this.isOpen) throw new LogStorageError('RAFT_LOG_NOT_OPEN', 'log storage is not open')
    return this.state
  }

  protected record (c: LogChange | null): void {
    if (c === null) return
    switch (c.kind) {
      case 'append': this.dirtyFrom = Math.min(this.dirtyFrom, c.removeFrom); break
      case 'hardState': this.dirtyMeta = true; break
      case 'snapshot': case 'compact': this.rebase = true; this.dirtyMeta = true; break
      case 'createSnapshot': this.dirtyMeta = true; break
    }
  }

  async open (): Promise<void> {
    if (!this.isOpen) { this.load(); this.isOpen = true }
  }

  async close (): Promise<void> {
    if (!this.isOpen) return
    await this.sync()
    this.isOpen = false
  }

  /** Power loss: forget every write since the last sync. The store stays usable. */
  crash (): void {
    this.load()
    this.isOpen = true
  }

  /** True when some write has not been synced yet. */
  get dirty (): boolean {
    return this.rebase || this.dirtyMeta || this.dirtyFrom !== Infinity
  }


  async sync (): Promise<void> {
    this.syncNow()
  }

  /** The synchronous body of sync(), for the simulation, which must not yield to the event loop. */
  syncNow (): void {
    const s = this.check()
    if (!this.dirty) return
    const d = this.disk
    if (this.rebase) {
      d.start = { index: s.offset, term: s.ents[0]!.term }
      d.live = s.ents.slice(1)
    } else if (this.dirtyFrom !== Infinity) {
      // Only the tail changed: truncate the disk copy there and copy the new tail.
      const from = this.dirtyFrom
      d.live.length = Math.max(0, Math.min(d.live.length, from - d.start.index - 1))
      for (let i = from - s.offset; i < s.ents.length; i++) d.live.push(s.ents[i]!)
    }
    d.hardState = { ...s.hardState }
    d.snap = s.snap
    d.syncs++
    this.dirtyFrom = Infinity
    this.rebase = false
    this.dirtyMeta = false
  }
}
