/**
 * The `tls` section of the configuration (src/config.ts includes it; README documents it).
 *
 *   tls:
 *     certificate: FILE     FLOTILLA_TLS_CERTIFICATE       --tls-certificate FILE   PEM: the node's certificate first, then its chain
 *     key: FILE             FLOTILLA_TLS_KEY               --tls-key FILE           PEM private key of that certificate
 *     clientCA: FILE        FLOTILLA_TLS_CLIENT_CA         --tls-client-ca FILE     PEM bundle of the CAs that sign client certificates
 *     clientAuth: …         FLOTILLA_TLS_CLIENT_AUTH       --tls-client-auth MODE   none | optional | require (default: require
 *                                                                                   when clientCA is set, else none)
 *     clientCertUser: cn    FLOTILLA_TLS_CLIENT_CERT_USER                           cn | none
 *     trust: [FILE, …]      FLOTILLA_TLS_TRUST (FILE,FILE) --tls-trust FILE[,FILE] PEM CA bundles trusted, besides the system's CAs,
 *                                                                                   for this node's outgoing HTTPS: site links
 *                                                                                   (flotilla site peer https://…), webhooks, and
 *                                                                                   flotilla join https://… (when --ca-cert is not given)
 *
 * `trust` needs no TLS of this node's own (src/tls/trust.ts reads the files at start: a bad one
 * stops it). Members talk to each other over their peer ports, which trust no CA
 * (net/peer-https.ts); `trust` is for everything else a node dials.
 *
 * With certificate and key the API listens with TLS 1.2 or 1.3 only (no plain HTTP, no redirect).
 * The files are watched and reloaded without a restart (src/tls/reload.ts).
 *
 * Client certificates (mTLS): `require` refuses, at the handshake, a client without a certificate
 * signed by clientCA; `optional` asks for one and accepts clients without (a presented certificate
 * that does not verify is ignored, never trusted). With `clientCertUser: cn`, a verified
 * certificate whose subject CN is the name of an existing, enabled user signs the request in as
 * that user when it carries no Authorization header (src/auth/service.ts); a header still wins.
 */
import { z } from 'zod'

export const CLIENT_AUTH = ['none', 'optional', 'require'] as const
export type ClientAuth = typeof CLIENT_AUTH[number]

export const TlsConfigSchema = z.object({
  certificate: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
  clientCA: z.string().min(1).optional(),
  clientAuth: z.enum(CLIENT_AUTH).optional(),
  clientCertUser: z.enum(['cn', 'none']).default('cn'),
  // One file, a comma-separated list (as FLOTILLA_TLS_TRUST gives it), or a YAML list.
  trust: z.preprocess((v) => typeof v === 'string' ? v.split(',').map((f) => f.trim()).filter((f) => f !== '') : v, z.array(z.string().min(1))).optional(),
}).strict().superRefine((v, ctx) => {
  if ((v.certificate === undefined) !== (v.key === undefined)) {
    ctx.addIssue({ code: 'custom', message: `tls.certificate and tls.key go together: set both (--tls-certificate FILE --tls-key FILE) or neither; only ${v.certificate !== undefined ? 'the certificate' : 'the key'} is set` })
  }
  if (v.clientCA !== undefined && v.certificate === undefined) {
    ctx.addIssue({ code: 'custom', message: 'tls.clientCA needs TLS on: set tls.certificate and tls.key too' })
  }
  if ((v.clientAuth === 'optional' || v.clientAuth === 'require') && v.clientCA === undefined) {
    ctx.addIssue({ code: 'custom', message: `tls.clientAuth ${v.clientAuth} needs tls.clientCA (--tls-client-ca FILE), the CA bundle that signs client certificates` })
  }
}).prefault({})

export type TlsConfig = z.infer<typeof TlsConfigSchema>

/** The client-certificate mode in effect: as the CNCF registry does, a CA bundle alone means require. */
export function clientAuthOf (c: TlsConfig): ClientAuth {
  return c.clientAuth ?? (c.clientCA !== undefined ? 'require' : 'none')
}

export function tlsEnabled (c: TlsConfig): c is TlsConfig & { certificate: string; key: string } {
  return c.certificate !== undefined && c.key !== undefined
}

export const TLS_ENV: Array<[string, string[], (s: string) => unknown]> = [
  ['FLOTILLA_TLS_CERTIFICATE', ['tls', 'certificate'], (s) => s],
  ['FLOTILLA_TLS_KEY', ['tls', 'key'], (s) => s],
  ['FLOTILLA_TLS_CLIENT_CA', ['tls', 'clientCA'], (s) => s],
  ['FLOTILLA_TLS_CLIENT_AUTH', ['tls', 'clientAuth'], (s) => s],
  ['FLOTILLA_TLS_CLIENT_CERT_USER', ['tls', 'clientCertUser'], (s) => s],
  ['FLOTILLA_TLS_TRUST', ['tls', 'trust'], (s) => s],
]
