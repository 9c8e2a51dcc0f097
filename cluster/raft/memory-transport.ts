/**
 * An in-process Transport for tests: a hub that delivers frames between its endpoints on a
 * later turn of the event loop (as a socket would), with links that can be cut.
 */
import type { MessageHandler, Transport } from './transport.js'
import type { NodeId } from './types.js'

export class MemoryHub {
  private readonly endpoints = new Map<NodeId, MemoryTransport>()
  /** Cut links, "from->to". */
  readonly cut = new Set<string>()
  delivered = 0
  dropped = 0

  /** The endpoint for `id` (created on first use). */
  connect (id: NodeId): MemoryTransport {
    let t = this.endpoints.get(id)
    if (t === undefined) {
      t = new MemoryTransport(id, this)
      this.endpoints.set(id, t)
    }
    return t
  }

  disconnect (id: NodeId): void {
    this.endpoints.delete(id)
  }

  isolate (id: NodeId): void {
    for (const other of this.endpoints.keys()) {
      if (other === id) continue
      this.cut.add(`${id}->${other}`)
      this.cut.add(`${other}->${id}`)
    }
  }

  heal (): void {
    this.cut.clear()
  }

  /** @internal */
  deliver (from: NodeId, to: NodeId, bytes: Uint8Array): void {
    if (this.cut.has(`${from}->${to}`)) {
      this.dropped++
      return
    }
    // Copy: the receiver must not see later changes to the sender's buffer.
    const copy = bytes.slice()
    setImmediate(() => {
      const target = this.endpoints.get(to)
      if (target === undefined || this.cut.has(`${from}->${to}`)) {
        this.dropped++
        return
      }
      this.delivered++
      target.receive(from, copy)
    })
  }
}

export class MemoryTransport implements Transport {
  private handler: MessageHandler | undefined

  constructor (readonly id: NodeId, private readonly hub: MemoryHub) {}

  send (to: NodeId, bytes: Uint8Array): void {
    this.hub.deliver(this.id, to, bytes)
  }

  onMessage (handler: MessageHandler): void {
    this.handler = handler
  }

  /** @internal */
  receive (from: NodeId, bytes: Uint8Array): void {
    this.handler?.(from, bytes)
  }
}
