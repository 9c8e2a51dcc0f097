/**
 * The admin REST API under /api/v1. JSON in and out; errors in the registry's error format.
 * Every route needs a signed-in caller (401 with the token-auth challenge otherwise); the
 * right each needs is in the table (403 DENIED, audited, when missing):
 *
 *   GET    /me                              anyone signed in
 *   GET    /users                           admin          POST /users {name, password, admin?}
 *   GET    /users/:name                     admin or self  PATCH /users/:name {admin?, disabled?}  (admin)
 *   DELETE /users/:name                     admin
 *   PUT    /users/:name/password {password} admin, or self signed in with a password
 *   GET    /groups, /groups/:name           admin          POST /groups {name, members?}
 *   DELETE /groups/:name                    admin
 *   PUT    /groups/:name/members/:user      admin          DELETE /groups/:name/members/:user  (admin)
 *   GET    /permissions, /permissions/:name admin
 *   PUT    /permissions/:name {repositories, users?, groups?}   admin     DELETE  (admin)
 *   GET    /tokens[?owner=]                 admin: all; others: their own
 *   POST   /tokens {name, scopes, expiresInSeconds?, owner?}   signed in with a password or client certificate (owner: admin only)
 *   DELETE /tokens/:id                      admin, its owner (password/certificate), or the token itself   (revoke)
 *   GET    /immutable                       anyone signed in
 *   PUT    /immutable {pattern}             admin          DELETE /immutable?pattern=P  (admin)
 *   POST   /promote {from, to, move?, properties?}  read on from, write on to (+ delete on from to move);
 *                                          properties: user properties come too (default: the node's properties.promote)
 *   GET    /properties?image=  PUT /properties  DELETE /properties?image=&property=   read / annotate (properties.ts)
 *   GET    /checksums/:digest               anyone signed in: a blob's SHA-1 and MD5 (properties.ts)
 *   GET    /audit?user=&action=&repo=&outcome=&since=&until=&before=&limit=   admin
 *   POST   /gc {dryRun?, graceSeconds?}     admin          (cluster/gc/collector.ts)
 *   GET    /hooks                           admin          PUT /hooks/:name {url, secret, events, repositories}  DELETE /hooks/:name  (admin)
 *   GET    /hooks/:name/deliveries          admin          queued deliveries and the delivery log (cluster/hooks/)
 *   GET    /quotas                          admin          PUT /quotas/:name {repositories, maxBytes}  DELETE /quotas/:name  (admin)
 *   GET    /retention                       admin          PUT /retention/:name {repositories, …}  DELETE /retention/:name  (admin)
 *   POST   /retention/run {dryRun?, policy?}  admin        (cluster/retention/)
 *   GET    /virtuals                        anyone signed in   PUT /virtuals/:name {prefix, members, defaultMember}  DELETE /virtuals/:name  (admin)
 *   GET    /search?q=&name=&tag=&prop=…&n=&cursor=   anyone signed in: matches in repositories they may read (search.ts)
 *   GET    /latest/REPO?by=semver|time&match=&prop=   read on REPO
 *   GET    /remotes                         admin          PUT /remotes/:name {prefix, upstream, …}  DELETE /remotes/:name  (admin; remotes-api.ts)
 *
 * Admin means a user with the admin flag who signed in with a password or a verified TLS client
 * certificate (src/tls/client-cert.ts): access tokens and registry JWTs never carry administrator rights.
 */
import { longRequest } from './long-request.js'
import type { Context, Next } from 'koa'
import Router from '@koa/router'
import { FlotillaError } from '../../storage/errors.js'
import { isDigest, parseReference, parseRepositoryName } from '../../storage/reference.js'
import { ANONYMOUS, isAction, isValidName, type Action, type Grant, type PermissionTarget } from '../../cluster/access/model.js'
import type { AuditFilter } from '../../cluster/access/queries.js'
import type { AuditEntry } from '../../cluster/access/model.js'
import type { Identity } from '../auth/identity.js'
import { hashPassword, MIN_PASSWORD_LENGTH } from '../auth/password.js'
import { requestActor } from '../auth/context.js'
import { readLimited } from './manifests.js'
import type { RegistryDeps } from './deps.js'
import { checkPolicy, type RetentionPolicy } from '../../cluster/retention/policy.js'
import { checkQuota, type Quota } from '../../cluster/metadata/quotas.js'
import { checkHook, type Hook } from '../../cluster/hooks/hooks.js'
import { checkVirtual, type VirtualRepo } from '../../cluster/metadata/virtual.js'
import { searchRoutes } from './search.js'
import { propertyRoutes } from './properties.js'
import { registerRemoteRoutes } from './remotes-api.js'

