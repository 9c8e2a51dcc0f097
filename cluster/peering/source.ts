/**
 * The sending side of a peering: serves this site's change feed and its blobs to the pinned
 * members of a peered site that receives from it. Any member of this site can serve: the
 * feed is in the replicated state, and a blob this member lacks is fetched through from a
 * member that holds it.
 *
 * Only this site's own changes are in its feed (cluster/peering/apply.ts): a site never
 * forwards what it received from another, so a full mesh of sites has no loops. Each change
 * ships with its origin (this site) and its version (federated tags, cluster/peering/hlc.ts).
 */
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import { parseDigest, type Digest } from '../../storage/reference.js'
import type { MetadataQueries } from '../metadata/queries.js'
import { userPropertiesOf } from '../metadata/properties.js'
import type { PeeringQueries } from './queries.js'
import { filteredBy, repoAllowed, sends, shippedTags, type PeeringRecord, type ShippedChange, type SiteMember } from './model.js'
import { shipAccess } from './access-feed.js'
import type { AccessQueries } from '../access/queries.js'
import { dec, enc, type BlobHeader, type BlobRequest, type PullAnswer, type PullRequest } from './protocol.js'

/**
 * Feed entries looked at per answer, changes per answer, manifest bytes per answer (the
 * receiver applies an answer as one Raft entry), and the blob bytes an answer references (the
 * receiver fetches them all before it applies any: a smaller batch shows its first images sooner).
 */
const MAX_SCAN = 2000
const MAX_CHANGES = 256
const MAX_BODY_BYTES = 4 * 1024 * 1024
const MAX_BLOB_BYTES = 8 * 1024 * 1024
const MAX_WAIT_MS = 25_000

export interface SourceDeps {
  queries: MetadataQueries
  pq: PeeringQueries
  blobs: BlobStore
  /** Stream a blob this member lacks from a member of this site that holds it. */
  fetchThrough?: (digest: Digest) => Promise<Readable | undefined>
  /** Keep blobs from garbage collection while they are being shipped (until the function returned is called). */
  hold?: (digests: Iterable<string>) => () => void
  siteId: () => Promise<string>
  members: () => SiteMember[]
  /** Resolves once the feed's head passes `seq`, or after `ms`. */
  waitForFeed: (seq: number, ms: number) => Promise<void>
  /** The other site's members changed (learnt from a pinned member). */
  membersSeen: (p: PeeringRecord, members: SiteMember[]) => void
  served: (p: PeeringRecord, peer: string, what: { changes?: number; bytes?: number }) => void
  /** The other site asked for what follows `seq`: it holds this site's feed through there. */
  acked?: (p: PeeringRecord, seq: number) => void
  log: Logger
  /** Users, groups, permission targets (shipped where the rules have access on). */
  access?: AccessQueries
  /** Wait as the peering's bandwidth limit says before sending `n` blob bytes (cluster/peering/ops.ts). */
  throttle?: (p: PeeringRecord, n: number) => Promise<void>
  /** Blob bytes the peering's changes after `through` reference (the backlog beyond an answer). */
  backlogBytes?: (p: PeeringRecord, through: number, head: number) => Promise<number>
}

export class SiteSource {
  constructor (private readonly d: SourceDeps) {}

  /** The peering that pins `peer` as a member of `site` (and sends to it, unless `any`); else why not. */
  private async peeringOf (peer: string, site: unknown, any = false): Promise<PeeringRecord | { status: number; message: string }> {
    if (typeof site !== 'string') return { status: 400, message: 'the request names no site' }
    const p = (await this.d.pq.peerings()).find((x) => x.site === site && x.members.some((m) => m.peerId === peer))
    if (p === undefined) return { status: 403, message: `peer ${peer} is not a pinned member of a site peered with this one` }
    if (!any && !sends(p)) return { status: 403, message: `the peering ${p.name} does not send this site's changes to yours (direction ${p.rules.direction}, as seen from ${p.initiator ? 'this site' : 'yours'})` }
    return p
  }

