/**
 * How peering commands change the state, and the change feed: called by
 * MetadataStateMachine inside its transaction, so a command's effects land in one batch.
 *
 * The change feed. After every command this site's clients made (not one that applies
 * another site's changes: those keep their origin, and a site ships only its own changes, so
 * a mesh has no loops), the state machine looks at the transaction's writes and appends one
 * feed entry per replicable change, numbered by this site's sequence:
 *
 *   manifest␀R␀D written   → put R D, with the tags written to it in the same command
 *   tag␀R␀T written alone  → put R D [T] (a tag moved onto a manifest that was already there)
 *   tag␀R␀T deleted alone  → untag R T
 *   manifest␀R␀D deleted   → delete R D
 *   prop␀R␀D␀…  written    → props R D  (a manifest's user properties: SetProperties,
 *                                        RemoveProperties, a promotion; not a manifest's
 *                                        own read-only ones, nor with its delete)
 *
 * Reading writes rather than commands catches every command that makes these changes
 * (PutManifest, DeleteTag, DeleteManifest, Promote) without teaching each one.
 *
 * Each entry carries its origin (this site's id) and its version (this site's hybrid logical
 * clock, ticked once per command: cluster/peering/hlc.ts), and every tag the command wrote or
 * removed records that version. A receiving site merges the version into its own clock and
 * settles each tag by it: highest version wins, deletes included (applyOne below).
 */
import { FlotillaError } from '../../storage/errors.js'
import type { TxLike } from '../access/apply.js'
import { key } from '../metadata/keys.js'
import type { Command, CommandResult, ManifestRecord } from '../metadata/commands.js'
import type { PeeringCommand } from './commands.js'
import { compareVersions, hlcKey, isVersion, MAX_CLOCK_AHEAD_MS, merge, propsWin, readClock, setPropsVersion, setTagVersion, tagVersion, tick, wins, writeClock, type Version } from './hlc.js'
import { setUserProperties } from '../metadata/properties.js'
import { accessOps, applyAccessChange } from './access-feed.js'
import { applyRules } from './rules.js'
import { isValidSiteName, membersProblem, rulesProblem, type FeedEntry, type FeedOp, type PeeringRecord, type ShippedChange, type SiteCursor, type SiteFailure } from './model.js'

const SEP = '\u0000'
/** Feed entries one SiteTrimFeed removes at most (one Raft entry, one batch). */
export const TRIM_BATCH = 10_000
/** Tombstones one SitePurgeTombstones forgets at most. */
export const PURGE_BATCH = 2_000
/** Failures kept per origin site (the oldest go first). */
const MAX_FAILURES = 1000

/** The transaction's writes, in order: key → value (null: deleted); `before`: a key's value before it. */
export interface TxWrites { writes (): Iterable<[string, Uint8Array | null]>; before?: (k: string) => Promise<Uint8Array | undefined> }

const dec = new TextDecoder()

