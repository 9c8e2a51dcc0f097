/**
 * How access-control commands change the state. Called by MetadataStateMachine.exec inside
 * its transaction, so each command's effects (and its audit entry) land in one atomic batch.
 * Deterministic: everything comes from the command and the current state.
 */
import { FlotillaError } from '../../storage/errors.js'
import { key } from '../metadata/keys.js'
import type { CommandResult } from '../metadata/commands.js'
import type { AccessCommand, AuditedCommand } from './commands.js'
import { akey } from './keys.js'
import {
  ANONYMOUS, isAction, isValidName, isValidPattern, matches,
  type AuditActor, type AuditEntry, type GroupRecord, type ImmutableRule, type PermissionTarget, type TokenRecord, type UserRecord,
} from './model.js'
import { applyPromote } from './promote.js'

/** What apply needs from the state machine's transaction (reads see its own writes). */
export interface TxLike {
  get (k: string): Promise<Uint8Array | undefined>
  getJSON<T> (k: string): Promise<T | undefined>
  keys (prefix: string): Promise<string[]>
  put (k: string, v: Uint8Array): void
  putJSON (k: string, v: unknown): void
  del (k: string): void
  clear (): void
}

async function bumpVersion (tx: TxLike): Promise<void> {
  const v = await tx.getJSON<{ v: number }>(akey.version())
  tx.putJSON(akey.version(), { v: (v?.v ?? 0) + 1 })
}

function checkName (kind: string, name: string): void {
  if (!isValidName(name)) throw new FlotillaError('BAD_REQUEST', `invalid ${kind} name ${JSON.stringify(name.slice(0, 80))}: use 1-64 of [a-z0-9._-], starting with a letter or digit`)
}

async function mustUser (tx: TxLike, name: string): Promise<UserRecord> {
  const u = await tx.getJSON<UserRecord>(akey.user(name))
  if (u === undefined) throw new FlotillaError('NOT_FOUND', `user ${name} does not exist`)
  return u
}

/** Revoke `owner`'s live tokens (only those of `kind` when given). */
async function revokeTokensOf (tx: TxLike, owner: string, at: number, kind?: TokenRecord['kind']): Promise<void> {
  for (const k of await tx.keys(akey.tokenPrefix())) {
    const t = await tx.getJSON<TokenRecord>(k)
    if (t !== undefined && t.owner === owner && t.revokedAt === undefined && (kind === undefined || t.kind === kind)) tx.putJSON(k, { ...t, revokedAt: at })
  }
}

async function mustGroup (tx: TxLike, name: string): Promise<GroupRecord> {
  const g = await tx.getJSON<GroupRecord>(akey.group(name))
  if (g === undefined) throw new FlotillaError('NOT_FOUND', `group ${name} does not exist`)
  return g
}

function validateTarget (t: PermissionTarget): void {
  checkName('permission target', t.name)
  if (!Array.isArray(t.repositories) || t.repositories.length === 0) throw new FlotillaError('BAD_REQUEST', 'a permission target needs at least one repository pattern')
  for (const p of t.repositories) if (!isValidPattern(p)) throw new FlotillaError('BAD_REQUEST', `invalid repository pattern ${JSON.stringify(p)}: use lowercase names with * and **`)
  for (const [kind, map] of [['user', t.users], ['group', t.groups]] as const) {
    for (const [name, actions] of Object.entries(map)) {
      checkName(kind, name)
      if (!Array.isArray(actions) || actions.length === 0) throw new FlotillaError('BAD_REQUEST', `${kind} ${name}: give at least one action`)
      for (const a of actions) if (!isAction(a)) throw new FlotillaError('BAD_REQUEST', `${kind} ${name}: unknown action ${JSON.stringify(a)} (read, write, delete, annotate, manage)`)
      if (kind === 'user' && name === ANONYMOUS && actions.some((a) => a !== 'read')) {
        throw new FlotillaError('BAD_REQUEST', 'anonymous access can only be read-only')
      }
    }
  }
}

