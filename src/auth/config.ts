/**
 * The `auth` section of the configuration (src/config.ts includes it; README documents it).
 *
 *   auth:
 *     service: flotilla                 FLOTILLA_AUTH_SERVICE     `service` in challenges, JWT audience
 *     issuer: flotilla                  FLOTILLA_AUTH_ISSUER      JWT issuer
 *     realm: ''                         FLOTILLA_AUTH_REALM       token endpoint URL; '' = http(s)://<Host>/token
 *     tokenTtlSeconds: 300              FLOTILLA_AUTH_TOKEN_TTL   registry JWT lifetime
 *     offlineTokenTtlHours: 720                                   lifetime of docker login's offline token
 *     initialAdminPassword: ''          FLOTILLA_INITIAL_ADMIN_PASSWORD   first start only; '' = random
 *     anonymous: []                     FLOTILLA_AUTH_ANONYMOUS   node-local anonymous grants
 *     basicCacheSeconds: 60                                       cache of successful Basic checks
 *     rateLimit:
 *       maxFailuresPerUser: 10                                    failed logins per user per window
 *       maxFailuresPerAddress: 50                                 failed logins per client address per window
 *       windowSeconds: 300
 */
import { z } from 'zod'
import { parseGrantList } from '../../cluster/access/model.js'

const AnonymousGrant = z.object({
  repositories: z.array(z.string().min(1)).min(1),
  actions: z.array(z.enum(['read', 'write', 'delete'])).min(1).default(['read']),
}).strict()

export const AuthConfigSchema = z.object({
  service: z.string().min(1).default('flotilla'),
  issuer: z.string().min(1).default('flotilla'),
  realm: z.string().default(''),
  tokenTtlSeconds: z.number().int().positive().max(86_400).default(300),
  offlineTokenTtlHours: z.number().positive().default(720),
  initialAdminPassword: z.string().refine((s) => s === '' || s.length >= 8, 'at least 8 characters').default(''),
  anonymous: z.array(AnonymousGrant).default([]),
  basicCacheSeconds: z.number().min(0).default(60),
  rateLimit: z.object({
    maxFailuresPerUser: z.number().int().positive().default(10),
    maxFailuresPerAddress: z.number().int().positive().default(50),
    windowSeconds: z.number().positive().default(300),
  }).strict().prefault({}),
}).strict().prefault({})

export type AuthConfig = z.infer<typeof AuthConfigSchema>

export const AUTH_ENV: Array<[string, string[], (s: string) => unknown]> = [
  ['FLOTILLA_AUTH_SERVICE', ['auth', 'service'], (s) => s],
  ['FLOTILLA_AUTH_ISSUER', ['auth', 'issuer'], (s) => s],
  ['FLOTILLA_AUTH_REALM', ['auth', 'realm'], (s) => s],
  ['FLOTILLA_AUTH_TOKEN_TTL', ['auth', 'tokenTtlSeconds'], (s) => Number(s)],
  ['FLOTILLA_INITIAL_ADMIN_PASSWORD', ['auth', 'initialAdminPassword'], (s) => s],
  // PATTERN=ACTION[,ACTION…] entries separated by ';', e.g. `public/**=read;scratch/**=read,write`.
  ['FLOTILLA_AUTH_ANONYMOUS', ['auth', 'anonymous'], (s) => parseGrantList(s)],
]
