/**
 * A small certificate authority for tests and internal setups (`flotilla cert …`): a CA, server
 * certificates with a subjectAltName for each DNS name and IP address (what clients check; the
 * CN is not), and client certificates whose subject CN is a user name (mTLS, src/tls/client-cert.ts).
 * Keys are ECDSA P-256, signatures SHA-256; made with @peculiar/x509 on Node's WebCrypto.
 */
import 'reflect-metadata' // @peculiar/x509's dependency injection needs it loaded first
import * as x509 from '@peculiar/x509'
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto'
import { isIP } from 'node:net'

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

type CryptoKey = webcrypto.CryptoKey

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const

export interface Pem { certPem: string; keyPem: string }
export interface Issued extends Pem { serial: string; notAfter: Date }

/** A positive 128-bit serial number, hex (RFC 5280 §4.1.2.2: unique per CA, at most 20 octets). */
function serial (): string {
  const b = randomBytes(16)
  b[0] = (b[0]! & 0x7f) | 0x01
  return b.toString('hex')
}

async function newKeys (): Promise<webcrypto.CryptoKeyPair> {
  return await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair
}

async function keyPem (k: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', k), 'PRIVATE KEY')
}

/** Validity from 5 minutes ago (clock skew between machines), or from `from`, for `days`. */
function validity (days: number, from?: Date): { notBefore: Date; notAfter: Date } {
  const notBefore = from ?? new Date(Date.now() - 5 * 60_000)
  return { notBefore, notAfter: new Date(notBefore.getTime() + days * 86_400_000) }
}

/** An X.500 name value with its special characters escaped (RFC 4514). */
function rdn (s: string): string {
  return s.replace(/([,+"\\<>;=])/g, '\\$1').replace(/^([ #])/, '\\$1').replace(/ $/, '\\ ')
}

export async function createCA (opts: { name?: string; days?: number } = {}): Promise<Issued> {
  const keys = await newKeys()
  const { notBefore, notAfter } = validity(opts.days ?? 3650)
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${rdn(opts.name ?? 'Flotilla test CA')},O=Flotilla`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey), serial: cert.serialNumber, notAfter }
}

/** The CA's key as WebCrypto wants it, whatever PEM form it is in (our own CA's is PKCS#8 EC P-256). */
async function importSigningKey (pem: string): Promise<{ key: CryptoKey; alg: webcrypto.EcKeyImportParams & { hash: string } | webcrypto.RsaHashedImportParams }> {
  const k = createPrivateKey(pem)
  const der = k.export({ type: 'pkcs8', format: 'der' })
  if (k.asymmetricKeyType === 'ec') {
    const curve = k.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'P-384' : 'P-256'
    const alg = { name: 'ECDSA', namedCurve: curve, hash: curve === 'P-384' ? 'SHA-384' : 'SHA-256' }
    return { key: await webcrypto.subtle.importKey('pkcs8', der, alg, false, ['sign']), alg }
  }
  if (k.asymmetricKeyType === 'rsa') {
    const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }
    return { key: await webcrypto.subtle.importKey('pkcs8', der, alg, false, ['sign']), alg }
  }
  throw new Error(`the CA key is ${k.asymmetricKeyType ?? 'of an unknown type'}: flotilla cert signs with EC (P-256, P-384) or RSA CA keys`)
}

export interface Hosts { dns: string[]; ips: string[] }

/** `name,10.0.0.5,::1` → DNS names and IP addresses; throws naming a bad entry. */
export function parseHosts (list: string): Hosts {
  const dns: string[] = []
  const ips: string[] = []
  for (const raw of list.split(',').map((h) => h.trim()).filter((h) => h !== '')) {
    const h = raw.replace(/^\[|\]$/g, '')
    if (isIP(h) !== 0) { ips.push(h); continue }
    if (!/^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(h) || h.length > 253) {
      throw new Error(`--hosts: ${JSON.stringify(raw)} is neither a DNS name nor an IP address (no ports or schemes: NAME,IP,…)`)
    }
    dns.push(h.toLowerCase())
  }
  if (dns.length === 0 && ips.length === 0) throw new Error('--hosts needs at least one DNS name or IP address, e.g. --hosts registry.lan,192.168.1.10')
  return { dns, ips }
}

/**
 * Sign a certificate with the CA: a server certificate (serverAuth; SANs for `hosts`) or a
 * client certificate (clientAuth; subject CN = the user name).
 */
export async function issueCertificate (ca: Pem, opts: ({ kind: 'server'; hosts: Hosts } | { kind: 'client'; user: string }) & { days?: number; notBefore?: Date }): Promise<Issued> {
  const caCert = new x509.X509Certificate(ca.certPem)
  const signer = await importSigningKey(ca.keyPem)
  const keys = await newKeys()
  const { notBefore, notAfter } = validity(opts.days ?? 365, opts.notBefore)
  const cn = opts.kind === 'server' ? (opts.hosts.dns[0] ?? opts.hosts.ips[0]!) : opts.user
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([opts.kind === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth], false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
  ]
  if (opts.kind === 'server') {
    extensions.push(new x509.SubjectAlternativeNameExtension([
      ...opts.hosts.dns.map((value) => ({ type: 'dns' as const, value })),
      ...opts.hosts.ips.map((value) => ({ type: 'ip' as const, value })),
    ], false))
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${rdn(cn)}`,
    issuer: caCert.subject,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: signer.key,
    signingAlgorithm: signer.alg,
    extensions,
  })
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey), serial: cert.serialNumber, notAfter }
}
