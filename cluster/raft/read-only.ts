/**
 * Pending ReadIndex requests on the leader (after etcd's readOnly, ReadOnlySafe mode): each
 * records the commit index when it arrived and is released once a quorum of voters has
 * answered a heartbeat sent after it, which proves no newer leader could have committed more.
 */
import type { Message, NodeId } from './types.js'

export interface ReadIndexStatus {
  req: Message
  index: number
  acks: Set<NodeId>
}

export function contextKey (ctx: Uint8Array | undefined): string {
  if (ctx === undefined) return ''
  return Buffer.from(ctx.buffer, ctx.byteOffset, ctx.byteLength).toString('hex')
}

export class ReadOnly {
  private readonly pending = new Map<string, ReadIndexStatus>()
  private queue: string[] = []

  /** Record a read at commit index `index`. A repeated context is ignored. */
  addRequest (index: number, req: Message): void {
    const key = contextKey(req.context)
    if (this.pending.has(key)) return
    this.pending.set(key, { req, index, acks: new Set() })
    this.queue.push(key)
  }

  /** Record that `id` answered the heartbeat carrying `ctx`; returns who has, or undefined. */
  recvAck (id: NodeId, ctx: Uint8Array | undefined): Set<NodeId> | undefined {
    const rs = this.pending.get(contextKey(ctx))
    if (rs === undefined) return undefined
    rs.acks.add(id)
    return rs.acks
  }

  /** Release the request for `ctx` and every earlier one (a later quorum proves them too). */
  advance (ctx: Uint8Array | undefined): ReadIndexStatus[] {
    const key = contextKey(ctx)
    const i = this.queue.indexOf(key)
    if (i < 0) return []
    const released = this.queue.slice(0, i + 1).map(k => this.pending.get(k)!)
    for (const k of this.queue.slice(0, i + 1)) this.pending.delete(k)
    this.queue = this.queue.slice(i + 1)
    return released
  }

  /** Context of the newest pending request: heartbeats carry it so answers ack every request. */
  lastPendingContext (): Uint8Array | undefined {
    const key = this.queue[this.queue.length - 1]
    return key === undefined ? undefined : this.pending.get(key)!.req.context
  }

  size (): number { return this.queue.length }

  reset (): void {
    this.pending.clear()
    this.queue = []
  }
}