/** The feed operations a command's writes amount to, in write order. */
export function feedOps (tx: TxWrites): FeedOp[] {
  const ops: FeedOp[] = []
  const puts = new Map<string, FeedOp & { op: 'put' }>()
  const deletedManifests = new Set<string>()
  const cached = new Set<string>()
  const writes = [...tx.writes()]
  for (const [k, v] of writes) {
    const parts = k.split(SEP)
    if (parts[0] === 'manifest' && parts.length === 3) {
      const [, repo, digest] = parts as [string, string, string]
      if (v === null) {
        deletedManifests.add(`${repo}${SEP}${digest}`)
        ops.push({ op: 'delete', repo, digest })
      } else {
        // A remote repository's cache is each site's own (every site may front the upstream).
        if ((JSON.parse(dec.decode(v)) as { cached?: boolean }).cached === true) { cached.add(`${repo}${SEP}${digest}`); continue }
        const op = { op: 'put' as const, repo, digest, tags: [] as string[] }
        puts.set(`${repo}${SEP}${digest}`, op)
        ops.push(op)
      }
    }
  }
  // Manifests whose user properties the command changed, after their puts (the receiver needs the manifest first).
  const props = new Map<string, { repo: string; digest: string }>()
  for (const [k, v] of writes) {
    const parts = k.split(SEP)
    if (parts[0] !== 'prop' || parts.length < 5) continue
    const [, repo, digest] = parts as [string, string, string]
    const id = `${repo}${SEP}${digest}`
    if (deletedManifests.has(id) || cached.has(id) || props.has(id)) continue
    // A manifest written by this command: its read-only properties are its own (they ship with
    // it); only user ones (a promotion copies them) make a change of properties.
    if (puts.has(id) && (v === null || (JSON.parse(dec.decode(v)) as { user?: boolean }).user !== true)) continue
    props.set(id, { repo, digest })
  }
  for (const [k, v] of writes) {
    const parts = k.split(SEP)
    if (parts[0] !== 'tag' || parts.length !== 3) continue
    const [, repo, tag] = parts as [string, string, string]
    if (v === null) {
      // A tag removed with its manifest is part of that delete.
      const gone = [...deletedManifests].some((m) => m.startsWith(`${repo}${SEP}`))
      if (!gone) ops.push({ op: 'untag', repo, tag })
      continue
    }
    const digest = (JSON.parse(dec.decode(v)) as { digest: string }).digest
    if (cached.has(`${repo}${SEP}${digest}`)) continue
    const put = puts.get(`${repo}${SEP}${digest}`)
    if (put !== undefined) put.tags.push(tag)
    else ops.push({ op: 'put', repo, digest, tags: [tag] })
  }
  for (const { repo, digest } of props.values()) ops.push({ op: 'props', repo, digest })
  return ops
}

/**
 * Append the command's replicable changes to this site's feed (time: the command's), each
 * with this site as its origin and the version of the command (the clock ticked once,
 * cluster/peering/hlc.ts); every tag the command wrote or removed takes that version.
 */
export async function appendFeed (tx: TxLike & TxWrites, at: number): Promise<void> {
  // Users, groups, memberships and permission targets too (access-feed.ts), shipped where --access is on.
  const ops = [...feedOps(tx), ...await accessOps([...tx.writes()], tx.before?.bind(tx))]
  if (ops.length === 0) return
  // This site's id; none only before the cluster is founded (then the receiver takes the peering's).
  const origin = (await tx.getJSON<{ clusterId: string }>(key.clusterInfo()))?.clusterId
  const clock = tick(await readClock(tx), at)
  writeClock(tx, clock)
  const v: Version = { l: clock.l, c: clock.c, s: origin ?? '' }
  for (const [k, val] of [...tx.writes()]) {
    const parts = k.split(SEP)
    if (parts[0] === 'tag' && parts.length === 3) setTagVersion(tx, parts[1]!, parts[2]!, v, val === null)
  }
  for (const op of ops) if (op.op === 'props') setPropsVersion(tx, op.repo, op.digest, v)
  let seq = (await tx.getJSON<{ seq: number }>(key.siteSeq()))?.seq ?? 0
  for (const op of ops) {
    seq++
    const e: FeedEntry = { ...op, seq, at, ...(origin !== undefined ? { origin, v } : {}) }
    tx.putJSON(key.feed(seq), e)
  }
  tx.putJSON(key.siteSeq(), { seq })
}

/** Runs a plain metadata command inside the same transaction (the state machine's exec). */
export type Exec = (c: Command) => Promise<CommandResult>

