/**
 * Join tokens: short-lived JWTs signed with the cluster's shared secret (created once by the
 * founding node and replicated in the metadata), so any member can issue and check them.
 */
import { SignJWT, jwtVerify } from 'jose'

const AUDIENCE = 'flotilla-join'

export async function issueJoinToken (info: { clusterId: string; secret: string }, ttlSeconds: number, now = Date.now()): Promise<{ token: string; expiresAt: string }> {
  const exp = Math.floor(now / 1000) + ttlSeconds
  const token = await new SignJWT({ purpose: 'join' })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(info.clusterId)
    .setAudience(AUDIENCE)
    .setIssuedAt(Math.floor(now / 1000))
    .setExpirationTime(exp)
    .sign(Buffer.from(info.secret, 'base64url'))
  return { token, expiresAt: new Date(exp * 1000).toISOString() }
}

/** Throws with the reason when the token is forged, expired or for another cluster. */
export async function checkJoinToken (info: { clusterId: string; secret: string }, token: string): Promise<void> {
  const { payload } = await jwtVerify(token, Buffer.from(info.secret, 'base64url'), { issuer: info.clusterId, audience: AUDIENCE, algorithms: ['HS256'] })
  if (payload.purpose !== 'join') throw new Error('not a join token')
}
