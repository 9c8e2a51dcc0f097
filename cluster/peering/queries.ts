/**
 * Reads over the peering state (peerings, this site's change feed, cursors, failures).
 * They never write: the state machine is the only writer.
 */
import type { KV } from '../../storage/kv/kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { key } from '../metadata/keys.js'
import { decodeJSON } from '../metadata/state-machine.js'
import { hlcKey, type TagVersion } from './hlc.js'
import { SummaryReader } from './summary.js'
import type { FeedEntry, PeeringRecord, SiteCursor, SiteFailure } from './model.js'

export class PeeringQueries {
  /** Summaries of what a peering's rules let through (reconciliation, cluster/peering/summary.ts). */
  readonly summaries: SummaryReader

  constructor (private readonly kv: KV) {
    this.summaries = new SummaryReader(kv)
  }

  private async json<T> (k: string): Promise<T | undefined> {
    const v = await this.kv.get(k)
    return v === undefined ? undefined : decodeJSON<T>(v)
  }

  /** This site's id: its cluster id, created once when the cluster was founded. */
  async siteId (): Promise<string | undefined> {
    return (await this.json<{ clusterId: string }>(key.clusterInfo()))?.clusterId
  }

  async peerings (): Promise<PeeringRecord[]> {
    const out: PeeringRecord[] = []
    for await (const [, v] of this.kv.entries(prefixRange(key.sitePeerPrefix()))) out.push(decodeJSON<PeeringRecord>(v))
    return out
  }

  async peering (name: string): Promise<PeeringRecord | undefined> {
    return await this.json<PeeringRecord>(key.sitePeer(name))
  }

  /** The last sequence number of this site's change feed (0: nothing yet). */
  async head (): Promise<number> {
    return (await this.json<{ seq: number }>(key.siteSeq()))?.seq ?? 0
  }

  /**
   * Tombstones (deleted tags' versions, hlc.ts) made before `beforeMs`, scanning at most
   * `scan` tag versions after the key `after` (undefined: from the first): what the leader
   * purges (Sites.purgeTombstones). `next`: where the next scan starts, undefined at the end.
   */
  async tombstonesBefore (beforeMs: number, after: string | undefined, scan: number): Promise<{ found: Array<{ repo: string; tag: string; v: TagVersion }>; next: string | undefined; scanned: number }> {
    const range = prefixRange(hlcKey.allTags())
    const found: Array<{ repo: string; tag: string; v: TagVersion }> = []
    let last: string | undefined
    let scanned = 0
    for await (const [k, raw] of this.kv.entries({ ...(after !== undefined ? { gt: after } : { gte: range.gte }), lt: range.lt, limit: scan })) {
      last = k
      scanned++
      const v = decodeJSON<TagVersion>(raw)
      if (v.deleted !== true || v.l >= beforeMs) continue
      // tagver␀<repo>␀<tag>: names hold no NUL.
      const [, repo, tag] = k.split('\u0000') as [string, string, string]
      found.push({ repo, tag, v })
    }
    return { found, next: scanned < scan ? undefined : last, scanned }
  }

  /** This site's feed is trimmed through this sequence (SiteTrimFeed; 0: never trimmed). */
  async trimmed (): Promise<number> {
    return (await this.json<{ seq: number }>(key.siteTrim()))?.seq ?? 0
  }

  async feedEntry (seq: number): Promise<FeedEntry | undefined> {
    return await this.json<FeedEntry>(key.feed(seq))
  }

  /** Feed entries after `seq`, in order, at most `limit`. */
  async feedAfter (seq: number, limit: number): Promise<FeedEntry[]> {
    const out: FeedEntry[] = []
    const range = prefixRange(key.feedPrefix())
    for await (const [, v] of this.kv.entries({ gt: key.feed(seq), lt: range.lt, limit })) out.push(decodeJSON<FeedEntry>(v))
    return out
  }

  /** How far `site` acknowledged this site's feed (0: nothing yet). */
  async acked (site: string): Promise<number> {
    return (await this.json<{ seq: number }>(key.siteAck(site)))?.seq ?? 0
  }

  async cursor (origin: string): Promise<SiteCursor> {
    return await this.json<SiteCursor>(key.siteCursor(origin)) ?? { seq: 0, originAt: 0, at: 0, applied: 0 }
  }

  /** A tag's version here (federated tags, hlc.ts): its last write or, `deleted`, its delete; undefined: never versioned. */
  async tagVersion (repo: string, tag: string): Promise<TagVersion | undefined> {
    return await this.json<TagVersion>(hlcKey.tag(repo, tag))
  }

  /** The most recent changes from `origin` that could not be applied, newest first. */
  async failures (origin: string, limit = 20): Promise<SiteFailure[]> {
    const all: SiteFailure[] = []
    for await (const [, v] of this.kv.entries(prefixRange(key.siteFailurePrefix(origin)))) all.push(decodeJSON<SiteFailure>(v))
    return all.reverse().slice(0, limit)
  }

  /**
   * The newest feed entry that put `tag` on a manifest of `repo` (`site explain`), looking at
   * the last `maxScan` entries at most: undefined when none of them did.
   */
  async lastTagPut (repo: string, tag: string, maxScan = 100_000): Promise<{ seq: number; at: number; digest: string } | undefined> {
    const range = prefixRange(key.feedPrefix())
    for await (const [, v] of this.kv.entries({ ...range, reverse: true, limit: maxScan })) {
      const e = decodeJSON<FeedEntry>(v)
      if (e.op === 'put' && e.repo === repo && e.tags.includes(tag)) return { seq: e.seq, at: e.at, digest: e.digest }
    }
    return undefined
  }

  /** When a tag from `origin` last landed here (apply.ts). */
  async landed (origin: string, repo: string, tag: string): Promise<{ digest: string; seq: number; originAt: number; at: number } | undefined> {
    return await this.json(key.siteLanded(origin, repo, tag))
  }

  /** A tag's record here: its manifest and when it was set. */
  async tagRecord (repo: string, tag: string): Promise<{ digest: string; at: number } | undefined> {
    return await this.json(key.tag(repo, tag))
  }
}
