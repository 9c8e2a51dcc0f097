/**
 * Parsers for the names of stored things. Each branded type is made only by its parser,
 * so a value of that type has been checked against the grammar below.
 *
 *   name      := component ("/" component)*            at most 255 characters in all
 *   component := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
 *   tag       := [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
 *   digest    := algorithm ":" encoded
 *                sha256: 64 lowercase hex;  sha512: 128 lowercase hex
 *   reference := tag | digest
 */
import { FlotillaError } from './errors.js'

declare const brand: unique symbol
type Brand<T, B extends string> = T & { readonly [brand]: B }

export type Digest = Brand<string, 'Digest'>
export type RepositoryName = Brand<string, 'RepositoryName'>
export type Tag = Brand<string, 'Tag'>
export type DigestAlgorithm = 'sha256' | 'sha512'

const NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/
const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/
/** Any well-formed `alg:encoded`, used to tell "not a digest" from "a digest we do not support". */
const DIGEST_SHAPE_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/

export const MAX_NAME_LENGTH = 255

export function parseRepositoryName (raw: string): RepositoryName {
  if (raw.length === 0 || raw.length > MAX_NAME_LENGTH || !NAME_RE.test(raw)) {
    throw new FlotillaError('NAME_INVALID', `invalid repository name ${JSON.stringify(raw.slice(0, 300))}: use lowercase components [a-z0-9] joined by '/', '.', '_', '__' or '-'`)
  }
  return raw as RepositoryName
}

export function isTag (raw: string): raw is Tag {
  return TAG_RE.test(raw)
}

export function parseTag (raw: string): Tag {
  if (!isTag(raw)) {
    throw new FlotillaError('TAG_INVALID', `invalid tag ${JSON.stringify(raw.slice(0, 200))}: a tag matches [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`)
  }
  return raw
}

export function isDigest (raw: string): raw is Digest {
  return DIGEST_RE.test(raw)
}

export function looksLikeDigest (raw: string): boolean {
  return raw.includes(':')
}

export function parseDigest (raw: string): Digest {
  if (isDigest(raw)) return raw
  if (DIGEST_SHAPE_RE.test(raw)) {
    const alg = raw.slice(0, raw.indexOf(':'))
    if (alg !== 'sha256' && alg !== 'sha512') {
      throw new FlotillaError('DIGEST_INVALID', `unsupported digest algorithm ${JSON.stringify(alg)}: use sha256 or sha512`)
    }
  }
  throw new FlotillaError('DIGEST_INVALID', `invalid digest ${JSON.stringify(raw.slice(0, 200))}: expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>`)
}

export function digestAlgorithm (d: Digest): DigestAlgorithm {
  return d.startsWith('sha512:') ? 'sha512' : 'sha256'
}

export function digestHex (d: Digest): string {
  return d.slice(d.indexOf(':') + 1)
}

export function parseDigestAlgorithm (raw: string): DigestAlgorithm {
  if (raw === 'sha256' || raw === 'sha512') return raw
  throw new FlotillaError('DIGEST_INVALID', `unsupported digest algorithm ${JSON.stringify(raw.slice(0, 50))}: use sha256 or sha512`)
}

/** A manifest reference is a tag or a digest. */
export type Reference = { kind: 'tag'; tag: Tag } | { kind: 'digest'; digest: Digest }

export function parseReference (raw: string): Reference {
  if (looksLikeDigest(raw)) return { kind: 'digest', digest: parseDigest(raw) }
  return { kind: 'tag', tag: parseTag(raw) }
}

/** Make a Digest from an algorithm and a computed hex string (trusted: it came from our own hasher). */
export function digestOf (alg: DigestAlgorithm, hex: string): Digest {
  return parseDigest(`${alg}:${hex}`)
}
