/**
 * `flotilla restore DIR --data NEWDIR`: a new single-node cluster from a verified backup.
 *
 * NEWDIR gets a new node identity (p2p-key), the backup's blobs (copied, fsynced, read-only),
 * and the backup's metadata rewritten for a new cluster (rehome): a new cluster id and join
 * secret (join tokens of the old cluster are refused), no member records, upload sessions or
 * outstanding join tokens of the old cluster, every old member's identity recorded as removed
 * (never admitted), and this node as the one holder of every blob. Users, permissions, tokens,
 * repositories, manifests, tags, policies and peerings are kept as they were.
 *
 * The metadata goes in twice, as a restarted node expects it: into meta/ (the state machine's
 * LevelDB, applied index = the backup's) and into raft/ as the Raft snapshot at that index, with
 * this node the only voter. A node that joins later is sent that snapshot, then the log after it.
 * The old site's feed entries and tag versions become the new site's own (resign): to its peers
 * the restored cluster is a new site.
 */
import { randomBytes } from 'node:crypto'
import { copyFile, chmod, mkdir, open, readFile, readdir, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { loadOrCreateIdentity } from '../../net/identity.js'
import { LevelKV } from '../../storage/kv/level-kv.js'
import { LevelLogStorage } from '../../storage/raftlog/level-log-storage.js'
import { key } from '../metadata/keys.js'
import { decodeState, encodeState } from '../metadata/snapshot.js'
import { encodeJSON } from '../metadata/state-machine.js'
import { blobPath, verifyBackup, type BackupManifest, type VerifyProblem } from './archive.js'

export class RestoreRefused extends Error {
  static override name = 'RestoreRefused'
  constructor (message: string, readonly problems: VerifyProblem[] = []) { super(message) }
}

export interface RestoreResult {
  dataDir: string
  peerId: string
  clusterId: string
  index: number
  blobs: number
  bytes: number
}

/** Prefixes of keys that belong to the old cluster's members and sessions, dropped by a restore. */
const DROPPED = [key.memberPrefix(), 'holder\u0000', key.uploadPrefix(), key.joinTokenPrefix()]

/** The backup's state for a new cluster whose only member is `self` (see the top of this file). */
export function rehome (data: Uint8Array, m: BackupManifest, self: string, clusterId: string, index: number): Uint8Array {
  const out = new Map<string, Uint8Array>()
  const state = [...decodeState(data)]
  const info = state.find(([k]) => k === key.clusterInfo())
  const oldId = info === undefined ? undefined : (JSON.parse(new TextDecoder().decode(info[1])) as { clusterId?: string }).clusterId
  for (const [k, v] of state) {
    if (DROPPED.some((p) => k.startsWith(p)) || k === key.clusterInfo()) continue
    out.set(k, oldId === undefined ? v : resign(k, v, oldId, clusterId))
  }
  out.set(key.clusterInfo(), encodeJSON({ clusterId, secret: randomBytes(32).toString('base64url') }))
  out.set(key.applied(), encodeJSON({ index }))
  const at = Date.now()
  const old = new Set([...m.membership.voters, ...m.membership.learners, ...m.membership.members.map((r) => r.peerId)])
  old.delete(self)
  for (const p of old) out.set(key.removed(p), encodeJSON({ at }))
  if (!m.metadataOnly) for (const b of m.blobs) out.set(key.holder(b.digest, self), encodeJSON({}))
  return encodeState([...out.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))
}

/**
 * The restored site is a new site (cluster/peering/): the changes and tag versions the old one
 * made are signed with its id, so a peer would take them for another site's and pass them over
 * (a site ships its own changes only), and reconciliation would not repair tags versioned by a
 * third site. The new site takes them as its own: its feed entries' origin and the site of
 * every version (feed entries and tag versions) move from the old id to the new.
 */
function resign (k: string, v: Uint8Array, oldId: string, newId: string): Uint8Array {
  const feed = k.startsWith(key.feedPrefix())
  if (!feed && !k.startsWith('tagver\u0000')) return v
  const doc = JSON.parse(new TextDecoder().decode(v)) as { origin?: string; v?: { s?: string }; s?: string }
  let changed = false
  if (feed) {
    if (doc.origin === oldId) { doc.origin = newId; changed = true }
    if (doc.v?.s === oldId) { doc.v.s = newId; changed = true }
  } else if (doc.s === oldId) { doc.s = newId; changed = true }
  return changed ? encodeJSON(doc) : v
}

async function fsyncPath (path: string): Promise<void> {
  const fh = await open(path, 'r')
  try { await fh.sync() } finally { await fh.close() }
}

export async function restoreBackup (dir: string, dataDir: string, opts: { onBlob?: (bytes: number) => void; onVerified?: () => void; onVerifyBlob?: (bytes: number) => void } = {}): Promise<RestoreResult> {
  const existing = await readdir(dataDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[]
    throw new RestoreRefused(`cannot read the data dir ${dataDir}: ${err.message}`)
  })
  if (existing.length > 0) throw new RestoreRefused(`the data dir ${dataDir} is not empty (it holds ${existing.slice(0, 3).join(', ')}${existing.length > 3 ? ', …' : ''}): a restore only writes into a new, empty directory`)
  const report = await verifyBackup(dir, { ...(opts.onVerifyBlob !== undefined ? { onBlob: opts.onVerifyBlob } : {}) })
  if (!report.ok || report.manifest === undefined) {
    const first = report.problems[0]!
    throw new RestoreRefused(`the backup in ${dir} fails verification (${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}); first: ${first.check} ${first.what}: ${first.detail}. Nothing was restored; run flotilla backup verify ${dir} for the list`, report.problems)
  }
  const m = report.manifest
  if (m.metadataOnly) throw new RestoreRefused(`the backup in ${dir} was taken with --metadata-only: it holds no blobs, so the restored registry could serve no image. Take a full backup (without --metadata-only) into ${dir}`)
  opts.onVerified?.()

  await mkdir(dataDir, { recursive: true })
  try {
    const identity = await loadOrCreateIdentity(join(dataDir, 'p2p-key'))
    let bytes = 0
    const dirs = new Set<string>()
    for (const b of m.blobs) {
      const to = blobPath(dataDir, b.digest)
      if (!dirs.has(dirname(to))) { await mkdir(dirname(to), { recursive: true }); dirs.add(dirname(to)) }
      await copyFile(blobPath(dir, b.digest), to)
      await fsyncPath(to)
      await chmod(to, 0o444)
      bytes += b.size
      opts.onBlob?.(b.size)
    }
    for (const d of dirs) await fsyncPath(d)
    const clusterId = randomBytes(8).toString('hex')
    const index = Math.max(1, m.index)
    const state = rehome(await readFile(join(dir, m.snapshot.file)), m, identity.peerId, clusterId, index)
    const kv = new LevelKV(join(dataDir, 'meta'))
    await kv.open()
    try {
      await kv.batch([...decodeState(state)].map(([k, value]) => ({ type: 'put' as const, key: k, value })), { sync: true })
    } finally { await kv.close() }
    const log = new LevelLogStorage(join(dataDir, 'raft'))
    await log.open()
    try {
      log.applySnapshot({ meta: { index, term: 1, conf: { voters: [identity.peerId], learners: [] } }, data: state })
      log.setHardState({ term: 1, vote: identity.peerId, commit: index })
      await log.sync()
    } finally { await log.close() }
    await fsyncPath(dataDir)
    return { dataDir, peerId: identity.peerId, clusterId, index, blobs: m.blobs.length, bytes }
  } catch (err) {
    // Half a data dir would start as something: leave nothing.
    await rm(dataDir, { recursive: true, force: true }).catch(() => {})
    throw err
  }
}
