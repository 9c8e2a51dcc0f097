/**
 * Reads over the metadata state. They never write; the state machine is the only writer.
 */
import type { KV } from '../../storage/kv/kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { key, lastPart } from './keys.js'
import { decodeJSON } from './state-machine.js'
import type { DescriptorRecord, ManifestRecord, MemberRecord, UploadRecord } from './commands.js'
import type { RepoState, RetentionPolicy } from '../retention/policy.js'
import { qkey, type Quota } from './quotas.js'
import { hkey, type Delivery, type DeliveryLog, type Hook } from '../hooks/hooks.js'
import { vkey, type VirtualRepo } from './virtual.js'
import type { RemoteRecord } from '../remote/model.js'

export interface Page<T> {
  items: T[]
  /** True when more items follow the last one returned. */
  more: boolean
}

export class MetadataQueries {
  /** The metadata store, for reads kept in their own modules (e.g. properties.ts). */
  constructor (readonly kv: KV) {}

  private async json<T> (k: string): Promise<T | undefined> {
    const v = await this.kv.get(k)
    return v === undefined ? undefined : decodeJSON<T>(v)
  }

  async repoExists (repo: string): Promise<boolean> {
    return (await this.kv.get(key.repo(repo))) !== undefined
  }

  /** Size of a blob linked into `repo`, or undefined. */
  async linkedBlob (repo: string, digest: string): Promise<{ size: number } | undefined> {
    return await this.json<{ size: number }>(key.link(repo, digest))
  }

  /** A blob known anywhere in the registry (linked by at least one repository). */
  async knownBlob (digest: string): Promise<{ size: number; links: number } | undefined> {
    const b = await this.json<{ size: number; links: number }>(key.blob(digest))
    return b !== undefined && b.links > 0 ? b : undefined
  }

  /** Whether the metadata knows the blob at all (linked or not): GC's sweep keeps its bytes. */
  async blobRecorded (digest: string): Promise<boolean> {
    return (await this.kv.get(key.blob(digest))) !== undefined
  }

  /**
   * Which of `digests` the metadata records: one range read from the least to the greatest
   * (the sweep asks for a slice of one or two shards at a time), not a get for each.
   */
  async blobsRecorded (digests: readonly string[]): Promise<Set<string>> {
    const out = new Set<string>()
    if (digests.length === 0) return out
    const want = new Set(digests)
    const sorted = [...want].sort()
    for await (const [k] of this.kv.entries({ gte: key.blob(sorted[0]!), lte: key.blob(sorted[sorted.length - 1]!) })) {
      const d = lastPart(k)
      if (want.has(d)) out.add(d)
    }
    return out
  }

  async retentionPolicies (): Promise<RetentionPolicy[]> {
    const out: RetentionPolicy[] = []
    for await (const [, v] of this.kv.entries(prefixRange(key.retentionPrefix()))) out.push(decodeJSON<RetentionPolicy>(v))
    return out
  }

  /** A repository as retention sees it: its tags with push times, its manifests with last pulls. */
  async repoState (repo: string): Promise<Omit<RepoState, 'immutable'>> {
    const tags: RepoState['tags'] = []
    const tp = key.tagPrefix(repo)
    for await (const [k, v] of this.kv.entries(prefixRange(tp))) {
      const t = decodeJSON<{ digest: string; at: number }>(v)
      tags.push({ tag: k.slice(tp.length), digest: t.digest, at: t.at })
    }
    const manifests: RepoState['manifests'] = []
    const mp = key.manifestPrefix(repo)
    for await (const [k, v] of this.kv.entries(prefixRange(mp))) {
      const digest = k.slice(mp.length)
      const rec = decodeJSON<ManifestRecord>(v)
      const pulled = await this.json<{ at: number }>(key.pulled(repo, digest))
      const children = (await this.json<{ n: number }>(key.manifestRefs(repo, digest)))?.n ?? 0
      manifests.push({ digest, at: rec.at, children, ...(pulled !== undefined ? { lastPulled: pulled.at } : {}), ...(rec.subject !== undefined ? { subject: rec.subject } : {}) })
    }
    return { repo, tags, manifests }
  }

