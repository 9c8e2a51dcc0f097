/**
 * Cross-site peering: what a site records about another site, and the rules of a peering.
 *
 * A site is one Flotilla cluster (one Raft group; a single node is a site too). Its site id is
 * its cluster id, created once when the cluster is founded (InitCluster). Two sites peer
 * mutually: each records the other's site id and pins its members' libp2p identities, through
 * its own Raft log, so that any member can serve the peering after a restart.
 *
 * The rules are those given to `flotilla site peer` at the site that ran it (the initiator),
 * and stored the same at both sites; `direction` is as seen from the initiator:
 *
 *   direction   initiator receives   other site receives
 *   pull        yes                  no
 *   push        no                   yes
 *   both        yes                  yes
 *
 * Whatever the direction, the receiving site is the one that asks (it pulls from the other's
 * change feed, from its recorded cursor), so a receiver that was down misses nothing.
 */
import { matches, isValidPattern } from '../access/model.js'
import type { Version } from './hlc.js'
import type { AccessFeedOp, ShippedAccess } from './access-feed.js'

export type Direction = 'pull' | 'push' | 'both'
export const DIRECTIONS: readonly Direction[] = ['pull', 'push', 'both']

export interface PeeringRules {
  /** Repository patterns (`team/**`); `!PATTERN` excludes. No include pattern means every repository. */
  repos: string[]
  direction: Direction
  /** Tag glob (`*` any run of characters, `?` one); undefined: every tag. */
  tags?: string
  /** Whether tag and manifest deletions replicate. */
  deletes: boolean
  /** Whether users, groups and permissions replicate (cluster/peering/access-feed.ts). */
  access: boolean
  /** Bandwidth limit in MiB/s on the blob bytes of this peering, each way (cluster/peering/ops.ts). */
  bandwidth?: number
}

/** A member of another site, as pinned: its libp2p identity and the addresses to dial it at. */
export interface SiteMember {
  peerId: string
  /** libp2p multiaddrs (its `sites.advertise`), without the /p2p/ suffix. */
  addrs: string[]
}

export interface PeeringRecord {
  /** This site's name for the other site (`flotilla site peer … --name NAME`). */
  name: string
  /** The other site's id. */
  site: string
  /** The other site's members: only these identities may use the peering. */
  members: SiteMember[]
  rules: PeeringRules
  /** True at the site that ran `site peer` (rules' direction is as seen from it). */
  initiator: boolean
  createdAt: number
  updatedAt: number
  /**
   * The rules' version (`site set`, cluster/peering/ops.ts): when they were last set, and at
   * which site; the later (then the larger site id) wins when both sites set them at once.
   * Absent: as made at peering time.
   */
  rulesAt?: number
  rulesBy?: string
  /** False while the other site has not confirmed the last `site set` made here. */
  rulesSynced?: boolean
}

/** A change in a site's feed: what the state machine recorded for one replicable change. */
export type FeedOp =
  | { op: 'put'; repo: string; digest: string; tags: string[] }
  | { op: 'untag'; repo: string; tag: string }
  | { op: 'delete'; repo: string; digest: string }
  /** A manifest's user properties changed (shipped as they are when shipped: the whole set). */
  | { op: 'props'; repo: string; digest: string }
  | AccessFeedOp

/**
 * Where a change was made and its version (cluster/peering/hlc.ts): the origin site's id and
 * its clock when the change was made. Entries recorded before versions existed have neither:
 * the receiver takes the peering's site and {l: at, c: 0}.
 */
export interface Origin { origin?: string; v?: Version }

/** One entry of the change feed, keyed by the site's sequence number. */
export type FeedEntry = FeedOp & { seq: number; at: number } & Origin

/** A change as shipped: a manifest put carries what the receiver needs to store it. */
export type ShippedChange =
  | { seq: number; at: number; op: 'put'; repo: string; digest: string; tags: string[]; body: string; mediaType: string; blobs: string[]; sizes: Record<string, number>; manifests: string[]; subject?: string; artifactType?: string; annotations?: Record<string, string> } & Origin
  | { seq: number; at: number; op: 'untag'; repo: string; tag: string } & Origin
  | { seq: number; at: number; op: 'delete'; repo: string; digest: string } & Origin
  | { seq: number; at: number; op: 'props'; repo: string; digest: string; props: Array<{ key: string; value: string }> } & Origin
  | ShippedAccess & Origin

/** Where a receiver stands with one origin site. */
export interface SiteCursor {
  /** Last origin sequence applied (or passed over: filtered, or failed and recorded). */
  seq: number
  /** Origin time (ms) of the last change applied; 0 when none. */
  originAt: number
  /** When it was last advanced here (ms, command time). */
  at: number
  /** Changes applied from this origin. */
  applied: number
}

/** A change the receiver could not apply (recorded, and passed over so the rest flows). */
export interface SiteFailure {
  seq: number
  op: string
  repo: string
  ref: string
  code: string
  message: string
  at: number
}

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** Peering names: lowercase, short, safe in a URL path. */
export function isValidSiteName (s: string): boolean {
  return NAME_RE.test(s)
}

