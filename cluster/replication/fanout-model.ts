/**
 * A deterministic model of how a pushed blob spreads over N nodes, to weigh the relay chain
 * (upload-mirror.ts) against the policies before it at sizes no test machine runs (100, 1,000
 * nodes). Pure: no I/O, no clock; scripts/fanout-sim.ts prints it, test/replication/
 * fanout-model.test.ts checks its properties.
 *
 * Every node has a full-duplex link of `linkBytesPerSec` each way; bytes move in chunks of
 * `chunkBytes` (a hop forwards a chunk once it has it: store and forward), each hop adds
 * `latencyMs`, and a commit (fsync, AddHolder through Raft) takes `commitMs`. The client
 * sends to the origin at the link's rate.
 *
 *   chain        (now)    origin → hop 1 → … → hop N-1; chunk j reaches hop k at
 *                          a[k][j] = max(a[k-1][j], a[k][j-1] − L) + τ + L   (τ = chunk / link)
 *                          so the last node has the blob after about one transfer + (N-1)·(τ + L).
 *                          The commit goes down at once; the owner's 201 after W-1 hops hold it.
 *   star                   the origin sends every copy itself, all at once: N-1 copies share its link.
 *   mirror-pull  (before)  the origin tees to W-1 mirrors (sharing its link), then the other
 *                          N-W nodes copy from the W holders (replicator.ts candidates()).
 *
 * A lost node (`loss`): hop `hop` of the chain is killed (its predecessor sees the connection
 * break and goes on; the nodes after it drop what they got) or frozen (its predecessor cuts it
 * after stallAllowance(hop − 1), holding the nodes before it, and the client, back that long;
 * the nodes after it wait ARRIVING_IDLE_MS for bytes that no longer come), once it has
 * `atFraction` of the blob. As in the implementation, the chain is not mended: the nodes after
 * the lost one copy the blob from the recorded holders once the blob is linked (and SETTLE_MS
 * later), the i-th lacking node (in peer id order) from the i-th holder (in peer id order),
 * the copies from one holder sharing its link.
 */
import { SeededRand } from '../raft/rand.js'
import { stallAllowance } from './upload-mirror.js'
import { ARRIVING_IDLE_MS } from './mirror-receiver.js'
import { SETTLE_MS } from './replicator.js'

export type FanoutPolicy = 'chain' | 'star' | 'mirror-pull'

export interface FanoutParams {
  /** Nodes in all, the origin included; every one should hold the blob. */
  nodes: number
  blobBytes: number
  /** Each node's link, each way. */
  linkBytesPerSec: number
  /** What a hop forwards at once (a socket read: 64 KiB). */
  chunkBytes: number
  /** One way, per hop. */
  latencyMs: number
  /** A node's commit: fsync, rename, AddHolder through Raft. */
  commitMs: number
  /** The write quorum W; default a majority of the nodes. */
  quorum?: number
  /** Peer ids are random: the seed orders the nodes as the replicator sorts them. */
  seed?: number
  loss?: { hop: number; atFraction: number; kind: 'kill' | 'freeze' }
}

export interface FanoutResult {
  policy: FanoutPolicy
  nodes: number
  /** One transfer: the blob over one link (what a 2-node push takes). */
  transferS: number
  /** Until the last live node holds the blob (durable and recorded). */
  spreadS: number
  /** spreadS / transferS. */
  ratio: number
  /** When the owner answers the blob's 201. */
  ackS: number
  /** Blob bytes the origin sent to other nodes, in copies of the blob. */
  originEgressCopies: number
  /** Blob bytes sent between nodes in all, in copies. */
  totalEgressCopies: number
  /** Whole copies made by replication after the push (not down the chain). */
  backgroundCopies: number
  /** Live nodes, and how many of them end with the blob. */
  live: number
  holders: number
  /** When each node holds the blob (undefined: never, it was lost); index 0 is the origin. */
  heldAt: Array<number | undefined>
}

