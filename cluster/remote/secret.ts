/**
 * Upstream credentials, encrypted with the cluster key: AES-256-GCM under a key derived
 * (HKDF-SHA256) from the cluster's shared secret (`cluster␀info`, cluster/metadata/keys.ts).
 * The state machine only ever stores the ciphertext; a node decrypts it when it calls the
 * upstream. Format: `v1:` + base64(iv[12] | tag[16] | ciphertext).
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'

export interface ClusterKey { clusterId: string; secret: string }

function keyOf (k: ClusterKey): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(k.secret, 'utf8'), Buffer.from(k.clusterId, 'utf8'), Buffer.from('flotilla remote credentials v1', 'utf8'), 32))
}

export function encryptSecret (plain: string, k: ClusterKey): string {
  const iv = randomBytes(12)
  const c = createCipheriv('aes-256-gcm', keyOf(k), iv)
  const body = Buffer.concat([c.update(plain, 'utf8'), c.final()])
  return 'v1:' + Buffer.concat([iv, c.getAuthTag(), body]).toString('base64')
}

/** Throws when the text was not made by encryptSecret with this cluster's key. */
export function decryptSecret (text: string, k: ClusterKey): string {
  if (!text.startsWith('v1:')) throw new Error('not an encrypted credential (v1:…)')
  const raw = Buffer.from(text.slice(3), 'base64')
  if (raw.length < 28) throw new Error('encrypted credential too short')
  const d = createDecipheriv('aes-256-gcm', keyOf(k), raw.subarray(0, 12))
  d.setAuthTag(raw.subarray(12, 28))
  return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8')
}
