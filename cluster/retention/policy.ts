/**
 * Retention policies: which tags and untagged manifests to delete. Pure functions of a policy,
 * a repository's state and the time; the runner (runner.ts) turns the verdicts into ordinary
 * DeleteTag and DeleteManifest commands, and GC then frees what nothing references.
 *
 * A policy applies to the repositories matching any of `repositories` (the permission pattern
 * grammar, cluster/access/model.ts) and, within them, to the tags matching none of `exclude`
 * (globs: `*` any run of characters, `?` one). For each repository:
 *
 *   keepLast N      the N newest tags are kept whatever else the policy says; newest by push
 *                   time (`by: push`) or by semantic version (`by: semver`: tags that are not
 *                   versions, like `latest`, are kept and do not count);
 *   olderThanDays D a tag pushed more than D days ago is deleted;
 *   notPulledDays D a tag whose manifest was not pulled within D days (nor pushed) is deleted;
 *                   with both, a tag must meet both; with neither, keepLast alone deletes every
 *                   tag past the N newest;
 *   untagged        manifests with no tag (none left after the tags above go), not a child of
 *                   an index, not a referrer of a manifest that exists, and pushed more than
 *                   `untaggedAfterHours` ago (default 24: a multi-arch push tags its index last)
 *                   are deleted.
 *
 * Immutable repositories are left alone (the state machine would refuse anyway).
 */
import { isValidName, isValidPattern, matches } from '../access/model.js'
import { FlotillaError } from '../../storage/errors.js'

export interface RetentionPolicy {
  name: string
  repositories: string[]
  exclude?: string[]
  keepLast?: number
  by?: 'push' | 'semver'
  olderThanDays?: number
  notPulledDays?: number
  untagged?: boolean
  untaggedAfterHours?: number
}

export interface RepoState {
  repo: string
  tags: Array<{ tag: string; digest: string; at: number }>
  manifests: Array<{ digest: string; at: number; lastPulled?: number; children: number; subject?: string }>
  immutable: boolean
}

export interface Verdict {
  tags: Array<{ repo: string; tag: string; digest: string; why: string }>
  manifests: Array<{ repo: string; digest: string; why: string }>
}

const DAY = 86_400_000

function glob (pattern: string, s: string): boolean {
  const re = new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$')
  return re.test(s)
}

/** `v1.2.3`, `1.2`, `2.0.0-rc.1`… as comparable parts; undefined for anything else. */
export function semver (tag: string): { core: number[]; pre: string | undefined } | undefined {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/.exec(tag)
  if (m === null) return undefined
  return { core: [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)], pre: m[4] }
}

/** Newer first. */
export function compareSemver (a: NonNullable<ReturnType<typeof semver>>, b: NonNullable<ReturnType<typeof semver>>): number {
  for (let i = 0; i < 3; i++) if (a.core[i] !== b.core[i]) return b.core[i]! - a.core[i]!
  // A release is newer than its pre-releases.
  if (a.pre === b.pre) return 0
  if (a.pre === undefined) return -1
  if (b.pre === undefined) return 1
  return b.pre.localeCompare(a.pre, 'en', { numeric: true })
}

export function appliesTo (p: RetentionPolicy, repo: string): boolean {
  return p.repositories.some((pat) => matches(pat, repo))
}