/** Default figures: a 1 GiB layer over 1 Gbit/s links, 64 KiB socket reads, 0.5 ms per hop. */
export const DEFAULT_PARAMS: Omit<FanoutParams, 'nodes'> = {
  blobBytes: 1 << 30,
  linkBytesPerSec: 125e6,
  chunkBytes: 64 << 10,
  latencyMs: 0.5,
  commitMs: 5,
}

export function simulateFanout (policy: FanoutPolicy, p: FanoutParams): FanoutResult {
  if (p.nodes < 2) throw new RangeError('a fan-out needs at least 2 nodes')
  if (p.loss !== undefined && (p.loss.hop < 1 || p.loss.hop >= p.nodes)) throw new RangeError(`the lost hop must be 1 … ${p.nodes - 1}`)
  if (policy === 'chain') return chain(p)
  if (policy === 'star') return star(p)
  return mirrorPull(p)
}

function transferS (p: FanoutParams): number {
  return p.blobBytes / p.linkBytesPerSec + p.latencyMs / 1000
}

function quorumOf (p: FanoutParams): number {
  return p.quorum ?? Math.floor(p.nodes / 2) + 1
}

function result (policy: FanoutPolicy, p: FanoutParams, heldAt: Array<number | undefined>, ackS: number, originBytes: number, totalBytes: number, backgroundCopies: number, lost: Set<number>): FanoutResult {
  const live = p.nodes - lost.size
  const held = heldAt.filter((t, i) => t !== undefined && !lost.has(i)) as number[]
  const spreadS = Math.max(...held)
  const T = transferS(p)
  return {
    policy,
    nodes: p.nodes,
    transferS: T,
    spreadS,
    ratio: spreadS / T,
    ackS,
    originEgressCopies: originBytes / p.blobBytes,
    totalEgressCopies: totalBytes / p.blobBytes,
    backgroundCopies,
    live,
    holders: held.length,
    heldAt,
  }
}

