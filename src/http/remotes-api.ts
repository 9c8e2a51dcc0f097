/**
 * The admin API's remote repositories (pull-through caches; cluster/remote/), mounted on the
 * admin router (admin.ts):
 *
 *   GET    /remotes          admin   {remotes: [...]}, passwords never shown (hasPassword)
 *   PUT    /remotes/:name    admin   {prefix, upstream, username?, password?, ttlSeconds?, allow?, block?}
 *   DELETE /remotes/:name    admin
 *
 * The password is encrypted with the cluster key (cluster/remote/secret.ts) before it goes
 * into the log; the state machine checks the rest (cluster/remote/apply.ts).
 */
import type Router from '@koa/router'
import type { Context } from 'koa'
import { FlotillaError } from '../../storage/errors.js'
import { DEFAULT_TTL_SECONDS, checkRemote, remoteView, type RemoteRecord } from '../../cluster/remote/model.js'
import { encryptSecret } from '../../cluster/remote/secret.js'
import type { RegistryDeps } from './deps.js'

export interface RemoteApiHelpers {
  requireAdmin: (ctx: Context) => Promise<void>
  jsonBody: (ctx: Context) => Promise<Record<string, unknown>>
  ok: (ctx: Context, body?: unknown, status?: number) => void
}

const FIELDS = ['prefix', 'upstream', 'username', 'password', 'ttlSeconds', 'allow', 'block']

export function registerRemoteRoutes (router: Router, deps: RegistryDeps, h: RemoteApiHelpers): void {
  router.get('/remotes', async (ctx) => {
    await h.requireAdmin(ctx)
    await deps.sink.barrier()
    h.ok(ctx, { remotes: (await deps.queries.remotes()).map(remoteView) })
  })
  router.put('/remotes/:name', async (ctx) => {
    await h.requireAdmin(ctx)
    const b = await h.jsonBody(ctx)
    for (const k of Object.keys(b)) if (!FIELDS.includes(k)) throw new FlotillaError('BAD_REQUEST', `unknown field ${JSON.stringify(k.slice(0, 40))}: expected ${FIELDS.join(', ')}`)
    if (b.password !== undefined && (typeof b.password !== 'string' || b.password === '')) throw new FlotillaError('BAD_REQUEST', 'password must be a non-empty string')
    const remote = {
      name: ctx.params.name,
      prefix: b.prefix,
      upstream: b.upstream,
      ttlSeconds: b.ttlSeconds ?? DEFAULT_TTL_SECONDS,
      allow: b.allow ?? ['**'],
      block: b.block ?? [],
      at: deps.now(),
      ...(b.username !== undefined ? { username: b.username } : {}),
      ...(b.password !== undefined ? { password: b.password } : {}),
    } as unknown as RemoteRecord
    // Checked before encryption, so that a malformed remote is refused without the cluster key.
    checkRemote(remote)
    if (remote.password !== undefined) {
      const info = await deps.queries.clusterInfo()
      if (info === undefined) throw new FlotillaError('UNAVAILABLE', 'the cluster key is not there yet: retry in a moment')
      remote.password = encryptSecret(remote.password, info)
    }
    await deps.auth.submitAudited({ type: 'PutRemote', remote, at: deps.now() })
    h.ok(ctx, { remote: remoteView(remote) })
  })
  router.delete('/remotes/:name', async (ctx) => {
    await h.requireAdmin(ctx)
    await deps.auth.submitAudited({ type: 'DeleteRemote', name: ctx.params.name!, at: deps.now() })
    h.ok(ctx)
  })
}
