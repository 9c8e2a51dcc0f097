/**
 * The mark a node puts on a request it forwards to another node (an upload's owner, the
 * leader), so that the next node does not forward it again: a second hop means the nodes'
 * views disagree, and the client is asked to retry instead of the request going round.
 *
 * The mark is a peer signature over the method and path (net/peer-auth.ts). A client that
 * sends the header itself is not a node: its header is ignored, instead of failing its
 * request with 503.
 */
export const FORWARDED = 'x-flotilla-forwarded'

export interface Forwarding {
  /** The header value for a request this node forwards. */
  mark (method: string, path: string): Promise<string>
  /** Whether `header` is a member's mark on this request. */
  marked (header: string | undefined, method: string, path: string): Promise<boolean>
}
