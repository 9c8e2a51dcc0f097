/**
 * Users, groups and permission targets across a peering with `--access` (issue 11: "one
 * login works at either site"). They travel on the same change feed as images, in commit
 * order, and only where the peering's rules have `access` on (model.ts, filteredBy).
 *
 *   feed (from each command's writes, like the image changes in apply.ts):
 *     acl␀user␀N written or deleted        → access user N
 *     acl␀group␀G written or deleted       → access group G
 *     acl␀member␀G␀U written or deleted    → access member G U
 *     acl␀perm␀N written or deleted        → access perm N
 *   shipped: the record as it stands when shipped (a user's argon2id hash included, never a
 *   password: there is none to ship), or null when it is gone. Robot and login tokens, the
 *   JWT signing key and the audit log stay at their site.
 *
 * A user has an origin: the site where it was created (`UserRecord.origin`; absent: here). A
 * user that exists at both sites:
 *   - the same user (same origin: created at one site and replicated, then changed at either
 *     with direction both): the later change wins (updatedAt), the hash and flags replace the
 *     local ones; a new hash bumps the local password version and ends local `docker login`
 *     sessions, as a password change there would;
 *   - two different users that happen to share a name (created at each site on its own, like
 *     each site's first `admin`): the local one is kept, untouched, and the refusal is recorded
 *     (`site status` lists it with ALREADY_EXISTS); delete or rename one of them to merge.
 *     A membership or a grant naming that user is not applied to the local one either: a
 *     permission target arrives without that user's entry (recorded), so a grant never goes
 *     to a different person.
 * Groups are names: a group of the same name at both sites is the same group (memberships
 * merge). Permission targets: the later change (updatedAt) wins. Deletes of access records
 * replicate whatever `--deletes` says (they are part of `--access`); a user is deleted here
 * only when it is the same user.
 */
import { FlotillaError } from '../../storage/errors.js'
import { akey } from '../access/keys.js'
import type { TxLike } from '../access/apply.js'
import type { AccessQueries } from '../access/queries.js'
import type { GroupRecord, PermissionTarget, TokenRecord, UserRecord } from '../access/model.js'
import { key } from '../metadata/keys.js'

const SEP = '\u0000'
const dec = new TextDecoder()

export type AccessKind = 'user' | 'group' | 'member' | 'perm'

/**
 * An access change in the feed. `userOrigin`: a deleted user's origin (its record is gone by
 * shipping time). Not `origin`: that names the site that made the change (model.ts Origin).
 */
export interface AccessFeedOp { op: 'access'; kind: AccessKind; name: string; user?: string; userOrigin?: string }

/** As shipped: the record now (null: gone). For a member, the user's origin. */
export interface ShippedAccess {
  seq: number
  at: number
  op: 'access'
  kind: AccessKind
  name: string
  user?: string
  /** A user's origin (the site that created it; a deleted user's, from the feed entry). */
  userOrigin?: string
  /** A permission target's users: where each was created (at the source), to tell same-named users apart. */
  origins?: Record<string, string>
  record: UserRecord | GroupRecord | PermissionTarget | { origin: string } | null
}

/** The access changes among a command's writes (`before`: a key's value before the command). */
export async function accessOps (writes: Array<[string, Uint8Array | null]>, before: ((k: string) => Promise<Uint8Array | undefined>) | undefined): Promise<AccessFeedOp[]> {
  const ops: AccessFeedOp[] = []
  for (const [k, v] of writes) {
    const parts = k.split(SEP)
    if (parts[0] !== 'acl') continue
    if (parts[1] === 'user' && parts.length === 3) {
      const op: AccessFeedOp = { op: 'access', kind: 'user', name: parts[2]! }
      if (v === null && before !== undefined) {
        const was = await before(k)
        const origin = was === undefined ? undefined : (JSON.parse(dec.decode(was)) as UserRecord).origin
        if (origin !== undefined) op.userOrigin = origin
      }
      ops.push(op)
    } else if (parts[1] === 'group' && parts.length === 3) ops.push({ op: 'access', kind: 'group', name: parts[2]! })
    else if (parts[1] === 'member' && parts.length === 4) ops.push({ op: 'access', kind: 'member', name: parts[2]!, user: parts[3]! })
    else if (parts[1] === 'perm' && parts.length === 3) ops.push({ op: 'access', kind: 'perm', name: parts[2]! })
  }
  return ops
}

