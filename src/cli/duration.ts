/**
 * The one duration syntax of the CLI, for --ttl, --expires, --since and --until:
 *
 *   duration := NUMBER UNIT | NUMBER        90s, 10m, 1h, 30d; a bare number is seconds
 *   UNIT     := s | m | h | d
 *
 * --since and --until also take a point in time: an ISO 8601 date, or a bare number of epoch
 * milliseconds (as they always have); a duration there means that long ago.
 */
import { InvalidArgumentError } from 'commander'

export const DURATION_FORMS = '90s, 10m, 1h or 30d (a bare number is seconds)'

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400 } as const

/** `90s`, `10m`, `1h`, `30d` or `3600` → seconds; undefined when `text` is none of these. */
export function durationSeconds (text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)([smhd])?$/.exec(text.trim())
  if (m === null) return undefined
  const seconds = Number(m[1]) * UNIT_SECONDS[(m[2] ?? 's') as keyof typeof UNIT_SECONDS]
  return Number.isFinite(seconds) ? seconds : undefined
}

/**
 * A commander argument parser for a duration option: whole seconds, more than 0. Commander
 * reports a refusal as `option '--ttl <duration>' argument 'x' is invalid. …`, naming the option.
 */
export function parseDurationOption (text: string): number {
  const s = durationSeconds(text)
  if (s === undefined) throw new InvalidArgumentError(`expected a duration: ${DURATION_FORMS}.`)
  const whole = Math.round(s)
  if (whole < 1) throw new InvalidArgumentError(`the duration must be at least 1 second (${DURATION_FORMS}).`)
  return whole
}

/**
 * A commander argument parser for --since/--until: a duration ago, an ISO 8601 date, or epoch
 * milliseconds (a bare number, as before durations existed). Answers epoch milliseconds.
 */
export function parseTimeOption (text: string, now = Date.now()): number {
  const t = text.trim()
  if (/^\d+$/.test(t)) return Number(t)
  const ago = durationSeconds(t)
  if (ago !== undefined) return now - Math.round(ago * 1000)
  // An ISO date (2025-01-31, 2025-01-31T12:00:00Z); Date.parse alone would take "March 7" too.
  const at = /^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(t) ? Date.parse(t) : Number.NaN
  if (Number.isNaN(at)) throw new InvalidArgumentError('expected how long ago (90s, 10m, 1h or 30d), an ISO 8601 date (2025-01-31 or 2025-01-31T12:00:00Z) or epoch milliseconds.')
  return at
}
