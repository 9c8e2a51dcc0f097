/**
 * Blob replication policy. The metadata log says which blobs exist and who holds them
 * (LinkBlob names the node that received the bytes; AddHolder each node that copied them).
 * Every node that should hold a blob and lacks it fetches it from a holder, then records
 * itself as a holder through the log.
 *
 *   who should hold a blob: every member, or with `replicas: R` the R members ranked first
 *   by rendezvous hashing (sha256 of digest + peer id), so placement moves little when
 *   members come and go.
 *
 * Copies start as soon as this node applies the command that makes the blob known; a
 * periodic anti-entropy pass repairs what restarts and partitions missed. Gossip carries
 * `have` and `want` hints that let a node find a holder before the log tells it.
 */
import { createHash } from 'node:crypto'
import type { Logger } from 'pino'
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import { FlotillaError } from '../../storage/errors.js'
import { parseDigest } from '../../storage/reference.js'
import type { MetadataQueries } from '../metadata/queries.js'
import type { CommandSink } from '../metadata/applier.js'
import type { BlobFetcher } from './blob-fetcher.js'

export const BLOB_TOPIC = 'flotilla/blobs/1'
/** How long a newly known blob waits, by default, for its other holders to be recorded (onBlobKnown). */
export const SETTLE_MS = 200

export interface ReplicatorOptions {
  peerId: string
  blobs: BlobStore
  queries: MetadataQueries
  sink: CommandSink
  fetcher: BlobFetcher
  log: Logger
  /** Current members (voters and learners). */
  members: () => string[]
  voters: () => string[]
  /** Copies to keep; undefined keeps one on every member. */
  replicas?: number
  /** Publish a gossip message (best effort). */
  publish?: (msg: GossipMsg) => void
  concurrency?: number
  antiEntropyMs?: number
  /** How long a newly known blob waits for its other holders to be recorded before a copy starts. */
  settleMs?: number
  /**
   * Whether a blob is on its way here through an upload chain (mirror-receiver.ts): its copy
   * waits, so that the blob does not travel to this node twice.
   */
  arriving?: (digest: string) => Promise<boolean>
  /** This node is above its disk high watermark: it takes no copies. */
  full?: () => boolean
}

export type GossipMsg = { have: string; peer: string } | { want: string; peer: string }

function score (digest: string, peer: string): string {
  return createHash('sha256').update(digest).update('\u0000').update(peer).digest('hex')
}

/** `peers` ordered by rendezvous hashing on `key`: each key gets its own, stable order. */
export function rank (key: string, peers: string[]): string[] {
  return [...peers].sort((a, b) => score(key, b).localeCompare(score(key, a)))
}

/** The members that should hold `digest`: all of them, or the top `replicas` by rendezvous hashing. */
export function placement (digest: string, members: string[], replicas?: number): string[] {
  if (replicas === undefined || replicas >= members.length) return [...members]
  return rank(digest, members).slice(0, replicas)
}

export class Replicator {
  private readonly queue = new Map<string, number>()
  private readonly inFlight = new Set<string>()
  private readonly settling = new Set<string>()
  /** Blobs known to be on `w` of these members (waitForCopies). */
  private quorate: { key: string; w: number; digests: Set<string> } = { key: '', w: 0, digests: new Set() }
  private readonly hints = new Map<string, Set<string>>()
  private readonly failures = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined
  private running = 0
  private stopped = false
  copied = 0

  constructor (private readonly opts: ReplicatorOptions) {}

  start (): void {
    const every = this.opts.antiEntropyMs ?? 30_000
    this.timer = setInterval(() => { void this.antiEntropy() }, every)
    this.timer.unref()
    setTimeout(() => { void this.antiEntropy() }, 1000).unref()
  }

  stop (): void {
    this.stopped = true
    if (this.timer !== undefined) clearInterval(this.timer)
  }

  shouldHold (digest: string, peer = this.opts.peerId): boolean {
    return placement(digest, this.opts.members(), this.opts.replicas).includes(peer)
  }

  /** Blobs waiting for a copy here, and copies under way. */
  backlog (): number {
    return this.queue.size + this.inFlight.size
  }

