/**
 * Reference counts for garbage collection, kept by the state machine in the same batch as the
 * change that moves them, so they are ordered by the log like everything else:
 *
 *   manifest ──references──▶ blob        bref␀<repo>␀<blob>      {n}
 *   index    ──references──▶ manifest    mref␀<repo>␀<manifest>  {n}
 *   link (repo may serve blob) with bref = 0          → unref␀<repo>␀<blob>  {since, size}
 *   blob record whose links (repositories) reach 0    → orphan␀<blob>        {since, size}
 *
 * They are derived from a command's writes (maintainRefs), not from each command's code, so
 * every writer of manifests and links (a push, a delete, a promotion, a change from another
 * site) keeps them right. `since` is when the entry became unreferenced: GC's grace period
 * counts from it. A store written before the counts existed has no refs␀version: rebuildRefs
 * (the RebuildRefs command) recomputes them all, and GC refuses to run until it has.
 */
import { key, partsOf } from './keys.js'
import type { TxLike } from '../access/apply.js'
import type { ManifestRecord } from './commands.js'

export const REFS_VERSION = 1

/** What a collection needs: lazy scans. */
export interface CollectTx extends TxLike {
  scan (prefix: string): AsyncIterable<[string, Uint8Array]>
}

export interface RefsTx extends TxLike {
  /** This transaction's writes so far (null: a delete). */
  writes (): Iterable<[string, Uint8Array | null]>
  /** A key's value before this transaction. */
  before (k: string): Promise<Uint8Array | undefined>
}

const dec = new TextDecoder()
const parse = <T>(v: Uint8Array | null | undefined): T | undefined => v == null ? undefined : JSON.parse(dec.decode(v)) as T

const MANIFEST = 'manifest\u0000'
const LINK = 'link\u0000'
const BLOB = 'blob\u0000'

/** Adjust a counter key by `delta`; a count of 0 is no key at all. Returns the new count. */
async function bump (tx: TxLike, k: string, delta: number): Promise<number> {
  const n = Math.max(0, ((await tx.getJSON<{ n: number }>(k))?.n ?? 0) + delta)
  if (n === 0) tx.del(k); else tx.putJSON(k, { n })
  return n
}

/**
 * Set or clear the `unref` entry of a link from what the transaction holds now. A link written
 * by this command (`fresh`: made, or made again by a new upload or mount) is unreferenced since now.
 */
async function settleLink (tx: TxLike, repo: string, digest: string, at: number, fresh: boolean): Promise<void> {
  const link = await tx.getJSON<{ size: number }>(key.link(repo, digest))
  const refs = (await tx.getJSON<{ n: number }>(key.blobRefs(repo, digest)))?.n ?? 0
  const k = key.unref(repo, digest)
  if (link === undefined || refs > 0) { tx.del(k); return }
  if (fresh || await tx.get(k) === undefined) tx.putJSON(k, { since: at, size: link.size })
}

/** Set or clear the `orphan` entry of a blob from what the transaction holds now. */
async function settleBlob (tx: TxLike, digest: string, at: number): Promise<void> {
  const b = await tx.getJSON<{ size: number; links: number }>(key.blob(digest))
  const k = key.orphan(digest)
  if (b === undefined || b.links > 0) { tx.del(k); return }
  if (await tx.get(k) === undefined) tx.putJSON(k, { since: at, size: b.size })
}

/**
 * Bring the counts in line with the writes a command made. Call once, after the command, with
 * the command's time (`at`): it is the `since` of whatever became unreferenced.
 */
export async function maintainRefs (tx: RefsTx, at: number): Promise<void> {
  if (await tx.get(key.refsVersion()) === undefined) return
  const links = new Map<string, [string, string]>()
  const written = new Set<string>()
  const blobs = new Set<string>()
  for (const [k, after] of [...tx.writes()]) {
    if (k.startsWith(MANIFEST)) {
      const [repo, digest] = partsOf(k) as [string, string]
      const was = parse<ManifestRecord>(await tx.before(k))
      const now = parse<ManifestRecord>(after)
      // Same digest, same bytes, same references: only an appearance or a removal counts.
      if ((was === undefined) === (now === undefined)) continue
      const rec = (now ?? was)!
      const delta = now !== undefined ? 1 : -1
      for (const b of new Set(rec.blobs)) {
        await bump(tx, key.blobRefs(repo, b), delta)
        links.set(`${repo}\u0000${b}`, [repo, b])
      }
      for (const m of new Set(rec.manifests)) await bump(tx, key.manifestRefs(repo, m), delta)
    } else if (k.startsWith(LINK)) {
      const [repo, digest] = partsOf(k) as [string, string]
      links.set(`${repo}\u0000${digest}`, [repo, digest])
      if (after !== null) written.add(`${repo}\u0000${digest}`)
    } else if (k.startsWith(BLOB)) {
      blobs.add(partsOf(k)[0]!)
    }
  }
  for (const [id, [repo, digest]] of links) await settleLink(tx, repo, digest, at, written.has(id))
  for (const digest of blobs) await settleBlob(tx, digest, at)
}

