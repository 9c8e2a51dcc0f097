/**
 * Peering commands: applied by the metadata state machine like every metadata change
 * (cluster/peering/apply.ts), so both sites' members agree on their peerings and cursors.
 */
import type { Version } from './hlc.js'
import type { PeeringRecord, PeeringRules, ShippedChange, SiteMember } from './model.js'

export type PeeringCommand =
  /** Record a peering with another site (refused when the name or the site is taken). */
  | { type: 'PutSitePeering'; peering: PeeringRecord }
  | { type: 'RemoveSitePeering'; name: string; at: number }
  /** The other site's members changed (learnt over the link, from a pinned member). */
  | { type: 'SetSiteMembers'; name: string; members: SiteMember[]; at: number }
  /**
   * Changes received from the peering's site, applied in order with the cursor moved to
   * `through` (>= the last change's seq: filtered entries are passed over) in one batch.
   * A change at or below the cursor was applied already and is skipped: a resend is harmless.
   * Each change is settled by its version (federated tags, hlc.ts). Answers {applied, failed,
   * superseded (applied without effect: a newer version here), foreign (not made at that site:
   * passed over), cursor}.
   */
  | { type: 'SiteApply'; name: string; origin: string; changes: ShippedChange[]; through: number; originAt: number; at: number }
  /**
   * The other site acknowledged this site's feed through `seq` (it asked for what follows):
   * recorded at the sending site, at most every few seconds, so that retention keeps what is
   * not shipped yet and the feed can be trimmed. Never moves back.
   */
  | { type: 'SiteAcked'; site: string; seq: number; at: number }
  /**
   * New rules for a peering (`site set`), as seen from the initiator like the record's: set
   * here (`synced` false until the other site confirms) or received from the other site
   * (`synced` true). Kept only when (rulesAt, by) is later than the recorded version.
   */
  | { type: 'SetSiteRules'; name: string; rules: PeeringRules; rulesAt: number; by: string; synced: boolean; at: number }
  /** The other site confirmed the rules of version `rulesAt`. */
  | { type: 'SiteRulesSynced'; name: string; rulesAt: number; at: number }
  /**
   * Reconciliation's repairs (cluster/peering/summary.ts), from the peering's site: manifests
   * this site lacked (stored by digest, without tags; their blobs made durable here first), then
   * tag moves and tag deletes, each carrying the sender's version and applied only if that
   * version is higher than the tag's here. The cursor does not move. Answers {manifests, tags,
   * untags, superseded, failed}.
   */
  | { type: 'SiteRepair'; name: string; origin: string; manifests: Array<Extract<ShippedChange, { op: 'put' }>>; tags: Array<{ repo: string; tag: string; digest: string; v: Version }>; untags: Array<{ repo: string; tag: string; v: Version }>; at: number }
  /**
   * Forget this site's feed entries through `through` (at most TRIM_BATCH per command; never
   * past the head): those every receiving peering acknowledged, and those past the bounded
   * tail (`sites.feedRetain`). A receiver whose cursor is behind is told so, and reconciles.
   */
  | { type: 'SiteTrimFeed'; through: number; at: number }
  /**
   * Forget deleted tags' versions (tombstones) older than `sites.tombstoneTtl`, as the leader
   * found them (at most PURGE_BATCH per command). Each goes only if it is still a tombstone of
   * exactly that version and the tag is still absent: a tag written again since keeps its
   * version. Answers {purged}.
   */
  | { type: 'SitePurgeTombstones'; tags: Array<{ repo: string; tag: string; v: Version }>; at: number }

const TYPES = new Set<string>(['PutSitePeering', 'RemoveSitePeering', 'SetSiteMembers', 'SiteApply', 'SiteAcked', 'SetSiteRules', 'SiteRulesSynced', 'SiteRepair', 'SiteTrimFeed', 'SitePurgeTombstones'] satisfies Array<PeeringCommand['type']>)

export function isPeeringCommand (c: { type: string }): c is PeeringCommand {
  return TYPES.has(c.type)
}
