/**
 * The CLI's side of TLS: which CA it trusts (--ca-cert FILE or FLOTILLA_CA_CERT, on top of the
 * system's), which client certificate it shows (FLOTILLA_CLIENT_CERT and FLOTILLA_CLIENT_KEY, or
 * --client-cert/--client-key, for a node that asks for one), a fetch() for https:// nodes that
 * uses them (Node 20's fetch takes no CA), and a sentence for each certificate failure naming
 * its cause and the fix.
 */
import { readFileSync } from 'node:fs'
import { request } from 'node:https'
import { request as plainRequest } from 'node:http'
import { Readable } from 'node:stream'
import { rootCertificates } from 'node:tls'
import { CliError } from './client.js'
import { untrustedCertificate } from '../../net/trusted-fetch.js'

export interface TlsOptions {
  caCert?: string
  clientCert?: string
  clientKey?: string
}

export interface ClientTls {
  ca?: string[]
  cert?: Buffer
  key?: Buffer
}

function read (file: string, what: string, fix: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    throw new CliError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}. ${fix}`)
  }
}

/** The TLS material the options and environment name (files read now, so a bad path is said at once). */
export function clientTls (o: TlsOptions): ClientTls {
  const out: ClientTls = {}
  const caFile = o.caCert ?? process.env.FLOTILLA_CA_CERT
  if (caFile !== undefined && caFile !== '') {
    const pem = read(caFile, 'the CA certificate', 'Give --ca-cert (or FLOTILLA_CA_CERT) the ca.crt that signed the node\'s certificate.').toString('utf8')
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new CliError(`${caFile} holds no PEM certificate: give --ca-cert (or FLOTILLA_CA_CERT) the CA certificate (ca.crt), not a key`)
    out.ca = [...rootCertificates, pem]
  }
  const certFile = o.clientCert ?? process.env.FLOTILLA_CLIENT_CERT
  const keyFile = o.clientKey ?? process.env.FLOTILLA_CLIENT_KEY
  const has = (v: string | undefined): v is string => v !== undefined && v !== ''
  if (has(certFile) !== has(keyFile)) throw new CliError('a client certificate needs its key: give both --client-cert and --client-key (or FLOTILLA_CLIENT_CERT and FLOTILLA_CLIENT_KEY)')
  if (has(certFile) && has(keyFile)) {
    out.cert = read(certFile, 'the client certificate', 'Check --client-cert or FLOTILLA_CLIENT_CERT (flotilla cert client writes one).')
    out.key = read(keyFile, 'the client key', 'Check --client-key or FLOTILLA_CLIENT_KEY.')
  }
  return out
}

/** fetch() for an https:// node, with our CA and client certificate. Errors look like undici's: `cause` holds the socket's. */
export async function httpsFetch (url: string | URL, init: RequestInit, tls: ClientTls, timeoutMs = 120_000): Promise<Response> {
  const u = new URL(url)
  const headers: Record<string, string> = {}
  new Headers(init.headers).forEach((v, k) => { headers[k] = v })
  const body = init.body === undefined || init.body === null ? undefined : String(init.body)
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body))
  const method = init.method ?? 'GET'
  return await new Promise<Response>((resolve, reject) => {
    // http:// too, for a request allowed to wait longer than fetch() waits for an answer (undici: 300 s).
    const req = (u.protocol === 'http:' ? plainRequest(u, { method, headers, timeout: timeoutMs }, onResponse) : request(u, { method, headers, ...tls, timeout: timeoutMs }, onResponse))
    function onResponse (res: import('node:http').IncomingMessage): void {
      const h = new Headers()
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) h.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!)
      const status = res.statusCode ?? 502
      const empty = method === 'HEAD' || status === 204 || status === 205 || status === 304
      if (empty) res.resume()
      resolve(new Response(empty ? null : Readable.toWeb(res) as unknown as ReadableStream, { status, statusText: res.statusMessage ?? '', headers: h }))
    }
    req.on('timeout', () => { req.destroy(Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' })) })
    req.on('error', (err) => { reject(Object.assign(new Error('fetch failed'), { cause: err })) })
    req.end(body)
  })
}


/**
 * The cause and the fix of a failed connection to `base`, when it is about TLS; else undefined.
 * `cause` is what fetch() or httpsFetch() put in the error's cause.
 */
export function explainTlsFailure (base: string, cause: (Error & { code?: string; reason?: string; cert?: unknown }) | undefined): string | undefined {
  if (cause === undefined) return undefined
  const code = cause.code ?? ''
  const host = (() => { try { return new URL(base).host } catch { return base } })()
  const ca = 'pass --ca-cert FILE (or set FLOTILLA_CA_CERT) with the CA that signed it, e.g. the ca.crt flotilla cert init wrote'
  if (untrustedCertificate({ code })) return `the node's TLS certificate is not signed by a CA this command trusts (${code}): ${ca}`
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = (cause as { cert?: { subjectaltname?: string } }).cert?.subjectaltname
    return `the node's TLS certificate is not for ${host} (${names !== undefined && names !== '' ? `it lists ${names}` : cause.reason ?? cause.message}): use --node with a name or address the certificate lists, or issue one that lists ${host.replace(/:\d+$/, '')} (flotilla cert server --hosts …)`
  }
  if (code === 'CERT_HAS_EXPIRED') return 'the node\'s TLS certificate has expired (or this machine\'s clock is wrong): renew the node\'s certificate files; the node reloads them without a restart'
  if (code === 'CERT_NOT_YET_VALID') return 'the node\'s TLS certificate is not valid yet: check the clocks of this machine and of the one that issued it'
  if (/CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE/.test(code)) return 'the node requires a TLS client certificate: set FLOTILLA_CLIENT_CERT and FLOTILLA_CLIENT_KEY (or --client-cert/--client-key) to one signed by its client CA (flotilla cert client --user NAME)'
  if (/ALERT_UNKNOWN_CA|ALERT_BAD_CERTIFICATE|ALERT_CERTIFICATE_UNKNOWN/.test(code)) return `the node refused this command's client certificate (${code}): use one signed by the CA the node has as tls.clientCA`
  if (/WRONG_VERSION_NUMBER|EPROTO/.test(code) && base.startsWith('https:')) return `the node at ${host} does not speak TLS (${code}): use http://${host}, or start it with --tls-certificate and --tls-key`
  if (/^ERR_SSL_|^ERR_TLS_/.test(code)) return `TLS failed (${code}: ${cause.message})`
  return undefined
}
