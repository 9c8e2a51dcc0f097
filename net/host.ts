/**
 * The libp2p host of a node: TCP, noise, yamux, identify and gossipsub, behind a
 * connection gater that asks the cluster who may connect, and with gossip between members
 * only (net/gossip-gate.ts).
 *
 * A stranger the gater lets in (on probation, to join) can still run identify, which tells it
 * our protocol ids, listen addresses and agent version: libp2p needs identify to learn which
 * protocols a peer speaks, the stranger already holds one of our addresses, and the protocol
 * ids are public in this source. Nothing else answers it but the join protocol.
 */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify, type Identify } from '@libp2p/identify'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import type { PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { membersOnly } from './gossip-gate.js'

export interface HostOptions {
  privateKey: PrivateKey
  /** Multiaddrs to listen on, e.g. /ip4/127.0.0.1/tcp/4001. */
  listen: string[]
  /**
   * Whether a remote peer may hold a connection to us (asked after the encrypted handshake,
   * when its identity is proven), for a connection it opened (inbound) or we opened
   * (outbound), from the IP address `address` (the remote end's). Members may; a stranger
   * only on probation, to join (cluster/probation.ts).
   */
  admit: (peerId: string, direction: 'inbound' | 'outbound', address: string | undefined) => boolean
  /**
   * Whether a connected peer may gossip with us (members only). When left out, every peer
   * the gater admits may: for test peers only.
   */
  gossip?: (peerId: string) => boolean
}

export type Host = Libp2p<{ identify: Identify; pubsub: GossipSub }>

export async function createHost (opts: HostOptions): Promise<Host> {
  const pubsub = gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
  return await createLibp2p({
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    // A paused stream (net/streamed-response.ts pauses while its reader is behind) sends no
    // window updates, but the peer may still send what the window allows, up to yamux's 16 MiB:
    // with the default 4 MiB read buffer that aborted the stream.
    streamMuxers: [yamux({ streamOptions: { maxReadBufferLength: 20 * 1024 * 1024 } })],
    connectionGater: {
      // Loopback and private addresses are where clusters live; the gater's default would refuse them.
      denyDialMultiaddr: () => false,
      denyInboundEncryptedConnection: (peerId, conn) => !opts.admit(peerId.toString(), 'inbound', ipOf(conn.remoteAddr)),
      denyOutboundEncryptedConnection: (peerId, conn) => !opts.admit(peerId.toString(), 'outbound', ipOf(conn.remoteAddr)),
    },
    services: {
      identify: identify(),
      pubsub: opts.gossip === undefined ? pubsub : membersOnly(pubsub, { member: opts.gossip }),
    },
  })
}

/** The IP address in a multiaddr (/ip4/… or /ip6/…), if it has one. */
function ipOf (ma: Multiaddr): string | undefined {
  return ma.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6')?.value
}
