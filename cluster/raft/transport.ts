/**
 * What the Raft driver needs from the network: framed bytes to a peer, and frames from
 * peers. Raft messages are encoded in codec.ts; the transport only moves bytes.
 */
import type { NodeId } from './types.js'

export type MessageHandler = (from: NodeId, bytes: Uint8Array) => void

export interface Transport {
  /** Send one frame; it may be lost. Throws only when `to` is known to be unreachable. */
  send (to: NodeId, bytes: Uint8Array): void
  /** Register the one handler for incoming frames. */
  onMessage (handler: MessageHandler): void
}
