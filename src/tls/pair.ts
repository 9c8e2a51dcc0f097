/**
 * Load the API's certificate, key and client CA bundle from their PEM files and check them
 * before they are used: readable, PEM, the key belongs to the certificate, and OpenSSL takes
 * them. Every failure is a TlsFileError naming the file, the setting and the fix; at start it
 * stops the node (src/cli.ts prints it as one line), on a reload the old pair stays.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createSecureContext } from 'node:tls'
import { ConfigError } from '../config.js'

export class TlsFileError extends ConfigError {
  static override name = 'TlsFileError'
  constructor (message: string) { super(message); this.name = 'TlsFileError' }
}

export interface TlsFiles {
  certificate: string
  key: string
  clientCA?: string | undefined
}

export interface KeyPair {
  cert: Buffer
  key: Buffer
  ca?: Buffer
  /** The certificate the node presents (the first of the file; the rest is its chain). */
  leaf: X509Certificate
  notAfter: Date
}

const WHERE: Record<keyof TlsFiles, string> = {
  certificate: 'tls.certificate (--tls-certificate, FLOTILLA_TLS_CERTIFICATE)',
  key: 'tls.key (--tls-key, FLOTILLA_TLS_KEY)',
  clientCA: 'tls.clientCA (--tls-client-ca, FLOTILLA_TLS_CLIENT_CA)',
}

async function readPem (what: keyof TlsFiles, file: string): Promise<Buffer> {
  try {
    return await readFile(file)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const uid = typeof process.getuid === 'function' ? ` (uid ${process.getuid()})` : ''
    const why = code === 'ENOENT'
      ? 'no such file. Check the path (flotilla cert init writes a test pair)'
      : code === 'EACCES' || code === 'EPERM'
        ? `permission denied. Make it readable by the user running flotilla${uid}, e.g. chown or chmod it`
        : code === 'EISDIR' ? 'it is a directory. Give the PEM file inside it' : `${(err as Error).message}. Check the path`
    throw new TlsFileError(`${WHERE[what]}: cannot read ${file}: ${why}.`)
  }
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** The certificates of a PEM bundle, parsed; throws naming the file when there is none or one is bad. */
export function parseCertificates (what: keyof TlsFiles, file: string, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('latin1').match(CERT_BLOCK) ?? []
  if (blocks.length === 0) {
    const hint = /PRIVATE KEY-----/.test(pem.toString('latin1')) ? ': it holds a private key; the certificate is the other file' : ''
    throw new TlsFileError(`${WHERE[what]}: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)${hint}.`)
  }
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b)
    } catch (err) {
      throw new TlsFileError(`${WHERE[what]}: certificate ${i + 1} in ${file} does not parse (${(err as Error).message}): replace the file with a valid PEM certificate.`)
    }
  })
}

function parseKey (file: string, pem: Buffer): KeyObject {
  const text = pem.toString('latin1')
  if (/ENCRYPTED/.test(text)) throw new TlsFileError(`${WHERE.key}: ${file} is encrypted with a passphrase, which flotilla cannot ask for: decrypt it (openssl pkey -in ${file} -out key.pem) and give that file.`)
  try {
    return createPrivateKey(pem)
  } catch (err) {
    const hint = /BEGIN CERTIFICATE/.test(text) ? ': it holds a certificate; the key is the other file' : ''
    throw new TlsFileError(`${WHERE.key}: ${file} is not a PEM private key (${(err as Error).message})${hint}.`)
  }
}

/** Read and check the pair (and the client CA bundle, if any). */
export async function loadKeyPair (files: TlsFiles): Promise<KeyPair> {
  const [cert, key, ca] = await Promise.all([
    readPem('certificate', files.certificate),
    readPem('key', files.key),
    files.clientCA !== undefined ? readPem('clientCA', files.clientCA) : Promise.resolve(undefined),
  ])
  const leaf = parseCertificates('certificate', files.certificate, cert)[0]!
  const keyObject = parseKey(files.key, key)
  if (!leaf.checkPrivateKey(keyObject)) {
    throw new TlsFileError(`${WHERE.key}: ${files.key} does not belong to the certificate in ${files.certificate} (subject ${leaf.subject.replace(/\n/g, ', ')}, serial ${leaf.serialNumber}): give the key that was made with this certificate.`)
  }
  if (ca !== undefined) parseCertificates('clientCA', files.clientCA!, ca)
  try {
    createSecureContext({ cert, key, ...(ca !== undefined ? { ca } : {}) })
  } catch (err) {
    throw new TlsFileError(`tls: OpenSSL refuses ${files.certificate} with ${files.key}: ${(err as Error).message}.`)
  }
  return { cert, key, ...(ca !== undefined ? { ca } : {}), leaf, notAfter: new Date(leaf.validTo) }
}
