/**
 * The search indexes (issue 14), kept by the state machine in the same batch as the writes
 * they follow, so every node holds the same indexes at the same applied index and a search
 * never scans every manifest for a selective criterion:
 *
 *   sx␀dig␀<digest>␀<repo>                  → {}         repositories holding a manifest
 *   sx␀ref␀<digest>␀<repo>␀<manifest>       → {}         manifests referencing a blob or child manifest
 *   sx␀at␀<ms, 15 digits>␀<repo>␀<digest>   → {}         manifests by push time
 *   sx␀created␀<ms>␀<repo>␀<digest>         → {}         by org.opencontainers.image.created (annotation)
 *   sx␀pulled␀<ms>␀<repo>␀<digest>          → {}         by last pull (batched: lags by the recording interval)
 *   sx␀size␀<bytes, 15 digits>␀<repo>␀<digest> → {}      by manifest size
 *   sx␀media␀<mediaType>␀<repo>␀<digest>    → {}         by media type
 *   sx␀atype␀<artifactType>␀<repo>␀<digest> → {}         by artifact type (manifests that have one)
 *   sx␀tag␀<tag>␀<repo>                     → {digest}   tags by name across repositories
 *   sx␀tags␀<repo>␀<digest>                 → {tags}     a manifest's tags in one read (tagsof␀… needs a scan)
 *   sx␀version                              → {version}  the indexes are complete (a backfill ran)
 *
 * Like refs.ts they are derived from a command's writes (maintainSearch), not from each
 * command's code: a push, a delete, a promotion, a change from another site, a recorded pull
 * all keep them right. They are plain keys, so snapshots and backups carry them. A store that
 * predates them has no sx␀version: the RebuildSearchIndex command (issued once by the first
 * search on any node) recomputes them all; until then a search answers 503 and retries.
 * Repository names are not indexed: there are far fewer of them than tags, and a name
 * criterion scans the catalog (repo␀…), which the benchmark measures.
 */
import { partsOf } from './keys.js'
import type { RefsTx } from './refs.js'
import type { TxLike } from '../access/apply.js'
import type { ManifestRecord } from './commands.js'

export const SEARCH_VERSION = 1
const SEP = '\u0000'
export const CREATED_ANNOTATION = 'org.opencontainers.image.created'

/** Fixed width, so that lexical order is numeric order (up to year 33658 in ms). */
export const pad = (n: number): string => String(Math.max(0, Math.min(Math.floor(n), 999_999_999_999_999))).padStart(15, '0')

export const sx = {
  version: (): string => `sx${SEP}version`,
  prefix: (): string => `sx${SEP}`,
  dig: (digest: string, repo: string): string => `sx${SEP}dig${SEP}${digest}${SEP}${repo}`,
  digPrefix: (digest: string): string => `sx${SEP}dig${SEP}${digest}${SEP}`,
  ref: (target: string, repo: string, digest: string): string => `sx${SEP}ref${SEP}${target}${SEP}${repo}${SEP}${digest}`,
  refPrefix: (target: string): string => `sx${SEP}ref${SEP}${target}${SEP}`,
  /** A numeric index (at, created, pulled, size). */
  num: (kind: NumKind, n: number, repo: string, digest: string): string => `sx${SEP}${kind}${SEP}${pad(n)}${SEP}${repo}${SEP}${digest}`,
  numPrefix: (kind: NumKind): string => `sx${SEP}${kind}${SEP}`,
  str: (kind: StrKind, value: string, repo: string, digest: string): string => `sx${SEP}${kind}${SEP}${value}${SEP}${repo}${SEP}${digest}`,
  strPrefix: (kind: StrKind, value?: string): string => value === undefined ? `sx${SEP}${kind}${SEP}` : `sx${SEP}${kind}${SEP}${value}${SEP}`,
  tag: (tag: string, repo: string): string => `sx${SEP}tag${SEP}${tag}${SEP}${repo}`,
  tagPrefix: (tag?: string): string => tag === undefined ? `sx${SEP}tag${SEP}` : `sx${SEP}tag${SEP}${tag}${SEP}`,
  tagsOf: (repo: string, digest: string): string => `sx${SEP}tags${SEP}${repo}${SEP}${digest}`,
}
export type NumKind = 'at' | 'created' | 'pulled' | 'size'
export type StrKind = 'media' | 'atype'

/** org.opencontainers.image.created as ms, when the manifest carries a valid one. */
export function createdOf (rec: Pick<ManifestRecord, 'annotations'>): number | undefined {
  const v = rec.annotations?.[CREATED_ANNOTATION]
  if (v === undefined) return undefined
  const ms = Date.parse(v)
  return Number.isFinite(ms) && ms >= 0 ? ms : undefined
}

/** The index keys one manifest record contributes. */
function manifestKeys (repo: string, digest: string, rec: ManifestRecord): string[] {
  const out = [sx.dig(digest, repo), sx.num('at', rec.at, repo, digest), sx.num('size', rec.size, repo, digest), sx.str('media', rec.mediaType, repo, digest)]
  if (rec.artifactType !== undefined) out.push(sx.str('atype', rec.artifactType, repo, digest))
  const created = createdOf(rec)
  if (created !== undefined) out.push(sx.num('created', created, repo, digest))
  for (const t of new Set([...rec.blobs, ...rec.manifests])) out.push(sx.ref(t, repo, digest))
  return out
}