/** The change to ship for a feed entry: the record as it is now. */
export async function shipAccess (aq: AccessQueries, site: string, e: AccessFeedOp & { seq: number; at: number }): Promise<ShippedAccess> {
  const base = { seq: e.seq, at: e.at, op: 'access' as const, kind: e.kind, name: e.name }
  switch (e.kind) {
    case 'user': {
      const u = await aq.user(e.name)
      return { ...base, userOrigin: u?.origin ?? e.userOrigin ?? site, record: u === undefined ? null : { ...u, origin: u.origin ?? site } }
    }
    case 'group': return { ...base, record: await aq.group(e.name) ?? null }
    case 'member': {
      const u = await aq.user(e.user!)
      const isMember = (await aq.group(e.name))?.members.includes(e.user!) === true
      return { ...base, user: e.user!, record: isMember && u !== undefined ? { origin: u.origin ?? site } : null }
    }
    case 'perm': {
      const t = await aq.permission(e.name)
      if (t === undefined) return { ...base, record: null }
      const origins: Record<string, string> = {}
      for (const u of Object.keys(t.users)) {
        const rec = await aq.user(u)
        if (rec !== undefined) origins[u] = rec.origin ?? site
      }
      return { ...base, origins, record: t }
    }
  }
}

async function bumpVersion (tx: TxLike): Promise<void> {
  const v = await tx.getJSON<{ v: number }>(akey.version())
  tx.putJSON(akey.version(), { v: (v?.v ?? 0) + 1 })
}

async function revokeLogins (tx: TxLike, owner: string, at: number, all = false): Promise<void> {
  for (const k of await tx.keys(akey.tokenPrefix())) {
    const t = await tx.getJSON<TokenRecord>(k)
    if (t !== undefined && t.owner === owner && t.revokedAt === undefined && (all || t.kind === 'login')) tx.putJSON(k, { ...t, revokedAt: at })
  }
}

/** Where a user here comes from: its origin, or this site. */
async function originHere (tx: TxLike, u: UserRecord): Promise<string> {
  return u.origin ?? (await tx.getJSON<{ clusterId: string }>(key.clusterInfo()))?.clusterId ?? ''
}

function conflict (name: string, here: string, there: string): FlotillaError {
  return new FlotillaError('ALREADY_EXISTS', `user ${name} exists at this site already (created at site ${here}), and the other site's is another user (created at site ${there}): the local one is kept; delete or rename one of them to share it`)
}

/**
 * Apply one shipped access change inside SiteApply's transaction. Throws what refuses it
 * (recorded, and passed over); answers a partial refusal (a grant left out) to be recorded.
 */
