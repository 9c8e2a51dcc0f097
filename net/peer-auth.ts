/**
 * Peer-authenticated HTTP between nodes. Every node-to-node request is signed with the
 * sender's libp2p Ed25519 key, and an Ed25519 peer id embeds its public key, so the receiver
 * checks the signature against the claimed peer id with nothing else to distribute. The
 * bytes travel over the peer port (net/peer-https.ts: mutual TLS with libp2p certificates);
 * the signature binds each request to its method, path and time, and its nonce makes it
 * single-use (ReplayGuard), so a captured request cannot be sent again.
 *
 *   Authorization: Flotilla-Peer <peerId> <unix-ms> <nonce> <base64url signature of "METHOD\nPATH\nunix-ms\nnonce[\nCOVERED]">
 *
 * COVERED is the value of one more header the route names (an upload chain's next hops,
 * cluster/replication/upload-mirror.ts), signed with the request when the request carries it:
 * a route that reads such a header passes its value to the check, and a value added or
 * changed on the way fails it.
 */
import { randomBytes } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'

const SCHEME = 'Flotilla-Peer'
/** How far a signature's clock may be from ours; older ones are refused, younger ones are single-use. */
export const MAX_SKEW_MS = 60_000
/** base64url of 16 random bytes. */
const NONCE_RE = /^[A-Za-z0-9_-]{22}$/

function payload (method: string, path: string, ts: number, nonce: string, covered: string | undefined): Uint8Array {
  return new TextEncoder().encode(`${method.toUpperCase()}\n${path}\n${ts}\n${nonce}${covered === undefined ? '' : `\n${covered}`}`)
}

export async function signRequest (key: PrivateKey, peerId: string, method: string, path: string, now = Date.now(), covered?: string): Promise<string> {
  const nonce = randomBytes(16).toString('base64url')
  const sig = await key.sign(payload(method, path, now, nonce, covered))
  return `${SCHEME} ${peerId} ${now} ${nonce} ${Buffer.from(sig).toString('base64url')}`
}

/** A checked signature: who signed, and the nonce that makes the request single-use. */
export interface SignedRequest { peer: string; ts: number; nonce: string }

/**
 * The verified signature, or undefined when the header is absent, malformed, stale or forged
 * (or `covered`, the value of the route's covered header, is not what was signed).
 */
export async function checkSignature (header: string | undefined, method: string, path: string, now = Date.now(), covered?: string): Promise<SignedRequest | undefined> {
  if (header === undefined || !header.startsWith(SCHEME + ' ')) return undefined
  const parts = header.slice(SCHEME.length + 1).split(' ')
  if (parts.length !== 4) return undefined
  const [peer, tsRaw, nonce, sigRaw] = parts as [string, string, string, string]
  const ts = Number(tsRaw)
  if (!Number.isSafeInteger(ts) || Math.abs(now - ts) > MAX_SKEW_MS || !NONCE_RE.test(nonce)) return undefined
  try {
    const id = peerIdFromString(peer)
    if (id.publicKey === undefined) return undefined
    const ok = await id.publicKey.verify(payload(method, path, ts, nonce, covered), Buffer.from(sigRaw, 'base64url'))
    return ok ? { peer: id.toString(), ts, nonce } : undefined
  } catch {
    return undefined
  }
}

/** The verified peer id, or undefined when the header is absent, malformed, stale or forged. */
export async function verifyRequest (header: string | undefined, method: string, path: string, now = Date.now(), covered?: string): Promise<string | undefined> {
  return (await checkSignature(header, method, path, now, covered))?.peer
}

/**
 * The nonces seen within the skew window: a signature is accepted once. A signature older
 * than MAX_SKEW_MS is refused by its time anyway, so a nonce is forgotten once its
 * signature's time is that far behind (kept for twice that, for signers whose clock runs ahead).
 */
export class ReplayGuard {
  private seen = new Map<string, number>()
  private lastSweep = 0

  /** True the first time a (peer, nonce) is offered, false for a replay. */
  accept (req: SignedRequest, now = Date.now()): boolean {
    if (now - this.lastSweep > 5_000) this.sweep(now)
    const k = `${req.peer} ${req.nonce}`
    if (this.seen.has(k)) return false
    this.seen.set(k, Math.max(req.ts, now) + 2 * MAX_SKEW_MS)
    return true
  }

  size (): number {
    return this.seen.size
  }

  private sweep (now: number): void {
    this.lastSweep = now
    for (const [k, until] of this.seen) if (until < now) this.seen.delete(k)
  }
}
