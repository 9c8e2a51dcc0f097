/**
 * Shared set-up for the access-control tests: admin API calls, users with known grants,
 * access tokens and registry JWTs (good and bad ones), against an in-process node with
 * access control on (no anonymous access).
 */
import { basic, type InProcessNode } from '../helpers/inproc.js'
import { signRegistryToken } from '../../src/auth/tokens.js'
import type { JwtAccess } from '../../src/auth/identity.js'

export interface ApiResult { status: number; body: any; headers: Headers }

/** Call the admin API (or any path) with an Authorization header (undefined: anonymous). */
export async function call (node: InProcessNode, authorization: string | undefined, method: string, path: string, body?: unknown): Promise<ApiResult> {
  const headers: Record<string, string> = {}
  if (authorization !== undefined) headers.authorization = authorization
  const init: RequestInit = { method, headers }
  if (body !== undefined) {
    headers['content-type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  const res = await fetch(node.url + path, init)
  const text = await res.text()
  let parsed: unknown = text
  try { parsed = text === '' ? undefined : JSON.parse(text) } catch {}
  return { status: res.status, body: parsed, headers: res.headers }
}

/** Call as the admin and insist on a 2xx. */
export async function admin (node: InProcessNode, method: string, path: string, body?: unknown): Promise<any> {
  const r = await call(node, node.authorization, method, path, body)
  if (r.status >= 300) throw new Error(`${method} ${path} as admin answered ${r.status}: ${JSON.stringify(r.body)}`)
  return r.body
}

export async function createUser (node: InProcessNode, name: string, password = `${name}-password`): Promise<string> {
  await admin(node, 'POST', '/api/v1/users', { name, password })
  return basic({ username: name, password })
}

export async function grant (node: InProcessNode, target: string, repositories: string[], users: Record<string, string[]>, groups: Record<string, string[]> = {}): Promise<void> {
  await admin(node, 'PUT', `/api/v1/permissions/${target}`, { repositories, users, groups })
}

/** A robot token (as the admin, for `owner` or the admin), answered with its value and id. */
export async function robotToken (node: InProcessNode, name: string, scopes: Array<{ repositories: string[]; actions: string[] }>, extra: Record<string, unknown> = {}): Promise<{ id: string; token: string }> {
  const r = await admin(node, 'POST', '/api/v1/tokens', { name, scopes, ...extra })
  return { id: r.id, token: r.token }
}

/** A registry JWT from the token endpoint for `authorization` and scopes. */
export async function jwtFor (node: InProcessNode, authorization: string | undefined, scopes: string[], service = 'flotilla'): Promise<{ status: number; token?: string; body: any }> {
  const q = new URLSearchParams({ service })
  for (const s of scopes) q.append('scope', s)
  const r = await call(node, authorization, 'GET', `/token?${q.toString()}`)
  return { status: r.status, token: r.body?.token, body: r.body }
}

/** Sign a JWT with the cluster's own key but claims of our choosing (other service, expired…). */
export async function forgeJwt (node: InProcessNode, opts: { sub: string; access: JwtAccess[]; service?: string; issuer?: string; nowMs?: number; ttl?: number }): Promise<string> {
  const k = await node.node.deps.auth.queries.signingKey()
  if (k === undefined) throw new Error('no signing key')
  return await signRegistryToken(Buffer.from(k.key, 'base64'), k.kid, { issuer: opts.issuer ?? 'flotilla', service: opts.service ?? 'flotilla' }, { sub: opts.sub, access: opts.access }, opts.nowMs ?? Date.now(), opts.ttl ?? 300)
}

export function bearer (token: string): string {
  return `Bearer ${token}`
}

/** Flip one character in the middle of a JWT's signature. */
export function tamper (jwt: string): string {
  const i = jwt.lastIndexOf('.') + 10
  const c = jwt[i] === 'A' ? 'B' : 'A'
  return jwt.slice(0, i) + c + jwt.slice(i + 1)
}

type Fetch = (input: string, init?: RequestInit) => Promise<Response>

/** Push a blob monolithically with `f` (an authenticated fetch). */
export async function pushBlobWith (f: Fetch, base: string, repo: string, b: { digest: string; size: number; data: Buffer }): Promise<void> {
  const res = await f(`${base}/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': String(b.size) }, body: b.data })
  await res.arrayBuffer()
  if (res.status !== 201) throw new Error(`push of blob ${b.digest} to ${repo} answered ${res.status}`)
}

/** Push an image's blobs and manifest with `f`; answers the manifest digest. */
export async function pushImageWith (f: Fetch, base: string, repo: string, img: { config: { digest: string; size: number; data: Buffer }; layers: Array<{ digest: string; size: number; data: Buffer }>; manifest: Buffer; digest: string; mediaType: string }, ref?: string): Promise<string> {
  for (const b of [img.config, ...img.layers]) await pushBlobWith(f, base, repo, b)
  const res = await f(`${base}/v2/${repo}/manifests/${ref ?? img.digest}`, { method: 'PUT', headers: { 'content-type': img.mediaType }, body: img.manifest })
  const text = await res.text()
  if (res.status !== 201) throw new Error(`push of manifest ${img.digest} to ${repo} answered ${res.status}: ${text}`)
  return img.digest
}
