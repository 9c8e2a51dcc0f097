/**
 * Joining a cluster. A new node asks any member, with one request, either over HTTP
 * (POST /api/v1/cluster/join, src/http/cluster-api.ts) or over libp2p (JOIN_PROTOCOL, dialed
 * at a member's multiaddr). Both end in joinCluster() on the leader: a follower forwards the
 * request to the leader's HTTP API. The leader checks the token, refuses removed peers,
 * records the joiner's addresses (AddPeer) and adds it as a learner.
 *
 *   request  {token, peerId, p2p: [multiaddr], http: URL, peer?: https URL of its peer port}
 *   answer   {members: MemberRecord[]}  or  {error: {code, status, message}}
 *
 * Over libp2p the joiner is a stranger to the member's connection gater: it is let in on
 * probation (cluster/probation.ts) while a join token is outstanding, and its request must
 * name the identity it connected with.
 */
import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from 'pino'
import { ERRORS, FlotillaError, type ErrorCode } from '../storage/errors.js'
import { serveRequests } from '../net/request-response.js'
import type { Host } from '../net/host.js'
import { checkJoinToken, issueJoinToken } from './join-token.js'
import type { Cluster } from './cluster.js'
import type { Probation } from './probation.js'
import type { MemberRecord } from './metadata/commands.js'

export const JOIN_PROTOCOL = '/flotilla/join/1.0.0'

