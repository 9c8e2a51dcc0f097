/**
 * The Docker token endpoint (distribution's docs/content/spec/auth/token.md and oauth.md).
 *
 *   GET  /token?service=S&scope=repository:NAME:pull,push[&scope=…][&offline_token=true&client_id=C]
 *        Authorization: Basic (password, or an access token as the password) or none (anonymous)
 *   POST /token   application/x-www-form-urlencoded
 *        grant_type=password&username=U&password=P[&access_type=offline]
 *        grant_type=refresh_token&refresh_token=flt_…
 *        service=S&client_id=C&scope=space-separated scopes
 *
 * Answers {token, access_token, expires_in, issued_at[, refresh_token]}. The JWT grants of
 * each scope only what the caller may do. A refresh (offline) token is what `docker login`
 * stores instead of the password: an access token of kind `login`, revocable like any other.
 */
import type { Context, Next } from 'koa'
import { FlotillaError } from '../../storage/errors.js'
import { ACTIONS } from '../../cluster/access/model.js'
import type { AuthService } from '../auth/service.js'
import type { Identity } from '../auth/identity.js'
import { looksLikeAccessToken } from '../auth/tokens.js'
import { requestActor } from '../auth/context.js'
import { readLimited } from './manifests.js'

function list (v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v]
}

async function offlineToken (ctx: Context, auth: AuthService, id: Identity, clientId: string): Promise<string> {
  const ttl = auth.settings.offlineTokenTtlHours * 3600_000
  const name = (clientId.toLowerCase().replace(/[^a-z0-9._-]/g, '-').replace(/^[^a-z0-9]+/, '') || 'client').slice(0, 48)
  const t = await requestActor.run(auth.actorOf(ctx, id), async () =>
    await auth.createAccessToken(id.user, 'login', `login-${name}`, [{ repositories: ['**'], actions: [...ACTIONS] }], auth.now() + ttl))
  return t.value
}

export function tokenRoutes (auth: AuthService) {
  return async function tokenEndpoint (ctx: Context, next: Next): Promise<void> {
    if (ctx.path !== '/token') return await next()
    let id: Identity
    let scopes: string[]
    let wantOffline = false
    let clientId = ''
    let service: string | undefined
    let pv: number | undefined
    if (ctx.method === 'GET') {
      service = list(ctx.query.service)[0]
      scopes = list(ctx.query.scope).flatMap((s) => s.split(' ')).filter((s) => s !== '')
      wantOffline = list(ctx.query.offline_token)[0] === 'true'
      clientId = list(ctx.query.client_id)[0] ?? ''
      id = await auth.identify(ctx)
      if (id.via === 'password') pv = (await auth.queries.user(id.user))?.passwordVersion
    } else if (ctx.method === 'POST') {
      const form = new URLSearchParams((await readLimited(ctx.req, 64 * 1024)).toString('utf8'))
      service = form.get('service') ?? undefined
      scopes = (form.get('scope') ?? '').split(' ').filter((s) => s !== '')
      clientId = form.get('client_id') ?? ''
      const grant = form.get('grant_type')
      // As identify() does for a header: judge the credentials against every committed change.
      if (grant === 'password' || grant === 'refresh_token') await auth.fresh()
      if (grant === 'password') {
        const u = await auth.checkPassword(ctx, form.get('username') ?? '', form.get('password') ?? '')
        id = await auth.identityOf(u, 'password')
        pv = u.passwordVersion
        wantOffline = form.get('access_type') === 'offline'
      } else if (grant === 'refresh_token') {
        const raw = form.get('refresh_token') ?? ''
        if (!looksLikeAccessToken(raw)) throw new FlotillaError('UNAUTHORIZED', 'unknown refresh token')
        const { token, user } = await auth.checkAccessToken(ctx, raw)
        id = await auth.identityOf(user, 'token', undefined, token.id)
      } else {
        throw new FlotillaError('BAD_REQUEST', `unsupported grant_type ${JSON.stringify(grant)}: use password or refresh_token`)
      }
    } else {
      throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed on /token`)
    }
    if (service !== undefined && service !== auth.settings.service) {
      throw new FlotillaError('BAD_REQUEST', `this token server serves ${JSON.stringify(auth.settings.service)}, not ${JSON.stringify(service)}`)
    }
    // An anonymous caller gets a token with only what anonymous may do (nothing, by default),
    // as other token servers do: the registry then refuses the request itself with
    // UNAUTHORIZED, which docker treats as final, where a failed token fetch is retried for a minute.
    const issued = await auth.issueRegistryToken(id, scopes, pv)
    const body: Record<string, unknown> = { token: issued.token, access_token: issued.token, expires_in: issued.expiresIn, issued_at: issued.issuedAt }
    if (ctx.method === 'POST') body.scope = scopes.join(' ')
    if (wantOffline && id.via === 'password') body.refresh_token = await offlineToken(ctx, auth, id, clientId)
    ctx.status = 200
    ctx.set('Cache-Control', 'no-store')
    ctx.body = body
  }
}
