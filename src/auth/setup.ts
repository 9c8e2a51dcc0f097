/**
 * Build the node's AuthService from its configuration and metadata store.
 */
import type { Logger } from 'pino'
import type { KV } from '../../storage/kv/kv.js'
import type { CommandSink } from '../../cluster/metadata/applier.js'
import { AccessQueries } from '../../cluster/access/queries.js'
import type { AuthConfig } from './config.js'
import { AuthService, type AuthServiceDeps } from './service.js'

export function createAuthService (config: AuthConfig, kv: KV, log: Logger, sink: CommandSink, now: () => number = () => Date.now(), certificateUser?: AuthServiceDeps['certificateUser']): AuthService {
  if (config.anonymous.some((g) => g.actions.some((a) => a !== 'read'))) {
    log.warn({ anonymous: config.anonymous }, 'auth.anonymous lets anonymous callers write or delete: for tests and trusted networks only')
  }
  return new AuthService({ settings: config, queries: new AccessQueries(kv), sink, log, now, certificateUser })
}