const dec = new TextDecoder()
const parse = <T>(v: Uint8Array | null | undefined): T | undefined => v == null ? undefined : JSON.parse(dec.decode(v)) as T
const MANIFEST = `manifest${SEP}`
const TAG = `tag${SEP}`
const PULLED = `pulled${SEP}`

/** Bring the indexes in line with the writes a command made (call once, after the command). */
export async function maintainSearch (tx: RefsTx): Promise<void> {
  // Tags gained and lost per manifest (`repo␀digest`), settled after every write is seen.
  const moved = new Map<string, { add: Set<string>; del: Set<string> }>()
  const touch = (repo: string, digest: string): { add: Set<string>; del: Set<string> } => {
    const id = `${repo}${SEP}${digest}`
    let m = moved.get(id)
    if (m === undefined) { m = { add: new Set(), del: new Set() }; moved.set(id, m) }
    return m
  }
  for (const [k, after] of [...tx.writes()]) {
    if (k.startsWith(MANIFEST)) {
      const [repo, digest] = partsOf(k) as [string, string]
      const was = parse<ManifestRecord>(await tx.before(k))
      const now = parse<ManifestRecord>(after)
      const old = new Set(was === undefined ? [] : manifestKeys(repo, digest, was))
      const next = new Set(now === undefined ? [] : manifestKeys(repo, digest, now))
      for (const x of old) if (!next.has(x)) tx.del(x)
      for (const x of next) if (!old.has(x)) tx.putJSON(x, {})
    } else if (k.startsWith(TAG)) {
      const parts = partsOf(k)
      if (parts.length !== 2) continue
      const [repo, tag] = parts as [string, string]
      const now = parse<{ digest: string }>(after)
      const was = parse<{ digest: string }>(await tx.before(k))
      if (now === undefined) tx.del(sx.tag(tag, repo)); else tx.putJSON(sx.tag(tag, repo), { digest: now.digest })
      if (was?.digest === now?.digest) continue
      if (was !== undefined) touch(repo, was.digest).del.add(tag)
      if (now !== undefined) touch(repo, now.digest).add.add(tag)
    } else if (k.startsWith(PULLED)) {
      const [repo, digest] = partsOf(k) as [string, string]
      const was = parse<{ at: number }>(await tx.before(k))
      const now = parse<{ at: number }>(after)
      if (was !== undefined && was.at !== now?.at) tx.del(sx.num('pulled', was.at, repo, digest))
      if (now !== undefined) tx.putJSON(sx.num('pulled', now.at, repo, digest), {})
    } else if (k.startsWith(MANIFEST) && after === null) {
      touch(...partsOf(k) as [string, string])
    }
  }
  for (const [id, m] of moved) {
    const [repo, digest] = id.split(SEP) as [string, string]
    const k = sx.tagsOf(repo, digest)
    if (await tx.get(`${MANIFEST}${repo}${SEP}${digest}`) === undefined) { tx.del(k); continue }
    const tags = new Set((await tx.getJSON<{ tags: string[] }>(k))?.tags ?? [])
    for (const t of m.del) tags.delete(t)
    for (const t of m.add) tags.add(t)
    if (tags.size === 0) tx.del(k); else tx.putJSON(k, { tags: [...tags].sort() })
  }
}

/** Recompute every index from the manifests, tags and pulls there are; mark them complete. */
export async function rebuildSearch (tx: TxLike): Promise<{ manifests: number; tags: number }> {
  if (await tx.get(sx.version()) !== undefined) return { manifests: 0, tags: 0 }
  for (const k of await tx.keys(sx.prefix())) tx.del(k)
  let manifests = 0
  for (const k of await tx.keys(MANIFEST)) {
    const [repo, digest] = partsOf(k) as [string, string]
    const rec = await tx.getJSON<ManifestRecord>(k)
    if (rec === undefined) continue
    manifests++
    for (const x of manifestKeys(repo, digest, rec)) tx.putJSON(x, {})
  }
  let tags = 0
  const lists = new Map<string, string[]>()
  for (const k of await tx.keys(TAG)) {
    const parts = partsOf(k)
    if (parts.length !== 2) continue
    const t = await tx.getJSON<{ digest: string }>(k)
    if (t === undefined) continue
    tx.putJSON(sx.tag(parts[1]!, parts[0]!), { digest: t.digest })
    const id = `${parts[0]!}${SEP}${t.digest}`
    const list = lists.get(id) ?? []
    list.push(parts[1]!)
    lists.set(id, list)
    tags++
  }
  for (const [id, list] of lists) {
    const [repo, digest] = id.split(SEP) as [string, string]
    if (await tx.get(`${MANIFEST}${repo}${SEP}${digest}`) !== undefined) tx.putJSON(sx.tagsOf(repo, digest), { tags: list.sort() })
  }
  for (const k of await tx.keys(PULLED)) {
    const [repo, digest] = partsOf(k) as [string, string]
    const p = await tx.getJSON<{ at: number }>(k)
    if (p !== undefined) tx.putJSON(sx.num('pulled', p.at, repo, digest), {})
  }
  tx.putJSON(sx.version(), { version: SEARCH_VERSION })
  return { manifests, tags }
}