export async function applyAccessChange (tx: TxLike, ch: ShippedAccess, at: number): Promise<FlotillaError | undefined> {
  switch (ch.kind) {
    case 'user': {
      const local = await tx.getJSON<UserRecord>(akey.user(ch.name))
      const mine = (await tx.getJSON<{ clusterId: string }>(key.clusterInfo()))?.clusterId
      if (ch.record === null) {
        if (local === undefined) return undefined
        if (await originHere(tx, local) !== ch.userOrigin) throw conflict(ch.name, await originHere(tx, local), ch.userOrigin ?? '?')
        tx.del(akey.user(ch.name))
        for (const k of await tx.keys(akey.memberOfPrefix(ch.name))) {
          tx.del(k)
          tx.del(akey.member(k.slice(akey.memberOfPrefix(ch.name).length), ch.name))
        }
        await revokeLogins(tx, ch.name, at, true)
        await bumpVersion(tx)
        return undefined
      }
      const r = ch.record as UserRecord
      if (typeof r.passwordHash !== 'string' || typeof r.admin !== 'boolean' || typeof r.disabled !== 'boolean' || typeof r.updatedAt !== 'number') throw new FlotillaError('BAD_REQUEST', `user ${ch.name}: the shipped record is incomplete`)
      const origin = r.origin ?? ch.userOrigin ?? ''
      if (local !== undefined) {
        const here = await originHere(tx, local)
        if (here !== origin) throw conflict(ch.name, here, origin)
        // An older change than the one here (both sites changed the user): the later one stays.
        if (r.updatedAt < local.updatedAt) return undefined
      }
      const changed = local === undefined || local.passwordHash !== r.passwordHash
      const u: UserRecord = {
        name: ch.name,
        passwordHash: r.passwordHash,
        passwordVersion: local === undefined ? 1 : local.passwordVersion + (changed ? 1 : 0),
        admin: r.admin,
        disabled: r.disabled,
        createdAt: local?.createdAt ?? r.createdAt ?? at,
        updatedAt: r.updatedAt,
      }
      if (origin !== mine && origin !== '') u.origin = origin
      tx.putJSON(akey.user(ch.name), u)
      if (local !== undefined && (changed || (r.disabled && !local.disabled))) await revokeLogins(tx, ch.name, at)
      await bumpVersion(tx)
      return undefined
    }
    case 'group': {
      const local = await tx.get(akey.group(ch.name))
      if (ch.record === null) {
        if (local === undefined) return undefined
        tx.del(akey.group(ch.name))
        for (const k of await tx.keys(akey.memberPrefix(ch.name))) {
          tx.del(k)
          tx.del(akey.memberOf(k.slice(akey.memberPrefix(ch.name).length), ch.name))
        }
      } else if (local === undefined) {
        tx.putJSON(akey.group(ch.name), { name: ch.name, createdAt: (ch.record as GroupRecord).createdAt ?? at } satisfies GroupRecord)
      } else return undefined
      await bumpVersion(tx)
      return undefined
    }
    case 'member': {
      const user = ch.user!
      if (ch.record === null) {
        if (await tx.get(akey.member(ch.name, user)) === undefined) return undefined
        tx.del(akey.member(ch.name, user))
        tx.del(akey.memberOf(user, ch.name))
        await bumpVersion(tx)
        return undefined
      }
      const local = await tx.getJSON<UserRecord>(akey.user(user))
      const origin = (ch.record as { origin: string }).origin
      if (local === undefined) throw new FlotillaError('NOT_FOUND', `group ${ch.name}: user ${user} is not at this site (not replicated: see the changes before this one)`)
      const here = await originHere(tx, local)
      if (here !== origin) throw conflict(user, here, origin)
      if (await tx.get(akey.group(ch.name)) === undefined) tx.putJSON(akey.group(ch.name), { name: ch.name, createdAt: at } satisfies GroupRecord)
      tx.putJSON(akey.member(ch.name, user), {})
      tx.putJSON(akey.memberOf(user, ch.name), {})
      await bumpVersion(tx)
      return undefined
    }
    case 'perm': {
      const local = await tx.getJSON<PermissionTarget>(akey.perm(ch.name))
      if (ch.record === null) {
        if (local === undefined) return undefined
        tx.del(akey.perm(ch.name))
        await bumpVersion(tx)
        return undefined
      }
      const t = ch.record as PermissionTarget
      if (t.name !== ch.name || !Array.isArray(t.repositories) || typeof t.users !== 'object' || typeof t.groups !== 'object' || typeof t.updatedAt !== 'number') throw new FlotillaError('BAD_REQUEST', `permission target ${ch.name}: the shipped record is incomplete`)
      if (local !== undefined && local.updatedAt > t.updatedAt) return undefined
      // A grant to a user that is another person here (same name, other origin) is left out.
      const users: PermissionTarget['users'] = {}
      const left: string[] = []
      for (const [u, actions] of Object.entries(t.users)) {
        const rec = await tx.getJSON<UserRecord>(akey.user(u))
        const there = ch.origins?.[u]
        if (rec !== undefined && there !== undefined && await originHere(tx, rec) !== there) { left.push(u); continue }
        users[u] = actions
      }
      tx.putJSON(akey.perm(ch.name), { ...t, users })
      await bumpVersion(tx)
      return left.length === 0 ? undefined : new FlotillaError('ALREADY_EXISTS', `permission target ${ch.name}: left out the grant to ${left.join(', ')}, a different user at this site (same name, created here)`)
    }
  }
}
