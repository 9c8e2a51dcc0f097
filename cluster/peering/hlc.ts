/**
 * Federated tags: a hybrid logical clock per site, and the version each tag carries.
 *
 * Each site keeps one clock in its replicated state (`hlc`), so it is deterministic: it
 * moves only when the state machine applies a command, and takes physical time from the
 * command (`at`, set by the proposer), never from the applying node's clock:
 *
 *   a change made here (tick):        l' = max(l, at); c' = l' = l ? c + 1 : 0
 *   a change received (merge r):      l' = max(l, r.l, at); c' = the largest counter among
 *                                     those whose l equals l', plus one (0 if none)
 *
 * A version is the clock's value when a change was made and the id of the site that made
 * it: {l, c, s}. Versions are ordered by l, then c, then s (site ids compared as strings),
 * so any two changes of a tag are ordered the same way at every site, whatever order they
 * arrive in. Since a received change moves the clock past its version, a change made here
 * afterwards always has a higher version than everything this site has seen.
 *
 * Each tag's version (and a deleted tag's, as a tombstone) is kept beside the tag:
 *
 *   hlc                      → {l, c}                 this site's clock
 *   tagver␀<repo>␀<tag>      → {l, c, s, deleted?}    the version of the tag's last write here
 *
 * A manifest's user properties are settled the same way, as one whole (properties.ts keeps
 * the version, and drops it with the manifest):
 *
 *   propver␀<repo>␀<digest>  → {l, c, s}              the version of the last change of them here
 *
 * The rule (cluster/peering/README.md): highest version wins, deletes included. A received
 * tag update or delete takes effect only if its version is higher than the tag's here; a
 * delete leaves its version behind, so an older update that arrives later does not bring the
 * tag back, and a newer one does.
 */
import type { TxLike } from '../access/apply.js'
import { key } from '../metadata/keys.js'

const SEP = '\u0000'

export interface Hlc {
  /** Physical part: milliseconds (the largest command time seen). */
  l: number
  /** Logical part: orders changes within one millisecond. */
  c: number
}

/** A change's version: the clock when it was made, and the site that made it. */
export interface Version extends Hlc {
  s: string
}

/** A tag's version as recorded here; `deleted`: a tombstone. */
export interface TagVersion extends Version {
  deleted?: true
}

/**
 * How far ahead of the receiving command's time a received version may be. A site whose clock
 * runs further ahead would drag every site's clock with it (and win every race meanwhile):
 * its changes are refused, not passed over, until the clocks agree (the receiver retries and
 * shows the error in `site status`), so nothing is lost.
 */
export const MAX_CLOCK_AHEAD_MS = 15 * 60_000

export const hlcKey = {
  clock: (): string => 'hlc',
  tag: (repo: string, tag: string): string => `tagver${SEP}${repo}${SEP}${tag}`,
  tagPrefix: (repo: string): string => `tagver${SEP}${repo}${SEP}`,
  allTags: (): string => `tagver${SEP}`,
}

/** The clock after a change made here at command time `at`. */
export function tick (h: Hlc, at: number): Hlc {
  const l = Math.max(h.l, at)
  return { l, c: l === h.l ? h.c + 1 : 0 }
}

/** The clock after receiving a change of version `r`, applied at command time `at`. */
export function merge (h: Hlc, r: Hlc, at: number): Hlc {
  const l = Math.max(h.l, r.l, at)
  let c = -1
  if (l === h.l) c = Math.max(c, h.c)
  if (l === r.l) c = Math.max(c, r.c)
  return { l, c: c + 1 }
}

/** < 0 when a is older than b, 0 when the same, > 0 when newer. */
export function compareVersions (a: Version, b: Version): number {
  if (a.l !== b.l) return a.l < b.l ? -1 : 1
  if (a.c !== b.c) return a.c < b.c ? -1 : 1
  return a.s < b.s ? -1 : a.s > b.s ? 1 : 0
}

/** Whether `v` is a well-formed version (it arrives from another site). */
export function isVersion (v: unknown): v is Version {
  const x = v as Partial<Version> | null
  return typeof x === 'object' && x !== null && Number.isSafeInteger(x.l) && x.l! >= 0 && Number.isSafeInteger(x.c) && x.c! >= 0 && typeof x.s === 'string' && x.s.length <= 64
}

export function formatVersion (v: Version): string {
  return `${new Date(v.l).toISOString()}+${v.c}@${v.s}`
}

export async function readClock (tx: Pick<TxLike, 'getJSON'>): Promise<Hlc> {
  return await tx.getJSON<Hlc>(hlcKey.clock()) ?? { l: 0, c: 0 }
}

export function writeClock (tx: Pick<TxLike, 'putJSON'>, h: Hlc): void {
  tx.putJSON(hlcKey.clock(), { l: h.l, c: h.c })
}

/** A tag's version here; undefined for a tag never written since versions exist (the oldest of all). */
export async function tagVersion (tx: Pick<TxLike, 'getJSON'>, repo: string, tag: string): Promise<TagVersion | undefined> {
  return await tx.getJSON<TagVersion>(hlcKey.tag(repo, tag))
}

export function setTagVersion (tx: Pick<TxLike, 'putJSON'>, repo: string, tag: string, v: Version, deleted = false): void {
  tx.putJSON(hlcKey.tag(repo, tag), deleted ? { l: v.l, c: v.c, s: v.s, deleted: true } : { l: v.l, c: v.c, s: v.s })
}

/** Whether a change of version `v` to a tag wins over what is here (nothing recorded: it wins). */
export async function wins (tx: Pick<TxLike, 'getJSON'>, repo: string, tag: string, v: Version): Promise<boolean> {
  const cur = await tagVersion(tx, repo, tag)
  return cur === undefined || compareVersions(v, cur) > 0
}

/** Whether a change of version `v` to a manifest's user properties wins over what is here. */
export async function propsWin (tx: Pick<TxLike, 'getJSON'>, repo: string, digest: string, v: Version): Promise<boolean> {
  const cur = await tx.getJSON<Version>(key.propVersion(repo, digest))
  return cur === undefined || compareVersions(v, cur) > 0
}

export function setPropsVersion (tx: Pick<TxLike, 'putJSON'>, repo: string, digest: string, v: Version): void {
  tx.putJSON(key.propVersion(repo, digest), { l: v.l, c: v.c, s: v.s })
}
