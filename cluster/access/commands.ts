/**
 * Access-control commands. Like every metadata command they are plain JSON and carry
 * everything apply() needs, time and hashes included: the HTTP layer hashes passwords and
 * draws random keys and secrets before it submits, so every node applies the same bytes.
 */
import type { AuditActor, Grant, PermissionTarget, TokenRecord } from './model.js'

export type AccessCommand =
  /** Store the cluster's JWT signing key unless one exists (the first proposal wins). */
  | { type: 'InitSigningKey'; key: string; kid: string; at: number }
  /** Create the first admin unless the registry was bootstrapped already; value: {created}. */
  | { type: 'BootstrapAdmin'; name: string; passwordHash: string; at: number }
  | { type: 'CreateUser'; name: string; passwordHash: string; admin: boolean; at: number }
  | { type: 'UpdateUser'; name: string; admin?: boolean; disabled?: boolean; at: number }
  | { type: 'SetPassword'; name: string; passwordHash: string; at: number }
  | { type: 'DeleteUser'; name: string; at: number }
  /** A group and its first members, all or nothing: an unknown member refuses the whole command. */
  | { type: 'CreateGroup'; name: string; members?: string[]; at: number }
  | { type: 'DeleteGroup'; name: string; at: number }
  | { type: 'AddMember'; group: string; user: string; at: number }
  | { type: 'RemoveMember'; group: string; user: string; at: number }
  | { type: 'PutPermission'; target: PermissionTarget }
  | { type: 'DeletePermission'; name: string; at: number }
  | { type: 'CreateToken'; token: TokenRecord }
  | { type: 'RevokeToken'; id: string; at: number }
  | { type: 'SetImmutable'; pattern: string; immutable: boolean; at: number }
  /** Denied requests and failed logins: they change nothing else. */
  | { type: 'AppendAudit'; actor: AuditActor; action: string; repo?: string; detail?: Record<string, unknown>; outcome: 'denied' | 'failed'; code?: string }
  /**
   * Copy an image (a manifest, an index's children, and all their referrers) from one
   * repository to another without moving a byte of blob data; `move` then removes it from
   * the source. Reads the source as the state stands when the command is applied. `properties`:
   * the manifests' user properties come too (cluster/metadata/properties.ts); absent: they do not.
   */
  | { type: 'Promote'; from: string; digest: string; to: string; tags: string[]; move: boolean; fromTag?: string; properties?: boolean; at: number }

/** Wraps any command with who asked: applied together with its audit entry, in one batch. */
export interface AuditedCommand<C> { type: 'Audited'; actor: AuditActor; command: C }

export type AccessCommandType = AccessCommand['type']

const TYPES = new Set<string>([
  'InitSigningKey', 'BootstrapAdmin', 'CreateUser', 'UpdateUser', 'SetPassword', 'DeleteUser',
  'CreateGroup', 'DeleteGroup', 'AddMember', 'RemoveMember', 'PutPermission', 'DeletePermission',
  'CreateToken', 'RevokeToken', 'SetImmutable', 'AppendAudit', 'Promote',
] satisfies AccessCommandType[])

export function isAccessCommand (c: { type: string }): c is AccessCommand {
  return TYPES.has(c.type)
}

export type { Grant }
