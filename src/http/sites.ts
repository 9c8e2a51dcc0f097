/**
 * The sites API under /api/v1/sites: cross-site peering (cluster/peering/).
 *
 *   GET    /api/v1/sites                 admin    this site's id and every peering, with its status
 *   POST   /api/v1/sites                 admin    peer this site with another (`flotilla site peer`)
 *   POST   /api/v1/sites/tokens          admin    a peering token (`flotilla site token`)
 *   GET    /api/v1/sites/:name           admin    one peering's status (`flotilla site status NAME`)
 *   DELETE /api/v1/sites/:name           admin    remove a peering (`flotilla site remove NAME`)
 *   PATCH  /api/v1/sites/:name           admin    change its rules here and at the other site (`flotilla site set NAME`; PUT too)
 *   GET    /api/v1/sites/:name/explain?repo=R&tag=T   admin   where R:T stands (`flotilla site explain NAME R:T`)
 *   POST   /api/v1/sites/handshake       open     called by the other site's node: the token and a
 *                                                 node signature prove it (Sites.accept)
 *
 * Every admin route checks the caller on the node that answers (each node, not only the
 * leader). A status answered by a node that does not ship for its site (only its leader
 * does) is fetched from the leader, which holds the live view (connection, lag, last error);
 * when the leader cannot be reached, the node answers its own view (cursor, failures).
 */
import Router from '@koa/router'
import type { Context, Next } from 'koa'
import { z } from 'zod'
import type { Cluster } from '../../cluster/cluster.js'
import { DIRECTIONS, type PeeringRules } from '../../cluster/peering/model.js'
import type { RulesPatch } from '../../cluster/peering/rules.js'
import { HANDSHAKE_PATH, type HandshakeRequest, type Sites } from '../../cluster/peering/sites.js'
import { FlotillaError } from '../../storage/errors.js'
import { identifyAdmin } from '../auth/cluster-guard.js'
import { requestActor } from '../auth/context.js'
import type { AuthService } from '../auth/service.js'
import { FORWARDED } from './forwarded.js'
import { jsonBody } from './json-body.js'

/** Largest request body these routes read. */
const MAX_BODY = 256 * 1024

const PREFIX = '/api/v1/sites'

const Name = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'use 1-64 of [a-z0-9._-], starting with a letter or digit')

/** POST /api/v1/sites/tokens. */
export const SiteTokenRequest = z.object({ ttlSeconds: z.number().int().min(60).max(7 * 24 * 3600).default(3600) }).strict()

const Rules = {
  repos: z.array(z.string().min(1).max(256)).max(64).default([]),
  direction: z.enum(DIRECTIONS as [string, ...string[]]).default('pull'),
  tags: z.string().min(1).max(128).optional(),
  deletes: z.boolean().default(false),
  access: z.boolean().default(false),
  bandwidth: z.number().positive().max(1_000_000).optional(),
}

/** POST /api/v1/sites: what `flotilla site peer` sends. */
export const PeerRequest = z.object({
  address: z.string().min(1).max(2048),
  token: z.string().min(1).max(16 * 1024),
  name: Name,
  as: Name.optional(),
  ...Rules,
}).strict()

/** PATCH /api/v1/sites/NAME: the rules to change (left out: kept; null: tags or bandwidth cleared). Direction as seen from this site. */
export const SetRulesRequest = z.object({
  repos: Rules.repos.unwrap().optional(),
  direction: z.enum(DIRECTIONS as [string, ...string[]]).optional(),
  tags: z.string().min(1).max(128).nullable().optional(),
  deletes: z.boolean().optional(),
  access: z.boolean().optional(),
  bandwidth: z.number().positive().max(1_000_000).nullable().optional(),
}).strict().refine((b) => Object.keys(b).length > 0, 'give at least one rule to change (repos, direction, tags, deletes, access, bandwidth)')

/** A repository name (the distribution spec's grammar) and a tag, for explain. */
const RepoName = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/
const TagName = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/

const Member = z.object({ peerId: z.string().min(40).max(100), addrs: z.array(z.string().max(256)).max(16) }).strict()

/** POST /api/v1/sites/handshake: what the other site's node presents. */
export const HandshakeBody = z.object({
  token: z.string().min(1).max(16 * 1024),
  site: z.string().regex(/^[0-9a-f]{16}$/, 'a site id is 16 hex digits'),
  members: z.array(Member).min(1).max(64),
  rules: z.object(Rules).strict(),
  as: Name.optional(),
}).strict()

function rulesOf (b: { repos: string[]; direction: string; tags?: string | undefined; deletes: boolean; access: boolean; bandwidth?: number | undefined }): PeeringRules {
  const r: PeeringRules = { repos: b.repos, direction: b.direction as PeeringRules['direction'], deletes: b.deletes, access: b.access }
  if (b.tags !== undefined) r.tags = b.tags
  if (b.bandwidth !== undefined) r.bandwidth = b.bandwidth
  return r
}

/** Administrators only, checked on this node, for every route but the handshake. */
function guard (auth: AuthService) {
  return async function sitesGuard (ctx: Context, next: Next): Promise<void> {
    const path = ctx.path.replace(/\/+$/, '')
    if (path === HANDSHAKE_PATH && ctx.method === 'POST') return await next()
    const id = await identifyAdmin(auth, ctx, { local: ctx.method === 'GET' || ctx.method === 'HEAD', what: 'sites' })
    ctx.state.identity = id
    await requestActor.run(auth.actorOf(ctx, id), next)
  }
}