export async function applyAccess (tx: TxLike, c: AccessCommand): Promise<CommandResult> {
  switch (c.type) {
    case 'InitSigningKey': {
      if (await tx.get(akey.signingKey()) !== undefined) return { ok: true, value: { created: false } }
      tx.putJSON(akey.signingKey(), { key: c.key, kid: c.kid, at: c.at })
      return { ok: true, value: { created: true } }
    }
    case 'BootstrapAdmin': {
      if (await tx.get(akey.bootstrap()) !== undefined) return { ok: true, value: { created: false } }
      tx.putJSON(akey.bootstrap(), { at: c.at })
      if (await tx.get(akey.user(c.name)) === undefined) {
        const u: UserRecord = { name: c.name, passwordHash: c.passwordHash, passwordVersion: 1, admin: true, disabled: false, createdAt: c.at, updatedAt: c.at }
        tx.putJSON(akey.user(c.name), u)
      }
      await bumpVersion(tx)
      return { ok: true, value: { created: true } }
    }
    case 'CreateUser': {
      checkName('user', c.name)
      if (c.name === ANONYMOUS) throw new FlotillaError('BAD_REQUEST', `${ANONYMOUS} is reserved`)
      if (await tx.get(akey.user(c.name)) !== undefined) throw new FlotillaError('ALREADY_EXISTS', `user ${c.name} already exists`)
      const u: UserRecord = { name: c.name, passwordHash: c.passwordHash, passwordVersion: 1, admin: c.admin, disabled: false, createdAt: c.at, updatedAt: c.at }
      tx.putJSON(akey.user(c.name), u)
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'UpdateUser': {
      const u = await mustUser(tx, c.name)
      if (c.admin !== undefined) u.admin = c.admin
      if (c.disabled !== undefined) u.disabled = c.disabled
      u.updatedAt = c.at
      tx.putJSON(akey.user(c.name), u)
      // Disabling ends every session `docker login` opened; robot tokens only pause (their owner is checked at use).
      if (c.disabled === true) await revokeTokensOf(tx, c.name, c.at, 'login')
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'SetPassword': {
      const u = await mustUser(tx, c.name)
      u.passwordHash = c.passwordHash
      u.passwordVersion += 1
      u.updatedAt = c.at
      tx.putJSON(akey.user(c.name), u)
      // A new password ends every earlier login: the offline tokens `docker login` keeps are
      // revoked here, on every node alike (JWTs from a password carry its version; those from
      // an offline token name it). Robot tokens are not logins and stay valid.
      await revokeTokensOf(tx, c.name, c.at, 'login')
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'DeleteUser': {
      await mustUser(tx, c.name)
      tx.del(akey.user(c.name))
      for (const k of await tx.keys(akey.memberOfPrefix(c.name))) {
        const group = k.slice(akey.memberOfPrefix(c.name).length)
        tx.del(k)
        tx.del(akey.member(group, c.name))
      }
      // Their tokens die with them.
      await revokeTokensOf(tx, c.name, c.at)
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'CreateGroup': {
      checkName('group', c.name)
      if (await tx.get(akey.group(c.name)) !== undefined) throw new FlotillaError('ALREADY_EXISTS', `group ${c.name} already exists`)
      // Every member checked before anything is written: a typo must not leave the group behind.
      const members = [...new Set(c.members ?? [])]
      const unknown: string[] = []
      for (const m of members) if (await tx.get(akey.user(m)) === undefined) unknown.push(m)
      if (unknown.length > 0) throw new FlotillaError('NOT_FOUND', `no user named ${unknown.join(', ')}: create ${unknown.length === 1 ? 'it' : 'them'} first (flotilla user add); the group was not created`)
      tx.putJSON(akey.group(c.name), { name: c.name, createdAt: c.at } satisfies GroupRecord)
      for (const m of members) {
        tx.putJSON(akey.member(c.name, m), {})
        tx.putJSON(akey.memberOf(m, c.name), {})
      }
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'DeleteGroup': {
      await mustGroup(tx, c.name)
      tx.del(akey.group(c.name))
      for (const k of await tx.keys(akey.memberPrefix(c.name))) {
        const user = k.slice(akey.memberPrefix(c.name).length)
        tx.del(k)
        tx.del(akey.memberOf(user, c.name))
      }
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'AddMember': {
      await mustGroup(tx, c.group)
      await mustUser(tx, c.user)
      tx.putJSON(akey.member(c.group, c.user), {})
      tx.putJSON(akey.memberOf(c.user, c.group), {})
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'RemoveMember': {
      if (await tx.get(akey.member(c.group, c.user)) === undefined) throw new FlotillaError('NOT_FOUND', `user ${c.user} is not in group ${c.group}`)
      tx.del(akey.member(c.group, c.user))
      tx.del(akey.memberOf(c.user, c.group))
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'PutPermission': {
      validateTarget(c.target)
      tx.putJSON(akey.perm(c.target.name), c.target)
      await bumpVersion(tx)
      // Naming a principal that does not exist is allowed (it may be created next), but said.
      const warnings: string[] = []
      for (const u of Object.keys(c.target.users)) if (u !== ANONYMOUS && await tx.get(akey.user(u)) === undefined) warnings.push(`user ${u} does not exist (yet): the grant takes effect once it is created`)
      for (const g of Object.keys(c.target.groups)) if (await tx.get(akey.group(g)) === undefined) warnings.push(`group ${g} does not exist (yet): the grant takes effect once it is created`)
      return { ok: true, value: { warnings } }
    }
    case 'DeletePermission': {
      if (await tx.get(akey.perm(c.name)) === undefined) throw new FlotillaError('NOT_FOUND', `permission target ${c.name} does not exist`)
      tx.del(akey.perm(c.name))
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'CreateToken': {
      checkName('token', c.token.name)
      await mustUser(tx, c.token.owner)
      if (await tx.get(akey.token(c.token.id)) !== undefined) throw new FlotillaError('ALREADY_EXISTS', `token ${c.token.id} already exists`)
      for (const g of c.token.scopes) {
        for (const p of g.repositories) if (!isValidPattern(p)) throw new FlotillaError('BAD_REQUEST', `invalid repository pattern ${JSON.stringify(p)}`)
        for (const a of g.actions) if (!isAction(a)) throw new FlotillaError('BAD_REQUEST', `unknown action ${JSON.stringify(a)}`)
      }
      tx.putJSON(akey.token(c.token.id), c.token)
      return { ok: true }
    }
    case 'RevokeToken': {
      const t = await tx.getJSON<TokenRecord>(akey.token(c.id))
      if (t === undefined) throw new FlotillaError('NOT_FOUND', `token ${c.id} does not exist`)
      if (t.revokedAt === undefined) tx.putJSON(akey.token(c.id), { ...t, revokedAt: c.at })
      return { ok: true }
    }
    case 'SetImmutable': {
      if (!isValidPattern(c.pattern)) throw new FlotillaError('BAD_REQUEST', `invalid repository pattern ${JSON.stringify(c.pattern)}`)
      if (c.immutable) tx.putJSON(akey.immutable(c.pattern), { pattern: c.pattern, createdAt: c.at } satisfies ImmutableRule)
      else if (await tx.get(akey.immutable(c.pattern)) === undefined) throw new FlotillaError('NOT_FOUND', `no immutability rule for ${c.pattern}`)
      else tx.del(akey.immutable(c.pattern))
      await bumpVersion(tx)
      return { ok: true }
    }
    case 'AppendAudit': {
      await appendAudit(tx, c.actor, { action: c.action, repo: c.repo, detail: c.detail, outcome: c.outcome, code: c.code })
      return { ok: true }
    }
    case 'Promote':
      await guardPromote(tx, c)
      return await applyPromote(tx, c)
  }
}

async function appendAudit (tx: TxLike, actor: AuditActor, what: Pick<AuditEntry, 'action' | 'repo' | 'detail' | 'outcome' | 'code'>): Promise<void> {
  const s = await tx.getJSON<{ seq: number }>(akey.auditSeq())
  const seq = (s?.seq ?? 0) + 1
  tx.putJSON(akey.auditSeq(), { seq })
  const e: AuditEntry = { seq, at: actor.at, user: actor.user, address: actor.address, action: what.action, outcome: what.outcome }
  if (actor.token !== undefined) e.token = actor.token
  if (actor.requestId !== undefined) e.requestId = actor.requestId
  if (actor.method !== undefined) e.method = actor.method
  if (actor.path !== undefined) e.path = actor.path
  if (what.repo !== undefined) e.repo = what.repo
  if (what.detail !== undefined) e.detail = what.detail
  if (what.code !== undefined) e.code = what.code
  tx.putJSON(akey.audit(seq), e)
}

/** The audit view of a command: its type, its repository and what identifies it; never bodies, hashes or secrets. */
export function summarize (c: { type: string } & Record<string, unknown>): { repo?: string; detail: Record<string, unknown> } {
  const detail: Record<string, unknown> = {}
  const pick = ['digest', 'tags', 'tag', 'name', 'group', 'user', 'id', 'pattern', 'immutable', 'admin', 'disabled', 'from', 'to', 'move', 'uploadId'] as const
  for (const k of pick) if (c[k] !== undefined) detail[k] = c[k]
  if (c.type === 'PutPermission') detail.target = c.target
  if (c.type === 'CreateToken') {
    const t = c.token as TokenRecord
    detail.token = { id: t.id, kind: t.kind, name: t.name, owner: t.owner, scopes: t.scopes, expiresAt: t.expiresAt }
  }
  const repo = typeof c.repo === 'string' ? c.repo : typeof c.to === 'string' ? c.to : undefined
  return repo === undefined ? { detail } : { repo, detail }
}

/**
 * Apply `c.command` and record who asked, with the outcome, in the same batch. A refused
 * command's writes are dropped but its audit entry stays.
 */
export async function applyAudited<C extends { type: string }> (
  tx: TxLike,
  c: AuditedCommand<C>,
  exec: (inner: C) => Promise<CommandResult>,
): Promise<CommandResult> {
  let result: CommandResult
  try {
    result = await exec(c.command)
  } catch (err) {
    if (!(err instanceof FlotillaError)) throw err
    tx.clear()
    result = { ok: false, code: err.code, message: err.message }
  }
  const { repo, detail } = summarize(c.command as unknown as { type: string } & Record<string, unknown>)
  const what: Pick<AuditEntry, 'action' | 'repo' | 'detail' | 'outcome' | 'code'> = { action: c.command.type, detail, outcome: result.ok ? 'ok' : 'failed' }
  if (repo !== undefined) what.repo = repo
  if (!result.ok) what.code = result.code
  await appendAudit(tx, c.actor, what)
  return result
}

async function immutableRepo (tx: TxLike, repo: string): Promise<string | undefined> {
  const prefix = akey.immutablePrefix()
  for (const k of await tx.keys(prefix)) {
    const pattern = k.slice(prefix.length)
    if (matches(pattern, repo)) return pattern
  }
  return undefined
}

/**
 * Immutable tags: in a repository matching an immutability rule an existing tag can be
 * neither moved to another manifest nor deleted (with its manifest or alone). Checked here,
 * at apply time, so every node refuses the same commands.
 */
export async function guardImmutable (tx: TxLike, c: { type: string } & Record<string, unknown>): Promise<void> {
  if (c.type !== 'PutManifest' && c.type !== 'DeleteTag' && c.type !== 'DeleteManifest') return
  const repo = c.repo as string
  const rule = await immutableRepo(tx, repo)
  if (rule === undefined) return
  if (c.type === 'PutManifest') {
    for (const tag of c.tags as string[]) {
      const old = await tx.getJSON<{ digest: string }>(key.tag(repo, tag))
      if (old !== undefined && old.digest !== c.digest) throw new FlotillaError('TAG_IMMUTABLE', `tag ${tag} in ${repo} is immutable (rule ${rule}): push under a new tag`)
    }
  } else if (c.type === 'DeleteTag') {
    if (await tx.get(key.tag(repo, c.tag as string)) !== undefined) throw new FlotillaError('TAG_IMMUTABLE', `tag ${String(c.tag)} in ${repo} is immutable (rule ${rule}) and cannot be deleted`)
  } else {
    const tags = await tx.keys(key.tagsOfPrefix(repo, c.digest as string))
    if (tags.length > 0) throw new FlotillaError('TAG_IMMUTABLE', `manifest ${String(c.digest)} in ${repo} is tagged and the tags are immutable (rule ${rule})`)
  }
}

async function guardPromote (tx: TxLike, c: Extract<AccessCommand, { type: 'Promote' }>): Promise<void> {
  await guardImmutable(tx, { type: 'PutManifest', repo: c.to, tags: c.tags, digest: c.digest })
  if (c.move) {
    if (c.fromTag !== undefined) await guardImmutable(tx, { type: 'DeleteTag', repo: c.from, tag: c.fromTag })
    else await guardImmutable(tx, { type: 'DeleteManifest', repo: c.from, digest: c.digest })
  }
}