/** A tag glob: the characters of a tag plus `*` and `?`. */
export function isValidTagGlob (s: string): boolean {
  return s.length > 0 && s.length <= 128 && /^[A-Za-z0-9_.*?-]+$/.test(s)
}

export function tagGlobMatches (glob: string, tag: string): boolean {
  const src = glob.replace(/[.+^${}()|[\]\\-]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')
  return new RegExp(`^${src}$`).test(tag)
}

/** Why the rules are invalid, or undefined when they are fine. */
export function rulesProblem (r: PeeringRules): string | undefined {
  if (!Array.isArray(r.repos) || r.repos.length > 64) return 'repos must be a list of at most 64 patterns'
  for (const p of r.repos) {
    if (typeof p !== 'string' || !isValidPattern(p.startsWith('!') ? p.slice(1) : p)) return `invalid repository pattern ${JSON.stringify(String(p).slice(0, 80))}: use lowercase names with * and ** (a leading ! excludes)`
  }
  if (!DIRECTIONS.includes(r.direction)) return `direction must be one of ${DIRECTIONS.join(', ')}`
  if (r.tags !== undefined && (typeof r.tags !== 'string' || !isValidTagGlob(r.tags))) return `invalid tag glob ${JSON.stringify(String(r.tags).slice(0, 80))}: tag characters with * and ?`
  if (typeof r.deletes !== 'boolean' || typeof r.access !== 'boolean') return 'deletes and access must be true or false'
  if (r.bandwidth !== undefined && !(typeof r.bandwidth === 'number' && r.bandwidth > 0 && r.bandwidth <= 1_000_000)) return 'bandwidth must be a positive number of MiB/s'
  return undefined
}

/** Whether the rules let a repository through: not excluded, and included (no include pattern: all). */
export function repoAllowed (rules: PeeringRules, repo: string): boolean {
  const includes = rules.repos.filter((p) => !p.startsWith('!'))
  const excludes = rules.repos.filter((p) => p.startsWith('!')).map((p) => p.slice(1))
  if (excludes.some((p) => matches(p, repo))) return false
  return includes.length === 0 || includes.some((p) => matches(p, repo))
}

/**
 * Why a feed entry does not ship under these rules (the rule that filters it out), or
 * undefined when it ships. A manifest put with tags ships when one of them matches the tag
 * glob (only those tags ship); one without tags (a child of an index, a referrer, a push by
 * digest) ships whenever its repository does.
 */
export function filteredBy (rules: PeeringRules, e: FeedOp): string | undefined {
  if (e.op === 'access') return rules.access ? undefined : 'access (off)'
  if (!repoAllowed(rules, e.repo)) return `repos (${rules.repos.join(' ')})`
  if (e.op === 'put') {
    if (rules.tags !== undefined && e.tags.length > 0 && !e.tags.some((t) => tagGlobMatches(rules.tags!, t))) return `tags (${rules.tags})`
    return undefined
  }
  // Properties go with their manifest: wherever the repository ships (a receiver without the manifest passes them over).
  if (e.op === 'props') return undefined
  if (!rules.deletes) return 'deletes (off)'
  if (e.op === 'untag' && rules.tags !== undefined && !tagGlobMatches(rules.tags, e.tag)) return `tags (${rules.tags})`
  return undefined
}

/** The tags of a put that ship under the rules. */
export function shippedTags (rules: PeeringRules, tags: string[]): string[] {
  return rules.tags === undefined ? tags : tags.filter((t) => tagGlobMatches(rules.tags!, t))
}

/** Whether this site receives changes from the other site of a peering. */
export function receives (p: Pick<PeeringRecord, 'initiator' | 'rules'>): boolean {
  const d = p.rules.direction
  return p.initiator ? d === 'pull' || d === 'both' : d === 'push' || d === 'both'
}

/** Whether this site sends its changes to the other site of a peering. */
export function sends (p: Pick<PeeringRecord, 'initiator' | 'rules'>): boolean {
  const d = p.rules.direction
  return p.initiator ? d === 'push' || d === 'both' : d === 'pull' || d === 'both'
}

export function membersProblem (members: unknown): string | undefined {
  if (!Array.isArray(members) || members.length === 0 || members.length > 64) return 'members must be a list of 1 to 64 {peerId, addrs}'
  for (const m of members as Array<Partial<SiteMember>>) {
    if (typeof m?.peerId !== 'string' || !/^[1-9A-HJ-NP-Za-km-z]{40,60}$/.test(m.peerId)) return `invalid member peer id ${JSON.stringify(String(m?.peerId).slice(0, 80))}`
    if (!Array.isArray(m.addrs) || m.addrs.length > 16 || !m.addrs.every((a) => typeof a === 'string' && a.startsWith('/') && a.length < 256)) return `member ${m.peerId}: addrs must be a list of multiaddrs`
  }
  return undefined
}
