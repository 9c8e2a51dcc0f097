/**
 * Certificates of the libp2p TLS spec (https://github.com/libp2p/specs/blob/master/tls/tls.md),
 * made and checked with node:crypto alone (@libp2p/tls has the same two functions, but its
 * @peculiar/webcrypto import does not load under the test runner's TypeScript loader).
 *
 * A self-signed X.509 v3 certificate for a fresh ECDSA P-256 key, carrying one critical
 * extension that binds it to the node's libp2p identity:
 *
 *   Certificate
 *   ├── tbsCertificate
 *   │   ├── version v3, serial (random), signature ecdsa-with-SHA256
 *   │   ├── issuer = subject = CN=flotilla, validity now-1h … now+100y
 *   │   ├── subjectPublicKeyInfo          the ECDSA key that speaks TLS
 *   │   └── extensions
 *   │       └── 1.3.6.1.4.1.53594.1.1 (critical) SignedKey ::= SEQUENCE {
 *   │             publicKey OCTET STRING,  -- the libp2p public key, protobuf-encoded
 *   │             signature OCTET STRING } -- identity key's signature of
 *   │                                      -- "libp2p-tls-handshake:" ‖ subjectPublicKeyInfo (DER)
 *   ├── signatureAlgorithm ecdsa-with-SHA256
 *   └── signature (by the certificate's own key)
 *
 * The peer id is that of the public key in the extension; the TLS handshake proves the peer
 * holds the certificate's key, and the extension proves the identity key vouched for it.
 */
import { X509Certificate, createPublicKey, generateKeyPairSync, randomBytes, sign as signData } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'

const PREFIX = Buffer.from('libp2p-tls-handshake:')
const OID_LIBP2P = '1.3.6.1.4.1.53594.1.1'
const OID_ECDSA_SHA256 = '1.2.840.10045.4.3.2'
const OID_CN = '2.5.4.3'
const HOUR = 3600_000
const VALID_YEARS = 100

// ---- DER, the little of it needed here ------------------------------------------------------

function len (n: number): Buffer {
  if (n < 0x80) return Buffer.from([n])
  const bytes: number[] = []
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}
const tlv = (tag: number, ...body: Buffer[]): Buffer => { const b = Buffer.concat(body); return Buffer.concat([Buffer.from([tag]), len(b.length), b]) }
const seq = (...items: Buffer[]): Buffer => tlv(0x30, ...items)
const octets = (b: Uint8Array): Buffer => tlv(0x04, Buffer.from(b))

function oid (dotted: string): Buffer {
  const parts = dotted.split('.').map(Number)
  const out = [40 * parts[0]! + parts[1]!]
  for (const p of parts.slice(2)) {
    const base128: number[] = []
    for (let v = p; ; v = Math.floor(v / 128)) { base128.unshift((v & 0x7f) | (base128.length > 0 ? 0x80 : 0)); if (v < 128) break }
    out.push(...base128)
  }
  return tlv(0x06, Buffer.from(out))
}

function time (d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z' // YYYYMMDDHHMMSSZ
  // RFC 5280: UTCTime for 1950 through 2049, GeneralizedTime otherwise.
  const y = d.getUTCFullYear()
  return y >= 1950 && y < 2050 ? tlv(0x17, Buffer.from(iso.slice(2))) : tlv(0x18, Buffer.from(iso))
}

interface Node { tag: number; start: number; body: Buffer; raw: Buffer }

/** The TLV elements directly inside `buf` (a constructed element's body). */
function children (buf: Buffer): Node[] {
  const out: Node[] = []
  let i = 0
  while (i < buf.length) {
    const start = i
    const tag = buf[i++]!
    let n = buf[i++]!
    if (n === undefined) throw new Error('truncated DER')
    if (n & 0x80) {
      const k = n & 0x7f
      if (k === 0 || k > 4) throw new Error('unsupported DER length')
      n = 0
      for (let j = 0; j < k; j++) n = n * 256 + buf[i++]!
    }
    if (i + n > buf.length) throw new Error('truncated DER')
    out.push({ tag, start, body: buf.subarray(i, i + n), raw: buf.subarray(start, i + n) })
    i += n
  }
  return out
}

