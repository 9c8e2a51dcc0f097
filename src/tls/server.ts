/**
 * The client-facing server: plain HTTP, or HTTPS when tls.certificate and tls.key are set
 * (TLS 1.2 and 1.3 only; no plain-HTTP listener, no redirect). With TLS it also loads and
 * watches the certificate files (src/tls/reload.ts), asks for client certificates as
 * tls.clientAuth says, and exports its metrics:
 *
 *   flotilla_tls_certificate_reloads_total{result="success"|"failure"}
 *   flotilla_tls_certificate_expiry_seconds      the serving certificate's notAfter, unix seconds
 *   flotilla_tls_handshake_failures_total{reason} refused handshakes (no client certificate, an untrusted one, a bad protocol…)
 */
import { loadTrust } from './trust.js'
import { createServer as createHttpServer, type Server as HttpServer, type ServerOptions as HttpServerOptions } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import type { SecureContextOptions } from 'node:tls'
import type { Logger } from 'pino'
import { Counter, Gauge, type Metric } from 'prom-client'
import { clientAuthOf, tlsEnabled, type TlsConfig } from './config.js'
import { loadKeyPair, type KeyPair } from './pair.js'
import { CertificateReloader } from './reload.js'

export interface ApiServer {
  server: HttpServer | HttpsServer
  scheme: 'http' | 'https'
  /** To register on the node's metrics registry. */
  metrics: Metric[]
  /** The certificate being served (TLS only). */
  current (): KeyPair | undefined
  /** Start watching the certificate files (TLS only); call once the server listens. */
  watch (): Promise<void>
  /** Stop watching. */
  close (): void
}

/**
 * AEAD suites with forward secrecy only, AES-128-GCM first and chosen by the server (as Go's
 * crypto/tls, and so the CNCF registry, does on hardware with AES instructions): as strong in
 * practice as AES-256, and cheaper per byte, which shows on multi-GiB blobs.
 */
export const CIPHERS = [
  'TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')

/** Protocol versions and the rest of a secure context, for the first pair and every reload. */
function contextOptions (pair: KeyPair): SecureContextOptions {
  return { cert: pair.cert, key: pair.key, ...(pair.ca !== undefined ? { ca: pair.ca } : {}), minVersion: 'TLSv1.2', ciphers: CIPHERS, honorCipherOrder: true }
}

/** One short reason per refused handshake, as a label (a bounded set: OpenSSL's codes). */
function handshakeReason (err: Error & { code?: string; reason?: string }): string {
  const r = err.code ?? 'unknown'
  return r.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 64)
}

/** Read and check the TLS files, if TLS is on: a TlsFileError naming the file and the fix, before anything else starts. */
export async function checkTlsFiles (tls: TlsConfig): Promise<void> {
  if (tlsEnabled(tls)) await loadKeyPair({ certificate: tls.certificate, key: tls.key, clientCA: tls.clientCA })
  loadTrust(tls.trust ?? [])
}

/**
 * Make the API's server. TLS files are read and checked here, so a bad path, an unreadable
 * file or a key that does not match stops the node at start with a TlsFileError.
 */
export async function createApiServer (tls: TlsConfig, log: Logger, options: HttpServerOptions): Promise<ApiServer> {
  if (!tlsEnabled(tls)) {
    return { server: createHttpServer(options), scheme: 'http', metrics: [], current: () => undefined, watch: async () => {}, close: () => {} }
  }
  const files = { certificate: tls.certificate, key: tls.key, clientCA: tls.clientCA }
  let pair = await loadKeyPair(files)
  const clientAuth = clientAuthOf(tls)
  const reloads = new Counter({ name: 'flotilla_tls_certificate_reloads_total', help: 'Reloads of the TLS certificate after its files changed, by result (a failure keeps the previous certificate)', labelNames: ['result'] as const, registers: [] })
  reloads.inc({ result: 'success' }, 0)
  reloads.inc({ result: 'failure' }, 0)
  const expiry = new Gauge({ name: 'flotilla_tls_certificate_expiry_seconds', help: 'The serving TLS certificate\'s notAfter, as unix time in seconds', registers: [] })
  const handshakes = new Counter({ name: 'flotilla_tls_handshake_failures_total', help: 'TLS handshakes refused or failed, by OpenSSL error code', labelNames: ['reason'] as const, registers: [] })
  expiry.set(Math.floor(pair.notAfter.getTime() / 1000))
  warnIfExpiring(pair, log)
  const server = createHttpsServer({
    ...options,
    ...contextOptions(pair),
    requestCert: clientAuth !== 'none',
    // `optional`: the handshake goes on without a (valid) certificate; the socket says whether it verified.
    rejectUnauthorized: clientAuth === 'require',
  })
  server.on('tlsClientError', (err: Error & { code?: string }) => {
    handshakes.inc({ reason: handshakeReason(err) })
    log.debug({ err: err.message }, 'tls: handshake failed')
  })
  const reloader = new CertificateReloader({
    files,
    log,
    apply: (next) => { server.setSecureContext(contextOptions(next)); pair = next },
    onResult: (result, next) => {
      reloads.inc({ result })
      if (next !== undefined) { expiry.set(Math.floor(next.notAfter.getTime() / 1000)); warnIfExpiring(next, log) }
    },
  })
  log.info({ certificate: tls.certificate, subject: pair.leaf.subject.replace(/\n/g, ', '), notAfter: pair.notAfter.toISOString(), clientAuth }, 'tls: serving HTTPS (TLS 1.2 and 1.3)')
  return {
    server,
    scheme: 'https',
    metrics: [reloads, expiry, handshakes],
    current: () => pair,
    watch: async () => { await reloader.start() },
    close: () => { reloader.stop() },
  }
}

function warnIfExpiring (pair: KeyPair, log: Logger): void {
  const left = pair.notAfter.getTime() - Date.now()
  if (left <= 0) log.warn({ notAfter: pair.notAfter.toISOString() }, 'tls: the certificate has expired: clients will refuse it; replace the files (they are reloaded without a restart)')
  else if (left < 14 * 86_400_000) log.warn({ notAfter: pair.notAfter.toISOString() }, 'tls: the certificate expires within 14 days: renew it (the files are reloaded without a restart)')
  if (new Date(pair.leaf.validFrom).getTime() > Date.now()) log.warn({ notBefore: pair.leaf.validFrom }, 'tls: the certificate is not valid yet (check this machine\'s clock)')
}
