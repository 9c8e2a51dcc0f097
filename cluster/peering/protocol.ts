/**
 * The wire between two sites, over libp2p (noise-encrypted; the remote peer id must be a
 * pinned member of the peering, checked on every request):
 *
 *   /flotilla/site/1.0.0       one request, one answer (net/request-response.ts)
 *     request  PullRequest   {site, after, waitMs, members, probe?}
 *     answer   PullAnswer    {site, changes, through, head, headAt, pendingAt, members} | {error}
 *   /flotilla/site-blob/1.0.0  one request, a streamed answer (net/streamed-response.ts)
 *     request  BlobRequest   {site, repo, digest}
 *     answer   frame {size} | {error}, then the blob's bytes in frames, then an empty frame
 *
 * Each change carries `origin` (the site whose client made it: always the answering site, which
 * ships only its own changes) and `v`, its version (federated tags: cluster/peering/hlc.ts).
 * `after` is the receiver's cursor; the source answers the changes after it that the
 * peering's rules let through, and `through`, the last sequence it looked at (filtered
 * entries included), which the receiver records as its new cursor. When nothing is new the
 * source holds the answer up to `waitMs` for a change (long poll). `members` on both sides
 * are the sender's current members: a site learns of the other's joins and leaves this way.
 * When the feed is trimmed past `after` (SiteTrimFeed), the answer says so (`trimmed`) instead
 * of skipping the gap: the receiver reconciles (cluster/peering/reconcile.ts) and goes on from there.
 * A `probe` asks for no changes: members that do not ship send one now and then, so that
 * the other site hears of their site's membership even while its shipper cannot reach it
 * (a member that joined and became leader before the other site pinned it).
 */
import type { ShippedChange, SiteMember } from './model.js'

export const SITE_PROTOCOL = '/flotilla/site/1.0.0'
export const SITE_BLOB_PROTOCOL = '/flotilla/site-blob/1.0.0'

export interface PullRequest {
  site: string
  after: number
  waitMs: number
  members: SiteMember[]
  /** Only exchange members: answer no changes. */
  probe?: boolean
}

export interface PullError { error: { status: number; message: string } }

export type PullAnswer = {
  site: string
  changes: ShippedChange[]
  through: number
  /** The source's last feed sequence, and its time. */
  head: number
  headAt: number
  /** Time of the first entry after `through` (0: none), for the lag in seconds. */
  pendingAt: number
  members: SiteMember[]
  /** Blob bytes referenced by the changes after `through` that the rules let through (cluster/peering/ops.ts). */
  backlogBytes?: number
  /**
   * Set when the source's feed is trimmed past `after` (the entries the receiver needs are
   * gone): no changes come; the receiver reconciles, then moves its cursor to `trimmed`.
   */
  trimmed?: number
} | PullError

export interface BlobRequest {
  site: string
  repo: string
  digest: string
}

export type BlobHeader = { size: number } | PullError

export const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))
export const dec = <T>(b: Uint8Array): T => JSON.parse(new TextDecoder().decode(b)) as T
