/**
 * The OpenAPI 3.1 document of the admin HTTP API, served at GET /api/v1/openapi.json:
 *
 *   /api/v1/…          users, groups, permission targets, access tokens, immutable tags, virtual repositories,
 *                      promotion, the audit log (admin.ts); properties and checksums (properties.ts);
 *                      search and latest (search.ts)
 *   /api/v1/cluster/…  status, join tokens, joining, leaving, member removal (cluster-api.ts)
 *   /api/v1/sites/…    cross-site peering: tokens, peerings, their status (sites.ts)
 *   /api/v1/remotes/…  remote repositories, pull-through caches (remotes-api.ts)
 *   /api/v1/backups/…  online backups: the snapshot, its blobs, the lease (backup.ts)
 *
 * Left out, on purpose:
 *   /api/v1/debug/partition       test-only fault injection (debug.ts), mounted only with
 *                                 FLOTILLA_FAULT_INJECTION=1: nothing a client may rely on
 *   /api/v1/openapi.json          this document itself
 *   /token                        Docker token authentication (token.ts): distribution's token
 *                                 spec describes it, and docker, not an admin client, calls it
 *   /v2/…                         the OCI Distribution API, which the OCI spec describes
 *   /healthz, /readyz, /metrics   probes for load balancers and Prometheus
 *
 * test/http/openapi.test.ts checks that the paths and methods here are exactly those that the
 * admin and cluster routers register. Request bodies validated by zod (the cluster API) are
 * converted from the same schemas; the admin API checks its bodies by hand, and the schemas
 * below say the same in JSON Schema.
 */
import type { Context, Next } from 'koa'
import { z } from 'zod'
import pkg from '../../package.json' with { type: 'json' }
import { ERRORS, FlotillaError } from '../../storage/errors.js'
import { ACTIONS } from '../../cluster/access/model.js'
import { JoinRequest } from '../../cluster/join.js'
import { MIN_PASSWORD_LENGTH } from '../auth/password.js'
import { API_PREFIX } from './admin.js'
import { JoinTokenRequest } from './cluster-api.js'
import { HandshakeBody, PeerRequest, SetRulesRequest, SiteTokenRequest } from './sites.js'

export const OPENAPI_PATH = `${API_PREFIX}/openapi.json`

/** A JSON Schema (draft 2020-12, the dialect of OpenAPI 3.1). */
export type JsonSchema = { [k: string]: unknown }
export type HttpMethod = 'get' | 'put' | 'post' | 'delete' | 'patch'
export const HTTP_METHODS: readonly HttpMethod[] = ['get', 'put', 'post', 'delete', 'patch']

export type Ref = { $ref: string }
export interface Parameter { name: string; in: 'path' | 'query'; required: boolean; description?: string; schema: JsonSchema }
export interface MediaType { schema: JsonSchema }
export interface RequestBody { required: boolean; description?: string; content: Record<string, MediaType> }
export interface Response { description: string; headers?: Record<string, { description: string; schema: JsonSchema }>; content?: Record<string, MediaType> }
export interface Operation {
  operationId: string
  summary: string
  description?: string
  tags: string[]
  parameters?: Parameter[]
  requestBody?: RequestBody
  responses: Record<string, Response | Ref>
  /** Only where it differs from the document's: [] for an open route. */
  security?: Array<Record<string, string[]>>
}
export type PathItem = { parameters?: Parameter[] } & Partial<Record<HttpMethod, Operation>>
export interface OpenApiDocument {
  openapi: `3.1.${number}`
  info: { title: string; version: string; description: string; license: { name: string; identifier: string } }
  tags: Array<{ name: string; description: string }>
  security: Array<Record<string, string[]>>
  paths: Record<string, PathItem>
  components: {
    schemas: Record<string, JsonSchema>
    responses: Record<string, Response>
    securitySchemes: Record<string, { type: 'http'; scheme: 'basic' | 'bearer'; description: string }>
  }
}

const schema = (name: string): Ref => ({ $ref: `#/components/schemas/${name}` })
const json = (s: JsonSchema): Record<string, MediaType> => ({ 'application/json': { schema: s } })
const body = (s: JsonSchema, description?: string): RequestBody => ({ required: true, ...(description !== undefined ? { description } : {}), content: json(s) })
const answer = (description: string, s: JsonSchema): Response => ({ description, content: json(s) })
const done: Response = answer('Done', schema('Ok'))
const listOf = (key: string, item: string): JsonSchema => ({ type: 'object', required: [key], properties: { [key]: { type: 'array', items: schema(item) } } })

/** A zod schema as JSON Schema, as a client sends it (defaults make fields optional). */
function fromZod (s: z.ZodType): JsonSchema {
  const { $schema: _, ...rest } = z.toJSONSchema(s, { io: 'input' }) as JsonSchema
  return rest
}

/** The error responses, by status; `default` (any other error, same body) is added to every operation. */
const ERROR_RESPONSES = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Denied',
  404: 'NotFound',
  409: 'Conflict',
  503: 'Unavailable',
} as const
type ErrorStatus = keyof typeof ERROR_RESPONSES

/**
 * An operation with its error responses: 401 on every route that needs a caller (all but
 * `open` ones), and `default` for the rest (429 after failed sign-ins, 500 …).
 */
function op (o: Omit<Operation, 'responses' | 'security'> & { ok: Record<string, Response>; errors?: ErrorStatus[]; open?: boolean }): Operation {
  const { ok, errors = [], open = false, ...rest } = o
  const statuses = open ? errors : [...new Set<ErrorStatus>([...errors, 401])].sort()
  const responses: Record<string, Response | Ref> = { ...ok }
  for (const s of statuses) responses[String(s)] = { $ref: `#/components/responses/${ERROR_RESPONSES[s]}` }
  responses.default = { $ref: '#/components/responses/Error' }
  return { ...rest, responses, ...(open ? { security: [] } : {}) }
}

const pathName = (name: string, what: string): Parameter => ({ name, in: 'path', required: true, description: `The ${what}'s name.`, schema: schema('Name') })
const query = (name: string, description: string, s: JsonSchema, required = false): Parameter => ({ name, in: 'query', required, description, schema: s })

const ADMIN = 'Needs administrator rights: a user with the admin flag, signed in with a password or a TLS client certificate.'

