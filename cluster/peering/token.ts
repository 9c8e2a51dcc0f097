/**
 * Peering tokens: a JWT signed with the site's cluster secret (like join tokens,
 * cluster/join-token.ts), which names the site and its members (libp2p identities and the
 * addresses other sites dial, `sites.advertise`), and expires. The other site reads the
 * claims without the secret, to learn whom it is about to peer with; only the issuing site
 * can check the signature, when the other site presents the token back to it.
 */
import { decodeJwt, errors, jwtVerify, type JWTPayload } from 'jose'
import { signClusterToken } from '../join-token.js'
import { membersProblem, type SiteMember } from './model.js'

const AUDIENCE = 'flotilla-site'

export interface SiteTokenClaims {
  site: string
  members: SiteMember[]
  /** Expiry, epoch ms. */
  expiresAt: number
}

export async function issueSiteToken (info: { clusterId: string; secret: string }, members: SiteMember[], ttlSeconds: number, now = Date.now()): Promise<{ token: string; expiresAt: string }> {
  return await signClusterToken(info, AUDIENCE, { purpose: 'site', site: info.clusterId, members }, ttlSeconds, now)
}

/** Why a peering token is refused, in words; callers add what to do. */
export class SiteTokenError extends Error {
  static override name = 'SiteTokenError'
  constructor (message: string) { super(message); this.name = 'SiteTokenError' }
}

/** Check a token this site issued: throws SiteTokenError when forged, expired or for another site. */
export async function checkSiteToken (info: { clusterId: string; secret: string }, token: string): Promise<void> {
  let payload: JWTPayload
  try {
    ({ payload } = await jwtVerify(token, Buffer.from(info.secret, 'base64url'), { issuer: info.clusterId, audience: AUDIENCE, algorithms: ['HS256'] }))
  } catch (err) {
    if (err instanceof errors.JWTExpired) {
      const exp = err.payload.exp
      throw new SiteTokenError(typeof exp === 'number' ? `the peering token expired at ${new Date(exp * 1000).toISOString()}` : 'the peering token has expired')
    }
    if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) throw new SiteTokenError('the peering token is malformed (not the whole line flotilla site token printed?)')
    throw new SiteTokenError('the peering token is not valid for this site (issued by another site, or altered)')
  }
  if (payload.purpose !== 'site') throw new SiteTokenError('this is not a peering token (flotilla site token makes one)')
}

/** Read a token's claims without checking its signature (the other site's secret is not ours). */
export function readSiteToken (token: string): SiteTokenClaims {
  let p: JWTPayload
  try {
    p = decodeJwt(token)
  } catch {
    throw new SiteTokenError('the peering token is malformed: copy the whole last line flotilla site token printed')
  }
  if (p.purpose !== 'site' || typeof p.site !== 'string' || !/^[0-9a-f]{16}$/.test(p.site)) throw new SiteTokenError('this is not a peering token (flotilla site token makes one; flotilla token makes join tokens)')
  const why = membersProblem(p.members)
  if (why !== undefined) throw new SiteTokenError(`the peering token names no valid members: ${why}`)
  if (typeof p.exp !== 'number') throw new SiteTokenError('the peering token has no expiry')
  return { site: p.site, members: p.members as SiteMember[], expiresAt: p.exp * 1000 }
}
