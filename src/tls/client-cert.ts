/**
 * Which user a verified client certificate names (mTLS), for src/auth/service.ts.
 *
 * The rule (tls.clientCertUser: cn, the default): the certificate must have verified against
 * tls.clientCA during the handshake (socket.authorized), and its subject must carry exactly
 * one common name (CN); that CN is taken as a user name. Whether such a user exists and is
 * enabled is the auth service's check, made on every request like a password's. A certificate
 * that did not verify (possible with clientAuth: optional) names nobody. `clientCertUser: none`
 * turns the mapping off: certificates then only gate the connection.
 */
import type { IncomingMessage } from 'node:http'
import { TLSSocket } from 'node:tls'
import { clientAuthOf, tlsEnabled, type TlsConfig } from './config.js'

export type CertificateUser = (req: IncomingMessage) => string | undefined

/** The subject CN of each socket's verified certificate ('' when none): read once per connection. */
const names = new WeakMap<TLSSocket, string>()

function verifiedCommonName (socket: TLSSocket): string {
  if (!socket.authorized) return ''
  const cert = socket.getPeerCertificate()
  const cn = (cert as { subject?: Record<string, string | string[]> } | null)?.subject?.CN
  return typeof cn === 'string' ? cn : ''
}

/** The mapping in effect for this configuration, or undefined when certificates name no one. */
export function certificateUser (tls: TlsConfig): CertificateUser | undefined {
  if (!tlsEnabled(tls) || clientAuthOf(tls) === 'none' || tls.clientCertUser !== 'cn') return undefined
  return (req) => {
    const socket = req.socket
    if (!(socket instanceof TLSSocket)) return undefined
    let name = names.get(socket)
    if (name === undefined) { name = verifiedCommonName(socket); names.set(socket, name) }
    return name === '' ? undefined : name
  }
}
