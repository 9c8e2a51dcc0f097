/**
 * An upstream registry for remote-repository tests: Debian's docker-registry 2.8.2 (the CNCF
 * reference) as its own process, its access log kept so a test can count the requests it
 * served, anonymous or with Docker token auth answered by a small token issuer run by the test
 * (Docker Hub's is out of reach): it checks Basic credentials and signs ES256 JWTs with a CA
 * of its own, which the registry trusts (rootcertbundle).
 */
import { createServer, type Server } from 'node:http'
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes, X509Certificate } from 'node:crypto'
import { SignJWT, importPKCS8 } from 'jose'
import { Agent } from 'undici'
import { freePort, tempDir, waitForHttp } from '../../scripts/lib/procs.js'
import { createCA } from '../../src/tls/issue.js'
import type { Lifecycle } from './registry.js'

export interface UpstreamOptions {
  /** Docker token auth with these credentials (the issuer refuses others); anonymous when absent. */
  token?: { username: string; password: string }
  /** Serve HTTPS with this pair, signed by `ca` (a PEM file): the test's own pushes trust it. */
  tls?: { certificate: string; key: string; ca: string }
}

export interface Upstream {
  url: string
  host: string
  /** Requests in the access log: method and path (query left on), in order. */
  requests (): Promise<Array<{ method: string; path: string; status: number }>>
  /** Stop it (a test of stale-if-error); start() brings it back on the same port and data. */
  stop (): Promise<void>
  start (): Promise<void>
  /** Tokens the issuer handed out. */
  tokensIssued: number
  /** Push blobs and a manifest under a tag (logging in through the issuer when it has one). */
  push (repo: string, tag: string, blobs: Iterable<[string, Buffer]>, manifest: Buffer, mediaType: string): Promise<string>
}