function chain (p: FanoutParams): FanoutResult {
  const N = p.nodes
  const L = p.latencyMs / 1000
  const commit = p.commitMs / 1000
  const M = Math.max(1, Math.ceil(p.blobBytes / p.chunkBytes))
  const tau = p.blobBytes / M / p.linkBytesPerSec
  const loss = p.loss
  const lost = new Set<number>(loss === undefined ? [] : [loss.hop])
  // The chain ends at the lost hop (its successors drop what they got) or at the last node.
  const end = loss === undefined ? N - 1 : loss.hop
  const lossChunk = loss === undefined ? M : Math.min(M - 1, Math.floor(loss.atFraction * M))
  // The client's feed into the origin: chunk j at (j+1)·τ. A frozen hop holds everything before
  // it (back-pressure) until its predecessor cuts it; we place the pause where the lost hop stops.
  const stall = loss?.kind === 'freeze' ? stallAllowance(loss.hop - 1) / 1000 : 0
  let prev = new Float64Array(M)
  for (let j = 0; j < M; j++) prev[j] = (j + 1) * tau + L
  const done: number[] = [prev[M - 1]!]
  let lossAt = Infinity
  for (let k = 1; k <= end; k++) {
    const row = new Float64Array(M)
    for (let j = 0; j < M; j++) {
      const linkFree = j === 0 ? 0 : row[j - 1]! - L
      row[j] = Math.max(prev[j]!, linkFree) + tau + L
    }
    if (loss !== undefined && k === loss.hop) {
      lossAt = row[lossChunk]!
      break
    }
    done.push(row[M - 1]!)
    prev = row
  }
  if (stall > 0) {
    // Every chunk the nodes before the frozen hop get after it froze is late by the allowance.
    for (let k = 0; k < done.length; k++) if (done[k]! > lossAt) done[k] = done[k]! + stall
  }
  const heldAt: Array<number | undefined> = new Array(N).fill(undefined)
  // The owner commits when the client is done; the commit goes down at once, each hop waiting
  // for its successor's last chunk to be answered.
  heldAt[0] = done[0]! + commit
  let commitArrives = heldAt[0]
  for (let k = 1; k < done.length; k++) {
    commitArrives = Math.max(commitArrives, done[k]! + L) + L
    heldAt[k] = Math.max(commitArrives, done[k]!) + commit
  }
  // The 201: once the first W-1 hops confirmed (their answers come back up the chain), or as
  // soon as the chain says it is short.
  const W = quorumOf(p)
  const confirming = Math.min(W - 1, done.length - 1)
  const ackS = (confirming === 0 ? heldAt[0] : Math.max(...heldAt.slice(1, confirming + 1) as number[]) + confirming * L)
  const linkedAt = ackS + commit
  let originBytes = end >= 1 ? (loss?.hop === 1 ? (lossChunk + 1) / M : 1) * p.blobBytes : 0
  // Bytes down the chain: whole copies to every hop before the lost one, a part to the lost
  // one (and on from it to the nodes after it, which drop them).
  let totalBytes = (done.length - 1) * p.blobBytes
  let background = 0
  if (loss !== undefined) {
    const part = (lossChunk + 1) / M * p.blobBytes
    // To the lost hop, and from it on down to each node after it (which drop them).
    totalBytes += part * (N - loss.hop)
    const holders = Array.from({ length: done.length }, (_, i) => i)
    const lacking = Array.from({ length: N - done.length }, (_, i) => done.length + i)
    const startOf = (j: number): number => {
      if (loss.kind === 'kill') return Math.max(linkedAt, lossAt + (j - loss.hop) * L) + SETTLE_MS / 1000
      // Waiting for bytes from a frozen predecessor: replication looks every SETTLE_MS, and
      // gives up on the chain ARRIVING_IDLE_MS after the bytes stopped.
      return Math.max(linkedAt + SETTLE_MS / 1000, lossAt + (j - loss.hop) * L + ARRIVING_IDLE_MS / 1000 + SETTLE_MS / 1000)
    }
    const copies = pull(p, holders, lacking, lost, startOf, heldAt, new SeededRand(p.seed ?? 1))
    background = copies.count
    originBytes += copies.fromOrigin * p.blobBytes
    totalBytes += copies.count * p.blobBytes
  }
  return result('chain', p, heldAt, ackS, originBytes, totalBytes, background, lost)
}

function star (p: FanoutParams): FanoutResult {
  const N = p.nodes
  const L = p.latencyMs / 1000
  const commit = p.commitMs / 1000
  const lost = new Set<number>(p.loss === undefined ? [] : [p.loss.hop])
  // N-1 copies share the origin's link (the client goes at their pace); a lost one frees its share.
  const copies = Array.from({ length: N - 1 }, (_, i) => ({ to: i + 1, remaining: p.blobBytes, stopAt: p.loss?.hop === i + 1 ? p.loss.atFraction * p.blobBytes : undefined as number | undefined }))
  const heldAt: Array<number | undefined> = new Array(N).fill(undefined)
  let now = 0
  let sent = 0
  let active = copies
  while (active.length > 0) {
    const rate = p.linkBytesPerSec / active.length
    const next = Math.min(...active.map((c) => (c.stopAt !== undefined ? c.remaining - (p.blobBytes - c.stopAt) : c.remaining) / rate))
    now += next
    for (const c of active) { c.remaining -= next * rate; sent += next * rate }
    active = active.filter((c) => {
      if (c.stopAt !== undefined && p.blobBytes - c.remaining >= c.stopAt - 1) return false
      if (c.remaining <= 1) { heldAt[c.to] = now + L + commit; return false }
      return true
    })
  }
  heldAt[0] = Math.max(...(heldAt.filter((t) => t !== undefined) as number[])) - L
  const ackS = Math.max(...(heldAt.filter((t) => t !== undefined) as number[]))
  return result('star', p, heldAt, ackS, sent, sent, 0, lost)
}

