/**
 * The cluster API under /api/v1/cluster: status, join tokens, joining, leaving and removal.
 * Changes to the Raft configuration must be made by the leader, so those routes are
 * forwarded to it by middleware (joining by cluster/join.ts, shared with the libp2p join
 * protocol); status answers from any node.
 */
import { FORWARDED } from './forwarded.js'
import Router from '@koa/router'
import type { Context, Next } from 'koa'
import { z } from 'zod'
import type { DiskState } from '../../storage/disk-watch.js'
import type { Cluster } from '../../cluster/cluster.js'
import type { Stall } from '../../cluster/stall-watch.js'
import { createJoinToken, joinCluster, JoinRequest } from '../../cluster/join.js'
import { FlotillaError } from '../../storage/errors.js'
import { jsonBody } from './json-body.js'
import { readLimited } from './manifests.js'

/** Largest request body these routes read. */
const MAX_BODY = 64 * 1024

/** Proxy the request to the leader's HTTP API unless this node is the leader. */
function onLeader (cluster: Cluster) {
  return async function leaderRouting (ctx: Context, next: Next): Promise<void> {
    if (cluster.driver.isLeader) return await next()
    const leader = cluster.driver.leader
    // peerTarget: undefined too for a leader that fault injection cut this node off from.
    const target = leader === null ? undefined : cluster.peerTarget(leader)
    if (target === undefined) throw new FlotillaError('UNAVAILABLE', 'no leader is known right now: retry in a few seconds')
    if (await cluster.forwarding.marked(ctx.get(FORWARDED), ctx.method, ctx.path)) throw new FlotillaError('UNAVAILABLE', 'the leader moved while forwarding: retry')
    const body = ctx.method === 'GET' || ctx.method === 'DELETE' ? undefined : await readLimited(ctx.req, MAX_BODY)
    const headers: Record<string, string> = { [FORWARDED]: await cluster.forwarding.mark(ctx.method, ctx.path) }
    for (const h of ['content-type', 'authorization']) if (ctx.get(h) !== '') headers[h] = ctx.get(h)
    let res
    try {
      res = await cluster.peerClient.call(target, { method: ctx.method, path: ctx.originalUrl, headers, ...(body !== undefined ? { body } : {}), timeoutMs: 120_000 })
    } catch (err) {
      throw new FlotillaError('UNAVAILABLE', `cannot reach the leader ${target.peerId} at ${target.url} (${(err as Error).message}): retry in a few seconds`)
    }
    ctx.status = res.status
    const type = res.headers['content-type']
    if (type !== undefined) ctx.type = type
    ctx.body = res.body
  }
}

/** One member in GET /api/v1/cluster. */
export interface ClusterMemberDoc {
  peerId: string
  role: 'voter' | 'learner' | 'none'
  http: string | null
  /** Its peer port (https://HOST:PORT, net/peer-https.ts); null for a member recorded without one. */
  peer: string | null
  p2p: string[]
  leader: boolean
  /** Known to the leader only; null elsewhere. */
  match: number | null
  lag: number | null
  /**
   * Whether this node hears from the member: itself always; another when a Raft frame came
   * from it within the last 3 s (every follower answers the leader's 50 ms heartbeats, so
   * the leader's view is the one to trust; a follower hears from the leader only).
   */
  reachable: boolean
  /** When this node last heard from the member (ISO time), null when never. */
  lastContact: string | null
  /** Set on the leader when replication to the member has not advanced for 5 s while it lags. */
  stalled: { match: number; since: string; cause: string } | null
}

/** GET /api/v1/cluster. */
export interface ClusterStatusDoc {
  node: string
  leader: string | null
  term: number
  commit: number
  applied: number
  role: string
  replicationBacklog: number
  /** This node's disk (storage/disk-watch.ts). */
  disk?: DiskState
  members: ClusterMemberDoc[]
}

function stalledDoc (s: Stall | undefined): ClusterMemberDoc['stalled'] {
  return s === undefined ? null : { match: s.match, since: new Date(s.since).toISOString(), cause: s.cause }
}

/** A member's multiaddrs, each ending in /p2p/<its id> so an operator can copy one to `flotilla join`. */
function fullAddrs (peerId: string, addrs: string[]): string[] {
  return addrs.map((a) => a.includes('/p2p/') ? a : `${a.replace(/\/+$/, '')}/p2p/${peerId}`)
}

/** POST /api/v1/cluster/tokens; exported for the OpenAPI document (openapi.ts). */
export const JoinTokenRequest = z.object({ ttlSeconds: z.number().int().min(60).max(7 * 24 * 3600).default(3600) })

