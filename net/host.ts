/**
 * The libp2p host of a node: TCP, noise, yamux, identify and gossipsub, behind a
 * connection gater that asks the cluster who may connect.
 */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify, type Identify } from '@libp2p/identify'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import type { PrivateKey } from '@libp2p/interface'

export interface HostOptions {
  privateKey: PrivateKey
  /** Multiaddrs to listen on, e.g. /ip4/127.0.0.1/tcp/4001. */
  listen: string[]
  /**
   * Whether a remote peer may hold a connection to us (asked after the encrypted handshake,
   * when its identity is proven), for a connection it opened (inbound) or we opened
   * (outbound). Members may; a stranger only on probation, to join (cluster/probation.ts).
   */
  admit: (peerId: string, direction: 'inbound' | 'outbound') => boolean
}

export type Host = Libp2p<{ identify: Identify; pubsub: GossipSub }>

export async function createHost (opts: HostOptions): Promise<Host> {
  return await createLibp2p({
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: {
      // Loopback and private addresses are where clusters live; the gater's default would refuse them.
      denyDialMultiaddr: () => false,
      denyInboundEncryptedConnection: (peerId) => !opts.admit(peerId.toString(), 'inbound'),
      denyOutboundEncryptedConnection: (peerId) => !opts.admit(peerId.toString(), 'outbound'),
    },
    services: {
      identify: identify(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false }),
    },
  })
}