  async pull (peer: string, bytes: Uint8Array): Promise<Uint8Array> {
    let req: PullRequest
    try {
      req = dec<PullRequest>(bytes)
    } catch {
      return enc({ error: { status: 400, message: 'the request is not JSON' } })
    }
    // Members are exchanged whatever the direction (a probe); changes only where this site sends.
    const p = await this.peeringOf(peer, req?.site, true)
    if (!('name' in p)) return enc({ error: p })
    if (!Number.isSafeInteger(req.after) || req.after < 0) return enc({ error: { status: 400, message: 'after must be a sequence number (an integer >= 0)' } })
    if (Array.isArray(req.members) && req.members.length > 0) this.d.membersSeen(p, req.members)
    if (req.probe === true) {
      const head = await this.d.pq.head()
      return enc({ site: await this.d.siteId(), changes: [], through: req.after, head, headAt: 0, pendingAt: 0, members: this.d.members() } satisfies PullAnswer)
    }
    const sending = await this.peeringOf(peer, req.site)
    if (!('name' in sending)) return enc({ error: sending })
    this.d.acked?.(sending, req.after)
    const trimmed = await this.d.pq.trimmed()
    if (req.after < trimmed) {
      // The entries after the receiver's cursor are gone: say so, never skip the gap silently.
      const head = await this.d.pq.head()
      return enc({ site: await this.d.siteId(), changes: [], through: req.after, head, headAt: 0, pendingAt: 0, members: this.d.members(), trimmed } satisfies PullAnswer)
    }
    let entries = await this.d.pq.feedAfter(req.after, MAX_SCAN)
    let rules = sending.rules
    if (entries.length === 0 && typeof req.waitMs === 'number' && req.waitMs > 0) {
      await this.d.waitForFeed(req.after, Math.min(req.waitMs, MAX_WAIT_MS))
      entries = await this.d.pq.feedAfter(req.after, MAX_SCAN)
      // The rules as they are now: `site set` may have changed them during the wait.
      const now = await this.peeringOf(peer, req.site)
      if (!('name' in now)) return enc({ error: now })
      rules = now.rules
    }
    const changes: ShippedChange[] = []
    let through = req.after
    let body = 0
    let blobBytes = 0
    for (const e of entries) {
      if (changes.length >= MAX_CHANGES || body >= MAX_BODY_BYTES || blobBytes >= MAX_BLOB_BYTES) break
      through = e.seq
      if (filteredBy(rules, e) !== undefined) continue
      const origin = e.origin !== undefined ? { origin: e.origin, ...(e.v !== undefined ? { v: e.v } : {}) } : {}
      if (e.op === 'access') { if (this.d.access !== undefined) changes.push({ ...await shipAccess(this.d.access, await this.d.siteId(), e), ...origin }); continue }
      if (e.op === 'untag') { changes.push({ seq: e.seq, at: e.at, op: 'untag', repo: e.repo, tag: e.tag, ...origin }); continue }
      if (e.op === 'delete') { changes.push({ seq: e.seq, at: e.at, op: 'delete', repo: e.repo, digest: e.digest, ...origin }); continue }
      if (e.op === 'props') {
        // The properties as they are now (a later change ships them again, with its own version);
        // a manifest deleted since: nothing (its delete follows in the feed).
        if (await this.d.queries.manifest(e.repo, e.digest) === undefined) continue
        changes.push({ seq: e.seq, at: e.at, op: 'props', repo: e.repo, digest: e.digest, props: await userPropertiesOf(this.d.queries.kv, e.repo, e.digest), ...origin })
        continue
      }
      const rec = await this.d.queries.manifest(e.repo, e.digest)
      const raw = rec === undefined ? undefined : await this.d.queries.manifestBody(e.repo, e.digest)
      // Deleted since: nothing to ship (its delete follows in the feed).
      if (rec === undefined || raw === undefined) continue
      const sizes: Record<string, number> = {}
      for (const b of rec.blobs) {
        sizes[b] = (await this.d.queries.linkedBlob(e.repo, b))?.size ?? 0
        blobBytes += sizes[b]
      }
      const c: ShippedChange = { seq: e.seq, at: e.at, op: 'put', repo: e.repo, digest: e.digest, tags: shippedTags(rules, e.tags), body: Buffer.from(raw).toString('base64'), mediaType: rec.mediaType, blobs: rec.blobs, sizes, manifests: rec.manifests, ...origin }
      if (rec.subject !== undefined) c.subject = rec.subject
      if (rec.artifactType !== undefined) c.artifactType = rec.artifactType
      if (rec.annotations !== undefined) c.annotations = rec.annotations
      changes.push(c)
      body += raw.byteLength
    }
    const head = await this.d.pq.head()
    const headAt = head === 0 ? 0 : (await this.d.pq.feedEntry(head))?.at ?? 0
    const pendingAt = through < head ? (await this.d.pq.feedEntry(through + 1))?.at ?? 0 : 0
    this.d.served(p, peer, { changes: changes.length })
    const answer: PullAnswer = { site: await this.d.siteId(), changes, through, head, headAt, pendingAt, members: this.d.members() }
    if (this.d.backlogBytes !== undefined && through < head) answer.backlogBytes = await this.d.backlogBytes({ ...p, rules }, through, head)
    return enc(answer)
  }

