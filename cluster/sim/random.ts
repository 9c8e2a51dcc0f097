/** Helpers over the core's seeded generator (cluster/raft/rand.ts), for the simulation. */
import { SeededRand } from '../raft/rand.js'

export class SimRand extends SeededRand {
  /** True with probability p. */
  chance (p: number): boolean {
    return p > 0 && this.intn(1_000_000) < p * 1_000_000
  }

  /** Uniform integer in [lo, hi]. */
  between (lo: number, hi: number): number {
    return lo + this.intn(hi - lo + 1)
  }

  pick<T> (xs: readonly T[]): T {
    if (xs.length === 0) throw new RangeError('pick from an empty list')
    return xs[this.intn(xs.length)]!
  }

  shuffle<T> (xs: readonly T[]): T[] {
    const out = [...xs]
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.intn(i + 1)
      ;[out[i], out[j]] = [out[j]!, out[i]!]
    }
    return out
  }
}