export async function applyPeering (tx: TxLike, c: PeeringCommand, exec: Exec): Promise<CommandResult> {
  switch (c.type) {
    case 'PutSitePeering': {
      const p = c.peering
      checkPeering(p)
      if (await tx.get(key.sitePeer(p.name)) !== undefined) throw new FlotillaError('ALREADY_EXISTS', `a peering named ${p.name} exists already: remove it first (flotilla site remove ${p.name}) or choose another --name`)
      for (const k of await tx.keys(key.sitePeerPrefix())) {
        const other = await tx.getJSON<PeeringRecord>(k)
        if (other?.site === p.site) throw new FlotillaError('ALREADY_EXISTS', `site ${p.site} is peered already, as ${other.name}: remove that peering first`)
      }
      tx.putJSON(key.sitePeer(p.name), p)
      return { ok: true, value: p }
    }
    case 'RemoveSitePeering': {
      if (await tx.get(key.sitePeer(c.name)) === undefined) throw new FlotillaError('NOT_FOUND', `no peering named ${c.name}: see flotilla site list`)
      // The cursor stays: peering the same site again resumes where it stopped, without duplicates.
      tx.del(key.sitePeer(c.name))
      return { ok: true }
    }
    case 'SetSiteMembers': {
      const p = await tx.getJSON<PeeringRecord>(key.sitePeer(c.name))
      if (p === undefined) throw new FlotillaError('NOT_FOUND', `no peering named ${c.name}`)
      const why = membersProblem(c.members)
      if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why)
      tx.putJSON(key.sitePeer(c.name), { ...p, members: c.members, updatedAt: c.at })
      return { ok: true }
    }
    case 'SiteApply':
      return await applyChanges(tx, c, exec)
    case 'SiteRepair':
      return await applyRepair(tx, c, exec)
    case 'SiteTrimFeed': {
      if (!Number.isSafeInteger(c.through) || c.through < 0) throw new FlotillaError('BAD_REQUEST', 'SiteTrimFeed needs a sequence number')
      const head = (await tx.getJSON<{ seq: number }>(key.siteSeq()))?.seq ?? 0
      const from = (await tx.getJSON<{ seq: number }>(key.siteTrim()))?.seq ?? 0
      const through = Math.min(c.through, head, from + TRIM_BATCH)
      if (through <= from) return { ok: true, value: { trimmed: from } }
      for (let seq = from + 1; seq <= through; seq++) tx.del(key.feed(seq))
      tx.putJSON(key.siteTrim(), { seq: through, at: c.at })
      return { ok: true, value: { trimmed: through } }
    }
    case 'SitePurgeTombstones': {
      if (!Array.isArray(c.tags) || c.tags.length > PURGE_BATCH) throw new FlotillaError('BAD_REQUEST', `SitePurgeTombstones takes at most ${PURGE_BATCH} tags`)
      let purged = 0
      for (const t of c.tags) {
        if (typeof t?.repo !== 'string' || typeof t.tag !== 'string' || !isVersion(t.v)) throw new FlotillaError('BAD_REQUEST', 'SitePurgeTombstones needs {repo, tag, v} for each tag')
        const cur = await tagVersion(tx, t.repo, t.tag)
        if (cur?.deleted !== true || compareVersions(cur, t.v) !== 0) continue
        if (await tx.get(key.tag(t.repo, t.tag)) !== undefined) continue
        tx.del(hlcKey.tag(t.repo, t.tag))
        purged++
      }
      return { ok: true, value: { purged } }
    }
    case 'SiteAcked': {
      if (typeof c.site !== 'string' || !Number.isSafeInteger(c.seq) || c.seq < 0) throw new FlotillaError('BAD_REQUEST', 'SiteAcked needs a site and a sequence number')
      const cur = await tx.getJSON<{ seq: number }>(key.siteAck(c.site))
      if (cur !== undefined && cur.seq >= c.seq) return { ok: true, value: { seq: cur.seq } }
      tx.putJSON(key.siteAck(c.site), { seq: c.seq, at: c.at })
      return { ok: true, value: { seq: c.seq } }
    }
    case 'SetSiteRules':
    case 'SiteRulesSynced':
      return await applyRules(tx, c)
  }
}

