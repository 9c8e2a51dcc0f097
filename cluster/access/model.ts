/**
 * The access-control model: who (users, groups, tokens, anonymous) may do what (actions) where
 * (repository patterns). Pure data and pure functions, shared by the state machine and the
 * HTTP layer.
 *
 *   action   := read | write | delete | annotate | manage
 *     read      pull manifests and blobs, list tags and referrers, see the repository in the catalog,
 *               mount blobs from it
 *     write     push blobs and manifests, move tags (implies annotate)
 *     delete    delete manifests, tags and blobs
 *     annotate  push referrers only: manifests with a `subject` (signatures, SBOMs) and their blobs
 *     manage    everything on the matching repositories (implies all of the above)
 *
 *   pattern  := segment ("/" segment)*
 *     `*`  matches within one path component, `?` one character of it,
 *     `**` any number of components (zero included: `team-a/**` matches `team-a` itself).
 */

export const ACTIONS = ['read', 'write', 'delete', 'annotate', 'manage'] as const
export type Action = typeof ACTIONS[number]

export function isAction (s: string): s is Action {
  return (ACTIONS as readonly string[]).includes(s)
}

/** The actions an action implies (itself included). */
export function implied (a: Action): Action[] {
  switch (a) {
    case 'manage': return [...ACTIONS]
    case 'write': return ['write', 'annotate']
    default: return [a]
  }
}

export interface UserRecord {
  name: string
  /** argon2id (or bcrypt) hash; computed by the HTTP layer, never plain text. */
  passwordHash: string
  /** Bumped on every password change: Basic-auth caches and issued JWTs carrying an older one are refused. */
  passwordVersion: number
  admin: boolean
  disabled: boolean
  createdAt: number
  updatedAt: number
  /** The site (id) where the user was created, when it came from a peered site (cluster/peering/access-feed.ts); absent: here. */
  origin?: string
}

/** The public view of a user: never the hash. */
export type UserView = Omit<UserRecord, 'passwordHash'> & { groups: string[] }

export interface GroupRecord {
  name: string
  createdAt: number
}

/** A permission target: repository patterns, and the actions each user and group has there. */
export interface PermissionTarget {
  name: string
  repositories: string[]
  /** user name → actions. The reserved user `anonymous` may only get `read`. */
  users: Record<string, Action[]>
  /** group name → actions. */
  groups: Record<string, Action[]>
  updatedAt: number
}

/** A grant: actions on repositories matching any of the patterns. */
export interface Grant {
  repositories: string[]
  actions: Action[]
}

/**
 * An access token for a robot or CI job (kind `robot`), or the offline token `docker login`
 * keeps instead of the password (kind `login`). The secret is high-entropy and random, so a
 * SHA-256 of it is stored, not a slow hash.
 */
export interface TokenRecord {
  id: string
  kind: 'robot' | 'login'
  name: string
  owner: string
  secretHash: string
  /** What the token may do, further limited by what its owner may do at the time of use. */
  scopes: Grant[]
  createdAt: number
  /** Epoch ms; 0 = never. */
  expiresAt: number
  revokedAt?: number
}

export type TokenView = Omit<TokenRecord, 'secretHash'>

export interface ImmutableRule {
  pattern: string
  createdAt: number
}

/** Who did something, from where: travels inside commands so the audit log is deterministic. */
export interface AuditActor {
  /** User name; `anonymous` when none. */
  user: string
  /** Token id when the caller used an access token. */
  token?: string
  address: string
  requestId?: string
  method?: string
  path?: string
  at: number
}

export interface AuditEntry extends AuditActor {
  seq: number
  /** The command applied (PutManifest, CreateUser …) or what was refused (`denied`, `login`). */
  action: string
  repo?: string
  /** Non-secret details: digest, tag, target name … */
  detail?: Record<string, unknown>
  outcome: 'ok' | 'failed' | 'denied'
  /** The error code when the outcome is not ok. */
  code?: string
}

export const ANONYMOUS = 'anonymous'

const USER_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** User, group, permission-target and token names: lowercase, short, safe in a URL path. */
export function isValidName (s: string): boolean {
  return USER_RE.test(s)
}

const PATTERN_RE = /^[a-z0-9*?._\-/]+$/
export function isValidPattern (s: string): boolean {
  return s.length > 0 && s.length <= 255 && PATTERN_RE.test(s) && !s.startsWith('/') && !s.endsWith('/') && !s.includes('//')
}

const patternCache = new Map<string, RegExp>()

/** Compile a repository pattern (grammar above) to an anchored regular expression. */
export function patternRegExp (pattern: string): RegExp {
  let re = patternCache.get(pattern)
  if (re !== undefined) return re
  let src = ''
  const segs = pattern.split('/')
  segs.forEach((seg, i) => {
    const first = i === 0
    const last = i === segs.length - 1
    if (seg === '**') {
      // `**` spans whole components: zero or more of them, with their separators.
      src += first && last ? '.*' : first ? '(?:.*/)?' : last ? '(?:/.*)?' : '/(?:.*/)?'
      return
    }
    if (!first && segs[i - 1] !== '**') src += '/'
    src += seg.replace(/[.+^${}()|[\]\\-]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')
  })
  re = new RegExp(`^${src}$`)
  if (patternCache.size > 10_000) patternCache.clear()
  patternCache.set(pattern, re)
  return re
}

export function matches (pattern: string, repo: string): boolean {
  return patternRegExp(pattern).test(repo)
}

/** True when some grant gives `action` on `repo`. */
export function grantsAllow (grants: readonly Grant[], repo: string, action: Action): boolean {
  for (const g of grants) {
    if (!g.actions.some((a) => implied(a).includes(action))) continue
    if (g.repositories.some((p) => matches(p, repo))) return true
  }
  return false
}

/** Parse `PATTERN=ACTION[,ACTION…]` entries separated by `;` (the FLOTILLA_AUTH_ANONYMOUS form). */
export function parseGrantList (s: string): Grant[] {
  const out: Grant[] = []
  for (const part of s.split(';').map((p) => p.trim()).filter((p) => p !== '')) {
    const eq = part.lastIndexOf('=')
    const pattern = eq < 0 ? part : part.slice(0, eq)
    const actions = eq < 0 ? ['read'] : part.slice(eq + 1).split(',').map((a) => a.trim())
    out.push({ repositories: [pattern], actions: actions as Action[] })
  }
  return out
}
