/**
 * Gossip with members only. Gossipsub talks to every connected peer that speaks it: to a
 * stranger the gater let in on probation to join it would send our subscriptions, IHAVEs and,
 * since it floods what we publish to every subscriber, the blob announcements themselves
 * (which name digests). A topic validator only judges what comes in. So gossipsub is handed
 * a registrar through which it sees members only:
 *
 * - gossipsub is told of a connection to a non-member (and so opens no stream to it) only once
 *   that peer is a member, on the same connection: a stranger that completes its join keeps it;
 * - a stream a non-member opens on a gossipsub protocol is held, paused and unread (at most
 *   HELD_BUFFER_BYTES buffered, or it is reset), and handed to gossipsub only once the peer is a
 *   member. Resetting it instead would leave the peer's gossipsub with a dead outbound stream
 *   that it never replaces (it misses the reset when it comes right after negotiation), so a
 *   joiner the member did not know yet for a moment would never be heard.
 *
 * Held peers are checked every `recheckMs` while they stay connected. Gossipsub opens streams
 * only from those two callbacks (and from `connect`, for direct peers and peer exchange, which
 * goes through the same topology), so it never has a stream to a non-member: nothing is sent to
 * one, and nothing from one is read while it is not a member. (libp2p's stream middleware,
 * `registrar.use`, would be the obvious tool, but in libp2p 3.3 each inbound stream appends its
 * handler to the protocol's middleware list, so the handler runs again for every later stream.)
 */
import type { Connection, PeerId, Stream, StreamHandler, StreamHandlerOptions, Topology, AbortOptions } from '@libp2p/interface'
import type { GossipSub, GossipSubComponents } from '@libp2p/gossipsub'

export interface GossipGateOptions {
  /** Whether the peer may gossip with us (a member). Asked at each stream and connection. */
  member: (peerId: string) => boolean
  /** How often held peers are checked for membership. Default 250 ms. */
  recheckMs?: number
}

type Registrar = GossipSubComponents['registrar']

/**
 * Wrap a gossipsub factory so that the service it makes gossips with members only:
 * `pubsub: membersOnly(gossipsub(init), { member })`.
 */
export function membersOnly (factory: (components: GossipSubComponents) => GossipSub, opts: GossipGateOptions): (components: GossipSubComponents) => GossipSub {
  return (components) => {
    const gate = new GossipGate(components.registrar, components.connectionManager, opts)
    return factory({ ...pick(components), registrar: gate.registrar })
  }
}

/** The components gossipsub uses, read once (libp2p's components object is a proxy). */
function pick (c: GossipSubComponents): GossipSubComponents {
  return { privateKey: c.privateKey, peerId: c.peerId, peerStore: c.peerStore, registrar: c.registrar, connectionManager: c.connectionManager, logger: c.logger }
}

/** What a non-member may have sent on a held gossip stream: its subscriptions take a few hundred bytes. */
export const HELD_BUFFER_BYTES = 64 * 1024

interface Held {
  peerId: PeerId
  streams: Array<{ stream: Stream; connection: Connection; handler: StreamHandler; maxReadBufferLength: number }>
}

class GossipGate {
  readonly registrar: Registrar
  /** The topologies gossipsub registered (one object for each of its protocols). */
  private readonly topologies = new Set<Topology>()
  /**
   * Connected non-members that speak gossipsub, and the streams they opened, told to gossipsub
   * once they are members. The timer runs only while some are held (it forgets those no longer
   * connected, so a stopped host leaves none).
   */
  private readonly held = new Map<string, Held>()
  private timer: NodeJS.Timeout | undefined

  constructor (real: Registrar, private readonly connections: GossipSubComponents['connectionManager'], private readonly opts: GossipGateOptions) {
    const handle = async (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void> => {
      await real.handle(protocol, (stream, connection) => this.incoming(stream, connection, handler), options)
    }
    const register = async (protocol: string, topology: Topology, options?: AbortOptions): Promise<string> => {
      this.topologies.add(topology)
      return await real.register(protocol, {
        ...topology,
        onConnect: (peerId, connection) => {
          if (this.isMember(peerId)) return topology.onConnect?.(peerId, connection)
          this.hold(peerId)
        },
      }, options)
    }
    this.registrar = new Proxy(real, {
      get: (target, prop) => {
        if (prop === 'handle') return handle
        if (prop === 'register') return register
        const value: unknown = Reflect.get(target, prop)
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
  }

  private isMember (peerId: PeerId): boolean {
    return this.opts.member(peerId.toString())
  }

  private incoming (stream: Stream, connection: Connection, handler: StreamHandler): void | Promise<void> {
    if (this.isMember(connection.remotePeer)) return handler(stream, connection)
    const maxReadBufferLength = stream.maxReadBufferLength
    stream.pause()
    stream.maxReadBufferLength = HELD_BUFFER_BYTES
    this.hold(connection.remotePeer).streams.push({ stream, connection, handler, maxReadBufferLength })
  }

  private hold (peerId: PeerId): Held {
    const id = peerId.toString()
    let h = this.held.get(id)
    if (h === undefined) { h = { peerId, streams: [] }; this.held.set(id, h) }
    this.timer ??= setInterval(() => this.recheck(), this.opts.recheckMs ?? 250)
    this.timer.unref()
    return h
  }

  /** Tell gossipsub of held peers that have become members; forget those that left. */
  private recheck (): void {
    for (const [id, h] of this.held) {
      h.streams = h.streams.filter((s) => s.stream.status === 'open')
      const open = this.connections.getConnections(h.peerId).filter((c) => c.status === 'open' && c.limits == null)
      if (open.length === 0) { this.held.delete(id); continue }
      if (!this.isMember(h.peerId)) continue
      this.held.delete(id)
      for (const { stream, connection, handler, maxReadBufferLength } of h.streams) {
        stream.maxReadBufferLength = maxReadBufferLength
        void Promise.resolve(handler(stream, connection)).catch((err: Error) => stream.abort(err))
        // Once gossipsub reads it: what arrived meanwhile is kept until then.
        setTimeout(() => { if (stream.readStatus === 'paused') stream.resume() }, 0)
      }
      for (const t of this.topologies) void Promise.resolve(t.onConnect?.(h.peerId, open[0]!)).catch(() => {})
    }
    if (this.held.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer)
      this.timer = undefined
    }
  }
}
