/**
 * A thin streaming HTTP client over node:http, with failures that carry the exact request
 * and response (so a benchmark failure can be reported as a bug).
 */
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'
import https from 'node:https'
import { createReadStream } from 'node:fs'
import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'

/** With --tls: the CA that signed both registries' certificate (PEM and its file, for curl). */
let trusted: { pem: string; file: string } | undefined

export function setTrustedCA (pem: string, file: string): void { trusted = { pem, file } }
export function trustedCA (): { pem: string; file: string } | undefined { return trusted }

/** Credentials per origin (http://host:port), sent as Basic auth on every request to it. */
const credentials = new Map<string, { user: string; pass: string }>()

export function setCredentials (origin: string, user: string, pass: string): void {
  credentials.set(new URL(origin).origin, { user, pass })
}

export function credentialsFor (url: string): { user: string; pass: string } | undefined {
  // A failure's "url" may be a command line (skopeo's): no origin, no credentials.
  return URL.canParse(url) ? credentials.get(new URL(url).origin) : undefined
}

export interface BenchRequest {
  method: string
  url: string
  headers?: OutgoingHttpHeaders
  /** A small body, or a file range streamed from disk (start/end inclusive). */
  body?: Buffer | string | { file: string; start: number; end: number }
  timeoutMs?: number
  agent?: http.Agent
  /** Keep at most this many response bytes (the rest is only counted). Default 64 KiB. */
  keepBytes?: number
  /** Hash the whole response body with sha256. */
  hashBody?: boolean
}

export interface BenchResponse {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  bytes: number
  sha256?: string
}

function describeBody (body: BenchRequest['body']): string {
  if (body === undefined) return '(no body)'
  if (typeof body === 'string' || Buffer.isBuffer(body)) {
    const text = body.toString()
    return `${Buffer.byteLength(body)} bytes: ${text.length > 600 ? text.slice(0, 600) + '…' : text}`
  }
  return `bytes ${body.start}-${body.end} of ${body.file} (${body.end - body.start + 1} bytes)`
}

/** A failed exchange: the exact request and what came back. */
export class HttpFailure extends Error {
  constructor (readonly request: BenchRequest, readonly response: BenchResponse | undefined, readonly why: string) {
    super(`${request.method} ${request.url}: ${why}`)
  }

  report (): Record<string, unknown> {
    return {
      why: this.why,
      request: { method: this.request.method, url: this.request.url, headers: { ...(credentialsFor(this.request.url) !== undefined ? { authorization: 'Basic <redacted>' } : {}), ...(this.request.headers ?? {}) }, body: describeBody(this.request.body) },
      response: this.response === undefined
        ? null
        : { status: this.response.status, headers: this.response.headers, body: this.response.body.toString('utf8').slice(0, 2000), bytes: this.response.bytes },
    }
  }
}

export async function request (req: BenchRequest): Promise<BenchResponse> {
  const keep = req.keepBytes ?? 64 * 1024
  const timeoutMs = req.timeoutMs ?? 30_000
  return await new Promise<BenchResponse>((resolve, reject) => {
    let settled = false
    let gotResponse = false
    const done = (err: Error | undefined, res?: BenchResponse): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err !== undefined) reject(err)
      else resolve(res!)
    }
    const timer = setTimeout(() => {
      r.destroy()
      done(new HttpFailure(req, undefined, `no complete response within ${timeoutMs} ms`))
    }, timeoutMs)
    const creds = credentials.get(new URL(req.url).origin)
    const headers: OutgoingHttpHeaders = {
      ...(creds !== undefined ? { authorization: 'Basic ' + Buffer.from(`${creds.user}:${creds.pass}`).toString('base64') } : {}),
      ...(req.headers ?? {}),
    }
    let stream: Readable | undefined
    if (req.body !== undefined) {
      if (typeof req.body === 'string' || Buffer.isBuffer(req.body)) {
        headers['content-length'] ??= Buffer.byteLength(req.body)
      } else {
        headers['content-length'] ??= req.body.end - req.body.start + 1
        stream = createReadStream(req.body.file, { start: req.body.start, end: req.body.end, highWaterMark: 1024 * 1024 })
      }
    }
    const url = new URL(req.url)
    const tls = url.protocol === 'https:'
    if (tls && trusted === undefined) throw new Error(`${req.url}: https needs setTrustedCA() first`)
    const r = (tls ? https : http).request({
      hostname: url.hostname,
      port: url.port,
      path: url.pathname + url.search,
      method: req.method,
      headers,
      agent: req.agent,
      ...(tls ? { ca: trusted!.pem } : {}),
    }, (res) => {
      gotResponse = true
      const parts: Buffer[] = []
      let kept = 0
      let bytes = 0
      const hash = req.hashBody === true ? createHash('sha256') : undefined
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length
        hash?.update(chunk)
        if (kept < keep) { const part = chunk.subarray(0, keep - kept); parts.push(part); kept += part.length }
      })
      res.on('end', () => {
        const out: BenchResponse = { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), bytes }
        if (hash !== undefined) out.sha256 = 'sha256:' + hash.digest('hex')
        done(undefined, out)
      })
      res.on('error', (err) => done(new HttpFailure(req, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), bytes }, `response broke off: ${err.message}`)))
      res.on('aborted', () => done(new HttpFailure(req, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), bytes }, 'response aborted')))
    })
    r.on('error', (err) => {
      // A server may answer (an error) before it has read the whole body; keep that answer.
      if (!gotResponse) done(new HttpFailure(req, undefined, `request error: ${err.message}`))
    })
    if (stream !== undefined) {
      stream.on('error', (err) => r.destroy(err))
      stream.pipe(r)
    } else {
      r.end(req.body as Buffer | string | undefined)
    }
  })
}

/** request(), then insist on one of the expected statuses. */
export async function expect (req: BenchRequest, statuses: number[]): Promise<BenchResponse> {
  const res = await request(req)
  if (!statuses.includes(res.status)) throw new HttpFailure(req, res, `expected status ${statuses.join(' or ')}, got ${res.status}`)
  return res
}

/** Resolve a Location header against the registry's base URL. */
export function location (base: string, req: BenchRequest, res: BenchResponse): URL {
  const loc = res.headers.location
  if (typeof loc !== 'string' || loc === '') throw new HttpFailure(req, res, 'no Location header')
  return new URL(loc, base)
}

export function withDigest (u: URL, digest: string): string {
  const out = new URL(u)
  out.searchParams.set('digest', digest)
  return out.toString()
}
