import { pino, type Logger } from 'pino'

/** JSON lines on stdout; one per request from the HTTP layer. */
export function createLogger (level: string): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime })
}
