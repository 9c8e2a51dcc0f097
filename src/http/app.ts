/**
 * The Koa application: middleware in the order a request meets it, then the routes.
 */
import { FlotillaError } from '../../storage/errors.js'
import Koa from 'koa'
import Router from '@koa/router'
import type { Logger } from 'pino'
import { Registry as MetricsRegistry, Counter, Histogram, collectDefaultMetrics, type Metric } from 'prom-client'
import { errors, registryHeaders, requestLog, singleHost } from './middleware.js'
import { v2Routes } from './routes.js'
import { VirtualMetrics } from './virtual.js'
import { tokenRoutes } from './token.js'
import { adminRoutes } from './admin.js'
import { authorizeV2 } from '../auth/authorize.js'
import { clusterApiGuard } from '../auth/cluster-guard.js'
import type { RegistryDeps } from './deps.js'
import type { Cluster } from '../../cluster/cluster.js'
import type { WriteActivity } from '../../cluster/checksums/service.js'
import { clusterRoutes } from './cluster-api.js'
import { internalRoutes } from './internal.js'
import { MirrorReceiver } from '../../cluster/replication/mirror-receiver.js'
import { debugRoutes } from './debug.js'
import { openapiRoute } from './openapi.js'
import type { Faults } from '../../net/faults.js'
import type { ReplicationMetrics } from '../../cluster/replication/metrics.js'
import type { Sites } from '../../cluster/peering/sites.js'
import { sitesRoutes } from './sites.js'
import { backupRoutes } from './backup.js'
import type { BackupSessions } from '../../cluster/backup/sessions.js'

export interface AppOptions {
  deps: RegistryDeps
  log: Logger
  /** Counts requests writing blob bytes (uploads), which background hashing yields to. */
  writes?: WriteActivity
  /** Answers /readyz: false while the node is not yet able to serve. */
  ready: () => boolean
  /** Whether the node finished starting (a joiner: caught up, blob replication wired). */
  started?: () => boolean
  cluster?: Cluster
  /** Cross-site peering (cluster/peering/): mounts /api/v1/sites and its metrics. */
  sites?: Sites
  replicationBacklog?: () => number
  /** Test-only fault injection (FLOTILLA_FAULT_INJECTION=1): mounts /api/v1/debug/partition. */
  faults?: Faults
  /** Blob replication's metrics (cluster/replication/metrics.ts), served with the rest. */
  replicationMetrics?: ReplicationMetrics
  /** This node as a hop of upload chains (cluster/replication/mirror-receiver.ts); by default one that ends every chain. */
  mirrors?: MirrorReceiver
  /** More metrics for /metrics, made with `registers: []` by other parts (the TLS server's). */
  metrics?: Metric[]
  /** Online backups (cluster/backup/sessions.ts): mounts /api/v1/backups and its metrics. */
  backups?: BackupSessions
}

export function createMetrics (): {
  registry: MetricsRegistry
  requests: Counter<'method' | 'route' | 'status'>
  duration: Histogram<'method' | 'route'>
  received: Counter<'route'>
  sent: Counter<'route'>
} {
  const registry = new MetricsRegistry()
  collectDefaultMetrics({ register: registry, prefix: 'flotilla_' })
  const requests = new Counter({ name: 'flotilla_http_requests_total', help: 'HTTP requests by method, route and status', labelNames: ['method', 'route', 'status'] as const, registers: [registry] })
  const duration = new Histogram({ name: 'flotilla_http_request_duration_seconds', help: 'HTTP request duration by method and route', labelNames: ['method', 'route'] as const, buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120], registers: [registry] })
  const received = new Counter({ name: 'flotilla_http_received_bytes_total', help: 'Bytes received from clients, by route (measured on the connection while the request runs: mostly its body)', labelNames: ['route'] as const, registers: [registry] })
  const sent = new Counter({ name: 'flotilla_http_sent_bytes_total', help: 'Bytes sent to clients (headers and bodies), by route', labelNames: ['route'] as const, registers: [registry] })
  return { registry, requests, duration, received, sent }
}

