/**
 * Properties of manifests and checksums of blobs: the state machine's part and the reads.
 *
 *   prop␀<repo>␀<digest>␀<key>␀<value>     → PropEntry   a manifest's properties (every tag of it shows them)
 *   propidx␀<key>␀<value>␀<repo>␀<digest>  → PropEntry   the same, inverted: manifests by property
 *   sum␀<digest>                           → {sha1, md5} a blob's SHA-1 and MD5 (hex, as sha1sum/md5sum print)
 *   sumidx␀sha1|md5␀<hex>␀<digest>         → {}          blobs by checksum
 *
 * (the keys are made in keys.ts)
 *
 * A property is a key and one value; a key may have many values (one entry each). An entry is
 * set by a user (SetProperties, under the `annotate` permission), or read-only: an annotation
 * of the manifest, or a label (or annotation) of its image config, which the HTTP layer puts
 * in PutManifest (`labels`). A pair can be both; removing it as a user is then refused.
 *
 * Like GC's reference counts (refs.ts) the read-only entries and the clean-up are derived from
 * a command's writes (maintainProperties), not from each command's code: a manifest written by
 * a push, a promotion or a change from another site gets its annotation properties, and a
 * manifest removed by any command loses all its entries; a blob record GC forgets loses its
 * checksums. Snapshots copy every key (snapshot.ts), indexes included.
 */
import type { KV } from '../../storage/kv/kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { FlotillaError } from '../../storage/errors.js'
import type { Digest } from '../../storage/reference.js'
import { key, partsOf } from './keys.js'
import type { RefsTx } from './refs.js'
import type { TxLike } from '../access/apply.js'
import type { ManifestRecord } from './commands.js'

const SEP = '\u0000'


/** What an entry holds: who set it. Read-only when `ro` is there. */
export interface PropEntry {
  /** Set by a user (SetProperties). */
  user?: true
  /** Read-only: an annotation of the manifest, or a label/annotation of its image config. */
  ro?: 'annotation' | 'label'
}

export interface Property { key: string; values: string[]; readOnly: boolean }
export type ChecksumAlgorithm = 'sha1' | 'md5'
export interface Checksums { sha1: string; md5: string }

/** Longest property key and value (characters); longer annotations are not indexed. */
export const MAX_PROP_KEY = 256
export const MAX_PROP_VALUE = 1024
/** Most pairs one SetProperties/RemoveProperties/RecordChecksums may carry. */
export const MAX_PROPS_PER_COMMAND = 256
export const MAX_SUMS_PER_COMMAND = 4096

export type PropertyCommand =
  /** Add values to keys of a manifest (`replace`: the keys' other user values go). */
  | { type: 'SetProperties'; repo: string; digest: string; props: Array<{ key: string; value: string }>; replace?: boolean; at: number }
  /** Remove user values (all of a key's when `value` is absent); a read-only pair refuses the command. */
  | { type: 'RemoveProperties'; repo: string; digest: string; props: Array<{ key: string; value?: string }>; at: number }
  /** SHA-1 and MD5 of blobs, batched by the node that computed them; blobs forgotten since are skipped. */
  | { type: 'RecordChecksums'; sums: Array<{ digest: string; sha1: string; md5: string }> }

const TYPES = new Set<string>(['SetProperties', 'RemoveProperties', 'RecordChecksums'] satisfies Array<PropertyCommand['type']>)
export function isPropertyCommand (c: { type: string }): c is PropertyCommand { return TYPES.has(c.type) }

const CONTROL = /[\u0000-\u001f\u007f]/
const HEX = { sha1: /^[0-9a-f]{40}$/, md5: /^[0-9a-f]{32}$/ }

/** Why a property key or value cannot be stored, or undefined when it can. */
export function badProperty (k: string, v: string | undefined): string | undefined {
  if (typeof k !== 'string' || k.length === 0 || k.length > MAX_PROP_KEY) return `property key ${JSON.stringify(String(k).slice(0, 80))} must be 1-${MAX_PROP_KEY} characters`
  if (CONTROL.test(k) || k.includes('=')) return `property key ${JSON.stringify(k.slice(0, 80))} must not hold '=' or control characters`
  if (v === undefined) return undefined
  if (typeof v !== 'string' || v.length > MAX_PROP_VALUE) return `value of property ${k} must be a string of at most ${MAX_PROP_VALUE} characters`
  if (CONTROL.test(v)) return `value of property ${k} must not hold control characters`
  return undefined
}

export function isChecksum (alg: string, hex: string): alg is ChecksumAlgorithm {
  return (alg === 'sha1' || alg === 'md5') && HEX[alg].test(hex)
}

