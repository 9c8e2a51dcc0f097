/**
 * Talking to a remote's upstream registry over the OCI Distribution API: http:// or https://,
 * anonymous, Basic, or Docker token auth (the 401's `WWW-Authenticate: Bearer realm=…,
 * service=…` sends us to the realm for a token with `scope=repository:NAME:pull`, with the
 * remote's credentials as Basic when it has some), redirects followed (Docker Hub sends blobs
 * to a CDN; the Authorization header is not passed to another host).
 *
 * node:http rather than fetch: its response is a plain Readable, cheaper per byte.
 */
import http, { type IncomingMessage } from 'node:http'
import https from 'node:https'
import type { RemoteMetrics } from './metrics.js'
import { untrustedCertificate } from '../../net/trusted-fetch.js'

export interface UpstreamCredentials { username: string; password: string }

/** Why an upstream request failed: what the client is told, and the metrics label. */
export type UpstreamCause = 'unreachable' | 'server' | 'throttled' | 'not_found' | 'auth' | 'bad_answer'

export class UpstreamFailure extends Error {
  constructor (readonly why: UpstreamCause, message: string, readonly status?: number) { super(message) }
  /** Stale-if-error: the upstream is down, overloaded or unreachable (not: it says no). */
  get transient (): boolean { return this.why === 'unreachable' || this.why === 'server' || this.why === 'throttled' }
}

const agents = { http: new http.Agent({ keepAlive: true, maxSockets: 64 }), https: new https.Agent({ keepAlive: true, maxSockets: 64 }) }

/** An https agent trusting `ca` (the system's CAs plus the node's tls.trust: net/trusted-fetch.ts). */
export function httpsAgent (ca: string[] | undefined): https.Agent {
  return ca === undefined ? agents.https : new https.Agent({ keepAlive: true, maxSockets: 64, ca })
}

/** How long to wait for an upstream's answer headers, and for more bytes of a body. */
const TIMEOUT_MS = 30_000

function challengeParams (header: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const m of header.matchAll(/(\w+)="([^"]*)"/g)) out[m[1]!] = m[2]!
  return out
}

export class Upstream {
  private readonly tokens = new Map<string, { auth: string; until: number }>()

  constructor (
    private readonly origin: string,
    private readonly remote: string,
    private readonly creds: UpstreamCredentials | undefined,
    private readonly metrics?: RemoteMetrics,
    /** For https:// upstreams (and redirects to https://): one that trusts the node's tls.trust CAs. */
    private readonly tlsAgent: https.Agent = agents.https,
  ) {}

  /**
   * A request for `path` (/v2/…) about repository `repo` (upstream name), authenticated as
   * the upstream asks. Resolves with the final response (any status: callers decide); rejects
   * with UpstreamFailure('unreachable') when no answer comes.
   */
  async request (method: 'GET' | 'HEAD', path: string, repo: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
    const kind = /\/manifests\//.test(path) ? 'manifest' : /\/blobs\//.test(path) ? 'blob' : 'other'
    const cached = this.tokens.get(repo)
    let auth = cached !== undefined && cached.until > Date.now() ? cached.auth : undefined
    let res = await this.send(method, new URL(path, this.origin), { ...headers, ...(auth !== undefined ? { authorization: auth } : {}) }, kind)
    if (res.statusCode === 401) {
      const challenge = res.headers['www-authenticate'] ?? ''
      res.resume()
      auth = await this.authorize(Array.isArray(challenge) ? challenge[0] ?? '' : challenge, repo)
      res = await this.send(method, new URL(path, this.origin), { ...headers, authorization: auth }, kind)
    }
    return res
  }

