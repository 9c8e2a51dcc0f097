/**
 * Recovering from the loss of a majority (`flotilla serve --force-new-cluster`), after etcd's
 * restartAsStandaloneNode, and what `flotilla status --local` reads offline.
 *
 * The survivor keeps its whole log and state. Before Raft starts, its log gets one configuration
 * entry per other member of the configuration as of the log's end, each removing that member,
 * appended after its last entry in its current term, and its commit index moves to the last of
 * them, in one fsynced write. So:
 *
 * - Nothing the survivor holds is lost: entries it had but never learned were committed (they may
 *   have been acknowledged by the old cluster) are committed now, in log order. Writes it never
 *   received are lost; that is the price of losing a majority (README: disaster recovery).
 * - The removal goes through the log like any membership change: applied on this node as it
 *   starts (the survivor is then the only voter and elects itself), replicated to every node that
 *   joins later, kept by snapshots; old members are in the core's `removed` set and their
 *   messages are dropped for good. Their member records go through RemovePeer commands, so the
 *   gater never admits them again (done once the node leads; a marker file says it is pending).
 * - A restart after the force re-applies nothing: the entries are in the log like any other. A
 *   restart that passes the flag again finds a configuration of one voter and changes nothing;
 *   if nodes joined since, the force would remove them, and is refused while they have a leader.
 *
 * It is refused unless no member of the old cluster answers with a leader: each member's
 * /readyz (200 only on a node with a leader, caught up) is asked, all at once, within 10 s.
 *
 *   DATA/force-new-cluster.json   {at, term, index, removed[], recorded}: the last force, and
 *                                 whether the removed members' records are gone yet
 */
import { readFile, rename, open as openFile } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import { decodeConfChange, encodeConfChange } from './raft/codec.js'
import { ENTRY_CONF, type Entry } from './raft/types.js'
import type { MemberRecord } from './metadata/commands.js'

/** The part of a Raft log store the force reads and writes (storage/raftlog/level-log-storage.ts). */
export interface ForceLog {
  initialState (): { hardState: { term: number; vote: string | null; commit: number }; conf: { voters: string[]; learners: string[] } }
  snapshot (): { meta: { index: number } }
  lastIndex (): number
  entries (lo: number, hi: number): Entry[]
  append (entries: Entry[]): void
  setHardState (hs: { term: number; vote: string | null; commit: number }): void
  sync (): Promise<void>
}

/** The configuration as of the last entry of the log (the snapshot's, then every conf entry after it). */
export function confAtEnd (log: ForceLog): { voters: string[]; learners: string[] } {
  const { conf } = log.initialState()
  const voters = new Set(conf.voters)
  const learners = new Set(conf.learners)
  const removed = new Set((conf as { removed?: string[] }).removed ?? [])
  const from = log.snapshot().meta.index + 1
  const last = log.lastIndex()
  if (last >= from) {
    for (const e of log.entries(from, last + 1)) {
      if (e.type !== ENTRY_CONF) continue
      const cc = decodeConfChange(e.data)
      // The same rules as the core's applyConfChange (cluster/raft/raft.ts).
      switch (cc.type) {
        case 'addVoter': if (!removed.has(cc.node)) { learners.delete(cc.node); voters.add(cc.node) } break
        case 'addLearner': if (!removed.has(cc.node) && !voters.has(cc.node)) learners.add(cc.node); break
        case 'promote': if (learners.delete(cc.node)) voters.add(cc.node); break
        case 'remove':
          if (voters.size === 1 && voters.has(cc.node)) break
          voters.delete(cc.node); learners.delete(cc.node); removed.add(cc.node)
          break
      }
    }
  }
  return { voters: [...voters].sort(), learners: [...learners].sort() }
}

export interface ForceRecord {
  at: string
  term: number
  /** Index of the first entry the force appended (0: nothing to do, already alone). */
  index: number
  removed: string[]
  /** Whether RemovePeer has been applied for every removed member. */
  recorded: boolean
}

const MARKER = 'force-new-cluster.json'

