/**
 * Authentication: who is calling. Reads the Authorization header (Basic with a password or an
 * access token, Bearer with an access token or a registry JWT), checks it against the
 * replicated access state, and answers an Identity; bad credentials are a 401 with the
 * Docker token-auth challenge, and too many of them a 429.
 *
 * It also bootstraps a fresh registry: the cluster's JWT signing key and the first admin.
 */
import { createHash, randomBytes } from 'node:crypto'
import { chmod, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Context } from 'koa'
import type { Logger } from 'pino'
import { FlotillaError } from '../../storage/errors.js'
import type { CommandSink } from '../../cluster/metadata/applier.js'
import type { Command } from '../../cluster/metadata/commands.js'
import type { AccessQueries } from '../../cluster/access/queries.js'
import { ANONYMOUS, grantsAllow, type Action, type Grant, type TokenRecord, type UserRecord } from '../../cluster/access/model.js'
import { hashPassword, verifyPassword } from './password.js'
import { Identity, jwtAllows, type JwtAccess } from './identity.js'
import { LoginLimiter } from './rate-limit.js'
import { looksLikeAccessToken, newAccessToken, parseAccessToken, secretMatches, signRegistryToken, verifyRegistryToken } from './tokens.js'
import { requestActor, type RequestActor } from './context.js'

export interface AuthSettings {
  /** `service` in challenges and the JWT audience. */
  service: string
  /** JWT issuer. */
  issuer: string
  /** Token endpoint URL in challenges; empty: derived from the request (http(s)://HOST/token). */
  realm: string
  tokenTtlSeconds: number
  offlineTokenTtlHours: number
  /** Node-local anonymous grants (config `auth.anonymous`), added to those stored for `anonymous`. */
  anonymous: Grant[]
  basicCacheSeconds: number
  rateLimit: { maxFailuresPerUser: number; maxFailuresPerAddress: number; windowSeconds: number }
  initialAdminPassword: string
}

export interface AuthServiceDeps {
  settings: AuthSettings
  queries: AccessQueries
  sink: CommandSink
  log: Logger
  now: () => number
  /**
   * The user a verified TLS client certificate names, if the node maps certificates to users
   * (tls.clientCertUser, src/tls/client-cert.ts); undefined when it does not.
   */
  certificateUser?: ((req: Context['req']) => string | undefined) | undefined
}

export const ADMIN_USER = 'admin'

function unauthorized (message: string): FlotillaError {
  return new FlotillaError('UNAUTHORIZED', message)
}

export class AuthService {
  readonly settings: AuthSettings
  readonly queries: AccessQueries
  private readonly sink: CommandSink
  private readonly log: Logger
  readonly now: () => number
  readonly limiter: LoginLimiter
  /** sha256(name␀password) → the password version it was checked against, and until when. */
  private readonly basicCache = new Map<string, { name: string; pv: number; until: number }>()
  private dummyHash: Promise<string> | undefined
  private readonly certificateUser: AuthServiceDeps['certificateUser']

  constructor (d: AuthServiceDeps) {
    this.certificateUser = d.certificateUser
    this.settings = d.settings
    this.queries = d.queries
    this.sink = d.sink
    this.log = d.log
    this.now = d.now
    this.limiter = new LoginLimiter({ perUser: d.settings.rateLimit.maxFailuresPerUser, perAddress: d.settings.rateLimit.maxFailuresPerAddress, windowMs: d.settings.rateLimit.windowSeconds * 1000 }, d.now)
  }

  /**
   * First start: create the cluster signing key and the `admin` user. The admin's password is
   * auth.initialAdminPassword when set, else random: printed once to the log and written to
   * DATA/initial-admin-password (mode 0600). Both commands are no-ops once applied anywhere.
   */
  async bootstrap (dataDir: string): Promise<void> {
    if (await this.queries.signingKey() === undefined) {
      await this.submitOrThrow({ type: 'InitSigningKey', key: randomBytes(32).toString('base64'), kid: randomBytes(6).toString('hex'), at: this.now() })
    }
    if (await this.queries.bootstrapped()) return
    const given = this.settings.initialAdminPassword
    const password = given !== '' ? given : randomBytes(18).toString('base64url')
    const r = await this.submitOrThrow({ type: 'BootstrapAdmin', name: ADMIN_USER, passwordHash: await hashPassword(password), at: this.now() })
    if ((r as { created?: boolean } | undefined)?.created !== true) return
    if (given !== '') {
      this.log.info({ user: ADMIN_USER }, 'created the admin user with auth.initialAdminPassword')
      return
    }
    const file = join(dataDir, 'initial-admin-password')
    await writeFile(file, password + '\n', { mode: 0o600 })
    await chmod(file, 0o600)
    this.log.warn({ user: ADMIN_USER, password, file }, 'created the admin user with this random password (shown once; also in the file named here). Change it: flotilla password')
  }