function putEntry (tx: TxLike, repo: string, digest: string, k: string, v: string, e: PropEntry): void {
  tx.putJSON(key.prop(repo, digest, k, v), e)
  tx.putJSON(key.propIndex(k, v, repo, digest), e)
}

function delEntry (tx: TxLike, repo: string, digest: string, k: string, v: string): void {
  tx.del(key.prop(repo, digest, k, v))
  tx.del(key.propIndex(k, v, repo, digest))
}

/** [key, value] of a `prop␀repo␀digest␀key␀value` key. */
function pairOf (k: string): [string, string] {
  const p = partsOf(k)
  return [p[2]!, p.slice(3).join(SEP)]
}

async function mustManifest (tx: TxLike, repo: string, digest: string): Promise<void> {
  if (await tx.get(key.manifest(repo, digest)) === undefined) {
    throw new FlotillaError('MANIFEST_UNKNOWN', `manifest ${digest} is unknown in ${repo}`, { digest })
  }
}

export async function applyProperties (tx: TxLike, c: PropertyCommand): Promise<{ ok: true; value?: unknown }> {
  switch (c.type) {
    case 'SetProperties': {
      await mustManifest(tx, c.repo, c.digest)
      if (!Array.isArray(c.props) || c.props.length === 0 || c.props.length > MAX_PROPS_PER_COMMAND) throw new FlotillaError('BAD_REQUEST', `give 1-${MAX_PROPS_PER_COMMAND} properties (key=value)`)
      for (const p of c.props) { const why = badProperty(p.key, p.value ?? ''); if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why) }
      if (c.replace === true) {
        for (const k of new Set(c.props.map((p) => p.key))) {
          for (const ek of await tx.keys(key.propKeyPrefix(c.repo, c.digest, k))) {
            const e = await tx.getJSON<PropEntry>(ek)
            if (e?.user !== true) continue
            const [pk, pv] = pairOf(ek)
            if (e.ro !== undefined) putEntry(tx, c.repo, c.digest, pk, pv, { ro: e.ro }); else delEntry(tx, c.repo, c.digest, pk, pv)
          }
        }
      }
      let added = 0
      for (const p of c.props) {
        const e = await tx.getJSON<PropEntry>(key.prop(c.repo, c.digest, p.key, p.value))
        if (e?.user === true) continue
        putEntry(tx, c.repo, c.digest, p.key, p.value, { ...e, user: true })
        added++
      }
      return { ok: true, value: { added } }
    }
    case 'RemoveProperties': {
      await mustManifest(tx, c.repo, c.digest)
      if (!Array.isArray(c.props) || c.props.length === 0 || c.props.length > MAX_PROPS_PER_COMMAND) throw new FlotillaError('BAD_REQUEST', `give 1-${MAX_PROPS_PER_COMMAND} properties (key or key=value)`)
      let removed = 0
      for (const p of c.props) {
        const why = badProperty(p.key, p.value)
        if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why)
        const keys = p.value !== undefined ? [key.prop(c.repo, c.digest, p.key, p.value)] : await tx.keys(key.propKeyPrefix(c.repo, c.digest, p.key))
        for (const ek of keys) {
          const e = await tx.getJSON<PropEntry>(ek)
          if (e === undefined) continue
          const [pk, pv] = pairOf(ek)
          if (e.ro !== undefined) {
            throw new FlotillaError('DENIED', `property ${pk}=${pv} of ${c.repo}@${c.digest} is read-only (an ${e.ro} of the image): it goes only with the manifest`)
          }
          delEntry(tx, c.repo, c.digest, pk, pv)
          removed++
        }
      }
      return { ok: true, value: { removed } }
    }
    case 'RecordChecksums': {
      if (!Array.isArray(c.sums) || c.sums.length > MAX_SUMS_PER_COMMAND) throw new FlotillaError('BAD_REQUEST', `give at most ${MAX_SUMS_PER_COMMAND} checksums`)
      let recorded = 0
      for (const s of c.sums) {
        if (!isChecksum('sha1', s.sha1) || !isChecksum('md5', s.md5)) throw new FlotillaError('BAD_REQUEST', `checksums of ${s.digest} must be lowercase hex SHA-1 and MD5`)
        // A blob GC forgot meanwhile: nothing to describe.
        if (await tx.get(key.blob(s.digest)) === undefined) continue
        const was = await tx.getJSON<Checksums>(key.sum(s.digest))
        if (was !== undefined) {
          if (was.sha1 === s.sha1 && was.md5 === s.md5) continue
          tx.del(key.sumIndex('sha1', was.sha1, s.digest))
          tx.del(key.sumIndex('md5', was.md5, s.digest))
        }
        tx.putJSON(key.sum(s.digest), { sha1: s.sha1, md5: s.md5 })
        tx.putJSON(key.sumIndex('sha1', s.sha1, s.digest), {})
        tx.putJSON(key.sumIndex('md5', s.md5, s.digest), {})
        recorded++
      }
      return { ok: true, value: { recorded } }
    }
  }
}

