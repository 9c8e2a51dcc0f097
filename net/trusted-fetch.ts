/**
 * fetch() for a node's outgoing HTTPS to places that are not members (site links, webhooks,
 * joins), trusting extra CAs on top of the system's: Node 20's fetch takes no CA, and
 * NODE_EXTRA_CA_CERTS is read once at start, for the whole process. With no extra CA this is
 * the global fetch; with some, https:// goes through node:https with the system's roots, the
 * certificates of NODE_EXTRA_CA_CERTS (if any) and the extra ones. Errors look like fetch's: a
 * TypeError('fetch failed') whose `cause` is the socket's error (its `code` names a certificate
 * problem: UNABLE_TO_VERIFY_LEAF_SIGNATURE, …).
 */
import { readFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import { rootCertificates } from 'node:tls'

export type FetchLike = (url: string | URL, init?: RequestInit) => Promise<Response>

/** A fetch that trusts `extraCAs` (PEM texts) for https://, besides the system's CAs; the global fetch when there are none. */
export function trustedFetch (extraCAs: string[]): FetchLike {
  const ca = trustedCAs(extraCAs)
  if (ca === undefined) return async (url, init) => await fetch(url, init)
  return async (url, init = {}) => {
    const u = new URL(url)
    if (u.protocol !== 'https:') return await fetch(u, init)
    return await httpsFetch(u, init, ca)
  }
}

/**
 * The CA list for a node:https agent that trusts `extraCAs` besides the system's (and
 * NODE_EXTRA_CA_CERTS); undefined when there are none, so the agent keeps node's defaults.
 */
export function trustedCAs (extraCAs: string[]): string[] | undefined {
  return extraCAs.length === 0 ? undefined : [...rootCertificates, ...processExtraCAs(), ...extraCAs]
}

/** Whether a TLS error means the peer's certificate chain is not trusted (a private CA, self-signed). */
export function untrustedCertificate (err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code
  return typeof code === 'string' && UNTRUSTED.has(code)
}

/** OpenSSL's codes for a chain this side does not trust (not: expired, wrong host). */
const UNTRUSTED = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_GET_ISSUER_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_UNTRUSTED', 'CERT_SIGNATURE_FAILURE'])

/** NODE_EXTRA_CA_CERTS still counts: giving node:https a CA list would otherwise drop it. */
function processExtraCAs (): string[] {
  const file = process.env.NODE_EXTRA_CA_CERTS
  if (file === undefined || file === '') return []
  try { return [readFileSync(file, 'utf8')] } catch { return [] }
}

async function httpsFetch (u: URL, init: RequestInit, ca: string[]): Promise<Response> {
  const headers: Record<string, string> = {}
  new Headers(init.headers).forEach((v, k) => { headers[k] = v })
  if (init.body !== undefined && init.body !== null && typeof init.body !== 'string') throw new TypeError('trustedFetch sends string bodies only')
  const body = init.body ?? undefined
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body))
  const method = init.method ?? 'GET'
  const signal = init.signal ?? undefined
  signal?.throwIfAborted()
  return await new Promise<Response>((resolve, reject) => {
    const fail = (cause: unknown): void => { reject(Object.assign(new TypeError('fetch failed'), { cause })) }
    const req = httpsRequest(u, { method, headers, ca }, (res: IncomingMessage) => {
      signal?.removeEventListener('abort', onAbort)
      const h = new Headers()
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) h.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!)
      const status = res.statusCode ?? 502
      const empty = method === 'HEAD' || status === 204 || status === 205 || status === 304
      if (empty) res.resume()
      // A signal that fires while the body streams ends it, as fetch does.
      if (signal !== undefined && !empty) signal.addEventListener('abort', () => res.destroy(signal.reason as Error), { once: true })
      resolve(new Response(empty ? null : Readable.toWeb(res) as unknown as ReadableStream, { status, statusText: res.statusMessage ?? '', headers: h }))
    })
    const onAbort = (): void => { req.destroy(); reject(signal!.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
    req.on('error', fail)
    req.end(body)
  })
}