export const API_PREFIX = '/api/v1'

/** The outcomes an audit entry can have (AuditEntry.outcome): GET /audit?outcome= takes one of them. */
const AUDIT_OUTCOMES: readonly string[] = ['ok', 'failed', 'denied'] satisfies Array<AuditEntry['outcome']>

async function jsonBody (ctx: Context): Promise<Record<string, unknown>> {
  const raw = await readLimited(ctx.req, 1024 * 1024)
  if (raw.length === 0) return {}
  try {
    const v = JSON.parse(raw.toString('utf8')) as unknown
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object')
    return v as Record<string, unknown>
  } catch {
    throw new FlotillaError('BAD_REQUEST', 'the request body must be a JSON object')
  }
}

function str (body: Record<string, unknown>, k: string, required = true): string | undefined {
  const v = body[k]
  if (v === undefined && !required) return undefined
  if (typeof v !== 'string' || v === '') throw new FlotillaError('BAD_REQUEST', `${k} must be a non-empty string`)
  return v
}

function bool (body: Record<string, unknown>, k: string): boolean | undefined {
  const v = body[k]
  if (v === undefined) return undefined
  if (typeof v !== 'boolean') throw new FlotillaError('BAD_REQUEST', `${k} must be true or false`)
  return v
}

function checkPassword (p: string): void {
  if (p.length < MIN_PASSWORD_LENGTH) throw new FlotillaError('BAD_REQUEST', `a password needs at least ${MIN_PASSWORD_LENGTH} characters`)
  if (p.startsWith('flt_')) throw new FlotillaError('BAD_REQUEST', 'a password may not start with flt_ (that prefix marks access tokens)')
}

function actions (v: unknown, where: string): Action[] {
  if (!Array.isArray(v) || v.length === 0 || !v.every((a) => typeof a === 'string' && isAction(a))) {
    throw new FlotillaError('BAD_REQUEST', `${where}: give a list of actions among read, write, delete, annotate, manage`)
  }
  return v as Action[]
}

function grants (v: unknown): Grant[] {
  if (!Array.isArray(v) || v.length === 0) throw new FlotillaError('BAD_REQUEST', 'scopes must be a non-empty list of {repositories: [patterns], actions: [actions]}')
  return v.map((g: unknown, i) => {
    const o = g as { repositories?: unknown; actions?: unknown }
    if (!Array.isArray(o?.repositories) || o.repositories.length === 0 || !o.repositories.every((p) => typeof p === 'string')) {
      throw new FlotillaError('BAD_REQUEST', `scopes[${i}].repositories must be a non-empty list of patterns`)
    }
    return { repositories: o.repositories as string[], actions: actions(o.actions, `scopes[${i}].actions`) }
  })
}

function param (ctx: Context, k: string): string {
  const v = (ctx.params as Record<string, string | undefined>)[k]
  if (v === undefined || !isValidName(v)) throw new FlotillaError('NOT_FOUND', `no such ${k}: ${JSON.stringify((v ?? '').slice(0, 80))}`)
  return v
}

/** `repo:tag`, `repo@sha256:…` or `repo` → its parts. */
export function parseImageRef (s: string): { repo: string; tag?: string; digest?: string } {
  const at = s.indexOf('@')
  if (at >= 0) {
    const digest = s.slice(at + 1)
    if (!isDigest(digest)) throw new FlotillaError('DIGEST_INVALID', `invalid digest in ${JSON.stringify(s)}`)
    return { repo: parseRepositoryName(s.slice(0, at)), digest }
  }
  const colon = s.lastIndexOf(':')
  if (colon < 0) return { repo: parseRepositoryName(s) }
  const ref = parseReference(s.slice(colon + 1))
  return ref.kind === 'tag' ? { repo: parseRepositoryName(s.slice(0, colon)), tag: ref.tag } : { repo: parseRepositoryName(s.slice(0, colon)), digest: ref.digest }
}