// ---- making and checking ----------------------------------------------------------------------

/** A certificate (PEM) and its key (PKCS#8 PEM) bound to `identity`. */
export async function createLibp2pCertificate (identity: PrivateKey, now = Date.now()): Promise<{ cert: string; key: string }> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const spki = publicKey.export({ type: 'spki', format: 'der' })
  const vouch = await identity.sign(Buffer.concat([PREFIX, spki]))
  const ext = seq(octets(publicKeyToProtobuf(identity.publicKey)), octets(vouch))
  const serial = randomBytes(8)
  serial[0] = (serial[0]! & 0x7f) | 0x01 // positive, no leading zero byte
  const name = seq(tlv(0x31, seq(oid(OID_CN), tlv(0x0c, Buffer.from('flotilla')))))
  const alg = seq(oid(OID_ECDSA_SHA256))
  const notAfter = new Date(now)
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + VALID_YEARS)
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    tlv(0x02, serial),
    alg,
    name,
    seq(time(new Date(now - HOUR)), time(notAfter)),
    name,
    spki,
    tlv(0xa3, seq(seq(oid(OID_LIBP2P), tlv(0x01, Buffer.from([0xff])), octets(ext)))),
  )
  const sig = signData('sha256', tbs, privateKey)
  const der = seq(tbs, alg, tlv(0x03, Buffer.from([0]), sig))
  const pem = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`
  return { cert: pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }
}

/**
 * The peer id a libp2p certificate (DER) binds, after checking its validity period, its
 * self-signature and the identity key's signature in the extension. Throws saying what failed.
 */
export async function verifyLibp2pCertificate (raw: Uint8Array, now = Date.now()): Promise<string> {
  const der = Buffer.from(raw)
  const x = new X509Certificate(der)
  if (Date.parse(x.validFrom) > now) throw new Error('the certificate is not valid yet')
  if (Date.parse(x.validTo) < now) throw new Error('the certificate has expired')
  if (!x.verify(x.publicKey)) throw new Error('the certificate\'s self-signature is invalid')
  const [cert] = children(der)
  const [tbs] = children(cert!.body)
  const fields = children(tbs!.body)
  // version [0], serial, signature, issuer, validity, subject, subjectPublicKeyInfo, …, extensions [3]
  const hasVersion = fields[0]?.tag === 0xa0
  const spki = fields[hasVersion ? 6 : 5]
  if (spki === undefined || spki.tag !== 0x30) throw new Error('the certificate has no subject public key')
  const exts = fields.find((f) => f.tag === 0xa3)
  if (exts === undefined) throw new Error('the certificate has no extensions: it is not a libp2p certificate')
  const want = oid(OID_LIBP2P)
  let value: Buffer | undefined
  for (const e of children(children(exts.body)[0]!.body)) {
    const parts = children(e.body)
    if (parts[0]?.raw.equals(want) === true) value = parts[parts.length - 1]!.body
  }
  if (value === undefined) throw new Error('the certificate lacks the libp2p public key extension')
  const [signed] = children(value)
  const [pk, vouch] = children(signed!.body)
  if (pk?.tag !== 0x04 || vouch?.tag !== 0x04) throw new Error('the libp2p extension is malformed')
  const key = publicKeyFromProtobuf(pk.body)
  if (!await key.verify(Buffer.concat([PREFIX, spki.raw]), vouch.body)) throw new Error('the libp2p extension\'s signature does not match the certificate\'s key')
  // The key that speaks TLS is the one vouched for (X509Certificate reads the same bytes).
  if (!createPublicKey({ key: spki.raw, format: 'der', type: 'spki' }).equals(x.publicKey)) throw new Error('the certificate\'s key is not the one its extension vouches for')
  return peerIdFromPublicKey(key).toString()
}