  /**
   * Called for each applied command that makes a blob known or adds a holder. The copy starts
   * a moment later: the owner of an upload and its chain record themselves within a few
   * milliseconds of each other, and waiting for all of them lets the nodes that lack the blob
   * share those holders out (candidates) instead of all copying from the first one recorded.
   * A blob still arriving here through its upload chain is not copied.
   */
  async onBlobKnown (digest: string, size: number): Promise<void> {
    // A full node copies nothing more (anti-entropy brings the copy once it has room again).
    if (this.stopped || !this.shouldHold(digest) || this.opts.full?.() === true) return
    if (await this.opts.blobs.stat(parseDigest(digest)) !== undefined) return
    if (this.queue.has(digest) || this.inFlight.has(digest) || this.settling.has(digest)) return
    this.settling.add(digest)
    setTimeout(() => {
      void (async () => {
        // Still arriving through a chain: look again later (it lands, or the chain fails and we copy).
        const arriving = await this.opts.arriving?.(digest).catch(() => false) ?? false
        this.settling.delete(digest)
        if (arriving) await this.onBlobKnown(digest, size)
        else this.enqueue(digest, size)
      })()
    }, this.opts.settleMs ?? SETTLE_MS).unref()
  }

  /**
   * Fetch a copy of `digest` here whatever the placement says: this node served it through
   * fetch-through and keeps it, so the next read is local.
   */
  keepCopy (digest: string, size: number): void {
    if (this.stopped) return
    void this.opts.blobs.stat(parseDigest(digest)).then((info) => { if (info === undefined) this.enqueue(digest, size) }, () => {})
  }

  onGossip (msg: GossipMsg): void {
    if ('have' in msg) {
      let set = this.hints.get(msg.have)
      if (set === undefined) { set = new Set(); this.hints.set(msg.have, set) }
      set.add(msg.peer)
      if (this.hints.size > 10_000) this.hints.delete(this.hints.keys().next().value!)
    } else if (msg.peer !== this.opts.peerId) {
      void this.opts.blobs.stat(parseDigest(msg.want)).then((info) => {
        if (info !== undefined) this.opts.publish?.({ have: msg.want, peer: this.opts.peerId })
      }, () => {})
    }
  }

  /**
   * Holders worth asking for `digest`, this node excluded: recorded ones first, then gossip
   * hints. The nodes that lack the blob share the holders out among themselves (the i-th
   * lacking node, in peer id order, starts with the i-th holder), so that copies to several
   * nodes draw on several sources instead of all on one.
   */
  async candidates (digest: string): Promise<string[]> {
    const memberList = this.opts.members()
    const members = new Set(memberList)
    const all = (await this.opts.queries.holders(digest)).filter((p) => members.has(p))
    const held = all.filter((p) => p !== this.opts.peerId).sort()
    const lacking = placement(digest, memberList, this.opts.replicas).filter((p) => !all.includes(p)).sort()
    const i = lacking.indexOf(this.opts.peerId)
    const start = held.length === 0 ? 0 : (i >= 0 ? i : 0) % held.length
    const recorded = [...held.slice(start), ...held.slice(0, start)]
    const hinted = [...(this.hints.get(digest) ?? [])].filter((p) => p !== this.opts.peerId && members.has(p) && !recorded.includes(p))
    return [...recorded, ...hinted]
  }

  private enqueue (digest: string, size: number): void {
    if (this.inFlight.has(digest)) return
    this.queue.set(digest, size)
    this.pump()
  }

  private pump (): void {
    const limit = this.opts.concurrency ?? 2
    while (!this.stopped && this.running < limit && this.queue.size > 0) {
      const [digest, size] = this.queue.entries().next().value as [string, number]
      this.queue.delete(digest)
      this.inFlight.add(digest)
      this.running++
      void this.copy(digest, size).finally(() => {
        this.running--
        this.inFlight.delete(digest)
        this.pump()
      })
    }
  }

