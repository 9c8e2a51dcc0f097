/**
 * Peer-authenticated HTTP between nodes. Bulk blob transfer runs over plain HTTP (it is
 * several times faster than a libp2p stream here); each request is signed with the sender's
 * libp2p Ed25519 key, and an Ed25519 peer id embeds its public key, so the receiver checks
 * the signature against the claimed peer id with nothing else to distribute.
 *
 *   Authorization: Flotilla-Peer <peerId> <unix-ms> <base64url signature of "METHOD\nPATH\nunix-ms[\nCOVERED]">
 *
 * COVERED is the value of one more header the route names (an upload chain's next hops,
 * cluster/replication/upload-mirror.ts), signed with the request when the request carries it:
 * a route that reads such a header passes its value to verifyRequest, and a value added or
 * changed on the way fails the check.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'

const SCHEME = 'Flotilla-Peer'
/** How far a signature's clock may be from ours; replays older than this are refused. */
export const MAX_SKEW_MS = 60_000

function payload (method: string, path: string, ts: number, covered: string | undefined): Uint8Array {
  return new TextEncoder().encode(`${method.toUpperCase()}\n${path}\n${ts}${covered === undefined ? '' : `\n${covered}`}`)
}

export async function signRequest (key: PrivateKey, peerId: string, method: string, path: string, now = Date.now(), covered?: string): Promise<string> {
  const sig = await key.sign(payload(method, path, now, covered))
  return `${SCHEME} ${peerId} ${now} ${Buffer.from(sig).toString('base64url')}`
}

/**
 * The verified peer id, or undefined when the header is absent, malformed, stale or forged
 * (or `covered`, the value of the route's covered header, is not what was signed).
 */
export async function verifyRequest (header: string | undefined, method: string, path: string, now = Date.now(), covered?: string): Promise<string | undefined> {
  if (header === undefined || !header.startsWith(SCHEME + ' ')) return undefined
  const parts = header.slice(SCHEME.length + 1).split(' ')
  if (parts.length !== 3) return undefined
  const [peer, tsRaw, sigRaw] = parts as [string, string, string]
  const ts = Number(tsRaw)
  if (!Number.isSafeInteger(ts) || Math.abs(now - ts) > MAX_SKEW_MS) return undefined
  try {
    const id = peerIdFromString(peer)
    if (id.publicKey === undefined) return undefined
    const ok = await id.publicKey.verify(payload(method, path, ts, covered), Buffer.from(sigRaw, 'base64url'))
    return ok ? id.toString() : undefined
  } catch {
    return undefined
  }
}