  /** A blob of a repository the rules let through, as frames: {size}, then its bytes. */
  async * blob (peer: string, bytes: Uint8Array): AsyncGenerator<Uint8Array> {
    let req: BlobRequest
    try {
      req = dec<BlobRequest>(bytes)
    } catch {
      yield enc({ error: { status: 400, message: 'the request is not JSON' } } satisfies BlobHeader)
      return
    }
    const p = await this.peeringOf(peer, req?.site)
    if (!('name' in p)) { yield enc({ error: p } satisfies BlobHeader); return }
    let digest: Digest
    try {
      digest = parseDigest(String(req.digest))
    } catch {
      yield enc({ error: { status: 400, message: 'digest is not a valid digest' } } satisfies BlobHeader)
      return
    }
    // Only blobs of repositories the peering ships: a digest alone opens nothing else.
    const linked = typeof req.repo === 'string' && repoAllowed(p.rules, req.repo) ? await this.d.queries.linkedBlob(req.repo, digest) : undefined
    if (linked === undefined) { yield enc({ error: { status: 404, message: `blob ${digest} is not in a repository this peering ships` } } satisfies BlobHeader); return }
    // A blob being shipped is in use: garbage collection leaves it alone on every member until
    // the other site has it (the manifest may be deleted here meanwhile).
    const release = this.d.hold?.([digest])
    let src: Readable | undefined
    try {
      if (await this.d.blobs.stat(digest) !== undefined) src = await this.d.blobs.read(digest)
      else src = await this.d.fetchThrough?.(digest)
    } catch (err) {
      release?.()
      throw err
    }
    if (src === undefined) { release?.(); yield enc({ error: { status: 404, message: `no member of this site can serve blob ${digest} right now` } } satisfies BlobHeader); return }
    yield enc({ size: linked.size } satisfies BlobHeader)
    let sent = 0
    // Frames of at most 1 MiB; 64 KiB under a bandwidth limit, so that the limit holds smoothly.
    const frame = p.rules.bandwidth !== undefined ? 1 << 16 : 1 << 20
    try {
      for await (const chunk of src) {
        const b = chunk as Buffer
        for (let off = 0; off < b.length; off += frame) {
          const part = b.subarray(off, Math.min(b.length, off + frame))
          await this.d.throttle?.(p, part.length)
          sent += part.length
          yield part
        }
      }
    } finally {
      src.destroy()
      release?.()
      this.d.served(p, peer, { bytes: sent })
    }
  }
}
