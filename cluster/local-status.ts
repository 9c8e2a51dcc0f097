/**
 * `flotilla status --local --data DIR`: a stopped node's Raft position, read from its data dir
 * without starting it, so an operator who lost a majority can pick the survivor with the
 * highest applied index (README: disaster recovery). Opening the stores takes their locks: a
 * running node's data dir is refused (ask the node itself with flotilla status --node).
 */
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { LevelKV } from '../storage/kv/level-kv.js'
import { LevelLogStorage } from '../storage/raftlog/level-log-storage.js'
import { confAtEnd, readForceRecord, type ForceRecord } from './force-new-cluster.js'
import { MetadataQueries } from './metadata/queries.js'
import { MetadataStateMachine } from './metadata/state-machine.js'

export interface LocalStatus {
  dataDir: string
  node: string
  clusterId: string | null
  /** Highest index applied to the state machine: pick the survivor where it is highest. */
  applied: number
  commit: number
  term: number
  lastIndex: number
  snapshotIndex: number
  /** The configuration as of the log's last entry. */
  voters: string[]
  learners: string[]
  role: 'voter' | 'learner' | 'not a member'
  members: Array<{ peerId: string; http: string }>
  forced: ForceRecord | null
}

export async function localStatus (dataDir: string): Promise<LocalStatus> {
  const missing = async (p: string): Promise<boolean> => await stat(join(dataDir, p)).then(() => false, () => true)
  if (await missing('p2p-key') || await missing('meta') || await missing('raft')) {
    throw new Error(`${dataDir} is not a Flotilla node's data dir (it needs p2p-key, meta/ and raft/): give the --data DIR the node ran with`)
  }
  const node = peerIdFromPrivateKey(privateKeyFromProtobuf(await readFile(join(dataDir, 'p2p-key')))).toString()
  const kv = new LevelKV(join(dataDir, 'meta'))
  try {
    await kv.open()
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause
    if (cause?.code === 'LEVEL_LOCKED') throw new Error(`${dataDir} is in use by a running node: ask it with flotilla status --node URL, or stop it first`)
    throw err
  }
  try {
    const applied = await new MetadataStateMachine(kv, { sync: false }).appliedIndex()
    const queries = new MetadataQueries(kv)
    const info = await queries.clusterInfo()
    const members = (await queries.members()).map((m) => ({ peerId: m.peerId, http: m.http }))
    const log = new LevelLogStorage(join(dataDir, 'raft'))
    await log.open()
    try {
      const hs = log.initialState().hardState
      const conf = confAtEnd(log)
      return {
        dataDir,
        node,
        clusterId: info?.clusterId ?? null,
        applied,
        commit: hs.commit,
        term: hs.term,
        lastIndex: log.lastIndex(),
        snapshotIndex: log.snapshot().meta.index,
        voters: conf.voters,
        learners: conf.learners,
        role: conf.voters.includes(node) ? 'voter' : conf.learners.includes(node) ? 'learner' : 'not a member',
        members,
        forced: await readForceRecord(dataDir) ?? null,
      }
    } finally { await log.close() }
  } finally { await kv.close() }
}