/**
 * Answer a status from the leader (which ships, and so knows the live state) unless this node
 * is the leader or the request was forwarded already; false when the caller should answer
 * itself (no leader reachable).
 */
async function fromLeader (ctx: Context, cluster: Cluster | undefined, sites: Sites): Promise<boolean> {
  if (cluster === undefined || sites.ships()) return false
  if (await cluster.forwarding.marked(ctx.get(FORWARDED), ctx.method, ctx.path)) return false
  const leader = cluster.driver?.leader ?? null
  const target = leader === null ? undefined : cluster.peerTarget(leader)
  if (target === undefined) return false
  try {
    const headers: Record<string, string> = { [FORWARDED]: await cluster.forwarding.mark(ctx.method, ctx.path) }
    if (ctx.get('authorization') !== '') headers.authorization = ctx.get('authorization')
    // Over the leader's peer port (net/peer-https.ts), like every node-to-node request.
    const res = await cluster.peerClient.call(target, { method: 'GET', path: ctx.originalUrl, headers, timeoutMs: 5000 })
    if (res.status >= 500) return false
    ctx.status = res.status
    const type = res.headers['content-type']
    ctx.type = typeof type === 'string' ? type : 'application/json'
    ctx.body = res.body
    return true
  } catch {
    return false
  }
}

export function sitesRoutes (sites: Sites, auth: AuthService, cluster?: Cluster): Router {
  const r = new Router({ prefix: PREFIX })
  r.use(guard(auth))

  r.get('/', async (ctx) => {
    if (await fromLeader(ctx, cluster, sites)) return
    ctx.body = { site: await sites.siteId(), head: await sites.head(), peerings: await sites.list() }
  })

  r.post('/', async (ctx) => {
    const b = await jsonBody(ctx, PeerRequest, MAX_BODY)
    const rec = await sites.peer({ address: b.address, token: b.token, name: b.name, rules: rulesOf(b), ...(b.as !== undefined ? { as: b.as } : {}) })
    ctx.status = 201
    ctx.body = await sites.status(rec.name)
  })

  r.post('/tokens', async (ctx) => {
    const b = await jsonBody(ctx, SiteTokenRequest, MAX_BODY)
    ctx.status = 201
    ctx.body = await sites.token(b.ttlSeconds)
  })

  r.post('/handshake', async (ctx) => {
    const b = await jsonBody(ctx, HandshakeBody, MAX_BODY)
    const req: HandshakeRequest = { token: b.token, site: b.site, members: b.members, rules: rulesOf(b.rules), ...(b.as !== undefined ? { as: b.as } : {}) }
    ctx.status = 201
    ctx.body = await sites.accept(req, ctx.get('authorization') || undefined)
  })

  r.get('/:name', async (ctx) => {
    const name = ctx.params.name!
    if (!Name.safeParse(name).success) throw new FlotillaError('NOT_FOUND', `no peering named ${JSON.stringify(name.slice(0, 80))}: see flotilla site list`)
    if (await fromLeader(ctx, cluster, sites)) return
    ctx.body = await sites.status(name)
  })

  const setRules = async (ctx: Context): Promise<void> => {
    const name = ctx.params.name!
    if (!Name.safeParse(name).success) throw new FlotillaError('NOT_FOUND', `no peering named ${JSON.stringify(name.slice(0, 80))}: see flotilla site list`)
    const b = await jsonBody(ctx, SetRulesRequest, MAX_BODY)
    const patch: RulesPatch = {}
    if (b.repos !== undefined) patch.repos = b.repos
    if (b.direction !== undefined) patch.direction = b.direction as RulesPatch['direction']
    if (b.tags !== undefined) patch.tags = b.tags
    if (b.deletes !== undefined) patch.deletes = b.deletes
    if (b.access !== undefined) patch.access = b.access
    if (b.bandwidth !== undefined) patch.bandwidth = b.bandwidth
    const res = await sites.ops.set(name, patch)
    ctx.body = { ...await sites.status(res.peering.name), told: res.told, message: res.message }
  }
  r.patch('/:name', setRules)
  r.put('/:name', setRules)

  r.get('/:name/explain', async (ctx) => {
    const name = ctx.params.name!
    if (!Name.safeParse(name).success) throw new FlotillaError('NOT_FOUND', `no peering named ${JSON.stringify(name.slice(0, 80))}: see flotilla site list`)
    const repo = ctx.query.repo
    const tag = ctx.query.tag
    if (typeof repo !== 'string' || !RepoName.test(repo) || repo.length > 255) throw new FlotillaError('BAD_REQUEST', 'repo must be one repository name (lowercase, like team/app): ?repo=R&tag=T')
    if (typeof tag !== 'string' || !TagName.test(tag)) throw new FlotillaError('BAD_REQUEST', 'tag must be one tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}): ?repo=R&tag=T')
    if (await fromLeader(ctx, cluster, sites)) return
    ctx.body = await sites.ops.explain(name, repo, tag)
  })

  r.delete('/:name', async (ctx) => {
    const name = ctx.params.name!
    if (!Name.safeParse(name).success) throw new FlotillaError('NOT_FOUND', `no peering named ${JSON.stringify(name.slice(0, 80))}: see flotilla site list`)
    await sites.remove(name)
    ctx.body = { removed: name }
  })

  return r
}
