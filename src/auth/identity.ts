/**
 * The caller of one request, and what they may do. Made by AuthService.identify; the
 * authorization middleware and the admin API ask it `can(repo, action)`.
 *
 *   subject   the user behind the request (`anonymous` when none), with their live grants
 *   limit     what the credential itself allows on top of that: an access token's scopes,
 *             a registry JWT's `access` claim. A request may do what both allow.
 */
import { ANONYMOUS, grantsAllow, type Action, type Grant } from '../../cluster/access/model.js'

/**
 * How the caller signed in. `certificate`: a verified TLS client certificate that names the user
 * (src/tls/client-cert.ts); like a password, it is the person themself, not a scoped credential.
 */
export type Via = 'anonymous' | 'password' | 'token' | 'jwt' | 'certificate'

/** Docker token scope actions ↔ our actions. */
export function dockerActionFor (a: Action): string {
  switch (a) {
    case 'read': return 'pull'
    case 'write': case 'annotate': return 'push'
    case 'delete': return 'delete'
    case 'manage': return '*'
  }
}

export interface JwtAccess { type: string; name: string; actions: string[] }

export function jwtAllows (access: readonly JwtAccess[], repo: string, a: Action): boolean {
  const want = dockerActionFor(a)
  return access.some((e) => e.type === 'repository' && e.name === repo && (e.actions.includes(want) || e.actions.includes('*')))
}

export class Identity {
  constructor (
    readonly user: string,
    readonly via: Via,
    /** The subject is an administrator: every repository action (still within `limit`). */
    readonly subjectAdmin: boolean,
    private readonly grants: readonly Grant[],
    private readonly limit?: (repo: string, a: Action) => boolean,
    /** The access token used, if any. */
    readonly tokenId?: string,
    /**
     * For a registry JWT: the credential's limit without the JWT's own `access` claim (the
     * access token it came from, if any). What the caller could get a token for.
     */
    private readonly baseLimit?: (repo: string, a: Action) => boolean,
  ) {}

  static anonymous (grants: readonly Grant[]): Identity {
    return new Identity(ANONYMOUS, 'anonymous', false, grants)
  }

  get anonymous (): boolean { return this.user === ANONYMOUS }

  /** Signed in as the person (a password or a client certificate), not with a token or JWT. */
  get personal (): boolean { return this.via === 'password' || this.via === 'certificate' }

  /** May use the admin API's administrator routes: an admin who signed in with a password or a client certificate. */
  get admin (): boolean { return this.subjectAdmin && this.personal }

  /** What the subject may do, ignoring the credential's own limit. */
  subjectCan (repo: string, a: Action): boolean {
    return this.subjectAdmin || grantsAllow(this.grants, repo, a)
  }

  can (repo: string, a: Action): boolean {
    if (this.limit !== undefined && !this.limit(repo, a)) return false
    return this.subjectCan(repo, a)
  }

  /**
   * What the caller could do with a token asking for it: for a registry JWT, the subject's
   * rights within the access token it came from, whatever scope this JWT names; otherwise can().
   */
  couldGet (repo: string, a: Action): boolean {
    if (this.via !== 'jwt') return this.can(repo, a)
    if (this.baseLimit !== undefined && !this.baseLimit(repo, a)) return false
    return this.subjectCan(repo, a)
  }

  /**
   * This identity for a request made through virtual repository name `alias` and served by
   * member repository `member` (src/http/virtual.ts): on `member` it may do what it may do on
   * `alias` (the credential's scope names the virtual name only) and what its subject could get
   * on `member` itself; elsewhere it is unchanged. Both rights are needed, never one alone.
   */
  through (alias: string, member: string): Identity {
    const limit = (repo: string, a: Action): boolean => repo === member
      ? this.can(alias, a) && this.couldGet(member, a)
      : this.limit === undefined || this.limit(repo, a)
    return new Identity(this.user, this.via, this.subjectAdmin, this.grants, limit, this.tokenId, this.baseLimit)
  }

  /** Push: write, or annotate (referrers only; the manifest handler checks which). */
  canPush (repo: string): boolean {
    return this.can(repo, 'write') || this.can(repo, 'annotate')
  }
}
