/**
 * The admin API's OpenAPI document (src/http/openapi.ts; issue 10, item 13): it holds exactly
 * the routes the admin, cluster and sites routers register, its references and path parameters hold
 * together, and a node serves it, without credentials, at GET /api/v1/openapi.json.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { adminRoutes } from '../../src/http/admin.js'
import { clusterRoutes } from '../../src/http/cluster-api.js'
import { sitesRoutes } from '../../src/http/sites.js'
import { backupRoutes } from '../../src/http/backup.js'
import type { BackupSessions } from '../../cluster/backup/sessions.js'
import type { Sites } from '../../cluster/peering/sites.js'
import { HTTP_METHODS, OPENAPI_DOCUMENT, OPENAPI_PATH, type Operation, type Parameter } from '../../src/http/openapi.js'
import type { RegistryDeps } from '../../src/http/deps.js'
import type { Cluster } from '../../cluster/cluster.js'
import { startInProcess } from '../helpers/inproc.js'

/** `METHOD /path/{param}` for every route a router registers; HEAD, which @koa/router adds to each GET, left out. */
function routesOf (router: { stack: Array<{ path: string | RegExp; methods: string[] }> }): string[] {
  return router.stack.flatMap((layer) => {
    if (typeof layer.path !== 'string') throw new Error(`a route by regular expression (${String(layer.path)}) cannot be listed in the document`)
    const path = layer.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}').replace(/\{\*([A-Za-z0-9_]+)\}/g, '{$1}')
    return layer.methods.filter((m) => m !== 'HEAD').map((m) => `${m} ${path}`)
  })
}

function documentRoutes (): string[] {
  return Object.entries(OPENAPI_DOCUMENT.paths).flatMap(([path, item]) =>
    HTTP_METHODS.filter((m) => item[m] !== undefined).map((m) => `${m.toUpperCase()} ${path}`))
}

function operations (): Array<{ route: string; path: string; op: Operation; pathParams: Parameter[] }> {
  return Object.entries(OPENAPI_DOCUMENT.paths).flatMap(([path, item]) =>
    HTTP_METHODS.flatMap((m) => item[m] === undefined ? [] : [{ route: `${m.toUpperCase()} ${path}`, path, op: item[m], pathParams: item.parameters ?? [] }]))
}

t.test('every route of the admin and cluster routers, and nothing else', async (t) => {
  // Building the routers touches none of their dependencies; handlers are never called here.
  const admin = adminRoutes({ auth: {} } as unknown as RegistryDeps).router
  const cluster = clusterRoutes({} as unknown as Cluster)
  const sites = sitesRoutes({} as unknown as Sites, {} as unknown as RegistryDeps['auth'])
  const backups = backupRoutes({ auth: {} } as unknown as RegistryDeps, {} as unknown as BackupSessions).router
  const registered = [...routesOf(admin), ...routesOf(cluster), ...routesOf(sites), ...routesOf(backups)].sort()
  t.ok(registered.length >= 30, `the routers register their routes (${registered.length})`)
  t.equal(new Set(registered).size, registered.length, 'no route registered twice')
  t.same(documentRoutes().sort(), registered, 'the document lists exactly the registered (method, path) pairs')
  t.notOk(documentRoutes().some((r) => r.includes('/debug/')), 'test-only fault injection is left out')
  t.notOk(documentRoutes().some((r) => r.endsWith(' /token')), 'the Docker token endpoint is left out')
})

t.test('the document holds together', async (t) => {
  const doc = OPENAPI_DOCUMENT
  t.match(doc.openapi, /^3\.1\.\d+$/)
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  t.equal(doc.info.version, pkg.version, 'info.version is the package version')
  t.same(Object.keys(doc.components.securitySchemes).sort(), ['basic', 'bearer'])

  // Every $ref points at something in components.
  const refs: string[] = []
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) { v.forEach(walk); return }
    if (typeof v !== 'object' || v === null) return
    for (const [k, x] of Object.entries(v)) if (k === '$ref' && typeof x === 'string') refs.push(x); else walk(x)
  }
  walk(doc)
  for (const ref of new Set(refs)) {
    const m = /^#\/components\/(schemas|responses)\/([A-Za-z0-9]+)$/.exec(ref)
    t.ok(m !== null && doc.components[m[1] as 'schemas' | 'responses'][m[2]!] !== undefined, `${ref} resolves`)
  }

  const ids = new Set<string>()
  for (const { route, path, op, pathParams } of operations()) {
    t.notOk(ids.has(op.operationId), `${route}: operationId ${op.operationId} is unique`)
    ids.add(op.operationId)
    t.ok(op.summary.length > 0 && op.tags.length > 0, `${route}: a summary and a tag`)
    t.ok(op.tags.every((tag) => doc.tags.some((d) => d.name === tag)), `${route}: its tags are declared`)
    const statuses = Object.keys(op.responses)
    t.ok(statuses.some((s) => /^2\d\d$/.test(s)) && statuses.includes('default'), `${route}: a success response and the default error`)
    if (op.security === undefined) t.ok(statuses.includes('401'), `${route}: needs credentials, so answers 401`)
    const inPath = [...path.matchAll(/\{([^}]+)\}/g)].map((x) => x[1]).sort()
    const declared = [...pathParams, ...(op.parameters ?? [])].filter((p) => p.in === 'path')
    t.same(declared.map((p) => p.name).sort(), inPath, `${route}: its path parameters are declared`)
    t.ok(declared.every((p) => p.required), `${route}: path parameters are required`)
    if (op.requestBody !== undefined) t.ok(op.requestBody.content['application/json'] !== undefined, `${route}: a JSON body`)
  }
  const open = operations().filter((o) => o.op.security !== undefined).map((o) => o.route)
  t.same(open, ['POST /api/v1/cluster/join', 'POST /api/v1/sites/handshake'], 'only joining and the peering handshake are open (the caller brings a join or peering token)')
})

t.test('a node serves it at GET /api/v1/openapi.json, without credentials', async (t) => {
  const n = await startInProcess()
  t.teardown(async () => await n.stop())
  const url = `${n.url}${OPENAPI_PATH}`

  const res = await fetch(url)
  t.equal(res.status, 200, 'no credentials needed')
  t.match(res.headers.get('content-type') ?? '', /^application\/json/)
  const served = JSON.parse(await res.text()) as typeof OPENAPI_DOCUMENT
  t.match(served.openapi, /^3\.1\.\d+$/)
  t.same(served, OPENAPI_DOCUMENT, 'the served document is the exported one')

  t.equal((await n.fetch(url)).status, 200, 'with credentials too')
  const head = await fetch(url, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(await head.text(), '')
  const post = await fetch(url, { method: 'POST', body: '{}' })
  t.equal(post.status, 405)
  t.equal(post.headers.get('allow'), 'GET, HEAD')
  t.equal(((await post.json()) as { errors: Array<{ code: string }> }).errors[0]!.code, 'METHOD_NOT_ALLOWED', 'in the error format, with the registry\'s own code (not an OCI one: this is not /v2)')

  // Opening the document opened nothing else.
  t.equal((await fetch(`${n.url}/api/v1/users`)).status, 401, 'the routes it describes still ask for credentials')
  t.equal((await fetch(`${n.url}/api/v1/openapi.json/x`)).status, 401, 'as do paths below it')
})