export function clusterRoutes (cluster: Cluster, replicationBacklog: () => number = () => 0, disk?: () => DiskState): Router {
  const r = new Router({ prefix: '/api/v1/cluster' })

  const contact = (id: string): Pick<ClusterMemberDoc, 'reachable' | 'lastContact'> => {
    if (id === cluster.peerId) return { reachable: true, lastContact: new Date().toISOString() }
    const at = cluster.transport.lastReceived(id)
    return { reachable: at !== undefined && Date.now() - at < 3000, lastContact: at === undefined ? null : new Date(at).toISOString() }
  }
  r.get('/', async (ctx) => {
    const st = cluster.status()
    const members = cluster.memberList()
    const ids = new Set([...st.conf.voters, ...st.conf.learners, ...members.map((m) => m.peerId)])
    const doc: ClusterStatusDoc = {
      node: cluster.peerId,
      leader: st.leader,
      term: st.term,
      commit: st.commit,
      applied: st.applied,
      role: st.role,
      // Blobs this node should hold and is still copying.
      replicationBacklog: replicationBacklog(),
      // This node's disk against its watermarks (storage/disk-watch.ts).
      ...(disk !== undefined ? { disk: disk() } : {}),
      members: [...ids].sort().map((id): ClusterMemberDoc => {
        const m = members.find((x) => x.peerId === id)
        const pr = st.progress?.get(id)
        return {
          peerId: id,
          role: st.conf.voters.includes(id) ? 'voter' : st.conf.learners.includes(id) ? 'learner' : 'none',
          http: m?.http ?? null,
          peer: m?.peer ?? null,
          p2p: fullAddrs(id, m?.p2p ?? []),
          leader: id === st.leader,
          // The leader knows how far each member is; others report null.
          match: pr?.match ?? null,
          lag: pr === undefined ? null : Math.max(0, st.lastIndex - pr.match),
          ...contact(id),
          stalled: stalledDoc(cluster.stalls.stallOf(id)),
        }
      }),
    }
    ctx.body = doc
  })

  r.post('/tokens', async (ctx) => {
    const body = await jsonBody(ctx, JoinTokenRequest, MAX_BODY)
    const issued = await createJoinToken(cluster, body.ttlSeconds)
    ctx.status = 201
    ctx.body = issued
  })

  // The same join as over libp2p (cluster/join.ts); a follower forwards it to the leader.
  r.post('/join', async (ctx) => {
    const req = await jsonBody(ctx, JoinRequest, MAX_BODY)
    const members = await joinCluster(cluster, req, { forwarded: await cluster.forwarding.marked(ctx.get(FORWARDED), ctx.method, ctx.path) })
    ctx.status = 201
    ctx.body = { members }
  })

  r.delete('/members/:peerId', onLeader(cluster), async (ctx, next) => {
    // The leader leaves by handing over first; the new leader then removes it.
    if (ctx.params.peerId === cluster.peerId) {
      if (!await cluster.stepDown()) throw new FlotillaError('DENIED', 'cannot remove the only voter of the cluster')
      return await onLeader(cluster)(ctx, next)
    }
    // Only a member can be removed: an unknown id would otherwise be "removed" (and banned) silently.
    const known = new Set([...cluster.memberIds(), ...cluster.memberList().map((m) => m.peerId)])
    if (!known.has(ctx.params.peerId!)) throw new FlotillaError('NOT_FOUND', `${JSON.stringify(ctx.params.peerId!.slice(0, 100))} is not a member of this cluster: see GET /api/v1/cluster`)
    await cluster.removePeer(ctx.params.peerId!)
    ctx.status = 202
    ctx.body = { removed: ctx.params.peerId }
  })

  r.post('/leave', async (ctx) => {
    // Leaving is a removal of this node, done by the leader; forward it there.
    if (cluster.driver.isLeader && !await cluster.stepDown()) throw new FlotillaError('DENIED', 'cannot leave: this node is the only voter of the cluster')
    const leader = cluster.driver.leader
    {
      const target = leader === null ? undefined : cluster.peerTarget(leader)
      if (target === undefined) throw new FlotillaError('UNAVAILABLE', 'no leader is known right now: retry in a few seconds')
      const headers: Record<string, string> = {}
      if (ctx.get('authorization') !== '') headers.authorization = ctx.get('authorization')
      let res
      try {
        res = await cluster.peerClient.call(target, { method: 'DELETE', path: `/api/v1/cluster/members/${cluster.peerId}`, headers, timeoutMs: 60_000 })
      } catch (err) {
        throw new FlotillaError('UNAVAILABLE', `cannot reach the leader ${target.peerId} at ${target.url} (${(err as Error).message}): retry in a few seconds`)
      }
      if (res.status < 200 || res.status >= 300) throw new FlotillaError('UNAVAILABLE', `the leader refused the removal (${res.status}): ${res.body.toString('utf8').slice(0, 500)}`)
    }
    ctx.status = 202
    ctx.body = { removed: cluster.peerId }
  })

  return r
}
