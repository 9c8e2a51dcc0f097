/**
 * How the CLI prints what the API answers: a table for people (times in ISO 8601, UTC), or
 * with --json the API's JSON document unchanged, for scripts.
 */

/** Columns padded to their widest cell, two spaces apart; the last column is not padded. */
export function table (head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  return [head, ...rows].map((r) => r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n').join('')
}

/** Epoch milliseconds as ISO 8601; `none` for 0, null or undefined (a token that never expires …). */
export function iso (ms: number | null | undefined, none = '-'): string {
  return ms === undefined || ms === null || ms === 0 || !Number.isFinite(ms) ? none : new Date(ms).toISOString()
}

/** One object as `FIELD  value` lines (a two-column table). */
export function record (fields: Array<[string, string]>): string {
  return table(['FIELD', 'VALUE'], fields.map(([k, v]) => [k, v])).split('\n').slice(1).join('\n')
}

/** `{alice: [read, write], bob: [read]}` → `alice=read,write bob=read`. */
export function grantsText (m: Record<string, string[]> | undefined): string {
  const parts = Object.entries(m ?? {}).map(([n, a]) => `${n}=${a.join(',')}`)
  return parts.length === 0 ? '-' : parts.join(' ')
}

export function printJson (doc: unknown): void {
  process.stdout.write(JSON.stringify(doc, null, 2) + '\n')
}