const paths: Record<string, PathItem> = {
  [`${API_PREFIX}/me`]: {
    get: op({ operationId: 'getMe', tags: ['identity'], summary: 'Who the caller is', description: 'Anyone signed in.', ok: { 200: answer('The caller', schema('Me')) } }),
  },

  [`${API_PREFIX}/users`]: {
    get: op({ operationId: 'listUsers', tags: ['users'], summary: 'List users', description: ADMIN, ok: { 200: answer('Every user', listOf('users', 'User')) }, errors: [403] }),
    post: op({
      operationId: 'createUser',
      tags: ['users'],
      summary: 'Create a user',
      description: ADMIN,
      requestBody: body({ type: 'object', required: ['name', 'password'], properties: { name: schema('Name'), password: schema('Password'), admin: { type: 'boolean', default: false } } }),
      ok: { 201: answer('The new user', schema('User')) },
      errors: [400, 403, 409],
    }),
  },
  [`${API_PREFIX}/users/{name}`]: {
    parameters: [pathName('name', 'user')],
    get: op({ operationId: 'getUser', tags: ['users'], summary: 'Show a user', description: 'An administrator, or the user themself.', ok: { 200: answer('The user', schema('User')) }, errors: [403, 404] }),
    patch: op({
      operationId: 'updateUser',
      tags: ['users'],
      summary: 'Set or clear a user\'s admin and disabled flags',
      description: ADMIN + ' Fields left out stay as they are.',
      requestBody: body({ type: 'object', properties: { admin: { type: 'boolean' }, disabled: { type: 'boolean' } } }),
      ok: { 200: answer('The user', schema('User')) },
      errors: [400, 403, 404],
    }),
    delete: op({ operationId: 'deleteUser', tags: ['users'], summary: 'Delete a user', description: ADMIN + ' Not oneself.', ok: { 200: done }, errors: [400, 403, 404] }),
  },
  [`${API_PREFIX}/users/{name}/password`]: {
    parameters: [pathName('name', 'user')],
    put: op({
      operationId: 'setPassword',
      tags: ['users'],
      summary: 'Set a user\'s password',
      description: 'An administrator, or the user themself signed in with their password (not a token).',
      requestBody: body({ type: 'object', required: ['password'], properties: { password: schema('Password') } }),
      ok: { 200: done },
      errors: [400, 403, 404],
    }),
  },

  [`${API_PREFIX}/groups`]: {
    get: op({ operationId: 'listGroups', tags: ['groups'], summary: 'List groups', description: ADMIN, ok: { 200: answer('Every group', listOf('groups', 'Group')) }, errors: [403] }),
    post: op({
      operationId: 'createGroup',
      tags: ['groups'],
      summary: 'Create a group',
      description: ADMIN + ' The group and its members are created all or nothing: an unknown member refuses the request (404) and no group is left behind.',
      requestBody: body({ type: 'object', required: ['name'], properties: { name: schema('Name'), members: { type: 'array', items: schema('Name'), default: [], description: 'User names.' } } }),
      ok: { 201: answer('The new group', schema('Group')) },
      errors: [400, 403, 404, 409],
    }),
  },
  [`${API_PREFIX}/groups/{name}`]: {
    parameters: [pathName('name', 'group')],
    get: op({ operationId: 'getGroup', tags: ['groups'], summary: 'Show a group', description: ADMIN, ok: { 200: answer('The group', schema('Group')) }, errors: [403, 404] }),
    delete: op({ operationId: 'deleteGroup', tags: ['groups'], summary: 'Delete a group', description: ADMIN, ok: { 200: done }, errors: [403, 404] }),
  },
  [`${API_PREFIX}/groups/{name}/members/{user}`]: {
    parameters: [pathName('name', 'group'), pathName('user', 'user')],
    put: op({ operationId: 'addGroupMember', tags: ['groups'], summary: 'Add a user to a group', description: ADMIN, ok: { 200: answer('The group', schema('Group')) }, errors: [403, 404] }),
    delete: op({ operationId: 'removeGroupMember', tags: ['groups'], summary: 'Remove a user from a group', description: ADMIN, ok: { 200: answer('The group', schema('Group')) }, errors: [403, 404] }),
  },

  [`${API_PREFIX}/permissions`]: {
    get: op({ operationId: 'listPermissions', tags: ['permissions'], summary: 'List permission targets', description: ADMIN, ok: { 200: answer('Every permission target', listOf('permissions', 'PermissionTarget')) }, errors: [403] }),
  },
  [`${API_PREFIX}/permissions/{name}`]: {
    parameters: [pathName('name', 'permission target')],
    get: op({ operationId: 'getPermission', tags: ['permissions'], summary: 'Show a permission target', description: ADMIN, ok: { 200: answer('The permission target', schema('PermissionTarget')) }, errors: [403, 404] }),
    put: op({
      operationId: 'putPermission',
      tags: ['permissions'],
      summary: 'Create or replace a permission target',
      description: ADMIN + ' The reserved user `anonymous` may only be given `read`.',
      requestBody: body({
        type: 'object',
        required: ['repositories'],
        properties: {
          repositories: { type: 'array', minItems: 1, items: schema('RepositoryPattern') },
          users: { type: 'object', additionalProperties: schema('Actions'), default: {}, description: 'User name → actions.' },
          groups: { type: 'object', additionalProperties: schema('Actions'), default: {}, description: 'Group name → actions.' },
        },
      }),
      ok: {
        200: answer('The permission target as stored, with a warning for each user or group it names that does not exist yet', {
          allOf: [schema('PermissionTarget'), { type: 'object', required: ['warnings'], properties: { warnings: { type: 'array', items: { type: 'string' } } } }],
        }),
      },
      errors: [400, 403],
    }),
    delete: op({ operationId: 'deletePermission', tags: ['permissions'], summary: 'Delete a permission target', description: ADMIN, ok: { 200: done }, errors: [403, 404] }),
  },

  [`${API_PREFIX}/tokens`]: {
    get: op({
      operationId: 'listTokens',
      tags: ['tokens'],
      summary: 'List access tokens',
      description: 'An administrator sees every token (or one owner\'s); anyone else their own.',
      parameters: [query('owner', 'Administrators only: this user\'s tokens. Ignored for others.', schema('Name'))],
      ok: { 200: answer('The tokens, without their secrets', listOf('tokens', 'Token')) },
    }),
    post: op({
      operationId: 'createToken',
      tags: ['tokens'],
      summary: 'Create an access token',
      description: 'Signed in with a password (a token cannot mint tokens); `owner` other than oneself needs administrator rights. The secret is in the answer only.',
      requestBody: body({
        type: 'object',
        required: ['name', 'scopes'],
        properties: {
          name: schema('Name'),
          scopes: { type: 'array', minItems: 1, items: schema('Grant'), description: 'What the token may do, further limited by what its owner may do when it is used.' },
          expiresInSeconds: { type: 'number', exclusiveMinimum: 0, description: 'Left out: the token does not expire.' },
          owner: { ...schema('Name'), description: 'Default: the caller.' },
        },
      }),
      ok: { 201: answer('The new token and its secret', schema('NewToken')) },
      errors: [400, 403, 404],
    }),
  },
  [`${API_PREFIX}/tokens/{id}`]: {
    parameters: [{ name: 'id', in: 'path', required: true, description: 'The token\'s id.', schema: schema('TokenId') }],
    delete: op({
      operationId: 'revokeToken',
      tags: ['tokens'],
      summary: 'Revoke an access token',
      description: 'An administrator, the token\'s owner signed in with a password or a TLS client certificate, or the token itself.',
      ok: { 200: done },
      errors: [403, 404],
    }),
  },

  [`${API_PREFIX}/immutable`]: {
    get: op({ operationId: 'listImmutable', tags: ['immutable tags'], summary: 'List immutability rules', description: 'Anyone signed in.', ok: { 200: answer('The rules', listOf('rules', 'ImmutableRule')) } }),
    put: op({
      operationId: 'addImmutable',
      tags: ['immutable tags'],
      summary: 'Make the tags of matching repositories immutable',
      description: ADMIN,
      requestBody: body({ type: 'object', required: ['pattern'], properties: { pattern: schema('RepositoryPattern') } }),
      ok: { 200: done },
      errors: [400, 403],
    }),
    delete: op({
      operationId: 'removeImmutable',
      tags: ['immutable tags'],
      summary: 'Remove an immutability rule',
      description: ADMIN,
      parameters: [query('pattern', 'The rule\'s repository pattern.', schema('RepositoryPattern'), true)],
      ok: { 200: done },
      errors: [400, 403, 404],
    }),
  },

  [`${API_PREFIX}/promote`]: {
    post: op({
      operationId: 'promote',
      tags: ['promotion'],
      summary: 'Copy (or move) an image to another repository',
      description: 'Needs read on the source and write on the target; delete on the source too to move. Referrers (signatures, SBOMs) come along.',
      requestBody: body({
        type: 'object',
        required: ['from', 'to'],
        properties: {
          from: { type: 'string', description: 'REPO:TAG or REPO@DIGEST.', examples: ['staging/app:1.4.2'] },
          to: { type: 'string', description: 'REPO or REPO:TAG; without a tag, the source\'s tag.', examples: ['prod/app'] },
          move: { type: 'boolean', default: false, description: 'Delete the image from the source once copied.' },
          properties: { type: 'boolean', description: 'Carry the manifests\' user properties too; absent: the node\'s setting properties.promote (on unless turned off). Read-only properties always come.' },
        },
      }),
      ok: { 200: answer('What was copied', schema('Promotion')) },
      errors: [400, 403, 404, 409],
    }),
  },

  [`${API_PREFIX}/search`]: {
    get: op({
      operationId: 'search',
      tags: ['search'],
      summary: 'Manifests matching criteria, in repositories the caller may read',
      description: 'Criteria combine with AND, OR, NOT and parentheses in `q` (e.g. `name:team/* AND (prop:qa.status=approved OR tag:v1.*) AND NOT media:*index*`); each other criterion parameter is one criterion without its field (`name=team/*`, `pushed=>=2024-01-01`, `size=1MB..10MB`, `prop=qa.status=approved`), repeatable, all ANDed with `q`. Results come in (repository, digest) order, `n` at a time; when more follow, `cursor` and a Link header (rel="next") give the next page. Repositories the caller may not read are left out. `created` is the org.opencontainers.image.created annotation; pull times are batched and may lag. A malformed query answers 400 naming the position.',
      parameters: [
        query('q', 'A query expression (see the description).', { type: 'string', examples: ['name:team/* AND NOT tag:*-rc*'] }),
        ...(['name', 'tag', 'digest', 'sha1', 'md5', 'prop', 'media', 'type', 'artifactType', 'pushed', 'created', 'pulled', 'size'].map((k) => query(k, `One ${k} criterion (repeatable), as in q without \`${k}:\`.`, { type: 'array', items: { type: 'string' } }))),
        query('n', 'Results per page (default 100, at most 1000).', { type: 'integer', minimum: 1, maximum: 1000 }),
        query('cursor', 'Where to go on: the previous page\'s cursor.', { type: 'string' }),
        query('properties', '`true`: each result lists its properties.', { type: 'boolean' }),
      ],
      ok: { 200: { ...answer('A page of matches', schema('SearchPage')), headers: { Link: { description: 'The next page, `<…>; rel="next"`, when more follow.', schema: { type: 'string' } } } } },
      errors: [400, 503],
    }),
  },

  [`${API_PREFIX}/latest/{repo}`]: {
    parameters: [{ name: 'repo', in: 'path', required: true, description: 'The repository (slashes included, not encoded).', schema: { type: 'string' } }],
    get: op({
      operationId: 'latest',
      tags: ['search'],
      summary: 'The newest tag of a repository, by semantic version or by push time',
      description: 'Needs read on the repository (else 404, as for an unknown one). `by=semver` (default) orders tags read as versions (1.2.3, v1.2, 2.0.0-rc.1; a release above its pre-releases) and ignores the others; `by=time` orders by the tag\'s last push. `match` keeps only tags matching a glob; `prop` only manifests with that property (and value).',
      parameters: [
        query('by', 'semver (default) or time.', { type: 'string', enum: ['semver', 'time'] }),
        query('match', 'A tag pattern (* and ?).', { type: 'string', examples: ['v1.*'] }),
        query('prop', 'KEY or KEY=VALUE.', { type: 'string', examples: ['qa.status=approved'] }),
      ],
      ok: { 200: answer('The newest tag', schema('Latest')) },
      errors: [400, 404, 503],
      }),
    },

  [`${API_PREFIX}/properties`]: {
    get: op({
      operationId: 'listProperties',
      tags: ['properties'],
      summary: 'The properties of a manifest',
      description: 'Needs read on the repository. A tag stands for the manifest it points at: properties belong to the manifest, so every tag of it shows them.',
      parameters: [query('image', 'REPO:TAG or REPO@DIGEST.', { type: 'string' }, true)],
      ok: { 200: answer('The manifest and its properties', schema('Properties')) },
      errors: [400, 403, 404],
    }),
    put: op({
      operationId: 'setProperties',
      tags: ['properties'],
      summary: 'Add properties to a manifest',
      description: 'Needs annotate on the repository (write implies it). A key may have several values; `replace` drops a key\'s other user values first. Audited.',
      requestBody: body({
        type: 'object',
        required: ['image', 'properties'],
        properties: {
          image: { type: 'string', description: 'REPO:TAG or REPO@DIGEST.', examples: ['team/app:1.4.2'] },
          properties: { type: 'array', minItems: 1, maxItems: 256, items: { type: 'object', required: ['key', 'value'], properties: { key: { type: 'string', minLength: 1, maxLength: 256 }, value: { type: 'string', maxLength: 1024 } } } },
          replace: { type: 'boolean', default: false },
        },
      }),
      ok: { 200: answer('The manifest\'s properties now', schema('Properties')) },
      errors: [400, 403, 404],
    }),
    delete: op({
      operationId: 'removeProperties',
      tags: ['properties'],
      summary: 'Remove properties from a manifest',
      description: 'Needs annotate on the repository. A read-only property (an annotation or config label of the image) cannot be removed: 403, and nothing is removed. Audited.',
      parameters: [
        query('image', 'REPO:TAG or REPO@DIGEST.', { type: 'string' }, true),
        query('property', 'KEY (all its values) or KEY=VALUE; repeatable.', { type: 'array', items: { type: 'string' } }, true),
      ],
      ok: { 200: answer('The manifest\'s properties now', schema('Properties')) },
      errors: [400, 403, 404],
    }),
  },

  [`${API_PREFIX}/checksums/{digest}`]: {
    parameters: [{ name: 'digest', in: 'path', required: true, description: 'The blob\'s digest (ALGORITHM:HEX).', schema: { type: 'string' } }],
    get: op({
      operationId: 'getChecksums',
      tags: ['properties'],
      summary: 'A blob\'s SHA-1 and MD5',
      description: 'Anyone signed in. Computed once per blob right after its upload, off the request path: 404 naming that for a blob whose sums are not recorded yet.',
      ok: { 200: answer('The checksums, lowercase hex as sha1sum and md5sum print them', { type: 'object', required: ['digest', 'sha1', 'md5'], properties: { digest: { type: 'string' }, sha1: { type: 'string', pattern: '^[0-9a-f]{40}$' }, md5: { type: 'string', pattern: '^[0-9a-f]{32}$' } } }) },
      errors: [400, 404],
    }),
  },

  [`${API_PREFIX}/gc`]: {
    post: op({
      operationId: 'collectGarbage',
      tags: ['maintenance'],
      summary: 'Collect garbage: blobs no manifest references, on every node',
      description: ADMIN + ' Links unreferenced for longer than the grace are removed and blobs no repository links are deleted from every node. Answers once every reachable node has deleted its bytes; `pending` names the nodes that will when they come back.',
      requestBody: body({
        type: 'object',
        properties: {
          dryRun: { type: 'boolean', default: false, description: 'Say what would go; change nothing.' },
          graceSeconds: { type: 'number', minimum: 0, description: 'Unreferenced for at least this long (default: the gc.grace setting).' },
        },
      }),
      ok: { 200: answer('What was (or would be) collected', schema('GcReport')) },
      errors: [400, 403, 503],
    }),
  },

  [`${API_PREFIX}/hooks`]: {
    get: op({
      operationId: 'listHooks',
      tags: ['maintenance'],
      summary: 'List the webhooks (secrets masked)',
      description: ADMIN,
      ok: { 200: answer('The webhooks', { type: 'object', properties: { hooks: { type: 'array', items: schema('Hook') } } }) },
      errors: [403],
    }),
  },
  [`${API_PREFIX}/hooks/{name}`]: {
    put: op({
      operationId: 'putHook',
      tags: ['maintenance'],
      summary: 'Create or replace a webhook',
      description: ADMIN + ' Events: push, delete, promote, pull (one per manifest and node an hour at most), immutable (a refused tag move or delete), quota (a refused push), gc. Each delivery is a POST with Flotilla-Event, Flotilla-Delivery (a unique id: drop duplicates) and Flotilla-Signature (sha256=HMAC-SHA256 of the body with the secret), retried with backoff until a 2xx.',
      parameters: [pathName('name', 'webhook')],
      requestBody: body(schema('Hook')),
      ok: { 200: answer('The webhook, its secret masked', { type: 'object', properties: { hook: schema('Hook') } }) },
      errors: [400, 403],
    }),
    delete: op({
      operationId: 'deleteHook',
      tags: ['maintenance'],
      summary: 'Remove a webhook and its queued deliveries',
      description: ADMIN,
      parameters: [pathName('name', 'webhook')],
      ok: { 200: answer('Removed', { type: 'object' }) },
      errors: [403, 404],
    }),
  },
  [`${API_PREFIX}/hooks/{name}/deliveries`]: {
    get: op({
      operationId: 'listDeliveries',
      tags: ['maintenance'],
      summary: 'A webhook\'s queued deliveries and its delivery log',
      description: ADMIN,
      parameters: [pathName('name', 'webhook')],
      ok: { 200: answer('Queued (with attempts and the next one) and done or given up, newest first', { type: 'object', properties: { queued: { type: 'array', items: { type: 'object' } }, log: { type: 'array', items: { type: 'object' } } } }) },
      errors: [403, 404],
    }),
  },
  [`${API_PREFIX}/quotas`]: {
    get: op({
      operationId: 'listQuotas',
      tags: ['maintenance'],
      summary: 'List the storage quotas, with what each namespace uses',
      description: ADMIN,
      ok: { 200: answer('The quotas', { type: 'object', properties: { quotas: { type: 'array', items: schema('Quota') } } }) },
      errors: [403],
    }),
  },
  [`${API_PREFIX}/quotas/{name}`]: {
    put: op({
      operationId: 'putQuota',
      tags: ['maintenance'],
      summary: 'Create or replace a storage quota',
      description: ADMIN + ' Usage is the size of the distinct blobs linked into the matching repositories. An upload or a promotion that would pass it, and a new manifest while it is passed, get 403 DENIED naming the quota.',
      parameters: [pathName('name', 'quota')],
      requestBody: body({ type: 'object', required: ['repositories', 'maxBytes'], properties: { repositories: { type: 'array', items: { type: 'string' } }, maxBytes: { type: 'integer', minimum: 0 } } }),
      ok: { 200: answer('The quota, with its usage now', schema('Quota')) },
      errors: [400, 403],
    }),
    delete: op({
      operationId: 'deleteQuota',
      tags: ['maintenance'],
      summary: 'Remove a storage quota',
      description: ADMIN,
      parameters: [pathName('name', 'quota')],
      ok: { 200: answer('Removed', { type: 'object' }) },
      errors: [403, 404],
    }),
  },
  [`${API_PREFIX}/virtuals`]: {
    get: op({
      operationId: 'listVirtuals',
      tags: ['virtual repositories'],
      summary: 'List the virtual repositories',
      description: 'Anyone signed in.',
      ok: { 200: answer('The virtual repositories', listOf('virtuals', 'VirtualRepository')) },
    }),
  },
  [`${API_PREFIX}/virtuals/{name}`]: {
    put: op({
      operationId: 'putVirtual',
      tags: ['virtual repositories'],
      summary: 'Create or replace a virtual repository',
      description: ADMIN + ' A pull of <prefix>X resolves to <member>X for each member in order (the first that has it serves); a push goes to <defaultMember>X. Refused (409) when the prefix overlaps another virtual\'s prefix or names stored repositories; refused (400) when a member is or overlaps a virtual prefix (a virtual in a virtual).',
      parameters: [pathName('name', 'virtual repository')],
      requestBody: body({ type: 'object', required: ['prefix', 'members', 'defaultMember'], properties: { prefix: { type: 'string', pattern: '/$', examples: ['dev/'] }, members: { type: 'array', minItems: 1, maxItems: 32, items: { type: 'string', pattern: '/$' }, examples: [['team-a/', 'hub/']] }, defaultMember: { type: 'string', examples: ['team-a/'] } } }),
      ok: { 200: answer('Replaced', { type: 'object', properties: { virtual: schema('VirtualRepository'), created: { type: 'boolean' } } }), 201: answer('Created', { type: 'object', properties: { virtual: schema('VirtualRepository'), created: { type: 'boolean' } } }) },
      errors: [400, 403, 409],
    }),
    delete: op({
      operationId: 'deleteVirtual',
      tags: ['virtual repositories'],
      summary: 'Remove a virtual repository (its members and their images stay)',
      description: ADMIN,
      parameters: [pathName('name', 'virtual repository')],
      ok: { 200: done },
      errors: [403, 404],
    }),
  },
  [`${API_PREFIX}/retention`]: {
    get: op({
      operationId: 'listRetention',
      tags: ['maintenance'],
      summary: 'List the retention policies',
      description: ADMIN,
      ok: { 200: answer('The policies', { type: 'object', properties: { policies: { type: 'array', items: schema('RetentionPolicy') } } }) },
      errors: [403],
    }),
  },
  [`${API_PREFIX}/retention/{name}`]: {
    put: op({
      operationId: 'putRetention',
      tags: ['maintenance'],
      summary: 'Create or replace a retention policy',
      description: ADMIN + ' Applied on the schedule (gc.interval, before garbage collection) and by POST /retention/run.',
      parameters: [pathName('name', 'retention policy')],
      requestBody: body(schema('RetentionPolicy')),
      ok: { 200: answer('The policy as stored', { type: 'object', properties: { policy: schema('RetentionPolicy') } }) },
      errors: [400, 403],
    }),
    delete: op({
      operationId: 'deleteRetention',
      tags: ['maintenance'],
      summary: 'Remove a retention policy',
      description: ADMIN,
      parameters: [pathName('name', 'retention policy')],
      ok: { 200: answer('Removed', { type: 'object' }) },
      errors: [403, 404],
    }),
  },
  [`${API_PREFIX}/retention/run`]: {
    post: op({
      operationId: 'runRetention',
      tags: ['maintenance'],
      summary: 'Apply the retention policies now (or say what they would delete)',
      description: ADMIN + ' Deletes tags and untagged manifests through the log; garbage collection frees their blobs.',
      requestBody: body({ type: 'object', properties: { dryRun: { type: 'boolean', default: false }, policy: { type: 'string', description: 'Only this policy.' } } }),
      ok: { 200: answer('What was (or would be) deleted, per policy', { type: 'object' }) },
      errors: [400, 403, 404],
    }),
  },

  [`${API_PREFIX}/remotes`]: {
    get: op({
      operationId: 'listRemotes',
      tags: ['maintenance'],
      summary: 'List the remote repositories (pull-through caches); passwords are never shown',
      description: ADMIN,
      ok: { 200: answer('The remotes', { type: 'object', properties: { remotes: { type: 'array', items: schema('Remote') } } }) },
      errors: [403],
    }),
  },
  [`${API_PREFIX}/remotes/{name}`]: {
    put: op({
      operationId: 'putRemote',
      tags: ['maintenance'],
      summary: 'Create or replace a remote repository (a pull-through cache of another registry)',
      description: ADMIN + ' Pulls of PREFIX+NAME fetch NAME from the upstream once for the whole cluster, then serve it from the cache; a cached tag is checked upstream again after ttlSeconds, and served anyway when the upstream fails. Pushes under the prefix are refused. The password is stored encrypted with the cluster key.',
      parameters: [pathName('name', 'remote')],
      requestBody: body({
        type: 'object',
        required: ['prefix', 'upstream'],
        properties: {
          prefix: { type: 'string', description: 'Repository name prefix ending with /, e.g. hub/.' },
          upstream: { type: 'string', description: 'http:// or https:// origin of the upstream registry.' },
          username: { type: 'string' },
          password: { type: 'string', writeOnly: true },
          ttlSeconds: { type: 'integer', minimum: 0, default: 300 },
          allow: { type: 'array', items: { type: 'string' }, default: ['**'], description: 'Upstream repository patterns that may be pulled.' },
          block: { type: 'array', items: { type: 'string' }, default: [], description: 'Upstream repository patterns that may not be pulled (wins over allow).' },
        },
      }),
      ok: { 200: answer('The remote, without its password', { type: 'object', properties: { remote: schema('Remote') } }) },
      errors: [400, 403, 409],
    }),
    delete: op({
      operationId: 'deleteRemote',
      tags: ['maintenance'],
      summary: 'Remove a remote repository (what it cached stays until GC or retention removes it)',
      description: ADMIN,
      parameters: [pathName('name', 'remote')],
      ok: { 200: answer('Removed', { type: 'object' }) },
      errors: [403, 404],
    }),
  },

  [`${API_PREFIX}/audit`]: {
    get: op({
      operationId: 'listAudit',
      tags: ['audit'],
      summary: 'Search the audit log',
      description: ADMIN + ' Newest first; page backwards with `before` set to the last `seq` seen.',
      parameters: [
        query('user', 'Only this user\'s entries.', { type: 'string' }),
        query('action', 'Only this action (a command such as PutManifest or CreateUser, or `denied`, `login`).', { type: 'string' }),
        query('repo', 'Only entries about this repository.', { type: 'string' }),
        query('outcome', 'Only entries with this outcome.', { type: 'string', enum: ['ok', 'failed', 'denied'] }),
        query('since', 'Only entries at or after this time: epoch milliseconds or an ISO date.', { type: 'string' }),
        query('until', 'Only entries at or before this time: epoch milliseconds or an ISO date.', { type: 'string' }),
        query('before', 'Only entries with a sequence number below this one.', { type: 'integer', minimum: 0 }),
        query('limit', 'At most this many entries.', { type: 'integer', minimum: 1, maximum: 999_999_999 }),
      ],
      ok: { 200: answer('The entries', listOf('entries', 'AuditEntry')) },
      errors: [400, 403],
    }),
  },

  [`${API_PREFIX}/cluster`]: {
    get: op({
      operationId: 'getClusterStatus',
      tags: ['cluster'],
      summary: 'Cluster status: members, roles, Raft indexes',
      description: ADMIN + ' Answered from this node\'s own state, so that a node cut off from the leader answers too.',
      ok: { 200: answer('The cluster as this node sees it', schema('ClusterStatus')) },
      errors: [403],
    }),
  },
  [`${API_PREFIX}/cluster/tokens`]: {
    post: op({
      operationId: 'createJoinToken',
      tags: ['cluster'],
      summary: 'Issue a join token',
      description: ADMIN + ' A new node joins with it (`flotilla serve --join`).',
      requestBody: body(fromZod(JoinTokenRequest)),
      ok: { 201: answer('The join token', schema('JoinToken')) },
      errors: [400, 403, 503],
    }),
  },
  [`${API_PREFIX}/cluster/join`]: {
    post: op({
      operationId: 'joinCluster',
      tags: ['cluster'],
      summary: 'Join the cluster (called by the joining node)',
      description: 'Open: the joining node proves itself with a join token. A follower forwards the request to the leader.',
      requestBody: body(fromZod(JoinRequest)),
      ok: { 201: answer('The members, the joiner included', { type: 'object', required: ['members'], properties: { members: { type: 'array', items: schema('Member') } } }) },
      errors: [400, 401, 403, 503],
      open: true,
    }),
  },
  [`${API_PREFIX}/cluster/members/{peerId}`]: {
    parameters: [{ name: 'peerId', in: 'path', required: true, description: 'The member\'s libp2p peer id.', schema: { type: 'string' } }],
    delete: op({
      operationId: 'removeMember',
      tags: ['cluster'],
      summary: 'Remove a member',
      description: ADMIN + ' Done by the leader (a follower forwards the request); the leader removing itself hands over first.',
      ok: { 202: answer('Removal under way', schema('Removed')) },
      errors: [403, 404, 503],
    }),
  },
  [`${API_PREFIX}/cluster/leave`]: {
    post: op({
      operationId: 'leaveCluster',
      tags: ['cluster'],
      summary: 'Take this node out of the cluster',
      description: ADMIN + ' The leader removes it; a leader hands over first.',
      ok: { 202: answer('Removal under way', schema('Removed')) },
      errors: [403, 503],
    }),
  },

  [`${API_PREFIX}/sites`]: {
    get: op({
      operationId: 'listSites',
      tags: ['sites'],
      summary: 'This site\'s id and its peerings, with their status',
      description: ADMIN + ' Answered by the leader (which ships for its site) when it can be reached, else from this node\'s own view.',
      ok: { 200: answer('The peerings', { type: 'object', required: ['site', 'head', 'peerings'], properties: { site: schema('SiteId'), head: { type: 'integer', description: 'The last sequence number of this site\'s change feed.' }, peerings: { type: 'array', items: schema('SiteStatus') } } }) },
      errors: [403],
    }),
    post: op({
      operationId: 'peerSite',
      tags: ['sites'],
      summary: 'Peer this site with another (`flotilla site peer`)',
      description: ADMIN + ' Presents the other site\'s peering token to it at `address`; both sites record the peering through their logs and pin each other\'s members.',
      requestBody: body(fromZod(PeerRequest)),
      ok: { 201: answer('The new peering', schema('SiteStatus')) },
      errors: [400, 403, 409, 503],
    }),
  },
  [`${API_PREFIX}/sites/tokens`]: {
    post: op({
      operationId: 'createSiteToken',
      tags: ['sites'],
      summary: 'Issue a peering token (`flotilla site token`)',
      description: ADMIN + ' It names this site and its members, is signed with the cluster secret, and expires.',
      requestBody: body(fromZod(SiteTokenRequest)),
      ok: { 201: answer('The token', { type: 'object', required: ['token', 'expiresAt', 'site'], properties: { token: { type: 'string' }, expiresAt: { type: 'string', format: 'date-time' }, site: schema('SiteId') } }) },
      errors: [400, 403, 503],
    }),
  },
  [`${API_PREFIX}/sites/handshake`]: {
    post: op({
      operationId: 'siteHandshake',
      tags: ['sites'],
      summary: 'Accept a peering (called by the other site\'s node)',
      description: 'Open: the peering token this site issued, and the calling node\'s signature (`Authorization: Flotilla-Peer …`) by one of the members it names, prove it.',
      requestBody: body(fromZod(HandshakeBody)),
      ok: { 201: answer('This site and its members', { type: 'object', required: ['site', 'members', 'name'], properties: { site: schema('SiteId'), members: { type: 'array', items: schema('SiteMember') }, name: schema('Name') } }) },
      errors: [400, 403, 409, 503],
      open: true,
    }),
  },
  [`${API_PREFIX}/sites/{name}`]: {
    parameters: [pathName('name', 'peering')],
    get: op({ operationId: 'getSite', tags: ['sites'], summary: 'A peering\'s status (`flotilla site status NAME`)', description: ADMIN, ok: { 200: answer('The peering', schema('SiteStatus')) }, errors: [403, 404] }),
    delete: op({ operationId: 'removeSite', tags: ['sites'], summary: 'Remove a peering at this site (`flotilla site remove NAME`)', description: ADMIN + ' Its members are no longer admitted here; the other site keeps its record until removed there.', ok: { 200: answer('Removed', schema('Removed')) }, errors: [403, 404] }),
    patch: op({ operationId: 'setSiteRules', tags: ['sites'], summary: 'Change a peering\'s rules (`flotilla site set NAME`)', description: ADMIN + ' Recorded through this site\'s log, then told to the other site over the link, which records the same; `told` says whether it did already (else this site\'s leader tells it again every few seconds). Rules left out are kept; null clears tags or bandwidth; the direction is as seen from this site.', requestBody: body(fromZod(SetRulesRequest)), ok: { 200: answer('The peering, with told and message', schema('SiteStatus')) }, errors: [400, 403, 404] }),
    put: op({ operationId: 'putSiteRules', tags: ['sites'], summary: 'Change a peering\'s rules (as PATCH)', description: ADMIN, requestBody: body(fromZod(SetRulesRequest)), ok: { 200: answer('The peering, with told and message', schema('SiteStatus')) }, errors: [400, 403, 404] }),
  },
  [`${API_PREFIX}/sites/{name}/explain`]: {
    parameters: [pathName('name', 'peering'), query('repo', 'The repository.', { type: 'string' }, true), query('tag', 'The tag.', { type: 'string' }, true)],
    get: op({
      operationId: 'explainSiteTag',
      tags: ['sites'],
      summary: 'Where a tag stands relative to a peering (`flotilla site explain NAME REPO:TAG`)',
      description: ADMIN + ' Each way the peering ships: replicated (and when), waiting for blobs (which, bytes left), in the backlog (how far behind), filtered out (by which rule), blocked (by which error, and when), absent, not forwarded, or diverged. Asks the other site over the link.',
      ok: { 200: answer('The explanation', { type: 'object', required: ['name', 'site', 'repo', 'tag', 'rules', 'directions'], properties: { name: schema('Name'), site: schema('SiteId'), repo: { type: 'string' }, tag: { type: 'string' }, rules: { type: 'object' }, directions: { type: 'array', items: { type: 'object', required: ['direction', 'state', 'summary'], properties: { direction: { type: 'string', enum: ['in', 'out'] }, state: { type: 'string', enum: ['replicated', 'waiting-for-blobs', 'backlog', 'filtered', 'blocked', 'absent', 'not-forwarded', 'diverged', 'unknown'] }, summary: { type: 'string' } } } } } }) },
      errors: [400, 403, 404],
    }),
  },

  [`${API_PREFIX}/backups`]: {
    post: op({
      operationId: 'beginBackup',
      tags: ['backups'],
      summary: 'Begin an online backup (`flotilla backup`)',
      description: ADMIN + ' After a linearizable read, a snapshot of the metadata as of one applied index, held in memory; every blob it references is held against GC until the backup ends or its lease lapses.',
      ok: { 201: answer('The backup', { type: 'object', required: ['id', 'index', 'takenAt', 'node', 'clusterId', 'membership', 'snapshot', 'blobs', 'leaseMs'], properties: { id: { type: 'string' }, index: { type: 'integer', description: 'The Raft index the snapshot is as of.' }, takenAt: { type: 'string', format: 'date-time' }, node: { type: 'string' }, clusterId: { type: 'string' }, membership: { type: 'object', properties: { voters: { type: 'array', items: { type: 'string' } }, learners: { type: 'array', items: { type: 'string' } }, members: { type: 'array', items: { type: 'object' } } } }, snapshot: { type: 'object', required: ['bytes', 'sha256'], properties: { bytes: { type: 'integer' }, sha256: { type: 'string' } } }, blobs: { type: 'array', items: { type: 'object', required: ['digest', 'size'], properties: { digest: { type: 'string' }, size: { type: 'integer' } } } }, leaseMs: { type: 'integer', description: 'Renew the lease before this many milliseconds pass.' } } }) },
      errors: [403, 503],
    }),
  },
  [`${API_PREFIX}/backups/{id}`]: {
    parameters: [{ name: 'id', in: 'path', required: true, description: 'The backup\'s id.', schema: { type: 'string' } }],
    delete: op({ operationId: 'endBackup', tags: ['backups'], summary: 'End a backup: its hold on the blobs goes', description: ADMIN, parameters: [query('outcome', 'ok once the client wrote and verified everything (recorded as the last success), else failed.', { enum: ['ok', 'failed'] }, true)], ok: { 200: answer('Ended', { type: 'object', properties: { ok: { type: 'boolean' } } }) }, errors: [400, 403, 404] }),
  },
  [`${API_PREFIX}/backups/{id}/snapshot`]: {
    parameters: [{ name: 'id', in: 'path', required: true, description: 'The backup\'s id.', schema: { type: 'string' } }],
    get: op({ operationId: 'getBackupSnapshot', tags: ['backups'], summary: 'The snapshot\'s bytes', description: ADMIN + ' Check them against the sha256 the backup began with.', ok: { 200: { description: 'The snapshot', content: { 'application/octet-stream': { schema: { type: 'string', contentEncoding: 'binary' } } } } }, errors: [403, 404] }),
  },
  [`${API_PREFIX}/backups/{id}/blobs/{digest}`]: {
    parameters: [{ name: 'id', in: 'path', required: true, description: 'The backup\'s id.', schema: { type: 'string' } }, { name: 'digest', in: 'path', required: true, description: 'A blob the snapshot references.', schema: { type: 'string' } }],
    get: op({ operationId: 'getBackupBlob', tags: ['backups'], summary: 'One blob the snapshot references', description: ADMIN + ' From this node, or streamed from a member that holds it.', ok: { 200: { description: 'The blob', content: { 'application/octet-stream': { schema: { type: 'string', contentEncoding: 'binary' } } } } }, errors: [403, 404] }),
  },
  [`${API_PREFIX}/backups/{id}/lease`]: {
    parameters: [{ name: 'id', in: 'path', required: true, description: 'The backup\'s id.', schema: { type: 'string' } }],
    post: op({ operationId: 'renewBackupLease', tags: ['backups'], summary: 'Renew the backup\'s hold on its blobs', description: ADMIN, ok: { 200: answer('Renewed', { type: 'object', properties: { expiresAt: { type: 'string', format: 'date-time' } } }) }, errors: [403, 404] }),
  },
}

