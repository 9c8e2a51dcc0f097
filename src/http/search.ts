/**
 * Search and "latest" in the admin API (issue 14), for any signed-in caller, on any node:
 *
 *   GET /api/v1/search?q=EXPR&name=…&tag=…&digest=…&sha1=…&md5=…&prop=…&media=…&type=…
 *                     &pushed=…&created=…&pulled=…&size=…&n=100&cursor=…&properties=true
 *   GET /api/v1/latest/REPO?by=semver|time&match=GLOB&prop=KEY[=VALUE]
 *
 * `q` is an expression (cluster/metadata/search-query.ts: AND, OR, NOT, parentheses); each
 * other criterion parameter is one criterion written without its field (`name=team/*` is
 * `name:team/*`, `pushed=>=2024-01-01` is `pushed>=2024-01-01`), and all of them, repeated
 * ones included, are ANDed with `q`. Answers manifests in (repository, digest) order, only in
 * repositories the caller may read (others are never mentioned, not even counted); `n` per page
 * (default 100, at most 1000) and, when more follow, an opaque `cursor` and a Link header
 * (rel="next") as the OCI tag list has. Reads are linearizable: a barrier (ReadIndex in a
 * cluster) first, then the local indexes, so every node answers the same.
 *
 * The indexes are built by the state machine as commands apply; on a store that predates them
 * the first search submits RebuildSearchIndex (once) and waits for it.
 */
import type { Context } from 'koa'
import type Router from '@koa/router'
import { Counter, Histogram, type Metric } from 'prom-client'
import type { Logger } from 'pino'
import { FlotillaError } from '../../storage/errors.js'
import { parseRepositoryName } from '../../storage/reference.js'
import type { KV } from '../../storage/kv/kv.js'
import type { CommandSink } from '../../cluster/metadata/applier.js'
import { MetadataSearch, type PropertySource } from '../../cluster/metadata/search.js'
import { parseCriterion, parseQuery, type Query } from '../../cluster/metadata/search-query.js'
import type { Identity } from '../auth/identity.js'
import type { RegistryDeps } from './deps.js'

/** Query parameters that hold one criterion each (repeatable), and the field they stand for. */
export const CRITERIA_PARAMS: Record<string, string> = { name: 'name', tag: 'tag', digest: 'digest', sha1: 'sha1', md5: 'md5', prop: 'prop', media: 'media', type: 'type', artifactType: 'type', pushed: 'pushed', created: 'created', pulled: 'pulled', size: 'size' }
const OTHER_PARAMS = ['q', 'n', 'cursor', 'properties']
const MAX_PAGE = 1000
const DEFAULT_PAGE = 100

export class SearchService {
  readonly search: MetadataSearch
  readonly searches = new Counter({ name: 'flotilla_search_requests_total', help: 'Searches and latest-version lookups by kind (search, latest) and outcome (ok, bad_request, denied, not_found, error)', labelNames: ['kind', 'outcome'] as const, registers: [] })
  readonly latency = new Histogram({ name: 'flotilla_search_duration_seconds', help: 'Time to answer a search or latest-version lookup (after the read barrier), by kind', labelNames: ['kind'] as const, buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers: [] })
  readonly scanned = new Counter({ name: 'flotilla_search_candidates_scanned_total', help: 'Candidate manifests read by searches (how selective the indexes were)', registers: [] })
  private building?: Promise<void>

  constructor (kv: KV, private readonly sink: CommandSink, private readonly log: Logger, properties?: PropertySource) {
    this.search = new MetadataSearch(kv, properties)
  }

  all (): Metric[] { return [this.searches, this.latency, this.scanned] }

  /** Barrier, then make sure the indexes exist (the one-time backfill on an older store). */
  async ready (): Promise<void> {
    await this.sink.barrier()
    if (await this.search.ready()) return
    this.building ??= (async () => {
      this.log.info('building the search indexes (once, on a store that predates them)')
      const r = await this.sink.submit({ type: 'RebuildSearchIndex', at: Date.now() })
      if (!r.ok) throw new FlotillaError(r.code, r.message)
      this.log.info({ result: r.value }, 'search indexes built')
    })().finally(() => { this.building = undefined })
    await this.building
  }

  /** Count the outcome of `fn` under `kind`, and time it. */
  async observe<T> (kind: 'search' | 'latest', fn: () => Promise<T>): Promise<T> {
    const end = this.latency.startTimer({ kind })
    try {
      const v = await fn()
      this.searches.inc({ kind, outcome: 'ok' })
      return v
    } catch (err) {
      const code = err instanceof FlotillaError ? err.code : undefined
      this.searches.inc({ kind, outcome: code === 'BAD_REQUEST' ? 'bad_request' : code === 'DENIED' || code === 'UNAUTHORIZED' ? 'denied' : code === 'NOT_FOUND' || code === 'NAME_UNKNOWN' || code === 'MANIFEST_UNKNOWN' ? 'not_found' : 'error' })
      throw err
    } finally {
      end()
    }
  }
}

function one (ctx: Context, k: string): string | undefined {
  const v = ctx.query[k]
  if (Array.isArray(v)) throw new FlotillaError('BAD_REQUEST', `${k} given more than once`)
  return v
}

