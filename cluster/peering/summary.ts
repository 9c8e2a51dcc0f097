/**
 * Continuous reconciliation (issue 11, delivery): what a site holds of the repositories a
 * peering lets through, as summary hashes, and what a receiving site should repair.
 *
 * A repository's *view* under a peering's rules is its tags (those the tag glob lets through:
 * tag → digest, with each tag's version, hlc.ts), the tombstones of its deleted tags, and the
 * digests of its manifests. Its hash covers the content only (tag → digest and the manifest
 * set, not versions or tombstones), so two sites that hold the same images agree whatever
 * path the images took. Repositories fall into BUCKETS buckets by a hash of their name; a
 * bucket's hash covers its repositories' names and hashes, and the root hash the buckets'.
 *
 * The receiving site compares top-down and descends only where hashes differ: the root (one
 * small answer), then the bucket hashes, then the repository hashes of the differing buckets,
 * then the views of the differing repositories; it never lists what agrees.
 *
 * diffRepo() decides the repairs (cluster/peering/README.md, "Reconciliation"):
 *   - a manifest the sender has and the receiver lacks: fetched by digest, with its blobs
 *     (content-addressed, so there is no conflict);
 *   - a tag whose digest differs: moved to the sender's digest, carrying the sender's version,
 *     only if that version is the sender's own (made there: a site repairs only its own
 *     changes, as its feed ships only those) and higher than the tag's version here (a live
 *     tag or a tombstone): a newer write here stands;
 *   - a tag the receiver has and the sender does not: removed only with `--deletes`, only when
 *     the sender holds a tombstone of its own making for it, newer than the tag here;
 *   - nothing else: manifests the receiver has that the sender lacks (a local push, or a
 *     manifest deleted at the sender) stay, and so do local tags the sender never had.
 */
import { createHash } from 'node:crypto'
import type { KV } from '../../storage/kv/kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { key } from '../metadata/keys.js'
import { decodeJSON } from '../metadata/state-machine.js'
import { compareVersions, hlcKey, type TagVersion, type Version } from './hlc.js'
import { repoAllowed, tagGlobMatches, type PeeringRules } from './model.js'

/** Buckets of repositories under the root (a power of two; stable: both sides must agree). */
export const BUCKETS = 64
const SEP = '\u0000'

/** What a site holds of one repository under a peering's rules. */
export interface RepoView {
  /** tag → its digest, and its version here (undefined: written before versions existed). */
  tags: Record<string, { digest: string; v?: Version }>
  /** Deleted tags' versions (tombstones). */
  tombstones: Record<string, Version>
  /** Every manifest of the repository, sorted. */
  manifests: string[]
}

export interface Summary {
  root: string
  /** BUCKETS hashes ('' for an empty bucket). */
  buckets: string[]
  /** repository → its hash (repositories with neither tags nor manifests are left out). */
  repos: Map<string, string>
}

const sha = (s: string): string => createHash('sha256').update(s).digest('hex')

export function bucketOf (repo: string): number {
  return createHash('sha256').update(repo).digest().readUInt16BE(0) % BUCKETS
}

/** A repository's hash: its tags (tag → digest) and its manifest set; '' when it holds neither. */
export function repoHash (v: Pick<RepoView, 'tags' | 'manifests'>): string {
  const tags = Object.keys(v.tags).sort()
  if (tags.length === 0 && v.manifests.length === 0) return ''
  const h = createHash('sha256')
  for (const t of tags) h.update(`t${SEP}${t}${SEP}${v.tags[t]!.digest}\n`)
  for (const d of [...v.manifests].sort()) h.update(`m${SEP}${d}\n`)
  return h.digest('hex')
}

/** The bucket and root hashes over repository hashes. */
export function summarize (repos: Map<string, string>): Summary {
  const per: string[][] = Array.from({ length: BUCKETS }, () => [])
  for (const repo of [...repos.keys()].sort()) {
    const h = repos.get(repo)!
    if (h !== '') per[bucketOf(repo)]!.push(`${repo}${SEP}${h}`)
  }
  const buckets = per.map((rs) => rs.length === 0 ? '' : sha(rs.join('\n')))
  return { root: sha(buckets.join('\n')), buckets, repos: new Map([...repos].filter(([, h]) => h !== '')) }
}

/** Reads a site's state (its own KV: reads only) for reconciliation. */
export class SummaryReader {
  constructor (private readonly kv: KV) {}

  /** Every repository of this site the rules let through. */
  async repos (rules: PeeringRules): Promise<string[]> {
    const out: string[] = []
    const prefix = key.repoPrefix()
    for await (const [k] of this.kv.entries(prefixRange(prefix))) {
      const repo = k.slice(prefix.length)
      if (repoAllowed(rules, repo)) out.push(repo)
    }
    return out
  }

