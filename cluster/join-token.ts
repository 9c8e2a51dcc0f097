/**
 * Join tokens: short-lived JWTs signed with the cluster's shared secret (created once by the
 * founding node and replicated in the metadata), so any member can issue and check them.
 */
import { SignJWT, decodeJwt, errors, jwtVerify, type JWTPayload } from 'jose'

const AUDIENCE = 'flotilla-join'

/**
 * Sign a join token. `id` (the JWT id) names its IssueJoinToken record in the metadata, which
 * the caller submits: while one is unexpired, members accept strangers on probation.
 */
export async function issueJoinToken (info: { clusterId: string; secret: string }, ttlSeconds: number, now = Date.now(), id?: string): Promise<{ token: string; expiresAt: string }> {
  return await signClusterToken(info, AUDIENCE, { purpose: 'join' }, ttlSeconds, now, id)
}

/**
 * A token signed with the cluster secret (HS256), issued by the cluster for `audience`, with
 * `claims`, expiring `ttlSeconds` from `now`: join tokens here, peering tokens in cluster/peering/.
 */
export async function signClusterToken (info: { clusterId: string; secret: string }, audience: string, claims: JWTPayload, ttlSeconds: number, now = Date.now(), id?: string): Promise<{ token: string; expiresAt: string }> {
  const exp = Math.floor(now / 1000) + ttlSeconds
  const jwt = new SignJWT(claims)
  if (id !== undefined) jwt.setJti(id)
  const token = await jwt
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(info.clusterId)
    .setAudience(audience)
    .setIssuedAt(Math.floor(now / 1000))
    .setExpirationTime(exp)
    .sign(Buffer.from(info.secret, 'base64url'))
  return { token, expiresAt: new Date(exp * 1000).toISOString() }
}

/**
 * Throws a JoinTokenError saying why when the token is forged, expired or for another cluster;
 * returns its id (undefined for a token signed before join tokens were recorded).
 */
export async function checkJoinToken (info: { clusterId: string; secret: string }, token: string): Promise<{ id: string | undefined }> {
  let payload: JWTPayload
  try {
    ({ payload } = await jwtVerify(token, Buffer.from(info.secret, 'base64url'), { issuer: info.clusterId, audience: AUDIENCE, algorithms: ['HS256'] }))
  } catch (err) {
    throw new JoinTokenError(refusal(err))
  }
  if (payload.purpose !== 'join') throw new JoinTokenError('it is not a join token')
  return { id: payload.jti }
}

/** Why a join token is refused, in words (JoinTokenError.message); its callers add what to do. */
export class JoinTokenError extends Error {
  static override name = 'JoinTokenError'
  constructor (message: string) { super(message); this.name = 'JoinTokenError' }
}

/** jose's error for a token, said plainly. */
function refusal (err: unknown): string {
  if (err instanceof errors.JWTExpired) {
    const exp = err.payload.exp
    return typeof exp === 'number' ? `it expired at ${new Date(exp * 1000).toISOString()}` : 'it has expired'
  }
  if (err instanceof errors.JWTClaimValidationFailed && (err.claim === 'nbf' || err.claim === 'iat')) return 'it is not valid yet: is this machine\'s clock right?'
  // A bad signature, another issuer or audience, another algorithm: signed by another cluster, or altered.
  if (err instanceof errors.JWSSignatureVerificationFailed || err instanceof errors.JWTClaimValidationFailed || err instanceof errors.JOSEAlgNotAllowed) return 'it is not valid for this cluster (issued by another cluster, or altered)'
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return 'it is malformed (not the whole line flotilla token printed?)'
  return `it could not be checked: ${(err as Error).message}`
}

/**
 * When a join token expires (epoch ms), read without checking its signature, so a joiner can
 * say so before it asks; undefined when it names no expiry, 'malformed' when it is no JWT.
 */
export function joinTokenExpiry (token: string): number | 'malformed' | undefined {
  try {
    const exp = decodeJwt(token).exp
    return typeof exp === 'number' ? exp * 1000 : undefined
  } catch {
    return 'malformed'
  }
}
