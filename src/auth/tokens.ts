/**
 * Credentials the registry mints.
 *
 *   access token   flt_<id: 16 hex>_<secret: 43 base64url>   robots, CI, docker's offline token.
 *                  Stored as a TokenRecord whose secretHash is SHA-256(secret).
 *   registry JWT   HS256, signed with the cluster key (acl␀key), Docker token-auth claims:
 *                  iss, sub, aud (= service), exp, nbf, iat, jti, access[]; plus
 *                  pv (the subject's password version) or tid (the access token it came from),
 *                  so a password change or a revocation kills the JWTs derived from it at once.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { SignJWT, jwtVerify } from 'jose'
import type { JwtAccess } from './identity.js'

const TOKEN_RE = /^flt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/

export function newAccessToken (): { id: string; secret: string; value: string; secretHash: string } {
  const id = randomBytes(8).toString('hex')
  const secret = randomBytes(32).toString('base64url')
  return { id, secret, value: `flt_${id}_${secret}`, secretHash: hashSecret(secret) }
}

export function looksLikeAccessToken (s: string): boolean {
  return s.startsWith('flt_')
}

export function parseAccessToken (s: string): { id: string; secret: string } | undefined {
  const m = TOKEN_RE.exec(s)
  return m === null ? undefined : { id: m[1]!, secret: m[2]! }
}

export function hashSecret (secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

export function secretMatches (secret: string, hash: string): boolean {
  const a = Buffer.from(hashSecret(secret), 'hex')
  const b = Buffer.from(hash, 'hex')
  return a.length === b.length && timingSafeEqual(a, b)
}

export interface RegistryClaims {
  sub: string
  access: JwtAccess[]
  pv?: number
  tid?: string
}

export interface JwtSettings { issuer: string; service: string }

export async function signRegistryToken (key: Uint8Array, kid: string, s: JwtSettings, claims: RegistryClaims, nowMs: number, ttlSeconds: number): Promise<string> {
  const now = Math.floor(nowMs / 1000)
  const payload: Record<string, unknown> = { access: claims.access }
  if (claims.pv !== undefined) payload.pv = claims.pv
  if (claims.tid !== undefined) payload.tid = claims.tid
  return await new SignJWT(payload)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid })
    .setIssuer(s.issuer)
    .setSubject(claims.sub)
    .setAudience(s.service)
    .setIssuedAt(now)
    .setNotBefore(now - 10)
    .setExpirationTime(now + ttlSeconds)
    .setJti(randomBytes(12).toString('base64url'))
    .sign(key)
}

/** Verify signature, issuer, audience, exp and nbf; throws on any failure. */
export async function verifyRegistryToken (key: Uint8Array, s: JwtSettings, token: string, nowMs: number): Promise<RegistryClaims> {
  const { payload } = await jwtVerify(token, key, {
    issuer: s.issuer,
    audience: s.service,
    algorithms: ['HS256'],
    currentDate: new Date(nowMs),
    requiredClaims: ['exp', 'sub'],
  })
  const access = Array.isArray(payload.access) ? payload.access as JwtAccess[] : []
  const out: RegistryClaims = { sub: payload.sub ?? '', access }
  if (typeof payload.pv === 'number') out.pv = payload.pv
  if (typeof payload.tid === 'string') out.tid = payload.tid
  return out
}