export async function startUpstream (t: Lifecycle, opts: UpstreamOptions = {}): Promise<Upstream> {
  const base = await tempDir('upstream-')
  const data = join(base, 'data')
  await mkdir(data, { recursive: true })
  const port = await freePort()
  const host = `127.0.0.1:${port}`
  const accessLog = join(base, 'access.log')
  let issuer: Server | undefined
  const state = { tokensIssued: 0 }
  const authLines: string[] = []
  if (opts.token !== undefined) {
    const ca = await createCA({ name: `upstream token issuer ${Date.now()}` })
    const bundle = join(base, 'token-ca.pem')
    await writeFile(bundle, ca.certPem)
    const der = new X509Certificate(ca.certPem).raw.toString('base64')
    const key = await importPKCS8(ca.keyPem, 'ES256')
    const want = 'Basic ' + Buffer.from(`${opts.token.username}:${opts.token.password}`).toString('base64')
    issuer = createServer((req, res) => {
      void (async () => {
        const u = new URL(req.url ?? '/', 'http://x')
        if (req.headers.authorization !== want) { res.writeHead(401, { 'content-type': 'application/json' }); res.end('{"details":"bad credentials"}'); return }
        const access = u.searchParams.getAll('scope').map((s) => { const [type, name, actions] = s.split(':'); return { type, name, actions: (actions ?? '').split(',') } })
        const now = Math.floor(Date.now() / 1000)
        const token = await new SignJWT({ access })
          .setProtectedHeader({ alg: 'ES256', x5c: [der] })
          .setIssuer('flotilla-test-issuer').setAudience(u.searchParams.get('service') ?? '').setSubject(opts.token!.username)
          .setIssuedAt(now).setNotBefore(now - 10).setExpirationTime(now + 300).setJti(randomBytes(8).toString('hex'))
          .sign(key)
        state.tokensIssued++
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ token, expires_in: 300 }))
      })()
    })
    await new Promise<void>((resolve) => issuer!.listen(0, '127.0.0.1', resolve))
    const ip = issuer.address() as { port: number }
    authLines.push('auth:', '  token:', `    realm: http://127.0.0.1:${ip.port}/token`, '    service: flotilla-test-upstream', '    issuer: flotilla-test-issuer', `    rootcertbundle: ${bundle}`)
  }
  const config = join(base, 'config.yml')
  const tls = opts.tls
  const scheme = tls === undefined ? 'http' : 'https'
  const caPem = tls === undefined ? undefined : await readFile(tls.ca)
  const dispatcher = caPem === undefined ? undefined : new Agent({ connect: { ca: caPem.toString() } })
  await writeFile(config, ['version: 0.1', 'log: {level: error}', 'storage:', `  filesystem: {rootdirectory: ${data}}`, '  delete: {enabled: true}', `http: {addr: ${host}${tls !== undefined ? `, tls: {certificate: ${tls.certificate}, key: ${tls.key}}` : ''}}`, ...authLines, ''].join('\n'))
  let proc: ChildProcess | undefined
  const start = async (): Promise<void> => {
    // Its access log (combined format) goes to stdout; REGISTRY_* variables would override the config.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')))
    const p = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'], env })
    p.stdout!.pipe(createWriteStream(accessLog, { flags: 'a' }))
    p.stderr!.pipe(createWriteStream(join(base, 'registry.log'), { flags: 'a' }))
    proc = p
    await waitForHttp(`${scheme}://${host}/v2/`, 20_000, p, caPem)
  }
  const stop = async (): Promise<void> => {
    const p = proc
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()))
    p.kill('SIGTERM')
    await exited
  }
  await start()
  t.teardown(async () => {
    await stop()
    await new Promise<void>((resolve) => { if (issuer === undefined) resolve(); else issuer.close(() => resolve()) })
    await dispatcher?.close()
    if (!t.passing()) t.comment(`upstream log:\n${(await readFile(join(base, 'registry.log'), 'utf8').catch(() => '')).split('\n').slice(-30).join('\n')}`)
    await rm(base, { recursive: true, force: true })
  })
  return {
    url: `${scheme}://${host}`,
    host,
    get tokensIssued () { return state.tokensIssued },
    async requests () {
      const text = await readFile(accessLog, 'utf8').catch(() => '')
      const out: Array<{ method: string; path: string; status: number }> = []
      for (const m of text.matchAll(/"([A-Z]+) (\S+) HTTP\/[\d.]+" (\d{3})/g)) out.push({ method: m[1]!, path: m[2]!, status: Number(m[3]) })
      return out
    },
    stop,
    start,
    async push (repo, tag, blobs, manifest, mediaType) {
      let auth: string | undefined
      const send = async (method: string, path: string, body: Buffer | undefined, headers: Record<string, string> = {}): Promise<Response> => {
        const go = async (): Promise<Response> => await fetch(`${scheme}://${host}${path}`, { method, headers: { ...headers, ...(auth !== undefined ? { authorization: auth } : {}) }, ...(body !== undefined ? { body } : {}), ...(dispatcher !== undefined ? { dispatcher } : {}) } as RequestInit)
        let res = await go()
        if (res.status === 401 && opts.token !== undefined) {
          await res.arrayBuffer()
          const p = Object.fromEntries([...(res.headers.get('www-authenticate') ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]))
          const tr = await fetch(`${p.realm}?service=${p.service}&scope=repository:${repo}:pull,push`, { headers: { authorization: 'Basic ' + Buffer.from(`${opts.token.username}:${opts.token.password}`).toString('base64') } })
          auth = `Bearer ${(await tr.json() as { token: string }).token}`
          res = await go()
        }
        return res
      }
      for (const [digest, data] of blobs) {
        // POST then PUT: distribution 2.8 has no single-request upload.
        const start = await send('POST', `/v2/${repo}/blobs/uploads/`, undefined)
        await start.arrayBuffer()
        const loc = new URL(start.headers.get('location') ?? '', `${scheme}://${host}`)
        loc.searchParams.set('digest', digest)
        const res = await send('PUT', loc.pathname + loc.search, data, { 'content-type': 'application/octet-stream' })
        await res.arrayBuffer()
        if (res.status !== 201) throw new Error(`upstream blob push answered ${start.status}/${res.status}`)
      }
      const res = await send('PUT', `/v2/${repo}/manifests/${tag}`, manifest, { 'content-type': mediaType })
      await res.arrayBuffer()
      if (res.status !== 201) throw new Error(`upstream manifest push answered ${res.status}`)
      return res.headers.get('docker-content-digest') ?? ''
    },
  }
}