/** The read-only pairs a manifest record brings: its annotations and its config's labels. */
function readOnlyPairs (rec: ManifestRecord): Map<string, PropEntry['ro']> {
  const out = new Map<string, PropEntry['ro']>()
  const add = (src: Record<string, string> | undefined, ro: PropEntry['ro']): void => {
    for (const [k, v] of Object.entries(src ?? {})) {
      // Too long or unprintable: kept in the manifest, not indexed.
      if (typeof v !== 'string' || badProperty(k, v) !== undefined) continue
      const id = `${k}${SEP}${v}`
      if (!out.has(id)) out.set(id, ro)
    }
  }
  add(rec.annotations, 'annotation')
  add(rec.labels, 'label')
  return out
}

const MANIFEST = `manifest${SEP}`
const BLOB = `blob${SEP}`
const dec = new TextDecoder()

/**
 * Bring properties and checksums in line with the writes a command made: a manifest written
 * gets its read-only pairs (and loses the ones its new record no longer has); a manifest
 * removed loses every entry; a blob record removed loses its checksums. Once per command.
 */
export async function maintainProperties (tx: RefsTx): Promise<void> {
  for (const [k, after] of [...tx.writes()]) {
    if (k.startsWith(MANIFEST)) {
      const [repo, digest] = partsOf(k) as [string, string]
      const entries = await tx.keys(key.propPrefix(repo, digest))
      if (after === null) {
        for (const ek of entries) { const [pk, pv] = pairOf(ek); delEntry(tx, repo, digest, pk, pv) }
        // The version peering settled the user properties by (cluster/peering/hlc.ts) goes too.
        tx.del(key.propVersion(repo, digest))
        continue
      }
      const want = readOnlyPairs(JSON.parse(dec.decode(after)) as ManifestRecord)
      for (const ek of entries) {
        const [pk, pv] = pairOf(ek)
        const e = await tx.getJSON<PropEntry>(ek)
        const ro = want.get(`${pk}${SEP}${pv}`)
        want.delete(`${pk}${SEP}${pv}`)
        if (e?.ro === ro) continue
        if (ro === undefined && e?.user !== true) { delEntry(tx, repo, digest, pk, pv); continue }
        const next: PropEntry = {}
        if (e?.user === true) next.user = true
        if (ro !== undefined) next.ro = ro
        putEntry(tx, repo, digest, pk, pv, next)
      }
      for (const [id, ro] of want) {
        const i = id.indexOf(SEP)
        putEntry(tx, repo, digest, id.slice(0, i), id.slice(i + 1), { ro })
      }
    } else if (k.startsWith(BLOB) && after === null) {
      const digest = k.slice(BLOB.length)
      const was = await tx.getJSON<Checksums>(key.sum(digest))
      if (was === undefined) continue
      tx.del(key.sum(digest))
      tx.del(key.sumIndex('sha1', was.sha1, digest))
      tx.del(key.sumIndex('md5', was.md5, digest))
    }
  }
}

/**
 * Peering (cluster/peering/apply.ts): make a manifest's user properties exactly `pairs`, as
 * another site has them (its read-only ones follow the manifest here by themselves). A pair
 * that is read-only here too keeps its read-only part when the user part goes.
 */
export async function setUserProperties (tx: TxLike, repo: string, digest: string, pairs: Array<{ key: string; value: string }>): Promise<void> {
  await mustManifest(tx, repo, digest)
  for (const p of pairs) { const why = badProperty(p.key, p.value); if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why) }
  const want = new Set(pairs.map((p) => `${p.key}${SEP}${p.value}`))
  for (const ek of await tx.keys(key.propPrefix(repo, digest))) {
    const e = await tx.getJSON<PropEntry>(ek)
    const [pk, pv] = pairOf(ek)
    if (want.delete(`${pk}${SEP}${pv}`)) { if (e?.user !== true) putEntry(tx, repo, digest, pk, pv, { ...e, user: true }); continue }
    if (e?.user !== true) continue
    if (e.ro !== undefined) putEntry(tx, repo, digest, pk, pv, { ro: e.ro }); else delEntry(tx, repo, digest, pk, pv)
  }
  for (const id of want) {
    const i = id.indexOf(SEP)
    putEntry(tx, repo, digest, id.slice(0, i), id.slice(i + 1), { user: true })
  }
}

