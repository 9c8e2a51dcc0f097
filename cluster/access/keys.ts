/**
 * The access-control key layout, beside the registry's (cluster/metadata/keys.ts) in the same
 * LevelDB. Parts are joined by NUL, as there, so prefix scans never spill into a longer name.
 *
 *   meta (classic-level)
 *   ├── acl␀key                                 → {key, kid, at}        JWT signing key (HS256), created once
 *   ├── acl␀bootstrap                           → {at}                  the first admin exists
 *   ├── acl␀version                             → {v}                   bumped by every access change (caches key on it)
 *   ├── acl␀user␀<name>                         → UserRecord
 *   ├── acl␀group␀<name>                        → GroupRecord
 *   ├── acl␀member␀<group>␀<user>               → {}                    group members
 *   ├── acl␀memberof␀<user>␀<group>             → {}                    reverse index: a user's groups
 *   ├── acl␀perm␀<name>                         → PermissionTarget
 *   ├── acl␀token␀<id>                          → TokenRecord           robot and login tokens (revoked ones stay)
 *   ├── acl␀immutable␀<pattern>                 → ImmutableRule
 *   ├── audit␀seq                               → {seq}                 last audit sequence number
 *   └── audit␀e␀<seq, 16 digits>                → AuditEntry            in the order applied
 */
const SEP = '\u0000'

export const akey = {
  signingKey: (): string => `acl${SEP}key`,
  bootstrap: (): string => `acl${SEP}bootstrap`,
  version: (): string => `acl${SEP}version`,
  user: (name: string): string => `acl${SEP}user${SEP}${name}`,
  userPrefix: (): string => `acl${SEP}user${SEP}`,
  group: (name: string): string => `acl${SEP}group${SEP}${name}`,
  groupPrefix: (): string => `acl${SEP}group${SEP}`,
  member: (group: string, user: string): string => `acl${SEP}member${SEP}${group}${SEP}${user}`,
  memberPrefix: (group: string): string => `acl${SEP}member${SEP}${group}${SEP}`,
  memberOf: (user: string, group: string): string => `acl${SEP}memberof${SEP}${user}${SEP}${group}`,
  memberOfPrefix: (user: string): string => `acl${SEP}memberof${SEP}${user}${SEP}`,
  perm: (name: string): string => `acl${SEP}perm${SEP}${name}`,
  permPrefix: (): string => `acl${SEP}perm${SEP}`,
  token: (id: string): string => `acl${SEP}token${SEP}${id}`,
  tokenPrefix: (): string => `acl${SEP}token${SEP}`,
  immutable: (pattern: string): string => `acl${SEP}immutable${SEP}${pattern}`,
  immutablePrefix: (): string => `acl${SEP}immutable${SEP}`,
  auditSeq: (): string => `audit${SEP}seq`,
  audit: (seq: number): string => `audit${SEP}e${SEP}${String(seq).padStart(16, '0')}`,
  auditPrefix: (): string => `audit${SEP}e${SEP}`,
}
