/**
 * The registry under test and plain-HTTP probes of it. FLOTILLA_TEST_TARGET=reference runs
 * the same client tests against the CNCF reference registry (docker-registry 2.8.2), which
 * is how the harness itself is checked; the default is a Flotilla node.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { startFlotilla, startReference, tempDir, type RunningRegistry } from '../../scripts/lib/procs.js'
import { runOk } from './exec.js'

/** What the harness needs from a tap Test (structural, so helpers don't pull in tap's types). */
export interface Lifecycle {
  teardown (fn: () => unknown): void
  comment (...args: unknown[]): void
  passing (): boolean
}

export type TargetKind = 'flotilla' | 'reference'

export function targetKind (): TargetKind {
  const v = process.env.FLOTILLA_TEST_TARGET ?? 'flotilla'
  if (v !== 'flotilla' && v !== 'reference') throw new Error(`FLOTILLA_TEST_TARGET must be flotilla or reference, not ${v}`)
  return v
}

export interface Credentials { username: string, password: string }

export interface Target {
  kind: TargetKind
  /** host:port, as clients name the registry; stays the same across restart(). */
  host: string
  url: string
  dataDir: string
  /** An account that may push, pull and delete everywhere (Flotilla's admin; htpasswd user on the reference). */
  credentials: Credentials
  /** The process currently serving. */
  readonly current: RunningRegistry
  /** Stop (SIGTERM, or `signal` e.g. SIGKILL for a crash) and start again on the same data dir and port. */
  restart (signal?: NodeJS.Signals): Promise<void>
  /** fetch(url + path) as `credentials`, answering the registry's Basic or Bearer challenge. */
  fetch (path: string, init?: RequestInit): Promise<Response>
}

/**
 * Start the registry under test as its own process, with access control on as in production
 * (Flotilla: token auth with an admin; reference: htpasswd Basic auth), so clients must log in.
 * Teardown stops it, prints the tail of its log when the test failed, and removes its temp dir.
 */
export async function startTarget (t: Lifecycle): Promise<Target> {
  const kind = targetKind()
  let current: RunningRegistry
  let credentials: Credentials
  let base: string
  let startAgain: (dataDir: string, port: number) => Promise<RunningRegistry>
  if (kind === 'reference') {
    base = await tempDir('reference-')
    credentials = { username: 'flotilla-test', password: randomBytes(12).toString('hex') }
    const htpasswd = join(base, 'htpasswd')
    const line = await runOk('htpasswd', ['-Bbn', credentials.username, credentials.password])
    await writeFile(htpasswd, line.stdout)
    startAgain = async (dataDir, port) => await startReference({ dataDir, port, baseDir: base, htpasswd })
    current = await startReference({ baseDir: base, htpasswd })
  } else {
    current = await startFlotilla()
    base = dirname(current.dataDir)
    if (current.credentials === undefined) throw new Error('startFlotilla returned no admin credentials')
    credentials = current.credentials
    startAgain = async (dataDir, port) => await startFlotilla({ dataDir, port })
  }
  const { dataDir, host, url } = current
  const port = Number(host.split(':')[1])
  t.teardown(async () => {
    await current.stop()
    if (!t.passing()) {
      for (const f of (await readdir(base).catch(() => [] as string[])).filter((n) => n.endsWith('.log'))) {
        const text = await readFile(join(base, f), 'utf8').catch(() => '')
        t.comment(`${kind} log ${f} (last 40 lines):\n${text.split('\n').slice(-40).join('\n')}`)
      }
    }
    await rm(base, { recursive: true, force: true })
  })
  const authFetch = challengeAnswerer(url, credentials)
  return {
    kind,
    host,
    url,
    dataDir,
    credentials,
    get current () { return current },
    async restart (signal?: NodeJS.Signals) {
      if (signal === undefined) await current.stop()
      else await current.kill(signal)
      current = await startAgain(dataDir, port)
    },
    fetch: authFetch,
  }
}

/** `key="value"` pairs of a WWW-Authenticate header. */
function challengeParams (header: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const m of header.matchAll(/(\w+)="([^"]*)"/g)) if (m[1] !== undefined && m[2] !== undefined) out[m[1]] = m[2]
  return out
}

/**
 * A fetch that logs in the way registry clients do: send the cached Authorization; on 401 read
 * WWW-Authenticate, and either use Basic directly or get a Bearer token from the realm for the
 * repository. Tokens are cached per repository; bodies must be replayable (Buffer or string).
 */
function challengeAnswerer (url: string, creds: Credentials): (path: string, init?: RequestInit) => Promise<Response> {
  const basic = 'Basic ' + Buffer.from(`${creds.username}:${creds.password}`).toString('base64')
  const byRepo = new Map<string, string>()
  const repoOf = (path: string): string => /^\/v2\/(.+?)\/(manifests|blobs|tags|referrers)\//.exec(path)?.[1] ?? ''
  return async (path, init = {}) => {
    const repo = repoOf(path)
    const send = async (auth: string | undefined): Promise<Response> => {
      const headers = new Headers(init.headers)
      if (auth !== undefined) headers.set('authorization', auth)
      return await fetch(url + path, { ...init, headers })
    }
    const cached = byRepo.get(repo)
    const first = await send(cached)
    if (first.status !== 401) return first
    const challenge = first.headers.get('www-authenticate') ?? ''
    await first.arrayBuffer()
    let auth: string
    if (/^basic/i.test(challenge)) auth = basic
    else if (/^bearer/i.test(challenge)) {
      const p = challengeParams(challenge)
      const q = new URLSearchParams()
      if (p.service !== undefined) q.set('service', p.service)
      // Ask for everything on the repository, so one token serves GET, HEAD and DELETE alike.
      q.set('scope', repo !== '' ? `repository:${repo}:pull,push,delete` : (p.scope ?? ''))
      const res = await fetch(`${p.realm ?? ''}?${q.toString()}`, { headers: { authorization: basic } })
      const body = await res.json() as { token?: string, access_token?: string }
      const token = body.token ?? body.access_token
      if (!res.ok || token === undefined) throw new Error(`token request to ${p.realm ?? '?'} failed: ${res.status} ${JSON.stringify(body)}`)
      auth = `Bearer ${token}`
    } else return await send(undefined) // nothing we can answer: hand back a fresh 401
    byRepo.set(repo, auth)
    return await send(auth)
  }
}

/** What the probes need: a fetch that is already logged in. */
export interface Probe { fetch (path: string, init?: RequestInit): Promise<Response> }

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ')

export interface ManifestResponse {
  status: number
  digest: string | null
  contentType: string | null
  contentLength: string | null
  body: Buffer
}

/** GET (or HEAD) /v2/NAME/manifests/REF with every manifest type accepted. */
export async function fetchManifest (reg: Probe, name: string, ref: string, method: 'GET' | 'HEAD' = 'GET'): Promise<ManifestResponse> {
  const res = await reg.fetch(`/v2/${name}/manifests/${ref}`, { method, headers: { accept: MANIFEST_ACCEPT } })
  const body = Buffer.from(await res.arrayBuffer())
  return {
    status: res.status,
    digest: res.headers.get('docker-content-digest'),
    contentType: res.headers.get('content-type'),
    contentLength: res.headers.get('content-length'),
    body,
  }
}

export async function fetchBlob (reg: Probe, name: string, digest: string): Promise<{ status: number, body: Buffer, digest: string | null }> {
  const res = await reg.fetch(`/v2/${name}/blobs/${digest}`)
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), digest: res.headers.get('docker-content-digest') }
}

export function sha256 (data: Buffer | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex')
}
