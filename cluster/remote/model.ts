/**
 * Remote repositories (pull-through caches): what one is, how a repository name finds its
 * remote, and the checks the state machine applies to a PutRemote.
 *
 *   a remote   {name, prefix, upstream, username?, password?, ttlSeconds, allow, block}
 *   prefix     `hub/`: the client's `hub/library/alpine` is `library/alpine` upstream
 *   upstream   http:// or https:// origin of a registry (no path)
 *   password   encrypted with the cluster key (secret.ts); never handed back by a read
 *   ttlSeconds how long a cached tag is trusted before a HEAD checks it upstream again
 *   allow      repository patterns (upstream names, cluster/access/model.ts grammar) that may be
 *              pulled; default every one. `block` patterns win over `allow`.
 */
import { FlotillaError } from '../../storage/errors.js'
import { isValidName, isValidPattern, matches } from '../access/model.js'

export interface RemoteRecord {
  name: string
  prefix: string
  upstream: string
  username?: string
  /** Encrypted (secret.ts), `v1:` + base64. */
  password?: string
  ttlSeconds: number
  allow: string[]
  block: string[]
  at: number
}

/** The default tag TTL: five minutes. */
export const DEFAULT_TTL_SECONDS = 300

/** A prefix: one or more lowercase name components, each followed by `/` (`hub/`, `mirrors/quay/`). */
const PREFIX_RE = /^(?:[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\/)+$/

/** Refuse a malformed remote with the field that is wrong and how to fix it. */
export function checkRemote (r: RemoteRecord): void {
  if (typeof r.name !== 'string' || !isValidName(r.name)) throw new FlotillaError('BAD_REQUEST', `remote name ${JSON.stringify(String(r.name).slice(0, 80))} is invalid: lowercase letters, digits, . _ - (up to 64)`)
  if (typeof r.prefix !== 'string' || !PREFIX_RE.test(r.prefix) || r.prefix.length > 128) throw new FlotillaError('BAD_REQUEST', `prefix ${JSON.stringify(String(r.prefix).slice(0, 80))} is invalid: give repository name components ending with a slash, e.g. hub/`)
  let u: URL
  try { u = new URL(r.upstream) } catch { throw new FlotillaError('BAD_REQUEST', `upstream ${JSON.stringify(String(r.upstream).slice(0, 200))} is not a URL: give http://HOST[:PORT] or https://HOST[:PORT]`) }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new FlotillaError('BAD_REQUEST', `upstream ${r.upstream} must be http:// or https://`)
  if ((u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') {
    throw new FlotillaError('BAD_REQUEST', `upstream ${r.upstream} must be a bare origin (scheme, host, port), without path, query or credentials: pass credentials with --username/--password-stdin`)
  }
  if (!Number.isSafeInteger(r.ttlSeconds) || r.ttlSeconds < 0 || r.ttlSeconds > 365 * 86400) throw new FlotillaError('BAD_REQUEST', 'ttlSeconds must be a whole number of seconds from 0 to a year')
  for (const k of ['allow', 'block'] as const) {
    const v = r[k]
    if (!Array.isArray(v) || !v.every((p) => typeof p === 'string' && isValidPattern(p))) throw new FlotillaError('BAD_REQUEST', `${k} must be a list of repository patterns (e.g. library/*, **)`)
  }
  if (r.username !== undefined && (typeof r.username !== 'string' || r.username === '' || r.username.length > 256)) throw new FlotillaError('BAD_REQUEST', 'username must be a non-empty string')
  if ((r.username === undefined) !== (r.password === undefined)) throw new FlotillaError('BAD_REQUEST', 'give both a username and a password, or neither (anonymous access)')
}

/** The upstream origin without a trailing slash. */
export function upstreamOrigin (r: Pick<RemoteRecord, 'upstream'>): string {
  return new URL(r.upstream).origin
}

/** Two prefixes overlap when one starts with the other: a name would belong to both. */
export function prefixesOverlap (a: string, b: string): boolean {
  return a.startsWith(b) || b.startsWith(a)
}

/** The remote whose prefix `name` starts with (prefixes never overlap), or undefined. */
export function remoteOf (name: string, remotes: readonly RemoteRecord[]): RemoteRecord | undefined {
  for (const r of remotes) if (name.startsWith(r.prefix) && name.length > r.prefix.length) return r
  return undefined
}

/** Docker Hub's hosts: there, a one-component name is an official image under `library/`. */
const DOCKER_HUB = new Set(['registry-1.docker.io', 'index.docker.io', 'docker.io', 'registry.hub.docker.com'])

/**
 * The upstream name of a repository of `r`: its prefix stripped (`hub/library/alpine` is
 * `library/alpine`). On Docker Hub a single component gets `library/`, as docker itself adds it
 * (`hub/alpine` is `library/alpine`).
 */
export function upstreamName (r: RemoteRecord, name: string): string {
  const rest = name.slice(r.prefix.length)
  return !rest.includes('/') && DOCKER_HUB.has(new URL(r.upstream).hostname) ? `library/${rest}` : rest
}

/** Whether `r` lets `upstream` (a name with the prefix stripped) be pulled: allowed and not blocked. */
export function remoteAllows (r: RemoteRecord, upstream: string): boolean {
  if (r.block.some((p) => matches(p, upstream))) return false
  return r.allow.length === 0 || r.allow.some((p) => matches(p, upstream))
}

/** A remote as reads show it: the password replaced by whether there is one. */
export function remoteView (r: RemoteRecord): Omit<RemoteRecord, 'password'> & { hasPassword: boolean } {
  const { password, ...rest } = r
  return { ...rest, hasPassword: password !== undefined }
}