  /** The quotas, with what each namespace uses now. */
  async quotas (): Promise<Array<Quota & { usedBytes: number }>> {
    const out: Array<Quota & { usedBytes: number }> = []
    for await (const [, v] of this.kv.entries(prefixRange(qkey.quotaPrefix()))) {
      const q = decodeJSON<Quota>(v)
      out.push({ ...q, usedBytes: (await this.json<{ bytes: number }>(qkey.usage(q.name)))?.bytes ?? 0 })
    }
    return out
  }

  /** The virtual repositories (virtual.ts), by name. */
  async virtuals (): Promise<VirtualRepo[]> {
    const out: VirtualRepo[] = []
    for await (const [, v] of this.kv.entries(prefixRange(vkey.virtualPrefix()))) out.push(decodeJSON<VirtualRepo>(v))
    return out
  }

  /** The webhooks, secrets included (callers showing them to people mask them). */
  async hooks (): Promise<Hook[]> {
    const out: Hook[] = []
    for await (const [, v] of this.kv.entries(prefixRange(hkey.hookPrefix()))) out.push(decodeJSON<Hook>(v))
    return out
  }

  /** A hook's queued deliveries due by `now`, oldest first, at most `limit`. */
  async dueDeliveries (hook: string, now: number, limit: number): Promise<Delivery[]> {
    const out: Delivery[] = []
    for await (const [, v] of this.kv.entries(prefixRange(hkey.queuedPrefix(hook)))) {
      const d = decodeJSON<Delivery>(v)
      // Oldest first, and in order: a delivery not due yet holds the ones behind it.
      if (d.nextAt > now) break
      out.push(d)
      if (out.length >= limit) break
    }
    return out
  }

  /** A hook's deliveries: queued (with their attempts) and the log, newest first. */
  async deliveries (hook: string, limit = 100): Promise<{ queued: Delivery[]; log: DeliveryLog[] }> {
    const queued: Delivery[] = []
    for await (const [, v] of this.kv.entries(prefixRange(hkey.queuedPrefix(hook)))) { queued.push(decodeJSON<Delivery>(v)); if (queued.length >= limit) break }
    const log: DeliveryLog[] = []
    for await (const [, v] of this.kv.entries({ ...prefixRange(hkey.logPrefix(hook)), reverse: true, limit })) log.push(decodeJSON<DeliveryLog>(v))
    return { queued, log }
  }

  /** Last recorded pull of a manifest (ms), if any. */
  async lastPulled (repo: string, digest: string): Promise<number | undefined> {
    return (await this.json<{ at: number }>(key.pulled(repo, digest)))?.at
  }

  /** Whether GC's reference counts are complete (cluster/metadata/refs.ts). */
  async refsReady (): Promise<boolean> {
    return (await this.kv.get(key.refsVersion())) !== undefined
  }

  /** Peers recorded as holding the blob's bytes. */
  async holders (digest: string): Promise<string[]> {
    const out: string[] = []
    for await (const [k] of this.kv.entries(prefixRange(key.holderPrefix(digest)))) out.push(lastPart(k))
    return out
  }

  /** Every blob some repository links, with its size. */
  async * linkedBlobs (): AsyncIterable<{ digest: string; size: number }> {
    const prefix = key.blobPrefix()
    for await (const [k, v] of this.kv.entries(prefixRange(prefix))) {
      const b = decodeJSON<{ size: number; links: number }>(v)
      if (b.links > 0) yield { digest: k.slice(prefix.length), size: b.size }
    }
  }

  /** The remote repositories (pull-through caches), by name; passwords still encrypted. */
  async remotes (): Promise<RemoteRecord[]> {
    const out: RemoteRecord[] = []
    for await (const [, v] of this.kv.entries(prefixRange(key.remotePrefix()))) out.push(decodeJSON<RemoteRecord>(v))
    return out
  }