export const JoinRequest = z.object({
  token: z.string().min(1).max(4096),
  peerId: z.string().min(10).max(200),
  p2p: z.array(z.string().max(300)).min(1).max(16),
  http: z.string().url(),
  /** The joiner's peer port (net/peer-https.ts); older joiners have none. */
  peer: z.string().url().max(300).regex(/^https:\/\//, 'must be an https:// URL').optional(),
})
export type JoinRequest = z.infer<typeof JoinRequest>

/** The answer of the join protocol. */
export type JoinAnswer = { members: MemberRecord[] } | { error: { code: ErrorCode; status: number; message: string } }

/** Where a joiner asks: a member's HTTP URL, or its libp2p multiaddr ending in /p2p/<peer id>. */
export type JoinAddress = { kind: 'http'; url: string } | { kind: 'p2p'; addr: Multiaddr; peerId: string }

/** Parse `flotilla join ADDRESS`; throws with what is wrong and what is expected. */
export function parseJoinAddress (address: string): JoinAddress {
  if (/^https?:\/\//i.test(address)) {
    try {
      return { kind: 'http', url: new URL(address).toString() }
    } catch {
      throw new Error(`${address} is not a valid URL: join through a member's HTTP URL (http://HOST:PORT) or its multiaddr (/ip4/HOST/tcp/PORT/p2p/PEER-ID)`)
    }
  }
  if (!address.startsWith('/')) {
    throw new Error(`join through a member's HTTP URL (http://HOST:PORT) or its libp2p multiaddr (/ip4/HOST/tcp/PORT/p2p/PEER-ID), not ${address}`)
  }
  let addr: Multiaddr
  try {
    addr = multiaddr(address)
  } catch (err) {
    throw new Error(`${address} is not a valid multiaddr (${(err as Error).message}): expected /ip4/HOST/tcp/PORT/p2p/PEER-ID`)
  }
  const p2p = addr.getComponents().filter((c) => c.name === 'p2p')
  const peerId = p2p.at(-1)?.value
  if (peerId === undefined) {
    throw new Error(`the multiaddr ${address} does not name the member: add /p2p/PEER-ID (flotilla status lists each member's full address)`)
  }
  return { kind: 'p2p', addr, peerId }
}

/**
 * Admit a joiner: on the leader, check the token, refuse a removed identity, record the
 * joiner's addresses and add it as a learner; on a follower, forward to the leader. Returns
 * the members the joiner should dial. Throws FlotillaError (UNAUTHORIZED, DENIED, UNAVAILABLE …).
 */
export async function joinCluster (cluster: Cluster, req: JoinRequest, opts: { forwarded?: boolean } = {}): Promise<MemberRecord[]> {
  // A joiner that names its own address answers its own request: its HTTP server is up before
  // it is a member of anything. Say so plainly (this used to be a TypeError and a 500).
  if (req.peerId === cluster.peerId) {
    throw new FlotillaError('DENIED', 'a node cannot join itself: the address given to flotilla join is this node\'s own (--listen or --p2p); give the address of a member of the cluster to join')
  }
  if (cluster.driver === undefined) {
    throw new FlotillaError('UNAVAILABLE', 'this node is not a member of a cluster yet (it is joining one itself): join through a member that is already serving')
  }
  if (!cluster.driver.isLeader) return await forwardToLeader(cluster, req, opts.forwarded === true)
  const info = await cluster.queries.clusterInfo()
  if (info === undefined) throw new FlotillaError('UNAVAILABLE', 'the cluster is not initialized yet')
  try {
    await checkJoinToken(info, req.token)
  } catch (err) {
    throw new FlotillaError('UNAUTHORIZED', `join token refused: ${(err as Error).message}. Ask an admin for a new one with flotilla token`)
  }
  if (await cluster.queries.isRemoved(req.peerId)) {
    throw new FlotillaError('DENIED', `peer ${req.peerId} was removed from this cluster and cannot rejoin: start the node on a fresh data dir`)
  }
  const added = await cluster.applier.submit({ type: 'AddPeer', peerId: req.peerId, p2p: req.p2p, http: req.http, ...(req.peer !== undefined ? { peer: req.peer } : {}), at: Date.now() })
  if (!added.ok) throw new FlotillaError(added.code, added.message)
  await cluster.addLearner(req.peerId)
  return cluster.memberList()
}

const BY_STATUS: Partial<Record<number, ErrorCode>> = { 400: 'BAD_REQUEST', 401: 'UNAUTHORIZED', 403: 'DENIED', 503: 'UNAVAILABLE' }

/** A follower passes the join to the leader's API (over its peer port), once (a second hop means the leader moved). */
async function forwardToLeader (cluster: Cluster, req: JoinRequest, forwarded: boolean): Promise<MemberRecord[]> {
  const leader = cluster.driver.leader
  const target = leader === null ? undefined : cluster.peerTarget(leader)
  if (target === undefined) throw new FlotillaError('UNAVAILABLE', 'no leader is known right now: retry in a few seconds')
  if (forwarded) throw new FlotillaError('UNAVAILABLE', 'the leader moved while forwarding: retry')
  let res
  try {
    res = await cluster.peerClient.call(target, {
      method: 'POST',
      path: '/api/v1/cluster/join',
      headers: { 'content-type': 'application/json', 'x-flotilla-forwarded': await cluster.forwarding.mark('POST', '/api/v1/cluster/join') },
      body: JSON.stringify(req),
      timeoutMs: 60_000,
    })
  } catch (err) {
    throw new FlotillaError('UNAVAILABLE', `cannot reach the leader at ${target.url} (${(err as Error).message}): retry in a few seconds`)
  }
  let body: { members?: MemberRecord[]; errors?: Array<{ message?: string }> } = {}
  try { body = JSON.parse(res.body.toString('utf8')) as typeof body } catch { /* not JSON: the status says enough */ }
  if (res.status >= 200 && res.status < 300 && Array.isArray(body.members)) return body.members
  throw new FlotillaError(BY_STATUS[res.status] ?? 'UNAVAILABLE', body.errors?.[0]?.message ?? `the leader answered ${res.status}`)
}

/**
 * Serve JOIN_PROTOCOL on a member. A refused stranger is answered, then disconnected; one
 * that joined stays connected (it is a member now).
 */
export async function serveJoins (host: Host, cluster: Cluster, probation: Probation, log: Logger): Promise<void> {
  const enc = new TextEncoder()
  await serveRequests(host, JOIN_PROTOCOL, async (peer, bytes) => {
    try {
      let doc: unknown
      try { doc = JSON.parse(new TextDecoder().decode(bytes)) } catch { throw new FlotillaError('BAD_REQUEST', 'the join request is not valid JSON') }
      const r = JoinRequest.safeParse(doc)
      if (!r.success) throw new FlotillaError('BAD_REQUEST', `invalid join request: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
      if (r.data.peerId !== peer) throw new FlotillaError('BAD_REQUEST', `the join request names peer ${r.data.peerId} but comes from ${peer}`)
      const members = await probation.working(peer, async () => await joinCluster(cluster, r.data))
      probation.joined(peer)
      log.info({ peer }, 'a node joined through the libp2p join protocol')
      return { bytes: enc.encode(JSON.stringify({ members } satisfies JoinAnswer)) }
    } catch (err) {
      const e = err instanceof FlotillaError ? err : new FlotillaError('INTERNAL', `the join failed: ${(err as Error).message}`)
      log.warn({ peer, code: e.code, err: e.message }, 'join over libp2p refused')
      // A stranger has no more business here: free its probation slot and hang up once answered.
      const stranger = !cluster.admits(peer)
      if (stranger) probation.release(peer)
      const answer: JoinAnswer = { error: { code: e.code, status: ERRORS[e.code].status, message: e.message } }
      return { bytes: enc.encode(JSON.stringify(answer)), hangUp: stranger }
    }
  }, { maxRequestBytes: 64 * 1024, timeoutMs: 60_000 })
}

/**
 * Hand out a join token: recorded first (IssueJoinToken), so that while it is unexpired every
 * member lets a stranger connect on probation to join through its multiaddr.
 */
export async function createJoinToken (cluster: Cluster, ttlSeconds: number): Promise<{ token: string; expiresAt: string }> {
  await cluster.applier.barrier()
  const info = await cluster.queries.clusterInfo()
  if (info === undefined) throw new FlotillaError('UNAVAILABLE', 'the cluster is not initialized yet')
  const now = Date.now()
  const id = randomBytes(12).toString('base64url')
  const issued = await issueJoinToken(info, ttlSeconds, now, id)
  const recorded = await cluster.applier.submit({ type: 'IssueJoinToken', id, expiresAt: Date.parse(issued.expiresAt), at: now })
  if (!recorded.ok) throw new FlotillaError(recorded.code, recorded.message)
  return issued
}
