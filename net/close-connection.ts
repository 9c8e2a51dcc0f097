/**
 * Closing a libp2p connection we are done with, without ever rejecting: a close that cannot
 * finish in time (or that the remote's going away cuts short) becomes an abort.
 *
 * Why not `void connection.close()`: libp2p's Connection.close() waits for every stream to
 * hand its unsent bytes to the socket and for the socket to close, under a signal; without one
 * it makes its own, `AbortSignal.timeout(1000)` (libp2p connection.ts, CONNECTION_CLOSE_TIMEOUT),
 * and rejects with that signal's reason (a DOMException TimeoutError) when a stream still holds
 * bytes the remote does not take within a second, or with a stream's close event when the
 * remote goes away meanwhile. Left unobserved, that rejection ends the Node process: a node
 * died so a second after it removed a member it was still sending to.
 */
import type { Connection } from '@libp2p/interface'

/** What the close came to: a graceful close, or an abort after `timeoutMs` or a failure. */
export type CloseOutcome = 'closed' | 'aborted'

/**
 * Close `connection` gracefully within `timeoutMs`, else abort it with the reason. Resolves in
 * all cases (never rejects), so it may be started and left: `void closeConnection(c, 2000)`.
 */
export async function closeConnection (connection: Pick<Connection, 'close' | 'abort'>, timeoutMs: number): Promise<CloseOutcome> {
  // A controller we clear, not AbortSignal.timeout: once the close has settled, nothing that
  // libp2p still listens on (p-event leaves its abort listeners behind) fires any more.
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error(`the connection did not close within ${timeoutMs} ms`)), timeoutMs)
  try {
    await connection.close({ signal: controller.signal })
    return 'closed'
  } catch (err) {
    try {
      connection.abort(err instanceof Error ? err : new Error(`closing the connection failed: ${String((err as Event)?.type ?? err)}`))
    } catch { /* already gone: nothing left to abort */ }
    return 'aborted'
  } finally {
    clearTimeout(timer)
  }
}