export function adminRoutes (deps: RegistryDeps) {
  const auth = deps.auth
  const router = new Router({ prefix: API_PREFIX })
  const me = (ctx: Context): Identity => ctx.state.identity as Identity

  async function deny (ctx: Context, why: string): Promise<never> {
    await auth.auditRefusal(auth.actorOf(ctx, me(ctx)), 'denied', 'denied', 'DENIED', undefined, { need: why })
    throw new FlotillaError('DENIED', `requested access to the resource is denied: ${why}`)
  }
  async function requireAdmin (ctx: Context): Promise<void> {
    if (!me(ctx).admin) await deny(ctx, 'administrator rights (signed in with a password or a client certificate)')
  }
  const ok = (ctx: Context, body: unknown = { ok: true }, status = 200): void => { ctx.status = status; ctx.body = body }

  router.get('/me', async (ctx) => {
    const id = me(ctx)
    ok(ctx, { user: id.user, admin: id.subjectAdmin, via: id.via, token: id.tokenId, groups: await auth.queries.groupsOf(id.user) })
  })

  // Users
  router.get('/users', async (ctx) => { await requireAdmin(ctx); ok(ctx, { users: await auth.queries.users() }) })
  router.post('/users', async (ctx) => {
    await requireAdmin(ctx)
    const b = await jsonBody(ctx)
    const name = str(b, 'name')!
    const password = str(b, 'password')!
    checkPassword(password)
    await auth.submitAudited({ type: 'CreateUser', name, passwordHash: await hashPassword(password), admin: bool(b, 'admin') ?? false, at: auth.now() })
    ok(ctx, await auth.queries.userView(name), 201)
  })
  router.get('/users/:name', async (ctx) => {
    const name = param(ctx, 'name')
    if (!me(ctx).admin && me(ctx).user !== name) await deny(ctx, 'administrator rights')
    const u = await auth.queries.userView(name)
    if (u === undefined) throw new FlotillaError('NOT_FOUND', `user ${name} does not exist`)
    ok(ctx, u)
  })
  router.patch('/users/:name', async (ctx) => {
    await requireAdmin(ctx)
    const name = param(ctx, 'name')
    const b = await jsonBody(ctx)
    const c: { type: 'UpdateUser'; name: string; admin?: boolean; disabled?: boolean; at: number } = { type: 'UpdateUser', name, at: auth.now() }
    const admin = bool(b, 'admin')
    const disabled = bool(b, 'disabled')
    if (admin !== undefined) c.admin = admin
    if (disabled !== undefined) c.disabled = disabled
    await auth.submitAudited(c)
    ok(ctx, await auth.queries.userView(name))
  })
  router.delete('/users/:name', async (ctx) => {
    await requireAdmin(ctx)
    const name = param(ctx, 'name')
    if (name === me(ctx).user) throw new FlotillaError('BAD_REQUEST', 'you cannot delete yourself')
    await auth.submitAudited({ type: 'DeleteUser', name, at: auth.now() })
    ok(ctx)
  })
  router.put('/users/:name/password', async (ctx) => {
    const name = param(ctx, 'name')
    const id = me(ctx)
    if (!id.admin && !(id.user === name && id.via === 'password')) await deny(ctx, 'administrator rights, or your own password')
    const b = await jsonBody(ctx)
    const password = str(b, 'password')!
    checkPassword(password)
    await auth.submitAudited({ type: 'SetPassword', name, passwordHash: await hashPassword(password), at: auth.now() })
    ok(ctx)
  })

  // Groups
  router.get('/groups', async (ctx) => { await requireAdmin(ctx); ok(ctx, { groups: await auth.queries.groups() }) })
  router.post('/groups', async (ctx) => {
    await requireAdmin(ctx)
    const b = await jsonBody(ctx)
    const name = str(b, 'name')!
    const members = b.members === undefined ? [] : b.members
    if (!Array.isArray(members) || !members.every((m) => typeof m === 'string')) throw new FlotillaError('BAD_REQUEST', 'members must be a list of user names')
    // One command: the group and its members, all or nothing.
    await auth.submitAudited({ type: 'CreateGroup', name, ...(members.length > 0 ? { members: members as string[] } : {}), at: auth.now() })
    ok(ctx, await auth.queries.group(name), 201)
  })
  router.get('/groups/:name', async (ctx) => {
    await requireAdmin(ctx)
    const g = await auth.queries.group(param(ctx, 'name'))
    if (g === undefined) throw new FlotillaError('NOT_FOUND', 'no such group')
    ok(ctx, g)
  })
  router.delete('/groups/:name', async (ctx) => {
    await requireAdmin(ctx)
    await auth.submitAudited({ type: 'DeleteGroup', name: param(ctx, 'name'), at: auth.now() })
    ok(ctx)
  })
  router.put('/groups/:name/members/:user', async (ctx) => {
    await requireAdmin(ctx)
    await auth.submitAudited({ type: 'AddMember', group: param(ctx, 'name'), user: param(ctx, 'user'), at: auth.now() })
    ok(ctx, await auth.queries.group(param(ctx, 'name')))
  })
  router.delete('/groups/:name/members/:user', async (ctx) => {
    await requireAdmin(ctx)
    await auth.submitAudited({ type: 'RemoveMember', group: param(ctx, 'name'), user: param(ctx, 'user'), at: auth.now() })
    ok(ctx, await auth.queries.group(param(ctx, 'name')))
  })

  // Permission targets
  router.get('/permissions', async (ctx) => { await requireAdmin(ctx); ok(ctx, { permissions: await auth.queries.permissions() }) })
  router.get('/permissions/:name', async (ctx) => {
    await requireAdmin(ctx)
    const p = await auth.queries.permission(param(ctx, 'name'))
    if (p === undefined) throw new FlotillaError('NOT_FOUND', 'no such permission target')
    ok(ctx, p)
  })
  router.put('/permissions/:name', async (ctx) => {
    await requireAdmin(ctx)
    const name = param(ctx, 'name')
    const b = await jsonBody(ctx)
    const repositories = b.repositories
    if (!Array.isArray(repositories) || !repositories.every((r) => typeof r === 'string')) throw new FlotillaError('BAD_REQUEST', 'repositories must be a list of patterns')
    const principals = (k: 'users' | 'groups'): Record<string, Action[]> => {
      const v = b[k] ?? {}
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new FlotillaError('BAD_REQUEST', `${k} must map names to lists of actions`)
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([n, a]) => [n, actions(a, `${k}.${n}`)]))
    }
    const target: PermissionTarget = { name, repositories: repositories as string[], users: principals('users'), groups: principals('groups'), updatedAt: auth.now() }
    const r = await auth.submitAudited({ type: 'PutPermission', target }) as { warnings?: string[] } | undefined
    ok(ctx, { ...target, warnings: r?.warnings ?? [] })
  })
  router.delete('/permissions/:name', async (ctx) => {
    await requireAdmin(ctx)
    await auth.submitAudited({ type: 'DeletePermission', name: param(ctx, 'name'), at: auth.now() })
    ok(ctx)
  })

  // Access tokens
  router.get('/tokens', async (ctx) => {
    const id = me(ctx)
    const owner = typeof ctx.query.owner === 'string' ? ctx.query.owner : undefined
    ok(ctx, { tokens: await auth.queries.tokens(id.admin ? owner : id.user) })
  })
  router.post('/tokens', async (ctx) => {
    const id = me(ctx)
    if (!id.personal) await deny(ctx, 'signing in with a password or a client certificate (a token cannot mint tokens)')
    const b = await jsonBody(ctx)
    const name = str(b, 'name')!
    const owner = str(b, 'owner', false) ?? id.user
    if (owner !== id.user && !id.admin) await deny(ctx, 'administrator rights to create a token for another user')
    const scopes = grants(b.scopes)
    let expiresAt = 0
    if (b.expiresInSeconds !== undefined) {
      if (typeof b.expiresInSeconds !== 'number' || !(b.expiresInSeconds > 0)) throw new FlotillaError('BAD_REQUEST', 'expiresInSeconds must be a positive number')
      expiresAt = auth.now() + Math.round(b.expiresInSeconds * 1000)
      // 1e308 would store Infinity, which JSON turns into null: a token that never works, reported as created.
      if (!Number.isSafeInteger(expiresAt)) throw new FlotillaError('BAD_REQUEST', 'expiresInSeconds is too large: leave it out for a token that does not expire')
    }
    const t = await auth.createAccessToken(owner, 'robot', name, scopes, expiresAt)
    const { secretHash: _, ...view } = t.record
    ok(ctx, { ...view, token: t.value }, 201)
  })
  router.delete('/tokens/:id', async (ctx) => {
    const tid = (ctx.params as Record<string, string>).id ?? ''
    const t = /^[0-9a-f]{16}$/.test(tid) ? await auth.queries.token(tid) : undefined
    if (t === undefined) throw new FlotillaError('NOT_FOUND', `token ${tid.slice(0, 40)} does not exist`)
    const id = me(ctx)
    // Its owner signed in with a password (or a client certificate), or the token revoking itself; tokens cannot revoke their siblings.
    const own = id.user === t.owner && (id.personal || id.tokenId === t.id)
    if (!id.admin && !own) await deny(ctx, 'administrator rights or owning the token')
    await auth.submitAudited({ type: 'RevokeToken', id: tid, at: auth.now() })
    ok(ctx)
  })

  // Immutable tags
  router.get('/immutable', async (ctx) => { ok(ctx, { rules: await auth.queries.immutableRules() }) })
  router.put('/immutable', async (ctx) => {
    await requireAdmin(ctx)
    const b = await jsonBody(ctx)
    await auth.submitAudited({ type: 'SetImmutable', pattern: str(b, 'pattern')!, immutable: true, at: auth.now() })
    ok(ctx)
  })
  router.delete('/immutable', async (ctx) => {
    await requireAdmin(ctx)
    const pattern = typeof ctx.query.pattern === 'string' ? ctx.query.pattern : ''
    await auth.submitAudited({ type: 'SetImmutable', pattern, immutable: false, at: auth.now() })
    ok(ctx)
  })

  // Promotion
  router.post('/promote', async (ctx) => {
    const id = me(ctx)
    const b = await jsonBody(ctx)
    const from = parseImageRef(str(b, 'from')!)
    const to = parseImageRef(str(b, 'to')!)
    const move = bool(b, 'move') ?? false
    const properties = bool(b, 'properties') ?? deps.promoteProperties ?? true
    if (to.digest !== undefined) throw new FlotillaError('BAD_REQUEST', 'the target is REPO or REPO:TAG, not a digest')
    if (!id.can(from.repo, 'read')) await deny(ctx, `read on ${from.repo}`)
    if (!id.can(to.repo, 'write')) await deny(ctx, `write on ${to.repo}`)
    if (move && !id.can(from.repo, 'delete')) await deny(ctx, `delete on ${from.repo} (to move)`)
    await deps.sink.barrier()
    const digest = from.digest ?? (from.tag !== undefined ? await deps.queries.resolveTag(from.repo, from.tag) : undefined)
    if (digest === undefined) throw new FlotillaError('MANIFEST_UNKNOWN', `${from.repo}:${from.tag ?? ''} is unknown: give REPO:TAG or REPO@DIGEST`)
    const tag = to.tag ?? from.tag
    const c: Parameters<typeof auth.submitAudited>[0] = { type: 'Promote', from: from.repo, digest, to: to.repo, tags: tag === undefined ? [] : [tag], move, ...(properties ? { properties: true } : {}), at: auth.now() }
    if (from.tag !== undefined) c.fromTag = from.tag
    const value = await auth.submitAudited(c)
    ok(ctx, value)
  })

  // Search and latest versions (search.ts)
  searchRoutes(router, deps, me)
  propertyRoutes(router, deps, { me, deny, jsonBody, parseImageRef })

  // Audit log
  router.post('/gc', async (ctx) => {
    await requireAdmin(ctx)
    longRequest(ctx)
    const gc = deps.gc
    if (gc === undefined) throw new FlotillaError('UNAVAILABLE', 'garbage collection is not running on this node yet: retry')
    const b = await jsonBody(ctx)
    for (const k of Object.keys(b)) if (k !== 'dryRun' && k !== 'graceSeconds') throw new FlotillaError('BAD_REQUEST', `unknown field ${JSON.stringify(k.slice(0, 40))}: expected dryRun and graceSeconds`)
    if (b.dryRun !== undefined && typeof b.dryRun !== 'boolean') throw new FlotillaError('BAD_REQUEST', 'dryRun must be true or false')
    const g = b.graceSeconds
    if (g !== undefined && (typeof g !== 'number' || !Number.isFinite(g) || g < 0 || g > 10 * 365 * 86400)) throw new FlotillaError('BAD_REQUEST', 'graceSeconds must be a number of seconds from 0 to ten years')
    ok(ctx, await gc.collector.run({ graceMs: g === undefined ? gc.graceMs : Math.round(g * 1000), dryRun: b.dryRun === true }))
  })

  const masked = (h: Hook): Omit<Hook, 'secret'> & { secret: string } => ({ ...h, secret: '********' })
  router.get('/hooks', async (ctx) => {
    await requireAdmin(ctx)
    ok(ctx, { hooks: (await deps.queries.hooks()).map(masked) })
  })
  router.put('/hooks/:name', async (ctx) => {
    await requireAdmin(ctx)
    const hook = { ...await jsonBody(ctx), name: ctx.params.name } as unknown as Hook
    checkHook(hook)
    await auth.submitAudited({ type: 'PutHook', hook, at: deps.now() })
    ok(ctx, { hook: masked(hook) })
  })
  router.delete('/hooks/:name', async (ctx) => {
    await requireAdmin(ctx)
    await auth.submitAudited({ type: 'DeleteHook', name: ctx.params.name!, at: deps.now() })
    ok(ctx)
  })
  router.get('/hooks/:name/deliveries', async (ctx) => {
    await requireAdmin(ctx)
    await deps.sink.barrier()
    if (!(await deps.queries.hooks()).some((h) => h.name === ctx.params.name)) throw new FlotillaError('NOT_FOUND', `no webhook named ${ctx.params.name!.slice(0, 100)}`)
    ok(ctx, await deps.queries.deliveries(ctx.params.name!))
  })
  router.get('/quotas', async (ctx) => {
    await requireAdmin(ctx)
    ok(ctx, { quotas: await deps.queries.quotas() })
  })
  router.put('/quotas/:name', async (ctx) => {
    await requireAdmin(ctx)
    const quota = { ...await jsonBody(ctx), name: ctx.params.name } as unknown as Quota
    checkQuota(quota)
    const r = await auth.submitAudited({ type: 'PutQuota', quota, at: deps.now() }) as { usedBytes: number }
    ok(ctx, { ...quota, usedBytes: r.usedBytes })
  })
  router.delete('/quotas/:name', async (ctx) => {
    await requireAdmin(ctx)
    await auth.submitAudited({ type: 'DeleteQuota', name: ctx.params.name!, at: deps.now() })
    ok(ctx)
  })
  // Virtual repositories (cluster/metadata/virtual.ts): anyone signed in may see how names resolve.
  router.get('/virtuals', async (ctx) => {
    me(ctx)
    await deps.sink.barrier()
    ok(ctx, { virtuals: await deps.queries.virtuals() })
  })
  router.put('/virtuals/:name', async (ctx) => {
    await requireAdmin(ctx)
    const virtual = { ...await jsonBody(ctx), name: ctx.params.name } as unknown as VirtualRepo
    checkVirtual(virtual)
    const r = await auth.submitAudited({ type: 'PutVirtual', virtual, at: deps.now() }) as { created: boolean }
    ok(ctx, { virtual, created: r.created }, r.created ? 201 : 200)
  })
  router.delete('/virtuals/:name', async (ctx) => {
    await requireAdmin(ctx)
    await auth.submitAudited({ type: 'DeleteVirtual', name: ctx.params.name!, at: deps.now() })
    ok(ctx)
  })
  router.get('/retention', async (ctx) => {
    await requireAdmin(ctx)
    ok(ctx, { policies: await deps.queries.retentionPolicies() })
  })
  router.put('/retention/:name', async (ctx) => {
    await requireAdmin(ctx)
    const policy = { ...await jsonBody(ctx), name: ctx.params.name } as unknown as RetentionPolicy
    checkPolicy(policy)
    await auth.submitAudited({ type: 'PutRetention', policy, at: deps.now() })
    ok(ctx, { policy })
  })
  router.delete('/retention/:name', async (ctx) => {
    await requireAdmin(ctx)
    await auth.submitAudited({ type: 'DeleteRetention', name: ctx.params.name!, at: deps.now() })
    ok(ctx)
  })
  router.post('/retention/run', async (ctx) => {
    await requireAdmin(ctx)
    longRequest(ctx)
    const runner = deps.retention?.runner
    if (runner === undefined) throw new FlotillaError('UNAVAILABLE', 'retention is not running on this node yet: retry')
    const b = await jsonBody(ctx)
    for (const k of Object.keys(b)) if (k !== 'dryRun' && k !== 'policy') throw new FlotillaError('BAD_REQUEST', `unknown field ${JSON.stringify(k.slice(0, 40))}: expected dryRun and policy`)
    if (b.dryRun !== undefined && typeof b.dryRun !== 'boolean') throw new FlotillaError('BAD_REQUEST', 'dryRun must be true or false')
    const only = str(b, 'policy', false)
    ok(ctx, await runner.run({ dryRun: b.dryRun === true, ...(only !== undefined ? { only } : {}) }))
  })

  registerRemoteRoutes(router, deps, { requireAdmin, jsonBody, ok })

  router.get('/audit', async (ctx) => {
    await requireAdmin(ctx)
    const q = ctx.query
    const f: AuditFilter = {}
    const s = (k: string): string | undefined => typeof q[k] === 'string' && q[k] !== '' ? q[k] : undefined
    const n = (k: string): number | undefined => {
      const v = s(k)
      if (v === undefined) return undefined
      const num = /^\d+$/.test(v) ? Number(v) : Date.parse(v)
      if (Number.isNaN(num)) throw new FlotillaError('BAD_REQUEST', `${k} must be a number or an ISO date`)
      return num
    }
    for (const k of ['user', 'action', 'repo', 'outcome'] as const) { const v = s(k); if (v !== undefined) f[k] = v }
    if (f.outcome !== undefined && !AUDIT_OUTCOMES.includes(f.outcome)) throw new FlotillaError('BAD_REQUEST', `outcome must be one of ${AUDIT_OUTCOMES.join(', ')}, not ${JSON.stringify(f.outcome.slice(0, 40))}`)
    for (const k of ['since', 'until', 'before'] as const) { const v = n(k); if (v !== undefined) f[k] = v }
    const limit = s('limit')
    if (limit !== undefined) {
      // Not Date.parse: "-1" would pass as the year 1 BC.
      if (!/^\d{1,9}$/.test(limit) || Number(limit) < 1) throw new FlotillaError('BAD_REQUEST', 'limit must be a whole number of entries, 1 or more')
      f.limit = Number(limit)
    }
    ok(ctx, { entries: await auth.queries.audit(f) })
  })

  const routes = router.routes()
  const allowed = router.allowedMethods()
  async function adminApi (ctx: Context, next: Next): Promise<void> {
    if (ctx.path !== API_PREFIX && !ctx.path.startsWith(API_PREFIX + '/')) return await next()
    const id = await auth.identify(ctx)
    if (id.anonymous) {
      auth.challenge(ctx)
      throw new FlotillaError('UNAUTHORIZED', 'authentication required: sign in with Basic credentials or an access token')
    }
    ctx.state.identity = id
    await requestActor.run(auth.actorOf(ctx, id), async () => {
      await routes(ctx as never, async () => {
        await allowed(ctx as never, async () => {})
      })
    })
    if (ctx.status === 404 && ctx.body === undefined) throw new FlotillaError('NOT_FOUND', `no such endpoint: ${ctx.method} ${ctx.path.slice(0, 200)}`)
    // The router's 405 (its Allow header stays) in the API's error format rather than as bare text.
    if (ctx.status === 405 && ctx.body === undefined) throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed on ${ctx.path.slice(0, 200)}: use ${ctx.response.get('Allow') || 'another method'}`)
  }
  // The router too: test/http/openapi.test.ts checks its routes against the OpenAPI document (openapi.ts).
  return Object.assign(adminApi, { router })
}

export { ANONYMOUS }