function mirrorPull (p: FanoutParams): FanoutResult {
  const N = p.nodes
  const L = p.latencyMs / 1000
  const commit = p.commitMs / 1000
  const W = quorumOf(p)
  const lost = new Set<number>(p.loss === undefined ? [] : [p.loss.hop])
  // The W-1 mirrors share the origin's link while the client sends (a lost mirror is dropped).
  const mirrors = W - 1
  const rate = p.linkBytesPerSec / Math.max(mirrors, 1)
  const heldAt: Array<number | undefined> = new Array(N).fill(undefined)
  const mirrorDone = p.blobBytes / rate + L
  heldAt[0] = mirrorDone + commit
  let originBytes = 0
  for (let i = 1; i <= mirrors; i++) {
    if (lost.has(i)) { originBytes += p.loss!.atFraction * p.blobBytes; continue }
    heldAt[i] = mirrorDone + commit
    originBytes += p.blobBytes
  }
  const ackS = heldAt[0] + commit
  const holders = Array.from({ length: mirrors + 1 }, (_, i) => i).filter((i) => !lost.has(i))
  const lacking = Array.from({ length: N - mirrors - 1 }, (_, i) => mirrors + 1 + i)
  if (p.loss !== undefined && p.loss.hop <= mirrors) lacking.push(p.loss.hop)
  const copies = pull(p, holders, lacking, lost, () => ackS + commit + SETTLE_MS / 1000, heldAt, new SeededRand(p.seed ?? 1))
  return result('mirror-pull', p, heldAt, ackS, originBytes + copies.fromOrigin * p.blobBytes, originBytes + copies.count * p.blobBytes, copies.count, lost)
}

/**
 * Replication after the push: each lacking live node copies the whole blob from one recorded
 * holder, as Replicator.candidates() assigns them (both lists in peer id order, which the seed
 * draws), the copies from one holder sharing its link. Fills heldAt; counts the copies.
 */
function pull (p: FanoutParams, holders: number[], lacking: number[], lost: Set<number>, startOf: (node: number) => number, heldAt: Array<number | undefined>, rand: SeededRand): { count: number; fromOrigin: number } {
  const L = p.latencyMs / 1000
  const commit = p.commitMs / 1000
  const ids = new Map<number, number>()
  for (let i = 0; i < p.nodes; i++) ids.set(i, rand.next())
  const byId = (a: number, b: number): number => ids.get(a)! - ids.get(b)!
  const held = [...holders].sort(byId)
  const want = [...lacking].sort(byId)
  const copies: Array<{ to: number; from: number; start: number; remaining: number }> = []
  want.forEach((to, i) => {
    if (lost.has(to)) return
    copies.push({ to, from: held[i % held.length]!, start: startOf(to) + L, remaining: p.blobBytes })
  })
  // Processor sharing on each holder's link (a receiver takes one copy, at most its link's rate).
  let now = Math.min(...copies.map((c) => c.start))
  let pending = copies.filter((c) => c.remaining > 0)
  while (pending.length > 0) {
    const running = pending.filter((c) => c.start <= now + 1e-12)
    const share = new Map<number, number>()
    for (const c of running) share.set(c.from, (share.get(c.from) ?? 0) + 1)
    const rateOf = (c: { from: number }): number => p.linkBytesPerSec / share.get(c.from)!
    const nextStart = Math.min(...pending.filter((c) => c.start > now + 1e-12).map((c) => c.start), Infinity)
    const nextEnd = Math.min(...running.map((c) => c.remaining / rateOf(c)), Infinity)
    const step = Math.min(nextEnd, nextStart - now)
    for (const c of running) c.remaining -= step * rateOf(c)
    now += step
    pending = pending.filter((c) => {
      if (c.remaining > 1) return true
      heldAt[c.to] = now + commit
      return false
    })
  }
  return { count: copies.length, fromOrigin: copies.filter((c) => c.from === 0).length }
}