const millis = (description = 'Epoch milliseconds.'): JsonSchema => ({ type: 'integer', description })
const errorBody = (description: string): Response => answer(description, schema('Error'))

/**
 * The document. Open to anyone at GET /api/v1/openapi.json, like /healthz: it describes the
 * API's shape, the same for every node of this version and public with the source, and holds
 * nothing of this deployment (no users, repositories or members). Tools (Swagger UI, client
 * generators) fetch it before they have credentials, and every route it describes still asks
 * for them. It does tell the Flotilla version, as the source's package.json does.
 */
export const OPENAPI_DOCUMENT: OpenApiDocument = {
  openapi: '3.1.0',
  info: {
    title: 'Flotilla admin API',
    version: pkg.version,
    description: 'Users, groups, permission targets, access tokens, immutable tags, promotion, the audit log, and cluster membership. JSON in and out; errors as `{"errors": [{code, message, detail}]}`, as in the registry API. Refusals (403) are recorded in the audit log.',
    license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
  },
  tags: [
    { name: 'identity', description: 'The caller.' },
    { name: 'users', description: 'User accounts.' },
    { name: 'groups', description: 'Groups of users, named in permission targets.' },
    { name: 'permissions', description: 'Permission targets: repository patterns and the actions users and groups have there.' },
    { name: 'tokens', description: 'Access tokens for robots and CI jobs, and the offline tokens `docker login` keeps.' },
    { name: 'immutable tags', description: 'Repositories whose tags, once pushed, never move.' },
    { name: 'promotion', description: 'Copying images between repositories without pulling and pushing.' },
    { name: 'search', description: 'Searching manifests by name, tag, digest, checksum, property, time, type and size; the latest version of a repository.' },
    { name: 'properties', description: 'Key/value properties of manifests (user-set, and the image\'s annotations and labels, read-only), and blobs\' SHA-1 and MD5.' },
    { name: 'maintenance', description: 'Garbage collection.' },
    { name: 'virtual repositories', description: 'Name prefixes resolved through an ordered list of member repositories.' },
    { name: 'audit', description: 'The audit log.' },
    { name: 'cluster', description: 'Cluster membership (/api/v1/cluster).' },
    { name: 'sites', description: 'Cross-site peering (/api/v1/sites).' },
    { name: 'backups', description: 'Online backups (/api/v1/backups, `flotilla backup`).' },
  ],
  security: [{ basic: [] }, { bearer: [] }],
  paths,
  components: {
    securitySchemes: {
      basic: { type: 'http', scheme: 'basic', description: 'A user name and password, or an access token (flt_…) as the password. Administrator rights need a password.' },
      bearer: { type: 'http', scheme: 'bearer', description: 'An access token (flt_…) or a registry JWT from /token.' },
    },
    responses: {
      BadRequest: errorBody('The request is malformed (body, parameter or name).'),
      Unauthorized: {
        ...errorBody('No credentials, or bad ones.'),
        headers: { 'WWW-Authenticate': { description: 'The challenge: Bearer realm of the token endpoint.', schema: { type: 'string' } } },
      },
      Denied: errorBody('Signed in, without the rights this needs (audited).'),
      NotFound: errorBody('No such user, group, permission target, token, rule, image or member.'),
      Conflict: errorBody('It already exists, or an immutable tag would move.'),
      Unavailable: errorBody('No leader is known right now, or it moved: retry in a few seconds.'),
      Error: errorBody('Any other error (429 after repeated failed sign-ins, 500 …), in the same format.'),
    },
    schemas: {
      Error: {
        type: 'object',
        required: ['errors'],
        properties: {
          errors: {
            type: 'array',
            minItems: 1,
            items: {
              type: 'object',
              required: ['code', 'message'],
              properties: {
                code: { type: 'string', enum: Object.keys(ERRORS), description: 'The error\'s code (storage/errors.ts); stable, unlike the message. (The registry API under /v2 answers the OCI codes instead.)' },
                message: { type: 'string' },
                detail: { description: 'More about the error, when there is more.' },
              },
            },
          },
        },
      },
      Ok: { type: 'object', required: ['ok'], properties: { ok: { const: true } } },
      Name: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$', description: 'A user, group, permission-target or token name: 1-64 of [a-z0-9._-], starting with a letter or digit.' },
      Password: { type: 'string', minLength: MIN_PASSWORD_LENGTH, pattern: '^(?!flt_)', description: 'Not starting with flt_, the prefix of access tokens.' },
      RepositoryPattern: {
        type: 'string',
        maxLength: 255,
        pattern: '^[a-z0-9*?._/-]+$',
        description: 'Path components separated by /: `*` matches within one component, `?` one character, `**` any number of components (`team-a/**` matches team-a itself).',
        examples: ['team-a/**', 'library/*'],
      },
      Action: { type: 'string', enum: [...ACTIONS], description: 'read: pull; write: push (implies annotate); delete; annotate: push referrers only; manage: everything.' },
      Actions: { type: 'array', minItems: 1, items: schema('Action') },
      Grant: { type: 'object', required: ['repositories', 'actions'], properties: { repositories: { type: 'array', minItems: 1, items: schema('RepositoryPattern') }, actions: schema('Actions') } },
      Me: {
        type: 'object',
        required: ['user', 'admin', 'via', 'groups'],
        properties: {
          user: { type: 'string' },
          admin: { type: 'boolean', description: 'The user\'s admin flag; administrator rights need a password sign-in too.' },
          via: { type: 'string', enum: ['password', 'token', 'jwt', 'certificate'] },
          token: { type: 'string', description: 'The access token\'s id, when signed in with one.' },
          groups: { type: 'array', items: { type: 'string' } },
        },
      },
      User: {
        type: 'object',
        required: ['name', 'passwordVersion', 'admin', 'disabled', 'createdAt', 'updatedAt', 'groups'],
        properties: {
          name: schema('Name'),
          passwordVersion: { type: 'integer', description: 'Bumped on every password change.' },
          admin: { type: 'boolean' },
          disabled: { type: 'boolean' },
          createdAt: millis(),
          updatedAt: millis(),
          groups: { type: 'array', items: schema('Name') },
        },
      },
      Group: { type: 'object', required: ['name', 'createdAt', 'members'], properties: { name: schema('Name'), createdAt: millis(), members: { type: 'array', items: schema('Name') } } },
      PermissionTarget: {
        type: 'object',
        required: ['name', 'repositories', 'users', 'groups', 'updatedAt'],
        properties: {
          name: schema('Name'),
          repositories: { type: 'array', items: schema('RepositoryPattern') },
          users: { type: 'object', additionalProperties: schema('Actions') },
          groups: { type: 'object', additionalProperties: schema('Actions') },
          updatedAt: millis(),
        },
      },
      TokenId: { type: 'string', pattern: '^[0-9a-f]{16}$' },
      Token: {
        type: 'object',
        required: ['id', 'kind', 'name', 'owner', 'scopes', 'createdAt', 'expiresAt'],
        properties: {
          id: schema('TokenId'),
          kind: { type: 'string', enum: ['robot', 'login'], description: 'robot: made here; login: the offline token `docker login` keeps.' },
          name: { type: 'string' },
          owner: schema('Name'),
          scopes: { type: 'array', items: schema('Grant') },
          createdAt: millis(),
          expiresAt: millis('Epoch milliseconds; 0: never.'),
          revokedAt: millis(),
        },
      },
      NewToken: { allOf: [schema('Token'), { type: 'object', required: ['token'], properties: { token: { type: 'string', description: 'The secret (flt_…), shown this once.' } } }] },
      ImmutableRule: { type: 'object', required: ['pattern', 'createdAt'], properties: { pattern: schema('RepositoryPattern'), createdAt: millis() } },
      AuditEntry: {
        type: 'object',
        required: ['seq', 'action', 'user', 'address', 'at', 'outcome'],
        properties: {
          seq: { type: 'integer' },
          action: { type: 'string', description: 'The command applied (PutManifest, CreateUser …) or what was refused (denied, login).' },
          user: { type: 'string', description: '`anonymous` when none.' },
          token: { type: 'string', description: 'The access token\'s id, when the caller used one.' },
          address: { type: 'string' },
          requestId: { type: 'string' },
          method: { type: 'string' },
          path: { type: 'string' },
          at: millis(),
          repo: { type: 'string' },
          detail: { type: 'object', description: 'Non-secret details: digest, tag, target name …' },
          outcome: { type: 'string', enum: ['ok', 'failed', 'denied'] },
          code: { type: 'string', description: 'The error code when the outcome is not ok.' },
        },
      },
      Remote: {
        type: 'object',
        required: ['name', 'prefix', 'upstream', 'ttlSeconds', 'allow', 'block', 'hasPassword'],
        properties: {
          name: { type: 'string' },
          prefix: { type: 'string' },
          upstream: { type: 'string' },
          username: { type: 'string' },
          hasPassword: { type: 'boolean', description: 'Whether credentials are stored (the password itself is never shown).' },
          ttlSeconds: { type: 'integer' },
          allow: { type: 'array', items: { type: 'string' } },
          block: { type: 'array', items: { type: 'string' } },
          at: { type: 'integer', description: 'When it was last set (epoch ms).' },
        },
      },
      Hook: {
        type: 'object',
        required: ['url', 'secret', 'events', 'repositories'],
        properties: {
          name: { type: 'string' },
          url: { type: 'string', format: 'uri' },
          secret: { type: 'string', minLength: 16, description: 'Signs every delivery; masked when read back.' },
          events: { type: 'array', items: { type: 'string', enum: ['push', 'delete', 'promote', 'pull', 'immutable', 'quota', 'gc'] } },
          repositories: { type: 'array', items: { type: 'string' }, description: 'Repository patterns.' },
        },
      },
      Quota: {
        type: 'object',
        required: ['name', 'repositories', 'maxBytes', 'usedBytes'],
        properties: {
          name: { type: 'string' },
          repositories: { type: 'array', items: { type: 'string' } },
          maxBytes: { type: 'integer' },
          usedBytes: { type: 'integer', description: 'Distinct blobs linked into the namespace, each counted once.' },
        },
      },
      VirtualRepository: {
        type: 'object',
        required: ['name', 'prefix', 'members', 'defaultMember'],
        properties: {
          name: { type: 'string' },
          prefix: { type: 'string', description: 'Repository names under it are virtual, e.g. dev/.' },
          members: { type: 'array', items: { type: 'string' }, description: 'Member prefixes (local namespaces or remote repositories), in resolution order.' },
          defaultMember: { type: 'string', description: 'The member pushes through the virtual name go to.' },
        },
      },
      RetentionPolicy: {
        type: 'object',
        required: ['repositories'],
        properties: {
          name: { type: 'string' },
          repositories: { type: 'array', items: { type: 'string' }, description: 'Repository patterns, e.g. ci/**.' },
          exclude: { type: 'array', items: { type: 'string' }, description: 'Tag globs never deleted, e.g. release-*.' },
          keepLast: { type: 'integer', minimum: 0, description: 'Always keep the N newest tags.' },
          by: { type: 'string', enum: ['push', 'semver'], default: 'push' },
          olderThanDays: { type: 'number', description: 'Delete tags pushed more than D days ago.' },
          notPulledDays: { type: 'number', description: 'Delete tags not pulled within D days.' },
          untagged: { type: 'boolean', description: 'Delete untagged manifests (not an index child, not a referrer of one that exists).' },
          untaggedAfterHours: { type: 'number', default: 24 },
        },
      },
      GcReport: {
        type: 'object',
        required: ['dryRun', 'graceMs', 'before', 'unlinked', 'blobs', 'bytes', 'kept', 'keptDigests', 'nodes', 'pending'],
        properties: {
          dryRun: { type: 'boolean' },
          graceMs: { type: 'integer' },
          before: { type: 'integer', description: 'Unreferenced since before this time (epoch ms) counted as garbage.' },
          unlinked: { type: 'integer', description: 'Repository links removed.' },
          blobs: { type: 'array', items: { type: 'object', properties: { digest: { type: 'string' }, size: { type: 'integer' } } }, description: 'Blobs forgotten by the metadata.' },
          bytes: { type: 'integer', description: 'Their total size.' },
          kept: { type: 'integer', description: 'Digests left alone because an upload or a request was using them.' },
          keptDigests: { type: 'array', items: { type: 'string' }, description: 'The first 1,000 of them.' },
          nodes: { type: 'array', items: { type: 'object', properties: { peerId: { type: 'string' }, ok: { type: 'boolean' }, deleted: { type: 'integer' }, bytes: { type: 'integer' }, error: { type: 'string' } } }, description: 'What each node deleted from its disk.' },
          pending: { type: 'array', items: { type: 'string' }, description: 'Nodes that did not answer: they delete their bytes when they come back.' },
          collectMs: { type: 'integer', description: 'How long the collection\'s commands took, in ms (paced: rests included). Not in a dry run.' },
          sweepMs: { type: 'integer', description: 'How long the sweeps on every node took after it, in ms. Not in a dry run.' },
        },
      },
      SearchHit: {
        type: 'object',
        required: ['repo', 'digest', 'mediaType', 'size', 'pushedAt', 'tags'],
        properties: {
          repo: { type: 'string' },
          digest: { type: 'string' },
          mediaType: { type: 'string' },
          artifactType: { type: 'string' },
          size: { type: 'integer', description: 'The manifest\'s size in bytes.' },
          pushedAt: { type: 'integer', description: 'Last push of the manifest (ms since the epoch).' },
          createdAt: { type: 'integer', description: 'org.opencontainers.image.created (ms), when present.' },
          pulledAt: { type: 'integer', description: 'Last recorded pull (ms); batched, may lag.' },
          tags: { type: 'array', items: { type: 'string' } },
          properties: { type: 'object', additionalProperties: { type: 'array', items: { type: 'string' } }, description: 'With properties=true.' },
        },
      },
      SearchPage: {
        type: 'object',
        required: ['items'],
        properties: {
          items: { type: 'array', items: schema('SearchHit') },
          cursor: { type: 'string', description: 'Present when more results follow: pass it as cursor.' },
        },
      },
      Latest: {
        type: 'object',
        required: ['repo', 'tag', 'digest', 'mediaType', 'size', 'pushedAt', 'candidates'],
        properties: {
          repo: { type: 'string' },
          tag: { type: 'string' },
          digest: { type: 'string' },
          mediaType: { type: 'string' },
          size: { type: 'integer' },
          pushedAt: { type: 'integer', description: 'Last push of the tag (ms).' },
          version: { type: 'string', description: 'The version the tag reads as (by=semver).' },
          candidates: { type: 'integer', description: 'Tags that matched before the property filter.' },
        },
      },
      Promotion: {
        type: 'object',
        required: ['digest', 'manifests', 'blobs', 'referrers'],
        properties: {
          digest: { type: 'string' },
          manifests: { type: 'array', items: { type: 'string' }, description: 'Digests of the manifests copied.' },
          blobs: { type: 'integer' },
          referrers: { type: 'integer' },
          properties: { type: 'integer', description: 'User properties copied.' },
        },
      },
      Properties: {
        type: 'object',
        required: ['repo', 'digest', 'properties'],
        properties: {
          repo: { type: 'string' },
          digest: { type: 'string' },
          tags: { type: 'array', items: { type: 'string' }, description: 'Tags of the manifest (GET only).' },
          added: { type: 'integer', description: 'Pairs added (PUT only).' },
          removed: { type: 'integer', description: 'Pairs removed (DELETE only).' },
          properties: {
            type: 'array',
            items: { type: 'object', required: ['key', 'values', 'readOnly'], properties: { key: { type: 'string' }, values: { type: 'array', items: { type: 'string' } }, readOnly: { type: 'boolean', description: 'An annotation or config label of the image: it goes only with the manifest.' } } },
          },
        },
      },
      ClusterStatus: {
        type: 'object',
        required: ['node', 'leader', 'term', 'commit', 'applied', 'role', 'replicationBacklog', 'members'],
        properties: {
          node: { type: 'string', description: 'This node\'s peer id.' },
          leader: { type: ['string', 'null'] },
          term: { type: 'integer' },
          commit: { type: 'integer' },
          applied: { type: 'integer' },
          role: { type: 'string' },
          replicationBacklog: { type: 'integer', description: 'Blobs this node should hold and is still copying.' },
          disk: { type: 'object', description: 'This node\'s disk against its watermarks; full: it takes no uploads.', properties: { totalBytes: { type: 'integer' }, freeBytes: { type: 'integer' }, usedPercent: { type: 'number' }, full: { type: 'boolean' }, at: { type: 'integer' } } },
          members: { type: 'array', items: schema('ClusterMember') },
        },
      },
      ClusterMember: {
        type: 'object',
        required: ['peerId', 'role', 'http', 'p2p', 'leader', 'match', 'lag', 'reachable', 'lastContact', 'stalled'],
        properties: {
          peerId: { type: 'string' },
          role: { type: 'string', enum: ['voter', 'learner', 'none'] },
          http: { type: ['string', 'null'] },
          peer: { type: ['string', 'null'], description: 'Its peer port (https://HOST:PORT): node-to-node HTTP, mutual TLS with libp2p certificates. Null for a member recorded without one.' },
          p2p: { type: 'array', items: { type: 'string' }, description: 'Multiaddrs ending in /p2p/<peer id>.' },
          leader: { type: 'boolean' },
          match: { type: ['integer', 'null'], description: 'Known to the leader only.' },
          lag: { type: ['integer', 'null'], description: 'Known to the leader only.' },
          reachable: { type: 'boolean', description: 'A Raft frame came from it within the last 3 s.' },
          lastContact: { type: ['string', 'null'], format: 'date-time' },
          stalled: {
            oneOf: [
              { type: 'null' },
              { type: 'object', required: ['match', 'since', 'cause'], properties: { match: { type: 'integer' }, since: { type: 'string', format: 'date-time' }, cause: { type: 'string' } } },
            ],
            description: 'On the leader: replication to it has not advanced for 5 s while it lags.',
          },
        },
      },
      JoinToken: { type: 'object', required: ['token', 'expiresAt'], properties: { token: { type: 'string' }, expiresAt: { type: 'string', format: 'date-time' } } },
      Member: { type: 'object', required: ['peerId', 'p2p', 'http', 'at'], properties: { peerId: { type: 'string' }, p2p: { type: 'array', items: { type: 'string' } }, http: { type: 'string' }, peer: { type: 'string', description: 'Its peer port (https://HOST:PORT).' }, at: millis() } },
      Removed: { type: 'object', required: ['removed'], properties: { removed: { type: 'string', description: 'The peer id (a member), or the peering\'s name (a site).' } } },
      SiteId: { type: 'string', pattern: '^[0-9a-f]{16}$', description: 'A site\'s id: its cluster id.' },
      SiteMember: { type: 'object', required: ['peerId', 'addrs'], properties: { peerId: { type: 'string' }, addrs: { type: 'array', items: { type: 'string' }, description: 'Multiaddrs other sites dial (sites.advertise).' } } },
      SiteStatus: {
        type: 'object',
        required: ['name', 'site', 'initiator', 'rules', 'members', 'receiving', 'sending', 'createdAt', 'cursor', 'shipper', 'connected', 'lastContact', 'lagEntries', 'lagSeconds', 'lastError', 'bytesReceived', 'waitingFor', 'lastServed', 'failures'],
        properties: {
          name: schema('Name'),
          site: schema('SiteId'),
          initiator: { type: 'boolean', description: 'This site ran `site peer`; the direction is as seen from it.' },
          rules: {
            type: 'object',
            required: ['repos', 'direction', 'deletes', 'access'],
            properties: {
              repos: { type: 'array', items: { type: 'string' }, description: 'Repository patterns; `!PATTERN` excludes; none: all.' },
              direction: { type: 'string', enum: ['pull', 'push', 'both'] },
              tags: { type: 'string', description: 'Tag glob.' },
              deletes: { type: 'boolean' },
              access: { type: 'boolean' },
              bandwidth: { type: 'number', description: 'MiB/s.' },
            },
          },
          members: { type: 'array', items: schema('SiteMember'), description: 'The other site\'s pinned members.' },
          receiving: { type: 'boolean' },
          sending: { type: 'boolean' },
          createdAt: { type: 'string', format: 'date-time' },
          cursor: { oneOf: [{ type: 'null' }, { type: 'object', required: ['seq', 'originAt', 'at', 'applied'], properties: { seq: { type: 'integer' }, originAt: { type: ['string', 'null'] }, at: { type: ['string', 'null'] }, applied: { type: 'integer' } } }] },
          shipper: { type: ['string', 'null'], description: 'The member of this site that receives for it (its leader).' },
          connected: { type: ['boolean', 'null'], description: 'null when this node does not ship.' },
          lastContact: { type: ['string', 'null'] },
          lagEntries: { type: ['integer', 'null'] },
          lagSeconds: { type: ['number', 'null'] },
          lastError: { oneOf: [{ type: 'null' }, { type: 'object', required: ['message', 'at'], properties: { message: { type: 'string' }, at: { type: 'string', format: 'date-time' } } }] },
          bytesReceived: { type: ['integer', 'null'] },
          waitingFor: { type: ['object', 'null'], additionalProperties: { type: 'integer' }, description: 'Blobs being fetched: digest → bytes left.' },
          lastServed: { type: ['string', 'null'], description: 'When the other site last pulled from this node.' },
          failures: { type: 'array', items: { type: 'object' }, description: 'Changes received that could not be applied here, most recent first.' },
          backlogBytes: { type: ['integer', 'null'], description: 'Blob bytes the changes not yet applied here reference (on the shipping node).' },
          throughput: { type: 'object', required: ['in', 'out'], properties: { in: { type: 'number' }, out: { type: 'number' } }, description: 'Blob bytes per second over the last 10 s.' },
          rulesAt: { type: ['string', 'null'], description: 'When the rules were last set (site set).' },
          rulesSynced: { type: 'boolean', description: 'Whether the other site confirmed the rules last set here.' },
        },
      },
    },
  },
}

/** GET (and HEAD) /api/v1/openapi.json, without credentials (why: above OPENAPI_DOCUMENT). */
export function openapiRoute () {
  const text = JSON.stringify(OPENAPI_DOCUMENT)
  return async function openapi (ctx: Context, next: Next): Promise<void> {
    if (ctx.path !== OPENAPI_PATH) return await next()
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      ctx.set('Allow', 'GET, HEAD')
      throw new FlotillaError('METHOD_NOT_ALLOWED', `${ctx.method} is not allowed on ${OPENAPI_PATH}: use GET`)
    }
    ctx.type = 'application/json'
    ctx.body = text
  }
}
