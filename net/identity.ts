/**
 * A node's libp2p identity: an Ed25519 key created once and kept in the data dir, so a
 * restarted node comes back as the same peer.
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { open, readFile, rename } from 'node:fs/promises'

export async function loadOrCreateIdentity (path: string): Promise<{ privateKey: PrivateKey; peerId: string; created: boolean }> {
  try {
    const privateKey = privateKeyFromProtobuf(await readFile(path))
    return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString(), created: false }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot read the node identity ${path}: ${(err as Error).message}. Restore it from a backup, or start with a new data dir (a new node).`)
    }
  }
  const privateKey = await generateKeyPair('Ed25519')
  const tmp = `${path}.tmp`
  const fh = await open(tmp, 'w', 0o600)
  try {
    await fh.writeFile(privateKeyToProtobuf(privateKey))
    await fh.sync()
  } finally { await fh.close() }
  await rename(tmp, path)
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString(), created: true }
}
