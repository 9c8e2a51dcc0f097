/**
 * The node's peer port: an HTTPS server for member-to-member HTTP only (net/peer-https.ts),
 * serving the same app as the client port. Both sides present the libp2p TLS certificate of
 * their identity; this side admits the cluster's members, and the peers it removed (which
 * may only learn that they were: src/http/internal.ts). Its URL goes into this node's member
 * record, so other members send their node-to-node requests here, and the client port
 * refuses /internal/v1/* (src/http/internal.ts).
 *
 *   peerListen: HOST:PORT   unset: the --listen host, any free port (several nodes on one host
 *                           need nothing more than --listen and --p2p)
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { Cluster } from '../cluster/cluster.js'
import { PeerServer, type PeerCredentials } from '../net/peer-https.js'
import { splitHostPort, type Config } from './config.js'
import { listenFailure } from './listen-errors.js'

export interface PeerPort {
  server: PeerServer
  /** https://HOST:PORT, as members reach it. */
  url: string
}

export async function startPeerPort (config: Config, credentials: PeerCredentials, cluster: Cluster, handler: (req: IncomingMessage, res: ServerResponse) => void, log: Logger): Promise<PeerPort> {
  const listenHost = splitHostPort(config.listen).host
  const configured = config.peerListen ?? `${listenHost.includes(':') ? `[${listenHost}]` : listenHost}:0`
  const { host, port } = splitHostPort(configured)
  const server = new PeerServer({
    credentials,
    admits: (p) => cluster.admits(p) || cluster.wasRemoved(p),
    handler,
    metrics: cluster.peerMetrics,
    onRefused: (reason, detail) => log.info({ reason, detail }, 'peer port: connection refused'),
  })
  let bound: { host: string; port: number }
  try {
    bound = await server.listen(host, port)
  } catch (err) {
    throw listenFailure(err as NodeJS.ErrnoException, { address: configured, purpose: 'the peer port (node-to-node HTTPS)', setting: '--peer-listen, FLOTILLA_PEER_LISTEN' })
  }
  return { server, url: `https://${advertisedHost(bound.host, config.advertise)}:${bound.port}` }
}

/** A wildcard address is no address to dial: use the advertised client URL's host then. */
function advertisedHost (host: string, advertise: string | undefined): string {
  const wildcard = host === '0.0.0.0' || host === '::'
  const h = wildcard && advertise !== undefined ? new URL(advertise).hostname.replace(/^\[|\]$/g, '') : host
  return h.includes(':') ? `[${h}]` : h
}