function checkPeering (p: PeeringRecord): void {
  if (typeof p !== 'object' || p === null) throw new FlotillaError('BAD_REQUEST', 'a peering record is needed')
  if (!isValidSiteName(p.name)) throw new FlotillaError('BAD_REQUEST', `invalid peering name ${JSON.stringify(String(p.name).slice(0, 80))}: use 1-64 of [a-z0-9._-], starting with a letter or digit`)
  if (typeof p.site !== 'string' || !/^[0-9a-f]{16}$/.test(p.site)) throw new FlotillaError('BAD_REQUEST', 'the remote site id must be 16 hex digits')
  const why = rulesProblem(p.rules) ?? membersProblem(p.members)
  if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why)
}

async function applyChanges (tx: TxLike, c: Extract<PeeringCommand, { type: 'SiteApply' }>, exec: Exec): Promise<CommandResult> {
  const p = await tx.getJSON<PeeringRecord>(key.sitePeer(c.name))
  if (p === undefined) throw new FlotillaError('NOT_FOUND', `no peering named ${c.name}: it was removed`)
  if (p.site !== c.origin) throw new FlotillaError('BAD_REQUEST', `peering ${c.name} is with site ${p.site}, not ${c.origin}`)
  const cur = await tx.getJSON<SiteCursor>(key.siteCursor(c.origin)) ?? { seq: 0, originAt: 0, at: 0, applied: 0 }
  if (c.through <= cur.seq) return { ok: true, value: { applied: 0, failed: 0, superseded: 0, foreign: 0, cursor: cur.seq } }
  const self = (await tx.getJSON<{ clusterId: string }>(key.clusterInfo()))?.clusterId
  let clock = await readClock(tx)
  let applied = 0
  let failed = 0
  let superseded = 0
  let foreign = 0
  let originAt = cur.originAt
  for (const ch of c.changes) {
    // Applied already (a resend after the shipper died before it saw the commit): skip.
    if (ch.seq <= cur.seq || ch.seq > c.through) continue
    // Events carry their origin. A peering carries its site's own changes only: a change made
    // here, or at a third site (forwarded), is passed over, so that no mesh loops or doubles.
    const origin = ch.origin ?? c.origin
    if (origin !== c.origin || origin === self) { foreign++; continue }
    const v: unknown = ch.v ?? { l: ch.at, c: 0, s: origin }
    if (!isVersion(v) || v.s !== origin) {
      failed++
      await recordFailure(tx, c.origin, ch, new FlotillaError('BAD_REQUEST', `the change carries no valid version of site ${origin}`), c.at)
      continue
    }
    if (v.l > c.at + MAX_CLOCK_AHEAD_MS) {
      throw new FlotillaError('BAD_REQUEST', `change ${ch.seq} of site ${origin} is dated ${new Date(v.l).toISOString()}, ${Math.round((v.l - c.at) / 60_000)} min ahead of this site's clock: sync the sites' clocks (NTP); federated tags order changes by time, so these changes wait until then`)
    }
    clock = merge(clock, v, c.at)
    try {
      if (ch.op === 'access') {
        // Access changes only while this site's record of the rules has access on (a change of the rules may cross a batch).
        const partly = p.rules.access ? await applyAccessChange(tx, ch, c.at) : undefined
        applied++
        originAt = Math.max(originAt, ch.at)
        if (partly !== undefined) await recordFailure(tx, c.origin, ch, partly, c.at)
        continue
      }
      const r = await applyOne(tx, ch, exec, p, v)
      if (ch.op === 'put' && r.partly === undefined) await landed(tx, c.origin, ch, c.at)
      applied++
      if (r.superseded) superseded++
      originAt = Math.max(originAt, ch.at)
      if (r.partly !== undefined) await recordFailure(tx, c.origin, ch, r.partly, c.at)
    } catch (err) {
      if (!(err instanceof FlotillaError)) throw err
      failed++
      await recordFailure(tx, c.origin, ch, err, c.at)
    }
  }
  writeClock(tx, clock)
  const next: SiteCursor = { seq: c.through, originAt: Math.max(originAt, c.originAt), at: c.at, applied: cur.applied + applied }
  tx.putJSON(key.siteCursor(c.origin), next)
  return { ok: true, value: { applied, failed, superseded, foreign, cursor: c.through } }
}

