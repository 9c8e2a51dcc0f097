/**
 * Online backups, on the node that serves one (`flotilla backup`, src/http/backup.ts).
 *
 * begin() takes the metadata as of one applied index: after a barrier (every write committed
 * before the call is applied here, so every manifest acknowledged before the backup started is
 * in it), one LevelDB iterator walks the state machine's keys from a single LevelDB snapshot,
 * whose `sm␀applied` key is the index. Pushes go on meanwhile: they land after that snapshot.
 *
 * Every blob the snapshot knows (`blob␀<digest>`) is then held against garbage collection
 * (cluster/gc/collector.ts: InUse) under a lease: the client renews it while it copies, and a
 * client that dies lets it expire (`leaseMs`), so a crashed backup never pins blobs for good.
 */
import { createHash, randomBytes } from 'node:crypto'
import { Counter, Gauge, Histogram, type Metric } from 'prom-client'
import type { KV } from '../../storage/kv/kv.js'
import { FlotillaError } from '../../storage/errors.js'
import type { InUse } from '../gc/collector.js'
import type { CommandSink } from '../metadata/applier.js'
import type { MemberRecord } from '../metadata/commands.js'
import { dumpState, decodeState } from '../metadata/snapshot.js'
import { decodeJSON } from '../metadata/state-machine.js'

/** What the client records in its backup.json (src/cli/backup.ts), as the node answers it. */
export interface BackupInfo {
  id: string
  /** The Raft index the snapshot is as of (the state machine's applied index). */
  index: number
  takenAt: string
  /** The node that served the backup. */
  node: string
  clusterId: string
  /** The Raft configuration when the snapshot was taken, and the member records in it. */
  membership: { voters: string[]; learners: string[]; members: MemberRecord[] }
  snapshot: { bytes: number; sha256: string }
  /** Every blob the snapshot knows, with its size. */
  blobs: Array<{ digest: string; size: number }>
  /** Renew before this many ms pass (POST …/lease), or the blobs' hold lapses. */
  leaseMs: number
}

interface Session {
  info: BackupInfo
  data: Uint8Array
  sizes: Map<string, number>
  release: () => void
  expires: number
  started: number
  timer: NodeJS.Timeout
}

export interface BackupSessionsOptions {
  kv: KV
  sink: CommandSink
  inUse: InUse
  nodeId: string
  conf: () => { voters: string[]; learners: string[] }
  /** How long a hold lasts without a renewal. Default 60 s. */
  leaseMs?: number
}

export class BackupSessions {
  private readonly sessions = new Map<string, Session>()
  private readonly leaseMs: number
  readonly metrics = {
    bytes: new Counter({ name: 'flotilla_backup_bytes_total', help: 'Bytes this node served to backups (snapshots and blobs)', labelNames: ['kind'] as const, registers: [] }),
    duration: new Histogram({ name: 'flotilla_backup_duration_seconds', help: 'Backups served by this node, from the snapshot to the client\'s report, by outcome', labelNames: ['outcome'] as const, buckets: [1, 5, 30, 60, 300, 900, 3600, 4 * 3600], registers: [] }),
    lastSuccess: new Gauge({ name: 'flotilla_backup_last_success_timestamp_seconds', help: 'When the last backup served by this node completed (Unix time; 0 never)', registers: [] }),
    inProgress: new Gauge({ name: 'flotilla_backups_in_progress', help: 'Backups holding blobs against GC on this node', registers: [], collect: () => { this.metrics.inProgress.set(this.sessions.size) } }),
    snapshotIndex: new Gauge({ name: 'flotilla_backup_last_index', help: 'Raft index of the last backup snapshot this node served', registers: [] }),
  }

  constructor (private readonly opts: BackupSessionsOptions) {
    this.leaseMs = opts.leaseMs ?? 60_000
  }

  all (): Metric[] {
    return Object.values(this.metrics)
  }

  async begin (): Promise<BackupInfo> {
    // Linearizable: every write acknowledged before this call is applied here before the dump.
    await this.opts.sink.barrier()
    const conf = this.opts.conf()
    const data = await dumpState(this.opts.kv)
    let index = 0
    let clusterId = ''
    const blobs: Array<{ digest: string; size: number }> = []
    const members: MemberRecord[] = []
    for (const [k, v] of decodeState(data)) {
      if (k === 'sm\u0000applied') index = decodeJSON<{ index: number }>(v).index
      else if (k === 'cluster\u0000info') clusterId = decodeJSON<{ clusterId: string }>(v).clusterId
      else if (k.startsWith('blob\u0000')) blobs.push({ digest: k.slice(5), size: decodeJSON<{ size: number }>(v).size })
      else if (k.startsWith('member\u0000')) members.push(decodeJSON<MemberRecord>(v))
    }
    const id = randomBytes(12).toString('base64url')
    const release = this.opts.inUse.hold(blobs.map((b) => b.digest))
    const info: BackupInfo = {
      id,
      index,
      takenAt: new Date().toISOString(),
      node: this.opts.nodeId,
      clusterId,
      membership: { voters: conf.voters, learners: conf.learners, members },
      snapshot: { bytes: data.byteLength, sha256: createHash('sha256').update(data).digest('hex') },
      blobs,
      leaseMs: this.leaseMs,
    }
    const s: Session = { info, data, sizes: new Map(blobs.map((b) => [b.digest, b.size])), release, expires: Date.now() + this.leaseMs, started: Date.now(), timer: setTimeout(() => {}, 0) }
    this.arm(s)
    this.sessions.set(id, s)
    this.metrics.snapshotIndex.set(index)
    return info
  }

  private arm (s: Session): void {
    clearTimeout(s.timer)
    s.timer = setTimeout(() => this.end(s.info.id, 'expired'), Math.max(0, s.expires - Date.now()))
    s.timer.unref()
  }

  private get (id: string): Session {
    const s = this.sessions.get(id)
    if (s === undefined) throw new FlotillaError('NOT_FOUND', `no backup ${id.slice(0, 40)} in progress on this node: it finished, or its lease lapsed (the client stopped renewing it); start a new backup`)
    return s
  }

  /** The snapshot's bytes (counted as served). */
  snapshot (id: string): Uint8Array {
    const s = this.get(id)
    this.metrics.bytes.inc({ kind: 'snapshot' }, s.data.byteLength)
    return s.data
  }

  /** Whether the backup's snapshot knows `digest` (only those are served through it). */
  knows (id: string, digest: string): number | undefined {
    return this.get(id).sizes.get(digest)
  }

  served (bytes: number): void {
    this.metrics.bytes.inc({ kind: 'blob' }, bytes)
  }

  renew (id: string): { expiresAt: string } {
    const s = this.get(id)
    s.expires = Date.now() + this.leaseMs
    this.arm(s)
    return { expiresAt: new Date(s.expires).toISOString() }
  }

  /** The client is done (`ok`: it wrote and verified everything), or gave up. */
  finish (id: string, ok: boolean): void {
    this.get(id)
    this.end(id, ok ? 'ok' : 'failed')
  }

  private end (id: string, outcome: 'ok' | 'failed' | 'expired'): void {
    const s = this.sessions.get(id)
    if (s === undefined) return
    this.sessions.delete(id)
    clearTimeout(s.timer)
    s.release()
    this.metrics.duration.observe({ outcome }, (Date.now() - s.started) / 1000)
    if (outcome === 'ok') this.metrics.lastSuccess.set(Date.now() / 1000)
  }

  stop (): void {
    for (const id of [...this.sessions.keys()]) this.end(id, 'failed')
  }
}
