/**
 * The backup API under /api/v1/backups (`flotilla backup`, cluster/backup/sessions.ts), for
 * administrators only, on any node:
 *
 *   POST   /api/v1/backups                       begin: the snapshot's index, checksum, membership
 *                                                and every blob it knows (held against GC, leased)
 *   GET    /api/v1/backups/:id/snapshot          the snapshot's bytes
 *   GET    /api/v1/backups/:id/blobs/:digest     one blob the snapshot knows (from a peer if this
 *                                                node lacks it)
 *   POST   /api/v1/backups/:id/lease             renew the hold
 *   DELETE /api/v1/backups/:id?outcome=ok|failed end it: the hold goes, the metrics record it
 */
import Router from '@koa/router'
import type { Context, Next } from 'koa'
import { FlotillaError } from '../../storage/errors.js'
import { parseDigest } from '../../storage/reference.js'
import type { BackupSessions } from '../../cluster/backup/sessions.js'
import { identifyAdmin } from '../auth/cluster-guard.js'
import { requestActor } from '../auth/context.js'
import type { RegistryDeps } from './deps.js'
import { serveLocal } from './blobs.js'

const PREFIX = '/api/v1/backups'

export function backupRoutes (deps: RegistryDeps, backups: BackupSessions) {
  const router = new Router({ prefix: PREFIX })
  router.post('/', async (ctx) => {
    ctx.status = 201
    ctx.body = await backups.begin()
  })
  router.get('/:id/snapshot', (ctx) => {
    const data = backups.snapshot(ctx.params.id!)
    ctx.type = 'application/octet-stream'
    ctx.body = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  })
  router.get('/:id/blobs/:digest', async (ctx) => {
    const digest = parseDigest(ctx.params.digest!)
    const size = backups.knows(ctx.params.id!, digest)
    if (size === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${digest} is not in this backup's snapshot`, { digest })
    const info = await deps.blobs.stat(digest)
    if (info !== undefined) {
      await serveLocal(ctx, deps, digest, info.size, { oneShot: true })
      backups.served(info.size)
      return
    }
    // Known to the metadata, not on this node: stream it from a member that holds it.
    const stream = await deps.replication?.fetchThrough(digest)
    if (stream === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${digest} is on no reachable node right now: retry the backup when its holders are up`, { digest })
    ctx.set('Docker-Content-Digest', digest)
    ctx.type = 'application/octet-stream'
    ctx.length = size
    ctx.body = stream
    backups.served(size)
  })
  router.post('/:id/lease', (ctx) => {
    ctx.body = backups.renew(ctx.params.id!)
  })
  router.delete('/:id', (ctx) => {
    const outcome = ctx.query.outcome
    if (outcome !== 'ok' && outcome !== 'failed') throw new FlotillaError('BAD_REQUEST', 'outcome must be ok or failed (?outcome=ok)')
    backups.finish(ctx.params.id!, outcome === 'ok')
    ctx.body = { ok: true }
  })

  const routes = router.routes()
  const allowed = router.allowedMethods()
  async function backupApi (ctx: Context, next: Next): Promise<void> {
    const path = ctx.path.replace(/\/+$/, '')
    if (path !== PREFIX && !path.startsWith(PREFIX + '/')) return await next()
    const id = await identifyAdmin(deps.auth, ctx, { what: 'backups' })
    ctx.state.identity = id
    await requestActor.run(deps.auth.actorOf(ctx, id), async () => {
      await routes(ctx as never, async () => { await allowed(ctx as never, async () => {}) })
    })
    if (ctx.status === 404 && ctx.body === undefined) throw new FlotillaError('NOT_FOUND', `no such endpoint: ${ctx.method} ${ctx.path.slice(0, 200)}`)
    if (ctx.status === 405 && ctx.body === undefined) throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed on ${ctx.path.slice(0, 200)}`)
  }
  // The router too: test/http/openapi.test.ts checks its routes against the OpenAPI document (openapi.ts).
  return Object.assign(backupApi, { router })
}