  private async submitOrThrow (c: Command): Promise<unknown> {
    const r = await this.sink.submit(c)
    if (!r.ok) throw new FlotillaError(r.code, r.message)
    return r.value
  }

  /** Submit a command as the current request's actor, so it lands in the audit log. */
  async submitAudited (c: Command): Promise<unknown> {
    const actor = requestActor.getStore()
    return await this.submitOrThrow(actor === undefined ? c : { type: 'Audited', actor: { ...actor, at: this.now() }, command: c })
  }

  /** Record a refusal (denied request, failed login). Best effort: a failure is logged, not thrown. */
  async auditRefusal (actor: RequestActor, action: string, outcome: 'denied' | 'failed', code: string, repo?: string, detail?: Record<string, unknown>): Promise<void> {
    const c: Command = { type: 'AppendAudit', actor: { ...actor, at: this.now() }, action, outcome, code }
    if (repo !== undefined) c.repo = repo
    if (detail !== undefined) c.detail = detail
    try {
      const r = await this.sink.submit(c)
      if (!r.ok) this.log.warn({ code: r.code }, 'audit entry refused')
    } catch (err) {
      this.log.error({ err }, 'audit entry failed')
    }
  }

  actorOf (ctx: Context, id?: Identity): RequestActor {
    const a: RequestActor = { user: id?.user ?? ANONYMOUS, address: ctx.ip, method: ctx.method, path: ctx.path.slice(0, 512) }
    if (id?.tokenId !== undefined) a.token = id.tokenId
    if (typeof ctx.state.requestId === 'string') a.requestId = ctx.state.requestId
    return a
  }

  realm (ctx: Context): string {
    return this.settings.realm !== '' ? this.settings.realm : `${ctx.protocol}://${ctx.host}/token`
  }

  /** Set the Docker token-auth challenge on a 401. */
  challenge (ctx: Context, scope?: string, error?: string): void {
    // The realm comes from the Host header by default: quote it (RFC 9110 §5.6.4), a '"' in it must not end the parameter.
    let h = `Bearer realm=${quoted(this.realm(ctx))},service=${quoted(this.settings.service)}`
    if (scope !== undefined) h += `,scope=${quoted(scope)}`
    if (error !== undefined) h += `,error=${quoted(error)}`
    ctx.set('WWW-Authenticate', h)
  }

  async anonymousGrants (): Promise<Grant[]> {
    return [...this.settings.anonymous, ...await this.queries.anonymousGrants()]
  }

  /** Anonymous callers get anywhere at all (GET /v2/ answers 200 rather than a challenge). */
  async anonymousEnabled (): Promise<boolean> {
    return (await this.anonymousGrants()).length > 0
  }

  /** The identity of a signed-in user, with their live grants (plus anonymous ones). */
  async identityOf (u: UserRecord, via: 'password' | 'token' | 'jwt' | 'certificate', limit?: (repo: string, a: Action) => boolean, tokenId?: string, baseLimit?: (repo: string, a: Action) => boolean): Promise<Identity> {
    const grants = [...await this.queries.grantsFor(u.name, await this.queries.groupsOf(u.name)), ...await this.anonymousGrants()]
    return new Identity(u.name, via, u.admin, grants, limit, tokenId, baseLimit)
  }

  /**
   * Who sent this request. No credentials: anonymous. Bad credentials: throws 401 (after the
   * challenge is set, with `scope` when the route needs one) or 429 when rate-limited.
   * `local: true` skips the quorum round and judges by this node's state as applied: only
   * for the test-only fault-injection hook, which must answer on a node cut off from the others.
   */
  async identify (ctx: Context, scope?: string, opts: { local?: boolean } = {}): Promise<Identity> {
    const header = ctx.get('authorization')
    if (header === '') {
      // No credentials in the request: a verified client certificate may name the user (mTLS).
      const named = this.certificateUser?.(ctx.req)
      if (named !== undefined) return await this.certificateIdentity(ctx, named, scope, opts)
      return Identity.anonymous(await this.anonymousGrants())
    }
    // See every access change committed before this request (a revocation on another node
    // included): in a cluster this is a ReadIndex round, as the registry's own reads do.
    if (opts.local !== true) await this.sink.barrier()
    try {
      const sp = header.indexOf(' ')
      const scheme = (sp < 0 ? header : header.slice(0, sp)).toLowerCase()
      const value = sp < 0 ? '' : header.slice(sp + 1).trim()
      if (scheme === 'basic') {
        const decoded = Buffer.from(value, 'base64').toString('utf8')
        const colon = decoded.indexOf(':')
        if (colon < 0) throw unauthorized('malformed Basic credentials')
        const name = decoded.slice(0, colon)
        const password = decoded.slice(colon + 1)
        if (looksLikeAccessToken(password)) return await this.tokenIdentity(ctx, password)
        return await this.identityOf(await this.checkPassword(ctx, name, password), 'password')
      }
      if (scheme === 'bearer') {
        if (looksLikeAccessToken(value)) return await this.tokenIdentity(ctx, value)
        return await this.jwtIdentity(value)
      }
      throw unauthorized(`unsupported authorization scheme ${JSON.stringify(scheme.slice(0, 20))}: use Basic or Bearer`)
    } catch (err) {
      if (err instanceof FlotillaError && err.code === 'UNAUTHORIZED') {
        this.challenge(ctx, scope, header.toLowerCase().startsWith('bearer') ? 'invalid_token' : undefined)
      }
      throw err
    }
  }