  async view (repo: string, rules: PeeringRules): Promise<RepoView> {
    const keep = (t: string): boolean => rules.tags === undefined || tagGlobMatches(rules.tags, t)
    const versions = new Map<string, TagVersion>()
    const vp = hlcKey.tagPrefix(repo)
    for await (const [k, v] of this.kv.entries(prefixRange(vp))) versions.set(k.slice(vp.length), decodeJSON<TagVersion>(v))
    const tags: RepoView['tags'] = {}
    const tp = key.tagPrefix(repo)
    for await (const [k, v] of this.kv.entries(prefixRange(tp))) {
      const t = k.slice(tp.length)
      if (!keep(t)) continue
      const ver = versions.get(t)
      tags[t] = { digest: decodeJSON<{ digest: string }>(v).digest, ...(ver !== undefined && ver.deleted !== true ? { v: { l: ver.l, c: ver.c, s: ver.s } } : {}) }
    }
    const tombstones: RepoView['tombstones'] = {}
    for (const [t, ver] of versions) if (ver.deleted === true && tags[t] === undefined && keep(t)) tombstones[t] = { l: ver.l, c: ver.c, s: ver.s }
    const manifests: string[] = []
    const mp = key.manifestPrefix(repo)
    for await (const [k] of this.kv.entries(prefixRange(mp))) manifests.push(k.slice(mp.length))
    return { tags, tombstones, manifests: manifests.sort() }
  }

  /** The summary of everything the rules let through. */
  async summary (rules: PeeringRules): Promise<Summary> {
    const repos = new Map<string, string>()
    for (const repo of await this.repos(rules)) repos.set(repo, repoHash(await this.view(repo, rules)))
    return summarize(repos)
  }
}

/** What the receiver should do about one repository. */
export interface RepoDiff {
  /** Manifests to fetch from the sender (by digest). */
  fetch: string[]
  /** Tags to move to the sender's digest, with the sender's version. */
  tags: Array<{ tag: string; digest: string; v: Version }>
  /** Tags to remove (--deletes), with the sender's tombstone's version. */
  untags: Array<{ tag: string; v: Version }>
  /** Differences left alone, and why. */
  kept: { localManifests: number; localTags: number; newerHere: number; foreign: number }
}

/**
 * The repairs that bring `mine` (the receiver's view) up to `theirs` (the sender's), for a
 * peering with site `sender`; `deletes`: the peering replicates deletes.
 */
export function diffRepo (sender: string, mine: RepoView, theirs: RepoView, deletes: boolean): RepoDiff {
  const d: RepoDiff = { fetch: [], tags: [], untags: [], kept: { localManifests: 0, localTags: 0, newerHere: 0, foreign: 0 } }
  const have = new Set(mine.manifests)
  for (const m of theirs.manifests) if (!have.has(m)) d.fetch.push(m)
  const theirsSet = new Set(theirs.manifests)
  d.kept.localManifests = mine.manifests.filter((m) => !theirsSet.has(m)).length
  // The tag's version here: a live tag's or a tombstone's (undefined: never versioned, the oldest).
  const hereVersion = (t: string): Version | undefined => mine.tags[t]?.v ?? mine.tombstones[t]
  for (const [t, x] of Object.entries(theirs.tags).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
    if (mine.tags[t]?.digest === x.digest) continue
    // Unversioned at the sender: written before versions existed, there (the oldest version of its own).
    const v = x.v ?? { l: 0, c: 0, s: sender }
    if (v.s !== sender) { d.kept.foreign++; continue }
    const here = hereVersion(t)
    if (here !== undefined && compareVersions(v, here) <= 0) { d.kept.newerHere++; continue }
    d.tags.push({ tag: t, digest: x.digest, v })
  }
  for (const t of Object.keys(mine.tags).sort()) {
    if (theirs.tags[t] !== undefined) continue
    const tomb = theirs.tombstones[t]
    if (!deletes || tomb === undefined || tomb.s !== sender) { d.kept.localTags++; continue }
    const here = mine.tags[t]!.v
    if (here !== undefined && compareVersions(tomb, here) <= 0) { d.kept.newerHere++; continue }
    d.untags.push({ tag: t, v: tomb })
  }
  return d
}

/** Whether a diff repairs anything. */
export function repairs (d: RepoDiff): number {
  return d.fetch.length + d.tags.length + d.untags.length
}

/**
 * Manifests in an order the receiver can apply them: an index after the children it
 * references that are in the set too (children it lacks otherwise must be there already).
 */
export function childrenFirst<T extends { digest: string; manifests: string[] }> (ms: T[]): T[] {
  const byDigest = new Map(ms.map((m) => [m.digest, m]))
  const out: T[] = []
  const seen = new Set<string>()
  const visit = (m: T, depth: number): void => {
    if (seen.has(m.digest) || depth > 16) return
    seen.add(m.digest)
    for (const c of m.manifests) { const x = byDigest.get(c); if (x !== undefined) visit(x, depth + 1) }
    out.push(m)
  }
  for (const m of ms) visit(m, 0)
  return out
}