export async function readForceRecord (dataDir: string): Promise<ForceRecord | undefined> {
  try {
    return JSON.parse(await readFile(join(dataDir, MARKER), 'utf8')) as ForceRecord
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new Error(`cannot read ${join(dataDir, MARKER)}: ${(err as Error).message}. Delete it only if flotilla status shows the removed members gone`)
  }
}

export async function writeForceRecord (dataDir: string, rec: ForceRecord): Promise<void> {
  const path = join(dataDir, MARKER)
  const fh = await openFile(`${path}.tmp`, 'w', 0o644)
  try {
    await fh.writeFile(JSON.stringify(rec, null, 2) + '\n')
    await fh.sync()
  } finally { await fh.close() }
  await rename(`${path}.tmp`, path)
}

/**
 * Rewrite the membership to `self` alone (see the top of this file). Resolves with the members
 * removed (none when `self` is already the only member: nothing is written). Throws when
 * `self` is not a voter of the configuration.
 */
export async function forceNewCluster (log: ForceLog, self: string, beforeWrite: (plan: { removed: string[]; index: number; term: number }) => Promise<void> = async () => {}): Promise<{ removed: string[]; index: number; term: number }> {
  const conf = confAtEnd(log)
  if (!conf.voters.includes(self)) {
    throw new Error(`this node (${self}) is not a voter of its cluster's configuration (voters: ${conf.voters.join(', ') || 'none'}), so it cannot carry the cluster on: force the cluster from a node that was a voter (flotilla status --local --data DIR on each shows its role)`)
  }
  const others = [...conf.voters, ...conf.learners].filter((p) => p !== self)
  const hs = log.initialState().hardState
  if (others.length === 0) return { removed: [], index: 0, term: hs.term }
  const first = log.lastIndex() + 1
  const entries: Entry[] = others.map((node, i) => ({ index: first + i, term: hs.term, type: ENTRY_CONF, data: encodeConfChange({ type: 'remove', node }) }))
  // The marker first: a crash between the two leaves a marker whose entries are not in the log,
  // which landed() tells apart; never entries without the marker that finishes their work.
  await beforeWrite({ removed: others, index: first, term: hs.term })
  log.append(entries)
  log.setHardState({ term: hs.term, vote: hs.vote, commit: first + others.length - 1 })
  await log.sync()
  return { removed: others, index: first, term: hs.term }
}

/** GET url, any certificate accepted (only the status is read): the status, or undefined. */
async function probe (url: string, timeoutMs: number): Promise<number | undefined> {
  return await new Promise((resolve) => {
    let u: URL
    try { u = new URL(url) } catch { resolve(undefined); return }
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, { method: 'GET', rejectUnauthorized: false, timeout: timeoutMs, agent: false }, (res) => {
      res.resume()
      resolve(res.statusCode)
    })
    req.on('timeout', () => { req.destroy(); resolve(undefined) })
    req.on('error', () => resolve(undefined))
    req.end()
  })
}

/**
 * The old members that answer with a leader (their /readyz says 200), asked all at once;
 * answers within `timeoutMs` (at most 10 s in all).
 */
export async function membersWithLeader (members: MemberRecord[], self: string, timeoutMs = 8000): Promise<string[]> {
  const others = members.filter((m) => m.peerId !== self && m.http !== '')
  const answers = await Promise.all(others.map(async (m) => ({ m, status: await probe(new URL('/readyz', m.http).toString(), timeoutMs) })))
  return answers.filter((a) => a.status === 200).map((a) => `${a.m.peerId} (${a.m.http})`)
}


/**
 * Whether the force a marker describes is in the log: its entries, each removing the member
 * the marker names, at the index it names (or compacted away, which only applied entries are).
 */
export function landed (log: Pick<ForceLog, 'lastIndex' | 'entries'> & { firstIndex (): number }, rec: ForceRecord): boolean {
  const last = rec.index + rec.removed.length - 1
  if (rec.index === 0 || log.lastIndex() < last) return false
  if (log.firstIndex() > rec.index) return true
  return log.entries(rec.index, last + 1).every((e, i) => {
    if (e.type !== ENTRY_CONF) return false
    const cc = decodeConfChange(e.data)
    return cc.type === 'remove' && cc.node === rec.removed[i]
  })
}
