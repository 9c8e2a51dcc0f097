/**
 * Join tokens: short-lived JWTs signed with the cluster's shared secret (created once by the
 * founding node and replicated in the metadata), so any member can issue and check them.
 */
import { SignJWT, jwtVerify } from 'jose'

const AUDIENCE = 'flotilla-join'

/**
 * Sign a join token. `id` (the JWT id) names its IssueJoinToken record in the metadata, which
 * the caller submits: while one is unexpired, members accept strangers on probation.
 */
export async function issueJoinToken (info: { clusterId: string; secret: string }, ttlSeconds: number, now = Date.now(), id?: string): Promise<{ token: string; expiresAt: string }> {
  const exp = Math.floor(now / 1000) + ttlSeconds
  const jwt = new SignJWT({ purpose: 'join' })
  if (id !== undefined) jwt.setJti(id)
  const token = await jwt
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(info.clusterId)
    .setAudience(AUDIENCE)
    .setIssuedAt(Math.floor(now / 1000))
    .setExpirationTime(exp)
    .sign(Buffer.from(info.secret, 'base64url'))
  return { token, expiresAt: new Date(exp * 1000).toISOString() }
}

/**
 * Throws with the reason when the token is forged, expired or for another cluster; returns
 * its id (undefined for a token signed before join tokens were recorded).
 */
export async function checkJoinToken (info: { clusterId: string; secret: string }, token: string): Promise<{ id: string | undefined }> {
  const { payload } = await jwtVerify(token, Buffer.from(info.secret, 'base64url'), { issuer: info.clusterId, audience: AUDIENCE, algorithms: ['HS256'] })
  if (payload.purpose !== 'join') throw new Error('not a join token')
  return { id: payload.jti }
}