/**
 * Promotion (cluster/access/promote.ts): the user properties of `digest` in `from` onto the same
 * manifest in `to` (read-only ones follow the manifest record by themselves).
 */
export async function copyUserProperties (tx: TxLike, from: string, to: string, digest: string): Promise<number> {
  let n = 0
  for (const ek of await tx.keys(key.propPrefix(from, digest))) {
    const e = await tx.getJSON<PropEntry>(ek)
    if (e?.user !== true) continue
    const [pk, pv] = pairOf(ek)
    const there = await tx.getJSON<PropEntry>(key.prop(to, digest, pk, pv))
    putEntry(tx, to, digest, pk, pv, { ...there, user: true })
    n++
  }
  return n
}

// ---- Reads (the state machine is the only writer) ----

const decodeEntry = (v: Uint8Array): PropEntry => JSON.parse(dec.decode(v)) as PropEntry

/** A manifest's properties, keys in lexical order; a key is read-only when any of its values is. */
export async function propertiesOf (store: KV, repo: string, digest: string): Promise<Property[]> {
  const prefix = key.propPrefix(repo, digest)
  const out: Property[] = []
  for await (const [k, v] of store.entries(prefixRange(prefix))) {
    const rest = k.slice(prefix.length)
    const i = rest.indexOf(SEP)
    const pk = rest.slice(0, i)
    const pv = rest.slice(i + 1)
    const e = decodeEntry(v)
    const last = out[out.length - 1]
    if (last !== undefined && last.key === pk) {
      last.values.push(pv)
      last.readOnly ||= e.ro !== undefined
    } else {
      out.push({ key: pk, values: [pv], readOnly: e.ro !== undefined })
    }
  }
  return out
}

/** A manifest's user-set pairs (read-only ones excluded), in key order: what peering ships. */
export async function userPropertiesOf (store: KV, repo: string, digest: string): Promise<Array<{ key: string; value: string }>> {
  const out: Array<{ key: string; value: string }> = []
  for await (const [k, v] of store.entries(prefixRange(key.propPrefix(repo, digest)))) {
    if (decodeEntry(v).user !== true) continue
    const [pk, pv] = pairOf(k)
    out.push({ key: pk, value: pv })
  }
  return out
}

/**
 * Manifests that have property `key` (with `value`, when given), through the inverted index,
 * in (value, repo, digest) order. A manifest with several values of the key comes once per value.
 */
export async function * manifestsWithProperty (store: KV, propKey: string, value?: string): AsyncIterable<{ repo: string; digest: Digest; value: string; readOnly: boolean }> {
  const prefix = value === undefined ? key.propIndexKeyPrefix(propKey) : key.propIndexValuePrefix(propKey, value)
  for await (const [k, v] of store.entries(prefixRange(prefix))) {
    const p = partsOf(k)
    // propidx␀key␀value␀repo␀digest: neither repo nor digest holds NUL, so the last two parts are they.
    const digest = p[p.length - 1]! as Digest
    const repo = p[p.length - 2]!
    yield { repo, digest, value: p.slice(1, p.length - 2).join(SEP), readOnly: decodeEntry(v).ro !== undefined }
  }
}

export async function checksumsOf (store: KV, digest: string): Promise<Checksums | undefined> {
  const v = await store.get(key.sum(digest))
  return v === undefined ? undefined : JSON.parse(dec.decode(v)) as Checksums
}

/** Blobs whose SHA-1 or MD5 is `hex` (lowercase; any case is accepted). */
export async function blobsByChecksum (store: KV, alg: ChecksumAlgorithm, hex: string): Promise<Digest[]> {
  const h = hex.toLowerCase()
  if (!isChecksum(alg, h)) return []
  const prefix = key.sumIndexPrefix(alg, h)
  const out: Digest[] = []
  for await (const [k] of store.entries(prefixRange(prefix))) out.push(k.slice(prefix.length) as Digest)
  return out
}

/** Blobs recorded without checksums yet (a backfill's work list), in digest order, after `after`. */
export async function * blobsWithoutChecksums (store: KV, after?: string): AsyncIterable<{ digest: Digest; size: number }> {
  const prefix = BLOB
  const range = prefixRange(prefix)
  const r = after === undefined ? range : { gt: prefix + after, lt: range.lt }
  for await (const [k, v] of store.entries(r)) {
    const digest = k.slice(prefix.length)
    if (await store.get(key.sum(digest)) !== undefined) continue
    yield { digest: digest as Digest, size: (JSON.parse(dec.decode(v)) as { size: number }).size }
  }
}
