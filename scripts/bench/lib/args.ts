/** Command-line helpers shared by the benchmark scripts. */

/**
 * A reader of integer options: the given value, else the default (or the --quick default);
 * out of [min, max] it prints why and exits 2.
 */
export function intOptions (quick: boolean): (v: string | undefined, dflt: number, quickDflt: number, min: number, max: number, name: string) => number {
  return (v, dflt, quickDflt, min, max, name) => {
    const n = v === undefined ? (quick ? quickDflt : dflt) : Number(v)
    if (!Number.isInteger(n) || n < min || n > max) { console.error(`--${name} must be an integer in [${min}, ${max}]`); process.exit(2) }
    return n
  }
}