export function evaluate (p: RetentionPolicy, state: RepoState, now: number): Verdict {
  const out: Verdict = { tags: [], manifests: [] }
  if (!appliesTo(p, state.repo) || state.immutable) return out
  const candidates = state.tags.filter((t) => !(p.exclude ?? []).some((g) => glob(g, t.tag)))
  // Newest first, by the policy's order; under semver, tags that are no version are out of play.
  let ordered: typeof candidates
  if (p.by === 'semver') {
    ordered = candidates.map((t) => ({ t, v: semver(t.tag) })).filter((x) => x.v !== undefined)
      .sort((a, b) => compareSemver(a.v!, b.v!) || b.t.at - a.t.at).map((x) => x.t)
  } else {
    ordered = [...candidates].sort((a, b) => b.at - a.at || (a.tag < b.tag ? 1 : -1))
  }
  const kept = new Set(ordered.slice(0, p.keepLast ?? 0).map((t) => t.tag))
  const pulled = new Map(state.manifests.map((m) => [m.digest, m.lastPulled]))
  const timed = p.olderThanDays !== undefined || p.notPulledDays !== undefined
  if (timed || p.keepLast !== undefined) {
    for (const t of ordered) {
      if (kept.has(t.tag)) continue
      const why: string[] = []
      if (p.olderThanDays !== undefined) {
        if (now - t.at <= p.olderThanDays * DAY) continue
        why.push(`pushed more than ${p.olderThanDays} days ago`)
      }
      if (p.notPulledDays !== undefined) {
        const last = Math.max(pulled.get(t.digest) ?? 0, t.at)
        if (now - last <= p.notPulledDays * DAY) continue
        why.push(`not pulled within ${p.notPulledDays} days`)
      }
      if (!timed) why.push(`past the ${p.keepLast} newest${p.by === 'semver' ? ' versions' : ''}`)
      else if (p.keepLast !== undefined) why.push(`not among the ${p.keepLast} newest`)
      out.tags.push({ repo: state.repo, tag: t.tag, digest: t.digest, why: why.join(', ') })
    }
  }
  if (p.untagged === true) {
    const gone = new Set(out.tags.map((t) => t.tag))
    const tagged = new Set(state.tags.filter((t) => !gone.has(t.tag)).map((t) => t.digest))
    const present = new Set(state.manifests.map((m) => m.digest))
    const after = (p.untaggedAfterHours ?? 24) * 3_600_000
    for (const m of state.manifests) {
      if (tagged.has(m.digest) || m.children > 0) continue
      if (m.subject !== undefined && present.has(m.subject)) continue
      if (now - m.at <= after) continue
      out.manifests.push({ repo: state.repo, digest: m.digest, why: `untagged, pushed more than ${p.untaggedAfterHours ?? 24} hours ago` })
    }
  }
  return out
}

const NUM = (v: unknown, min: number, max: number): boolean => typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max

/** Refuse a malformed policy (BAD_REQUEST naming the field), in the API and in the state machine. */
export function checkPolicy (p: RetentionPolicy): void {
  const bad = (why: string): never => { throw new FlotillaError('BAD_REQUEST', `retention policy: ${why}`) }
  if (typeof p !== 'object' || p === null) bad('expected an object')
  if (typeof p.name !== 'string' || !isValidName(p.name)) bad('name must be letters, digits, ".", "_" or "-"')
  if (!Array.isArray(p.repositories) || p.repositories.length === 0 || !p.repositories.every((r) => typeof r === 'string' && isValidPattern(r))) bad('repositories must be one or more repository patterns, e.g. "ci/**"')
  if (p.exclude !== undefined && (!Array.isArray(p.exclude) || !p.exclude.every((g) => typeof g === 'string' && g.length > 0 && g.length <= 128))) bad('exclude must be a list of tag globs')
  if (p.keepLast !== undefined && !(Number.isInteger(p.keepLast) && p.keepLast >= 0 && p.keepLast <= 100_000)) bad('keepLast must be a whole number from 0')
  if (p.by !== undefined && p.by !== 'push' && p.by !== 'semver') bad('by must be push or semver')
  if (p.olderThanDays !== undefined && !NUM(p.olderThanDays, 0, 36_500)) bad('olderThanDays must be a number of days')
  if (p.notPulledDays !== undefined && !NUM(p.notPulledDays, 0, 36_500)) bad('notPulledDays must be a number of days')
  if (p.untagged !== undefined && typeof p.untagged !== 'boolean') bad('untagged must be true or false')
  if (p.untaggedAfterHours !== undefined && !NUM(p.untaggedAfterHours, 0, 876_000)) bad('untaggedAfterHours must be a number of hours')
  if (p.keepLast === undefined && p.olderThanDays === undefined && p.notPulledDays === undefined && p.untagged !== true) bad('it deletes nothing: give keepLast, olderThanDays, notPulledDays or untagged')
  const known = new Set(['name', 'repositories', 'exclude', 'keepLast', 'by', 'olderThanDays', 'notPulledDays', 'untagged', 'untaggedAfterHours'])
  for (const k of Object.keys(p)) if (!known.has(k)) bad(`unknown field ${JSON.stringify(k.slice(0, 40))}`)
}
