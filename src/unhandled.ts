import { Counter } from 'prom-client'
import type { Logger } from 'pino'

/**
 * Cancellations nobody waited for. A library can leave a promise that rejects with a timeout's
 * or an abort's reason after the operation it bounded was given up (libp2p does, for a stream to
 * a peer that has just gone); node would kill the whole process for it. Such a rejection is
 * logged and counted here instead: the operation it cancelled is over either way.
 */
export const unhandledCancellations = new Counter({ name: 'flotilla_unhandled_cancellations_total', help: 'Timeouts and aborts left in a promise nobody awaited (logged, not fatal), by kind', labelNames: ['kind'] as const, registers: [] })

/** An AbortSignal's reason: DOMException TimeoutError/AbortError, or libp2p's AbortError/TimeoutError. */
export function isCancellation (reason: unknown): reason is Error {
  if (!(reason instanceof Error)) return false
  return reason.name === 'TimeoutError' || reason.name === 'AbortError'
}

/**
 * Any other unhandled rejection is a bug: it is logged as fatal with its stack, and the process
 * exits 1, as node would have.
 */
export function guardUnhandledRejections (log: Logger): void {
  process.on('unhandledRejection', (reason) => {
    if (isCancellation(reason)) {
      unhandledCancellations.inc({ kind: reason.name })
      log.warn({ err: reason }, `a ${reason.name} nobody awaited was ignored (an operation given up on a timeout or abort)`)
      return
    }
    log.fatal({ err: reason }, 'unhandled promise rejection: this is a bug in flotilla, please report it with this line')
    process.exitCode = 1
    // Let pino flush its line; the 'exit' hook in src/logger.ts writes what is left.
    setImmediate(() => process.exit(1))
  })
}