/**
 * Reconciliation's repairs (cluster/peering/summary.ts): manifests first (by digest, no tags:
 * the same checks as a shipped put, so a manifest whose blobs are not held here is refused),
 * then tag moves and deletes, each settled by its version like a shipped change (highest
 * version wins, deletes included). A repair that fails is counted and the rest goes on.
 */
async function applyRepair (tx: TxLike, c: Extract<PeeringCommand, { type: 'SiteRepair' }>, exec: Exec): Promise<CommandResult> {
  const p = await tx.getJSON<PeeringRecord>(key.sitePeer(c.name))
  if (p === undefined) throw new FlotillaError('NOT_FOUND', `no peering named ${c.name}: it was removed`)
  if (p.site !== c.origin) throw new FlotillaError('BAD_REQUEST', `peering ${c.name} is with site ${p.site}, not ${c.origin}`)
  if (!Array.isArray(c.manifests) || !Array.isArray(c.tags) || !Array.isArray(c.untags)) throw new FlotillaError('BAD_REQUEST', 'SiteRepair needs manifests, tags and untags')
  let clock = await readClock(tx)
  const out = { manifests: 0, tags: 0, untags: 0, superseded: 0, failed: 0, errors: [] as string[] }
  const fail = (what: string, err: unknown): void => {
    if (!(err instanceof FlotillaError)) throw err
    out.failed++
    if (out.errors.length < 5) out.errors.push(`${what}: ${err.message}`)
  }
  const versionOk = (v: unknown): v is Version => {
    if (!isVersion(v) || v.s !== c.origin) throw new FlotillaError('BAD_REQUEST', `a repair carries no valid version of site ${c.origin}`)
    if (v.l > c.at + MAX_CLOCK_AHEAD_MS) throw new FlotillaError('BAD_REQUEST', `a repair of site ${c.origin} is dated ${new Date(v.l).toISOString()}, ahead of this site's clock: sync the sites' clocks (NTP)`)
    return true
  }
  for (const m of c.manifests) {
    try {
      await applyOne(tx, { ...m, tags: [] }, exec, p, { l: 0, c: 0, s: c.origin })
      out.manifests++
    } catch (err) { fail(`${m.repo}@${m.digest}`, err) }
  }
  for (const t of c.tags) {
    try {
      versionOk(t.v)
      clock = merge(clock, t.v, c.at)
      if (!(await wins(tx, t.repo, t.tag, t.v))) { out.superseded++; continue }
      const rec = await tx.getJSON<ManifestRecord>(key.manifest(t.repo, t.digest))
      const body = await tx.get(key.body(t.repo, t.digest))
      if (rec === undefined || body === undefined) throw new FlotillaError('MANIFEST_UNKNOWN', `manifest ${t.digest} is not in ${t.repo} here`)
      const put: Extract<Command, { type: 'PutManifest' }> = { type: 'PutManifest', repo: t.repo, digest: t.digest, body: Buffer.from(body).toString('base64'), mediaType: rec.mediaType, tags: [t.tag], blobs: rec.blobs, manifests: rec.manifests, at: c.at }
      if (rec.subject !== undefined) put.subject = rec.subject
      if (rec.artifactType !== undefined) put.artifactType = rec.artifactType
      if (rec.annotations !== undefined) put.annotations = rec.annotations
      const r = await exec(put)
      if (!r.ok) throw new FlotillaError(r.code, r.message)
      setTagVersion(tx, t.repo, t.tag, t.v)
      out.tags++
    } catch (err) { fail(`${t.repo}:${t.tag}`, err) }
  }
  for (const u of c.untags) {
    try {
      versionOk(u.v)
      clock = merge(clock, u.v, c.at)
      if (!p.rules.deletes) continue
      const r = await applyOne(tx, { seq: 0, at: c.at, op: 'untag', repo: u.repo, tag: u.tag }, exec, p, u.v)
      if (r.superseded) out.superseded++; else out.untags++
    } catch (err) { fail(`${u.repo}:${u.tag}`, err) }
  }
  writeClock(tx, clock)
  return { ok: true, value: out }
}