  private async copy (digest: string, size: number): Promise<void> {
    try {
      const holders = await this.candidates(digest)
      if (holders.length === 0) throw new Error('no holder known yet')
      const info = await this.opts.fetcher.fetchInto(digest, holders)
      const res = await this.opts.sink.submit({ type: 'AddHolder', digest, size: info.size, peerId: this.opts.peerId })
      if (!res.ok) throw new Error(res.message)
      this.copied++
      this.failures.delete(digest)
      this.opts.publish?.({ have: digest, peer: this.opts.peerId })
    } catch (err) {
      // Ask the peers (gossip) only now, when no holder the log names served it: a want for
      // every blob queued flooded every node with signed wants and haves when a node caught up
      // on hundreds of blobs at once, and stalled the leader for seconds (an election).
      this.opts.publish?.({ want: digest, peer: this.opts.peerId })
      const n = (this.failures.get(digest) ?? 0) + 1
      this.failures.set(digest, n)
      this.opts.log.warn({ digest, attempt: n, err: (err as Error).message }, 'blob copy failed; will retry')
      // Retry soon a few times, then leave it to anti-entropy.
      if (n <= 5 && !this.stopped) setTimeout(() => this.enqueue(digest, size), Math.min(200 * 2 ** n, 5000)).unref()
    }
  }

  /** Find every blob this node should hold and lacks. */
  async antiEntropy (): Promise<void> {
    if (this.stopped) return
    try {
      for await (const { digest, size } of this.opts.queries.linkedBlobs()) {
        if (this.queue.has(digest) || this.inFlight.has(digest)) continue
        await this.onBlobKnown(digest, size)
      }
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'anti-entropy pass failed')
    }
  }

  /**
   * Wait until each blob is durable on at least `w` members. A manifest is acknowledged only
   * then, so losing fewer than `w` nodes never loses an image.
   */
  async waitForCopies (digests: string[], w: number, timeoutMs = 120_000): Promise<void> {
    const end = Date.now() + timeoutMs
    // A lone node (W = 1) holds every blob it links: nothing to wait for. Blobs already seen on
    // W members are not looked up again (holder records only grow) until the membership changes.
    if (w <= 1) return
    const membersKey = this.opts.members().join(',')
    if (this.quorate.key !== membersKey || this.quorate.w !== w) this.quorate = { key: membersKey, w, digests: new Set() }
    const quorate = this.quorate.digests
    const pending = new Set(digests.filter((d) => !quorate.has(d)))
    for (let round = 0; pending.size > 0; round++) {
      const members = new Set(this.opts.members())
      for (const d of [...pending]) {
        const n = (await this.opts.queries.holders(d)).filter((p) => members.has(p)).length
        if (n >= w) {
          pending.delete(d)
          if (quorate.size >= 100_000) quorate.clear()
          quorate.add(d)
        }
      }
      if (pending.size === 0) return
      if (Date.now() > end) {
        throw new FlotillaError('UNAVAILABLE', `${pending.size} referenced blob(s) are not yet on ${w} nodes (for example ${[...pending][0]!}): are enough members up? Retry the push`)
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(20 * 2 ** round, 250)))
      await this.opts.sink.barrier()
    }
  }

  /**
   * The chain an upload's bytes travel while they arrive (upload-mirror.ts): candidates in
   * order, this node excluded, and how many of them make the chain. When the digest is known
   * (`key` is then a digest), the blob's placement ranked by it, all of it: no node that should
   * hold the blob needs a second transfer afterwards. Without the digest (a chunked upload),
   * every member ranked by `key` (the upload id), so that uploads start on different peers: all
   * of them when every member keeps every blob, else only the write quorum's W-1 (the
   * placement is not known yet; replication moves the blob where it belongs).
   */
  mirrorChain (key: string): { peers: string[]; length: number } {
    const members = this.opts.members()
    if (key.includes(':')) {
      const peers = rank(key, placement(key, members, this.opts.replicas)).filter((p) => p !== this.opts.peerId)
      return { peers, length: peers.length }
    }
    const peers = rank(key, members).filter((p) => p !== this.opts.peerId)
    const everyone = this.opts.replicas === undefined || this.opts.replicas >= members.length
    return { peers, length: everyone ? peers.length : Math.max(this.writeQuorum() - 1, 0) }
  }

  /** Copies a manifest PUT waits for: a majority of the voters, or every copy kept if fewer. */
  writeQuorum (): number {
    return Math.min(Math.floor(this.opts.voters().length / 2) + 1, this.opts.replicas ?? Infinity)
  }
}
