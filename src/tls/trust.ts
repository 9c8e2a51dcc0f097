/**
 * tls.trust (src/tls/config.ts): the extra CA bundles this node trusts for its outgoing HTTPS
 * (site links, webhooks, joins; net/trusted-fetch.ts), read and checked at start: a missing,
 * unreadable or certificate-less file stops the node with a TlsFileError naming it and the fix.
 */
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { TlsFileError } from './pair.js'

const WHERE = 'tls.trust (--tls-trust, FLOTILLA_TLS_TRUST)'
const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** The PEM text of each file, each checked to hold at least one valid certificate. */
export function loadTrust (files: readonly string[]): string[] {
  const out: string[] = []
  for (const file of files) {
    let pem: string
    try {
      pem = readFileSync(file, 'latin1')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      const why = code === 'ENOENT' ? 'no such file. Give the CA certificate (ca.crt of flotilla cert init, or your CA\'s bundle)' : code === 'EACCES' || code === 'EPERM' ? 'permission denied. Make it readable by the user running flotilla' : `${(err as Error).message}. Check the path`
      throw new TlsFileError(`${WHERE}: cannot read ${file}: ${why}.`)
    }
    const blocks = pem.match(CERT_BLOCK) ?? []
    if (blocks.length === 0) throw new TlsFileError(`${WHERE}: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)${/PRIVATE KEY-----/.test(pem) ? ': it holds a private key; give the CA certificate instead' : ''}.`)
    for (const b of blocks) {
      try { void new X509Certificate(b) } catch (err) { throw new TlsFileError(`${WHERE}: ${file} holds a certificate that does not parse (${(err as Error).message}).`) }
    }
    out.push(blocks.join('\n') + '\n')
  }
  return out
}