/** What applying one change did: the part refused here (to record), and whether a newer version here beat it. */
interface Outcome { partly?: FlotillaError; superseded: boolean }

/**
 * One change. Every check that can refuse it runs before its first write (the blobs held
 * here, the child manifests, immutable tags in PutManifest), so a refused change writes
 * nothing and the rest of the batch goes on.
 *
 * Federated tags (cluster/peering/hlc.ts): highest version wins, deletes included. A put
 * always stores its manifest by digest, but moves only the tags whose version here is older
 * than the change's; an untag removes the tag only if its version here is older, and leaves
 * its own version as a tombstone; a manifest delete removes the tags older than it, and the
 * manifest too unless a newer tag still points at it. A manifest's user properties are settled
 * as one whole by their own version (propver): the newer set replaces the one here; a manifest
 * not here (filtered out, or not arrived) passes them over.
 */
async function applyOne (tx: TxLike, ch: Exclude<ShippedChange, { op: 'access' }>, exec: Exec, p: PeeringRecord, v: Version): Promise<Outcome> {
  switch (ch.op) {
    case 'put': {
      for (const d of ch.blobs) {
        // The shipper made the blob durable here before it proposed this command (holders recorded).
        if ((await tx.keys(key.holderPrefix(d))).length === 0) throw new FlotillaError('MANIFEST_BLOB_UNKNOWN', `blob ${d} is not held by any member of this site yet`, { digest: d })
      }
      for (const d of ch.manifests) {
        if (await tx.get(key.manifest(ch.repo, d)) === undefined) throw new FlotillaError('MANIFEST_BLOB_UNKNOWN', `index references manifest ${d}, which this site does not have in ${ch.repo}`, { digest: d })
      }
      const tags: string[] = []
      for (const t of ch.tags) if (await wins(tx, ch.repo, t, v)) tags.push(t)
      const superseded = tags.length < ch.tags.length
      for (const d of ch.blobs) {
        const size = (await tx.getJSON<{ size: number }>(key.blob(d)))?.size ?? ch.sizes[d] ?? 0
        const r = await exec({ type: 'LinkBlob', repo: ch.repo, digest: d, size, at: ch.at })
        if (!r.ok) throw new FlotillaError(r.code, r.message)
      }
      const put: Extract<Command, { type: 'PutManifest' }> = { type: 'PutManifest', repo: ch.repo, digest: ch.digest, body: ch.body, mediaType: ch.mediaType, tags, blobs: ch.blobs, manifests: ch.manifests, at: ch.at }
      if (ch.subject !== undefined) put.subject = ch.subject
      if (ch.artifactType !== undefined) put.artifactType = ch.artifactType
      if (ch.annotations !== undefined) put.annotations = ch.annotations
      try {
        const r = await exec(put)
        if (!r.ok) throw new FlotillaError(r.code, r.message)
      } catch (err) {
        // A tag this site keeps immutable: the manifest still comes, by digest, without the tags
        // (every manifest acknowledged at the source reaches the peer); the refusal is recorded.
        if (!(err instanceof FlotillaError) || err.code !== 'TAG_IMMUTABLE' || tags.length === 0) throw err
        const r = await exec({ ...put, tags: [] })
        if (!r.ok) throw new FlotillaError(r.code, r.message)
        return { partly: err, superseded }
      }
      for (const t of tags) setTagVersion(tx, ch.repo, t, v)
      return { superseded }
    }
    case 'untag': {
      if (!p.rules.deletes) return { superseded: false }
      // The tag was written here since (or deleted later): the newer write stands.
      if (!(await wins(tx, ch.repo, ch.tag, v))) return { superseded: true }
      if (await tx.get(key.tag(ch.repo, ch.tag)) !== undefined) {
        const r = await exec({ type: 'DeleteTag', repo: ch.repo, tag: ch.tag })
        if (!r.ok) throw new FlotillaError(r.code, r.message)
      }
      // Gone already (or never here) or removed now: the delete's version stays as a tombstone.
      setTagVersion(tx, ch.repo, ch.tag, v, true)
      return { superseded: false }
    }
    case 'delete': {
      if (!p.rules.deletes) return { superseded: false }
      if (await tx.get(key.manifest(ch.repo, ch.digest)) === undefined) return { superseded: false }
      const prefix = key.tagsOfPrefix(ch.repo, ch.digest)
      const older: string[] = []
      const newer: string[] = []
      for (const k of await tx.keys(prefix)) {
        const t = k.slice(prefix.length)
        if (await wins(tx, ch.repo, t, v)) older.push(t); else newer.push(t)
      }
      if (newer.length > 0) {
        // A tag moved onto the manifest here after the delete was made keeps it.
        for (const t of older) {
          const r = await exec({ type: 'DeleteTag', repo: ch.repo, tag: t })
          if (!r.ok) throw new FlotillaError(r.code, r.message)
          setTagVersion(tx, ch.repo, t, v, true)
        }
        return { superseded: true }
      }
      const r = await exec({ type: 'DeleteManifest', repo: ch.repo, digest: ch.digest })
      if (!r.ok) throw new FlotillaError(r.code, r.message)
      for (const t of older) setTagVersion(tx, ch.repo, t, v, true)
      return { superseded: false }
    }
    case 'props': {
      if (await tx.get(key.manifest(ch.repo, ch.digest)) === undefined) return { superseded: false }
      // Changed here (or by a later change from elsewhere) since: the newer set stands.
      if (!(await propsWin(tx, ch.repo, ch.digest, v))) return { superseded: true }
      if (!Array.isArray(ch.props)) throw new FlotillaError('BAD_REQUEST', 'the properties change carries no list of properties')
      await setUserProperties(tx, ch.repo, ch.digest, ch.props)
      setPropsVersion(tx, ch.repo, ch.digest, v)
      return { superseded: false }
    }
  }
}