/** The query the request's parameters make: `q` and every criterion parameter, ANDed. */
export function queryOf (ctx: Context, now: number): Query {
  const parts: Query[] = []
  for (const k of Object.keys(ctx.query)) {
    if (OTHER_PARAMS.includes(k)) continue
    const field = CRITERIA_PARAMS[k]
    if (field === undefined) throw new FlotillaError('BAD_REQUEST', `unknown parameter ${JSON.stringify(k.slice(0, 40))}: search takes q, n, cursor, properties and ${Object.keys(CRITERIA_PARAMS).join(', ')}`)
    const raw = ctx.query[k]
    for (const v of Array.isArray(raw) ? raw : [raw ?? '']) {
      const text = `${field}:${v}`
      try {
        parts.push({ op: 'is', c: parseCriterion(text, 1, now), text })
      } catch (err) {
        if (err instanceof FlotillaError) throw new FlotillaError('BAD_REQUEST', `parameter ${k}=${v.slice(0, 80)}: ${err.message.replace(/^search query: at position \d+: /, '')}`)
        throw err
      }
    }
  }
  const q = one(ctx, 'q')
  if (q !== undefined) parts.push(parseQuery(q, now))
  if (parts.length === 0) throw new FlotillaError('BAD_REQUEST', 'give at least one criterion: q=EXPR or a parameter such as name=team/* (GET /api/v1/openapi.json lists them)')
  return parts.length === 1 ? parts[0]! : { op: 'and', of: parts }
}

function service (deps: RegistryDeps): SearchService {
  if (deps.search === undefined) throw new FlotillaError('UNAVAILABLE', 'search is not available on this node yet: retry in a moment')
  return deps.search
}

/** The search routes, on the admin API's router (its caller is signed in; see admin.ts). */
export function searchRoutes (router: Router, deps: RegistryDeps, me: (ctx: Context) => Identity): void {
  router.get('/search', async (ctx) => {
    const svc = service(deps)
    const id = me(ctx)
    const query = queryOf(ctx, deps.now())
    const nText = one(ctx, 'n')
    if (nText !== undefined && !/^\d{1,9}$/.test(nText)) throw new FlotillaError('BAD_REQUEST', `n must be a whole number of results, 1 to ${MAX_PAGE}`)
    const n = nText === undefined ? DEFAULT_PAGE : Math.max(1, Math.min(Number(nText), MAX_PAGE))
    const cursor = one(ctx, 'cursor')
    const withProperties = one(ctx, 'properties') === 'true'
    await svc.ready()
    const page = await svc.observe('search', async () => await svc.search.search(query, { limit: n, ...(cursor !== undefined ? { cursor } : {}), canRead: (repo) => id.can(repo, 'read'), withProperties }))
    svc.scanned.inc(page.scanned)
    if (page.cursor !== undefined) {
      const params = new URLSearchParams()
      for (const [k, v] of Object.entries(ctx.query)) if (k !== 'cursor' && k !== 'n') for (const x of Array.isArray(v) ? v : [v ?? '']) params.append(k, x)
      params.set('n', String(n))
      params.set('cursor', page.cursor)
      ctx.set('Link', `</api/v1/search?${params.toString()}>; rel="next"`)
    }
    ctx.status = 200
    ctx.body = { items: page.items, ...(page.cursor !== undefined ? { cursor: page.cursor } : {}) }
  })

  router.get('/latest/{*repo}', async (ctx) => {
    const svc = service(deps)
    const id = me(ctx)
    const raw = (ctx.params as { repo?: string }).repo
    if (raw === undefined || raw === '') throw new FlotillaError('BAD_REQUEST', 'name the repository: GET /api/v1/latest/REPO')
    const repo = parseRepositoryName(raw.replace(/\/+$/, ''))
    for (const k of Object.keys(ctx.query)) if (!['by', 'match', 'prop'].includes(k)) throw new FlotillaError('BAD_REQUEST', `unknown parameter ${JSON.stringify(k.slice(0, 40))}: latest takes by, match and prop`)
    const by = one(ctx, 'by') ?? 'semver'
    if (by !== 'semver' && by !== 'time') throw new FlotillaError('BAD_REQUEST', `by must be semver or time, not ${JSON.stringify(by.slice(0, 40))}`)
    const match = one(ctx, 'match')
    if (match !== undefined && (match === '' || match.length > 128)) throw new FlotillaError('BAD_REQUEST', 'match must be a tag pattern (* and ?), 1 to 128 characters')
    const propText = one(ctx, 'prop')
    let prop: { key: string; value?: string } | undefined
    if (propText !== undefined) {
      const eq = propText.indexOf('=')
      const k = eq < 0 ? propText : propText.slice(0, eq)
      if (k === '') throw new FlotillaError('BAD_REQUEST', 'prop must be KEY or KEY=VALUE')
      prop = eq < 0 ? { key: k } : { key: k, value: propText.slice(eq + 1) }
    }
    await svc.observe('latest', async () => {
      // Unreadable and unknown repositories answer alike: the name tells nothing.
      if (!id.can(repo, 'read')) throw new FlotillaError('NAME_UNKNOWN', `repository ${repo} is not known to this registry (or you may not read it)`, { name: repo })
      await svc.ready()
      const answer = await svc.search.latest(repo, { by, ...(match !== undefined ? { match } : {}), ...(prop !== undefined ? { prop } : {}) })
      if (answer === undefined) {
        const what = [by === 'semver' ? 'is a version (1.2.3, v1.2)' : undefined, match !== undefined ? `matches ${match}` : undefined, prop !== undefined ? `has property ${propText!}` : undefined].filter((x) => x !== undefined)
        throw new FlotillaError('MANIFEST_UNKNOWN', `no tag of ${repo}${what.length > 0 ? ' ' + what.join(' and ') : ''}`, { name: repo })
      }
      ctx.status = 200
      ctx.body = answer
    })
  })
}
