/**
 * TLS for client tests: a CA with server and client certificates made in-process (the same
 * code as `flotilla cert`), certs.d directories installed the way Docker's and containers'
 * docs say and removed again at teardown, and an HTTPS probe that reports the certificate the
 * server presented.
 */
import { mkdir, mkdtemp, rm, rmdir, stat, writeFile } from 'node:fs/promises'
import { request } from 'node:https'
import { networkInterfaces, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { connect, type PeerCertificate } from 'node:tls'
import { createCA, issueCertificate, parseHosts, type Pem } from '../../src/tls/issue.js'
import type { Lifecycle } from './registry.js'

export interface Pki {
  dir: string
  /** ca.crt: PEM file and text. */
  caFile: string
  caPem: string
  ca: Pem
  /** A server certificate (node.crt, node.key) for the hosts given. */
  cert: string
  key: string
  serial: string
  /** Another server certificate from the same CA, written to NAME.crt/NAME.key. */
  server (name: string, hosts?: string, opts?: { notBefore?: Date; days?: number }): Promise<{ cert: string; key: string; serial: string }>
  /** A client certificate for `user` (subject CN), written to USER.crt/USER.key. */
  client (user: string): Promise<{ cert: string; key: string; serial: string }>
}

/** A fresh CA in a temp dir with a node certificate for `hosts` (NAME,IP,…); removed at teardown. */
export async function makePki (t: Lifecycle, hosts: string): Promise<Pki> {
  const dir = await mkdtemp(join(tmpdir(), 'fl-pki-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const ca = await createCA({ name: `Flotilla test CA ${Date.now()}` })
  const caFile = join(dir, 'ca.crt')
  await writeFile(caFile, ca.certPem)
  await writeFile(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 })
  const write = async (name: string, issued: { certPem: string; keyPem: string; serial: string }): Promise<{ cert: string; key: string; serial: string }> => {
    const cert = join(dir, `${name}.crt`)
    const key = join(dir, `${name}.key`)
    await writeFile(cert, issued.certPem)
    await writeFile(key, issued.keyPem, { mode: 0o600 })
    return { cert, key, serial: issued.serial }
  }
  const node = await write('node', await issueCertificate(ca, { kind: 'server', hosts: parseHosts(hosts) }))
  return {
    dir,
    caFile,
    caPem: ca.certPem,
    ca,
    ...node,
    server: async (name, h = hosts, o = {}) => await write(name, await issueCertificate(ca, { kind: 'server', hosts: parseHosts(h), ...o })),
    client: async (user) => await write(user, await issueCertificate(ca, { kind: 'client', user })),
  }
}

async function exists (p: string): Promise<boolean> {
  try { await stat(p); return true } catch { return false }
}

/**
 * Install files into ROOT/HOST:PORT/ (ROOT: /etc/docker/certs.d or /etc/containers/certs.d),
 * as the clients' docs say. Teardown removes that directory and any parent this call created.
 * Refuses to touch a HOST:PORT directory that already exists (it is not ours).
 */
export async function installCertsD (t: Lifecycle, root: string, hostPort: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, hostPort)
  if (await exists(dir)) throw new Error(`${dir} already exists: not ours to change; remove it or use another port`)
  const created: string[] = []
  for (let d = root; !(await exists(d)); d = dirname(d)) created.push(d)
  await mkdir(dir, { recursive: true })
  t.teardown(async () => {
    await rm(dir, { recursive: true, force: true })
    // Parents we made, innermost first; rmdir leaves any that something else has filled since.
    for (const d of created) await rmdir(d).catch(() => {})
    // Another test file may have made ROOT while this one ran (tap runs two at once): an empty
    // certs.d means the same to every client as none, so the last one out removes it.
    await rmdir(root).catch(() => {})
  })
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content, { mode: name.endsWith('.key') ? 0o600 : 0o644 })
  return dir
}

export interface TlsProbe {
  status?: number
  body?: string
  /** The error code when the connection or handshake failed. */
  error?: string
}

/** One HTTPS request on a new connection (a full handshake each time). */
export async function httpsGet (url: string, opts: { ca?: string; cert?: string; key?: string; headers?: Record<string, string>; method?: string; json?: unknown } = {}): Promise<TlsProbe> {
  const body = opts.json === undefined ? undefined : JSON.stringify(opts.json)
  const headers = { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...opts.headers }
  return await new Promise((resolve) => {
    const req = request(url, { method: opts.method ?? 'GET', ...(opts.ca !== undefined ? { ca: opts.ca } : {}), ...(opts.cert !== undefined ? { cert: opts.cert, key: opts.key } : {}), headers, agent: false, timeout: 30_000 }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (b: Buffer) => parts.push(b))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8') }))
      res.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }))
    })
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })))
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }))
    req.end(body)
  })
}

/** The certificate a TLS server presents at host:port (not verified: we only read it). */
export async function servedCertificate (host: string, port: number, servername?: string): Promise<PeerCertificate> {
  return await new Promise((resolve, reject) => {
    const s = connect({ host, port, rejectUnauthorized: false, ...(servername !== undefined ? { servername } : {}) }, () => {
      const c = s.getPeerCertificate()
      s.end()
      resolve(c)
    })
    s.setTimeout(30_000, () => s.destroy(new Error('timed out')))
    s.on('error', reject)
  })
}

/** Serial numbers as Node prints them (upper-case hex, no leading zero pairs) and as x509 writes them. */
export function sameSerial (a: string, b: string): boolean {
  const norm = (s: string): string => s.toLowerCase().replace(/^(00)+/, '')
  return norm(a) === norm(b)
}

/**
 * An IPv4 address of this machine outside 127.0.0.0/8: the Docker engine treats every registry
 * on 127.0.0.0/8 as insecure (it would skip verification), so it proves TLS only elsewhere.
 */
export function nonLoopbackIPv4 (): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal && !a.address.startsWith('127.')) return a.address
  }
  return undefined
}