async function recordFailure (tx: TxLike, origin: string, ch: ShippedChange, err: FlotillaError, at: number): Promise<void> {
  const rec: SiteFailure = { seq: ch.seq, op: ch.op, repo: ch.op === 'access' ? '' : ch.repo, ref: ch.op === 'untag' ? ch.tag : ch.op === 'access' ? `${ch.kind} ${ch.name}${ch.user !== undefined ? ' ' + ch.user : ''}` : ch.digest, code: err.code, message: err.message, at }
  tx.putJSON(key.siteFailure(origin, ch.seq), rec)
  const all = await tx.keys(key.siteFailurePrefix(origin))
  for (const k of all.slice(0, Math.max(0, all.length - MAX_FAILURES))) tx.del(k)
}

/** When a tagged manifest from `origin` landed here, per tag (`site explain`: replicated, and when). */
async function landed (tx: TxLike, origin: string, ch: Extract<ShippedChange, { op: 'put' }>, at: number): Promise<void> {
  for (const tag of ch.tags) {
    // A tag a newer version here kept elsewhere did not land (federated tags: hlc.ts).
    if ((await tx.getJSON<{ digest: string }>(key.tag(ch.repo, tag)))?.digest !== ch.digest) continue
    tx.putJSON(key.siteLanded(origin, ch.repo, tag), { digest: ch.digest, seq: ch.seq, originAt: ch.at, at })
  }
}
