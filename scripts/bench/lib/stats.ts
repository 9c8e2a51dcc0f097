/** Small statistics and formatting helpers for the benchmarks. */

export const MiB = 1024 * 1024

export function median (xs: number[]): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** Nearest-rank percentile, p in [0, 100]. */
export function percentile (xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const rank = Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length)))
  return s[rank - 1]!
}

export function fmt (x: number | undefined, digits = 1): string {
  if (x === undefined || !Number.isFinite(x)) return 'n/a'
  return x.toFixed(digits)
}

export function fmtBytes (n: number): string {
  if (n >= 1024 * MiB) return `${fmt(n / (1024 * MiB), 2)} GiB`
  if (n >= MiB) return `${fmt(n / MiB, 1)} MiB`
  if (n >= 1024) return `${fmt(n / 1024, 1)} KiB`
  return `${n} B`
}

export function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