  /** A tag with when it was written or, for a remote's cached tag, last checked upstream (ms). */
  async tagInfo (repo: string, tag: string): Promise<{ digest: string; checkedAt: number } | undefined> {
    const t = await this.json<{ digest: string; at: number }>(key.tag(repo, tag))
    if (t === undefined) return undefined
    const c = await this.json<{ digest: string; at: number }>(key.remoteChecked(repo, tag))
    return { digest: t.digest, checkedAt: c !== undefined && c.digest === t.digest ? Math.max(c.at, t.at) : t.at }
  }

  async resolveTag (repo: string, tag: string): Promise<string | undefined> {
    return (await this.json<{ digest: string }>(key.tag(repo, tag)))?.digest
  }

  async manifest (repo: string, digest: string): Promise<ManifestRecord | undefined> {
    return await this.json<ManifestRecord>(key.manifest(repo, digest))
  }

  async manifestBody (repo: string, digest: string): Promise<Uint8Array | undefined> {
    return await this.kv.get(key.body(repo, digest))
  }

  /** Tags in lexical order after `last`, at most `n` (all when n is undefined). */
  async tags (repo: string, opts: { n?: number; last?: string } = {}): Promise<Page<string>> {
    return await this.page(key.tagPrefix(repo), opts)
  }

  async repositories (opts: { n?: number; last?: string } = {}): Promise<Page<string>> {
    return await this.page(key.repoPrefix(), opts)
  }

  private async page (prefix: string, opts: { n?: number; last?: string }): Promise<Page<string>> {
    const range = prefixRange(prefix)
    const r: { gte?: string; gt?: string; lt: string; limit?: number } = { lt: range.lt }
    if (opts.last !== undefined && opts.last !== '') r.gt = prefix + opts.last; else r.gte = range.gte
    if (opts.n !== undefined) r.limit = opts.n + 1
    const items: string[] = []
    for await (const [k] of this.kv.entries(r)) items.push(k.slice(prefix.length))
    const more = opts.n !== undefined && items.length > opts.n
    if (more) items.length = opts.n!
    return { items, more }
  }

  async tagsOfManifest (repo: string, digest: string): Promise<string[]> {
    const out: string[] = []
    for await (const [k] of this.kv.entries(prefixRange(key.tagsOfPrefix(repo, digest)))) out.push(lastPart(k))
    return out
  }

  async referrers (repo: string, subject: string, artifactType?: string): Promise<DescriptorRecord[]> {
    const out: DescriptorRecord[] = []
    for await (const [, v] of this.kv.entries(prefixRange(key.referrerPrefix(repo, subject)))) {
      const d = decodeJSON<DescriptorRecord>(v)
      if (artifactType === undefined || d.artifactType === artifactType) out.push(d)
    }
    return out
  }

  async clusterInfo (): Promise<{ clusterId: string; secret: string } | undefined> {
    return await this.json<{ clusterId: string; secret: string }>(key.clusterInfo())
  }

  async members (): Promise<MemberRecord[]> {
    const out: MemberRecord[] = []
    for await (const [, v] of this.kv.entries(prefixRange(key.memberPrefix()))) out.push(decodeJSON<MemberRecord>(v))
    return out
  }

  async isRemoved (peerId: string): Promise<boolean> {
    return (await this.kv.get(key.removed(peerId))) !== undefined
  }

  /** A join token handed out and not yet forgotten (it may have expired since). */
  async joinToken (id: string): Promise<{ expiresAt: number } | undefined> {
    return await this.json<{ expiresAt: number }>(key.joinToken(id))
  }

  /** The latest expiry (ms) of the join tokens handed out; 0 when there is none. */
  async joinTokensOpenUntil (): Promise<number> {
    let until = 0
    for await (const [, v] of this.kv.entries(prefixRange(key.joinTokenPrefix()))) until = Math.max(until, decodeJSON<{ expiresAt: number }>(v).expiresAt)
    return until
  }

  async upload (id: string): Promise<UploadRecord | undefined> {
    return await this.json<UploadRecord>(key.upload(id))
  }

  async * uploads (): AsyncIterable<[string, UploadRecord]> {
    const prefix = key.uploadPrefix()
    for await (const [k, v] of this.kv.entries(prefixRange(prefix))) yield [k.slice(prefix.length), decodeJSON<UploadRecord>(v)]
  }
}