  /**
   * See every access change committed before now (a ReadIndex round in a cluster): before
   * judging credentials that did not come through identify(), such as the token endpoint's
   * form grants. Otherwise a node that has not applied a password change yet still honours
   * the old login.
   */
  async fresh (): Promise<void> {
    await this.sink.barrier()
  }

  /**
   * The user a verified client certificate names (its subject CN): they must exist and be
   * enabled, judged like a password login, against every committed change; else 401.
   */
  private async certificateIdentity (ctx: Context, name: string, scope: string | undefined, opts: { local?: boolean }): Promise<Identity> {
    if (opts.local !== true) await this.sink.barrier()
    const user = await this.queries.user(name)
    if (user === undefined || user.disabled) {
      const why = user === undefined ? 'is not a user here' : 'is disabled'
      await this.auditRefusal({ ...this.actorOf(ctx), user: name }, 'login', 'failed', 'UNAUTHORIZED', undefined, { via: 'certificate', reason: why })
      this.challenge(ctx, scope)
      throw unauthorized(`the client certificate names ${JSON.stringify(name)} (its subject CN), who ${why}: create or enable that user, or use a certificate issued for an enabled user`)
    }
    return await this.identityOf(user, 'certificate')
  }

  /** Check a user's password, rate-limited per user and address, cached briefly on success. */
  async checkPassword (ctx: Context, name: string, password: string): Promise<UserRecord> {
    const address = ctx.ip
    this.limiter.check(name, address, (h, v) => ctx.set(h, v))
    const user = await this.queries.user(name)
    const cacheKey = createHash('sha256').update(name).update('\u0000').update(password).digest('hex')
    const cached = this.basicCache.get(cacheKey)
    if (cached !== undefined && user !== undefined && !user.disabled && cached.pv === user.passwordVersion && cached.until > this.now()) return user
    let ok = false
    if (user !== undefined && !user.disabled) {
      ok = await verifyPassword(user.passwordHash, password)
    } else {
      // Same work for unknown users, so timing does not tell which names exist.
      this.dummyHash ??= hashPassword(randomBytes(16).toString('hex'))
      await verifyPassword(await this.dummyHash, password)
    }
    if (!ok || user === undefined) {
      this.limiter.fail(name, address)
      await this.auditRefusal({ ...this.actorOf(ctx), user: name }, 'login', 'failed', 'UNAUTHORIZED', undefined, { via: 'password' })
      throw unauthorized('incorrect username or password')
    }
    this.limiter.succeed(name)
    if (this.basicCache.size > 10_000) this.basicCache.clear()
    this.basicCache.set(cacheKey, { name, pv: user.passwordVersion, until: this.now() + this.settings.basicCacheSeconds * 1000 })
    return user
  }

  /** A live (not revoked, not expired) access token and its enabled owner. */
  async checkAccessToken (ctx: Context, raw: string): Promise<{ token: TokenRecord; user: UserRecord }> {
    const address = ctx.ip
    this.limiter.check(undefined, address, (h, v) => ctx.set(h, v))
    const parsed = parseAccessToken(raw)
    const rec = parsed === undefined ? undefined : await this.queries.token(parsed.id)
    let why: string | undefined
    if (parsed === undefined || rec === undefined || !secretMatches(parsed.secret, rec.secretHash)) why = 'unknown access token'
    else if (rec.revokedAt !== undefined) why = 'access token revoked'
    else if (rec.expiresAt !== 0 && rec.expiresAt <= this.now()) why = 'access token expired'
    const user = why === undefined ? await this.queries.user(rec!.owner) : undefined
    if (why === undefined && (user === undefined || user.disabled)) why = 'the access token\'s owner is disabled or gone'
    if (why !== undefined) {
      this.limiter.fail(undefined, address)
      const actor = this.actorOf(ctx)
      if (rec !== undefined) { actor.user = rec.owner; actor.token = rec.id }
      await this.auditRefusal(actor, 'login', 'failed', 'UNAUTHORIZED', undefined, { via: 'token', reason: why })
      throw unauthorized(why)
    }
    return { token: rec!, user: user! }
  }

