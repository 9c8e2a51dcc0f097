/**
 * One request to another site: its members are asked in turn, starting with the one that
 * answered last, each at every address it gave, until one answers. An unreachable member is
 * skipped; an answer is checked by `accept`, which throws to stop asking (a refusal from the
 * site is the site's word, not one member's trouble).
 */
import { multiaddr } from '@multiformats/multiaddr'
import type { Host } from '../../net/host.js'
import { sendRequest } from '../../net/request-response.js'
import type { PeeringRecord } from './model.js'

export interface AskOptions {
  protocol: string
  timeoutMs: number
  maxAnswerBytes: number
  /** Index into the peering's members of the one to ask first. */
  start: number
  /** Checked before each attempt: throw to stop (the caller is shutting down). */
  check?: () => void
}

export async function askSite<T> (host: Host, p: PeeringRecord, body: Uint8Array, opts: AskOptions, accept: (bytes: Uint8Array, peerId: string) => T): Promise<{ answer: T; from: string; index: number }> {
  let last: Error = new Error(`site ${p.name} has no member with an address`)
  const n = p.members.length
  for (let i = 0; i < n; i++) {
    const index = (opts.start + i) % n
    const m = p.members[index]!
    for (const a of m.addrs) {
      opts.check?.()
      let bytes: Uint8Array
      try {
        bytes = await sendRequest(host, multiaddr(`${a}/p2p/${m.peerId}`), opts.protocol, body, { timeoutMs: opts.timeoutMs, maxAnswerBytes: opts.maxAnswerBytes })
      } catch (err) {
        last = new Error(`cannot reach ${m.peerId} at ${a}: ${err instanceof Error ? err.message : 'the connection was refused or closed (is this site still pinned there?)'}`)
        continue
      }
      return { answer: accept(bytes, m.peerId), from: m.peerId, index }
    }
  }
  throw last
}