/**
 * Recompute every count from the manifests, links and blobs there are (`at` is the `since`
 * of what is unreferenced now), and mark the counts complete.
 */
export async function rebuildRefs (tx: TxLike, at: number): Promise<{ manifests: number; unref: number; orphans: number }> {
  for (const prefix of ['bref\u0000', 'mref\u0000', key.unrefPrefix(), key.orphanPrefix()]) {
    for (const k of await tx.keys(prefix)) tx.del(k)
  }
  const brefs = new Map<string, number>()
  const mrefs = new Map<string, number>()
  let manifests = 0
  for (const k of await tx.keys(MANIFEST)) {
    const [repo] = partsOf(k) as [string, string]
    const rec = await tx.getJSON<ManifestRecord>(k)
    if (rec === undefined) continue
    manifests++
    for (const b of new Set(rec.blobs)) brefs.set(key.blobRefs(repo, b), (brefs.get(key.blobRefs(repo, b)) ?? 0) + 1)
    for (const m of new Set(rec.manifests)) mrefs.set(key.manifestRefs(repo, m), (mrefs.get(key.manifestRefs(repo, m)) ?? 0) + 1)
  }
  for (const [k, n] of [...brefs, ...mrefs]) tx.putJSON(k, { n })
  let unref = 0
  for (const k of await tx.keys(LINK)) {
    const [repo, digest] = partsOf(k) as [string, string]
    if (brefs.has(key.blobRefs(repo, digest))) continue
    const link = await tx.getJSON<{ size: number }>(k)
    tx.putJSON(key.unref(repo, digest), { since: at, size: link?.size ?? 0 })
    unref++
  }
  let orphans = 0
  for (const k of await tx.keys(BLOB)) {
    const b = await tx.getJSON<{ size: number; links: number }>(k)
    if (b === undefined || b.links > 0) continue
    tx.putJSON(key.orphan(partsOf(k)[0]!), { since: at, size: b.size })
    orphans++
  }
  tx.putJSON(key.refsVersion(), { version: REFS_VERSION })
  return { manifests, unref, orphans }
}

export interface CollectResult {
  /** Links removed (repository, blob). */
  unlinked: Array<{ repo: string; digest: string }>
  /** Blobs forgotten: no repository links them; every node deletes their bytes. */
  blobs: Array<{ digest: string; size: number }>
  bytes: number
  /** The limit stopped this collection short: run another. */
  more: boolean
}

/**
 * One collection: unlink what has been unreferenced since `before` or earlier, then forget
 * every blob no repository links any more (those unlinked just now included, whose grace has
 * passed with their link's; others once orphaned since `before`). Digests in `keep` (in use
 * by an upload, a mount or a manifest PUT somewhere) are left alone. At most `limit` links and
 * `limit` blobs go in one command (`more` says whether some are left).
 */
export async function collect (tx: CollectTx, before: number, keep: ReadonlySet<string>, limit = Infinity): Promise<CollectResult> {
  const out: CollectResult = { unlinked: [], blobs: [], bytes: 0, more: false }
  // Scanned lazily: a batch reads what it handles, not every candidate left (collecting
  // 50,000 blobs in batches of 500 read all of them for each batch).
  const fresh = new Map<string, number>()
  for await (const [k, v] of tx.scan(key.unrefPrefix())) {
    // One command stays small enough not to hold the log up: the collector runs the next.
    if (out.unlinked.length >= limit) { out.more = true; break }
    const [repo, digest] = partsOf(k) as [string, string]
    const u = parse<{ since: number }>(v)
    if (u === undefined || u.since > before || keep.has(digest)) continue
    tx.del(k)
    tx.del(key.link(repo, digest))
    const b = await tx.getJSON<{ size: number; links: number }>(key.blob(digest))
    if (b !== undefined) {
      const links = Math.max(0, b.links - 1)
      tx.putJSON(key.blob(digest), { size: b.size, links })
      if (links === 0) fresh.set(digest, b.size)
      else fresh.delete(digest)
    }
    out.unlinked.push({ repo, digest })
  }
  const forget = (digest: string, size: number): void => {
    tx.del(key.blob(digest))
    tx.del(key.orphan(digest))
    out.blobs.push({ digest, size })
    out.bytes += size
  }
  // Blobs this batch left unlinked first: there are at most `limit` of them, so none is cut
  // off (one cut off here would have no orphan record and stay forever).
  for (const digest of [...fresh.keys()].sort()) {
    for (const h of await tx.keys(key.holderPrefix(digest))) tx.del(h)
    forget(digest, fresh.get(digest)!)
  }
  for await (const [k, v] of tx.scan(key.orphanPrefix())) {
    const digest = partsOf(k)[0]!
    const o = parse<{ since: number }>(v)
    if (o === undefined || o.since > before || keep.has(digest) || fresh.has(digest)) continue
    if (out.blobs.length >= limit) { out.more = true; break }
    const b = await tx.getJSON<{ size: number; links: number }>(key.blob(digest))
    if (b === undefined || b.links > 0) continue
    for (const h of await tx.keys(key.holderPrefix(digest))) tx.del(h)
    forget(digest, b.size)
  }
  return out
}