  private async tokenIdentity (ctx: Context, raw: string): Promise<Identity> {
    const { token, user } = await this.checkAccessToken(ctx, raw)
    return await this.identityOf(user, 'token', (repo, a) => grantsAllow(token.scopes, repo, a), token.id)
  }

  private async signingKey (): Promise<{ key: Uint8Array; kid: string }> {
    const k = await this.queries.signingKey()
    if (k === undefined) throw new FlotillaError('UNAVAILABLE', 'the cluster signing key is not initialised yet')
    return { key: Buffer.from(k.key, 'base64'), kid: k.kid }
  }

  private async jwtIdentity (raw: string): Promise<Identity> {
    const { key } = await this.signingKey()
    let claims
    try {
      claims = await verifyRegistryToken(key, this.settings, raw, this.now())
    } catch (err) {
      throw unauthorized(`invalid token: ${(err as Error).message}`)
    }
    const limit = (repo: string, a: Action): boolean => jwtAllows(claims.access, repo, a)
    if (claims.sub === '' || claims.sub === ANONYMOUS) return new Identity(ANONYMOUS, 'jwt', false, await this.anonymousGrants(), limit)
    const user = await this.queries.user(claims.sub)
    if (user === undefined || user.disabled) throw unauthorized('invalid token: its subject is disabled or gone')
    if (claims.tid !== undefined) {
      const t = await this.queries.token(claims.tid)
      if (t === undefined || t.revokedAt !== undefined || (t.expiresAt !== 0 && t.expiresAt <= this.now())) throw unauthorized('invalid token: the access token it came from is revoked or expired')
      return await this.identityOf(user, 'jwt', (repo, a) => limit(repo, a) && grantsAllow(t.scopes, repo, a), t.id, (repo, a) => grantsAllow(t.scopes, repo, a))
    }
    if (claims.pv !== undefined && claims.pv !== user.passwordVersion) throw unauthorized('invalid token: the password changed since it was issued')
    return await this.identityOf(user, 'jwt', limit)
  }

  /**
   * Issue a registry JWT for the scopes asked (`repository:NAME:pull,push`, `registry:catalog:*`),
   * granting of each only what `id` may do.
   */
  async issueRegistryToken (id: Identity, scopes: string[], pv?: number): Promise<{ token: string; expiresIn: number; issuedAt: string; access: JwtAccess[] }> {
    const access: JwtAccess[] = []
    for (const s of scopes) {
      const first = s.indexOf(':')
      const last = s.lastIndexOf(':')
      if (first < 0 || last <= first) continue
      const type = s.slice(0, first).replace(/\(.*\)$/, '')
      const name = s.slice(first + 1, last)
      const wanted = s.slice(last + 1).split(',').map((a) => a.trim()).filter((a) => a !== '')
      if (type === 'registry' && name === 'catalog') {
        if (!id.anonymous) access.push({ type, name, actions: ['*'] })
        continue
      }
      if (type !== 'repository') continue
      const granted = new Set<string>()
      for (const w of wanted) {
        if (w === 'pull' && id.can(name, 'read')) granted.add('pull')
        else if (w === 'push' && id.canPush(name)) granted.add('push')
        else if (w === 'delete' && id.can(name, 'delete')) granted.add('delete')
        else if (w === '*' && id.can(name, 'manage')) granted.add('*')
      }
      const prev = access.find((e) => e.type === 'repository' && e.name === name)
      if (prev !== undefined) prev.actions = [...new Set([...prev.actions, ...granted])]
      else access.push({ type: 'repository', name, actions: [...granted] })
    }
    const { key, kid } = await this.signingKey()
    const now = this.now()
    const claims: Parameters<typeof signRegistryToken>[3] = { sub: id.anonymous ? '' : id.user, access }
    if (id.tokenId !== undefined) claims.tid = id.tokenId
    else if (pv !== undefined) claims.pv = pv
    const token = await signRegistryToken(key, kid, this.settings, claims, now, this.settings.tokenTtlSeconds)
    return { token, expiresIn: this.settings.tokenTtlSeconds, issuedAt: new Date(now).toISOString(), access }
  }

  /** Mint an access token; the value is returned once and only its hash is stored. */
  async createAccessToken (owner: string, kind: 'robot' | 'login', name: string, scopes: Grant[], expiresAt: number): Promise<{ id: string; value: string; record: TokenRecord }> {
    const t = newAccessToken()
    const record: TokenRecord = { id: t.id, kind, name, owner, secretHash: t.secretHash, scopes, createdAt: this.now(), expiresAt }
    await this.submitAudited({ type: 'CreateToken', token: record })
    return { id: t.id, value: t.value, record }
  }
}

/** An RFC 9110 quoted-string. */
function quoted (s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`
}