/**
 * A request's route, for metric labels: the route's shape with names, digests and ids left out
 * (a label per repository would grow without bound).
 */
export function routeOf (path: string): string {
  if (path.startsWith('/v2/')) {
    if (path === '/v2/' || path === '/v2') return '/v2/'
    if (path === '/v2/_catalog') return '/v2/_catalog'
    const m = /\/(manifests|blobs\/uploads|blobs|tags\/list|referrers)(\/|$)/.exec(path)
    return m === null ? '/v2/other' : `/v2/<name>/${m[1]!}`
  }
  if (path.startsWith('/api/v1/')) return `/api/v1/${path.slice(8).split('/')[0] ?? ''}`
  if (path.startsWith('/internal/v1/')) return `/internal/v1/${path.slice(13).split('/')[0] ?? ''}`
  if (['/token', '/metrics', '/healthz', '/readyz'].includes(path)) return path
  return 'other'
}

export function createApp (opts: AppOptions): Koa {
  const app = new Koa({ proxy: false })
  // Koa would print errors itself; our error middleware logs them once, through pino.
  app.silent = true
  const metrics = createMetrics()
  if (opts.cluster !== undefined) for (const m of Object.values(opts.cluster.metrics)) metrics.registry.registerMetric(m)
  for (const m of opts.replicationMetrics?.all() ?? []) metrics.registry.registerMetric(m)
  for (const m of opts.deps.gc?.collector.all() ?? []) metrics.registry.registerMetric(m)
  for (const m of opts.deps.retention?.runner.all() ?? []) metrics.registry.registerMetric(m)
  for (const m of opts.deps.hooks?.all() ?? []) metrics.registry.registerMetric(m)
  for (const m of opts.deps.search?.all() ?? []) metrics.registry.registerMetric(m)
  for (const m of opts.deps.remotes?.metrics.all() ?? []) metrics.registry.registerMetric(m)
  for (const m of opts.metrics ?? []) metrics.registry.registerMetric(m)
  for (const m of opts.backups?.all() ?? []) metrics.registry.registerMetric(m)
  const virtualMetrics = new VirtualMetrics()
  for (const m of virtualMetrics.all()) metrics.registry.registerMetric(m)
  if (opts.sites !== undefined) for (const m of Object.values(opts.sites.metrics)) metrics.registry.registerMetric(m)
  if (opts.sites !== undefined) for (const m of Object.values(opts.sites.ops.metrics) as Array<Metric<string>>) metrics.registry.registerMetric(m)
  app.use(requestLog(opts.log))
  if (opts.writes !== undefined) {
    const writes = opts.writes
    app.use(async (ctx, next) => {
      if (ctx.method === 'GET' || ctx.method === 'HEAD' || !ctx.path.startsWith('/v2/') || !ctx.path.includes('/blobs/uploads')) return await next()
      writes.begin()
      try { await next() } finally { writes.end() }
    })
  }
  app.use(async (ctx, next) => {
    const route = routeOf(ctx.path)
    const end = metrics.duration.startTimer({ method: ctx.method, route })
    // Bytes on this request's connection while it runs (HTTP/1.1: one request at a time on it).
    const socket = ctx.req.socket
    const read0 = socket.bytesRead
    const written0 = socket.bytesWritten
    ctx.res.once('close', () => {
      metrics.received.inc({ route }, Math.max(0, socket.bytesRead - read0))
      metrics.sent.inc({ route }, Math.max(0, socket.bytesWritten - written0))
    })
    try { await next() } finally {
      end()
      metrics.requests.inc({ method: ctx.method, route, status: String(ctx.status) })
    }
  })
  app.use(errors(opts.log, (ctx) => { opts.deps.auth.challenge(ctx) }))
  app.use(singleHost)

  const ops = new Router()
  ops.get('/healthz', (ctx) => { ctx.body = { status: 'ok' } })
  ops.get('/readyz', (ctx) => {
    const ready = opts.ready()
    ctx.status = ready ? 200 : 503
    ctx.body = { ready }
  })
  ops.get('/metrics', async (ctx) => {
    ctx.type = metrics.registry.contentType
    ctx.body = await metrics.registry.metrics()
  })
  app.use(ops.routes())
  // Until the node has started (state machine loaded, admin user there; a joiner caught up),
  // every route but these answers 503 with Retry-After: a client that came too early (the
  // README's `serve &` then `flotilla token`) is told to retry, not that its password is wrong.
  // Still served: health and metrics (above), the node's own cluster status, joins (refused
  // until the node is a member), node-to-node routes, the API document.
  app.use(async (ctx, next) => {
    if (opts.started?.() !== false) return await next()
    const path = ctx.path.replace(/\/+$/, '')
    const own = ctx.method === 'GET' && path === '/api/v1/cluster'
    // A join answers without the node having started: a node asked to join itself says so.
    const joining = ctx.method === 'POST' && path === '/api/v1/cluster/join'
    if (own || joining || ctx.path.startsWith('/internal/') || path === '/api/v1/openapi.json') return await next()
    ctx.set('Retry-After', '1')
    throw new FlotillaError('UNAVAILABLE', 'this node is still starting: retry in a moment')
  })
  // Who may use the cluster API (src/auth/cluster-guard.ts), before its routes.
  app.use(clusterApiGuard(opts.deps.auth))
  if (opts.cluster !== undefined) {
    const cluster = opts.cluster
    const { deps } = opts
    const mirrors = opts.mirrors ?? new MirrorReceiver({ peerId: deps.nodeId, uploads: deps.uploads, blobs: deps.blobs, sink: deps.sink })
    app.use(internalRoutes({ blobs: deps.blobs, admits: (p) => cluster.admits(p), removed: (p) => cluster.wasRemoved(p), liveConnection: async (p) => await cluster.liveConnection(p), mirrors, peerPort: () => cluster.hasPeerPort(), metrics: cluster.peerMetrics, ...(opts.replicationMetrics !== undefined ? { replicationMetrics: opts.replicationMetrics } : {}), ...(deps.gc !== undefined ? { gc: { inUse: () => deps.gc!.collector.inUse(), sweep: async () => await deps.gc!.collector.sweep() } } : {}), ...(deps.disk !== undefined ? { disk: { state: () => deps.disk!.state() } } : {}), ...(deps.remotes !== undefined ? { remoteFill: async (ctx, repo, digest) => await deps.remotes!.serveFill(ctx, repo, digest) } : {}) }))
    app.use(clusterRoutes(cluster, opts.replicationBacklog, deps.disk?.state).routes())
  }
  // Before the admin API, which answers 404 for every path it does not know.
  if (opts.sites !== undefined) app.use(sitesRoutes(opts.sites, opts.deps.auth, opts.cluster).routes())
  // Before the admin API, which answers 404 for every path it does not know.
  if (opts.faults !== undefined && opts.cluster !== undefined) {
    app.use(debugRoutes({ faults: opts.faults, auth: opts.deps.auth, self: opts.cluster.peerId, log: opts.log }))
  }
  // The admin API's OpenAPI document, open to anyone (openapi.ts says why): before the admin API, which asks every /api/v1 path for credentials.
  app.use(openapiRoute())
  // Before the admin API, which answers 404 for every path it does not know.
  if (opts.backups !== undefined) app.use(backupRoutes(opts.deps, opts.backups))
  // Access control: the token endpoint, the admin API, then every /v2 route is authorized.
  app.use(tokenRoutes(opts.deps.auth))
  app.use(adminRoutes(opts.deps))
  app.use(registryHeaders)
  app.use(authorizeV2(opts.deps.auth))
  app.use(v2Routes(opts.deps, virtualMetrics))
  return app
}
