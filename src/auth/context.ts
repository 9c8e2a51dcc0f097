/**
 * Who is behind the current request, for the audit log. The authorization middleware runs
 * the rest of the request inside `requestActor.run(…)`; `submit` (src/http/deps.ts) reads it
 * and wraps each mutating command in an `Audited` command, so the change and its audit entry
 * are applied together, through the state machine.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import type { AuditActor } from '../../cluster/access/model.js'

export type RequestActor = Omit<AuditActor, 'at'>

export const requestActor = new AsyncLocalStorage<RequestActor>()

/** Commands not worth an audit entry: upload bookkeeping (the blob's LinkBlob is recorded). */
const UNAUDITED = new Set(['CreateUpload', 'DeleteUpload', 'Audited', 'AppendAudit', 'InitSigningKey', 'BootstrapAdmin', 'ExpireSessions', 'RemoteTagChecked'])

export function shouldAudit (type: string): boolean {
  return !UNAUDITED.has(type)
}