  /** The Authorization that answers `challenge` for `repo`; cached until its token expires. */
  private async authorize (challenge: string, repo: string): Promise<string> {
    if (/^basic/i.test(challenge)) {
      if (this.creds === undefined) throw new UpstreamFailure('auth', `the upstream ${this.origin} asks for Basic credentials: give the remote --username and --password-stdin`, 401)
      const auth = 'Basic ' + Buffer.from(`${this.creds.username}:${this.creds.password}`).toString('base64')
      this.tokens.set(repo, { auth, until: Date.now() + 3600_000 })
      return auth
    }
    if (!/^bearer/i.test(challenge)) throw new UpstreamFailure('auth', `the upstream ${this.origin} answered 401 without a challenge we can answer (${challenge.slice(0, 80) || 'none'})`, 401)
    const p = challengeParams(challenge)
    if (p.realm === undefined) throw new UpstreamFailure('auth', `the upstream ${this.origin}'s Bearer challenge names no realm`, 401)
    const url = new URL(p.realm)
    if (p.service !== undefined) url.searchParams.set('service', p.service)
    url.searchParams.set('scope', `repository:${repo}:pull`)
    const headers: Record<string, string> = {}
    if (this.creds !== undefined) headers.authorization = 'Basic ' + Buffer.from(`${this.creds.username}:${this.creds.password}`).toString('base64')
    const res = await this.send('GET', url, headers, 'token')
    const text = await readAll(res, 1 << 20)
    if (res.statusCode !== 200) throw new UpstreamFailure(res.statusCode === 401 || res.statusCode === 403 ? 'auth' : 'server', `the token service ${url.origin}${url.pathname} answered ${res.statusCode ?? 0}: check the remote's credentials`, res.statusCode)
    let body: { token?: string; access_token?: string; expires_in?: number }
    try { body = JSON.parse(text.toString('utf8')) as typeof body } catch { throw new UpstreamFailure('bad_answer', `the token service ${url.origin} answered something that is not JSON`) }
    const token = body.token ?? body.access_token
    if (typeof token !== 'string' || token === '') throw new UpstreamFailure('bad_answer', `the token service ${url.origin} answered no token`)
    const auth = `Bearer ${token}`
    // Renewed a little before it expires (60 s when the service does not say).
    this.tokens.set(repo, { auth, until: Date.now() + Math.max(10, (body.expires_in ?? 60) - 10) * 1000 })
    return auth
  }

  private async send (method: string, url: URL, headers: Record<string, string>, kind: string, redirects = 0): Promise<IncomingMessage> {
    const mod = url.protocol === 'https:' ? https : http
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = mod.request(url, { method, headers: { 'user-agent': 'flotilla-remote', ...headers }, agent: url.protocol === 'https:' ? this.tlsAgent : agents.http, timeout: TIMEOUT_MS }, resolve)
      req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)))
      req.on('error', (err) => reject(new UpstreamFailure('unreachable', `the upstream ${url.origin} cannot be reached: ${err.message}${untrustedCertificate(err) ? ' (if its certificate comes from a private CA, give the nodes that CA with tls.trust: --tls-trust FILE, FLOTILLA_TLS_TRUST)' : ''}`)))
      req.end()
    })
    this.metrics?.requests.inc({ remote: this.remote, kind, status: String(res.statusCode ?? 0) })
    const status = res.statusCode ?? 0
    const location = res.headers.location
    if ([301, 302, 303, 307, 308].includes(status) && location !== undefined) {
      res.resume()
      if (redirects >= 5) throw new UpstreamFailure('bad_answer', `the upstream ${this.origin} redirected more than 5 times`)
      const next = new URL(location, url)
      const h = { ...headers }
      // Credentials stay with the host they were meant for (a CDN gets a signed URL instead).
      if (next.host !== url.host) delete h.authorization
      return await this.send(method, next, h, kind, redirects + 1)
    }
    return res
  }
}

/** Read a response body, at most `max` bytes (more: UpstreamFailure bad_answer). */
export async function readAll (res: IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let n = 0
  for await (const c of res) {
    n += (c as Buffer).length
    if (n > max) { res.destroy(); throw new UpstreamFailure('bad_answer', `the upstream's answer is larger than ${max} bytes`) }
    chunks.push(c as Buffer)
  }
  return Buffer.concat(chunks, n)
}

/** An upstream status as a failure (for statuses other than the expected one). */
export function failureOf (status: number, what: string, origin: string): UpstreamFailure {
  if (status === 404) return new UpstreamFailure('not_found', `${what} is not found upstream (${origin} answered 404)`, status)
  if (status === 429) return new UpstreamFailure('throttled', `the upstream ${origin} answered 429 (too many requests) for ${what}`, status)
  if (status === 401 || status === 403) return new UpstreamFailure('auth', `the upstream ${origin} refused access to ${what} (${status}): check the remote's credentials and the upstream's permissions`, status)
  if (status >= 500) return new UpstreamFailure('server', `the upstream ${origin} answered ${status} for ${what}`, status)
  return new UpstreamFailure('bad_answer', `the upstream ${origin} answered ${status} for ${what}`, status)
}
