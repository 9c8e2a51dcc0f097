/**
 * The simulation's virtual clock: a priority queue of events ordered by (time, insertion
 * order). Ties resolve by insertion order, so a run is a pure function of its seed.
 */
export interface SimEvent {
  time: number
  seq: number
  run: () => void
  /** For the trace; only called when tracing. */
  describe: () => string
}

export class EventQueue {
  private heap: SimEvent[] = []
  private seq = 0
  now = 0

  get size (): number { return this.heap.length }

  at (time: number, describe: () => string, run: () => void): void {
    const e: SimEvent = { time: Math.max(time, this.now), seq: this.seq++, run, describe }
    const h = this.heap
    h.push(e)
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!before(h[i]!, h[p]!)) break
      ;[h[i], h[p]] = [h[p]!, h[i]!]
      i = p
    }
  }

  after (delay: number, describe: () => string, run: () => void): void {
    this.at(this.now + delay, describe, run)
  }

  /** Remove and return the next event, advancing the clock to it. */
  pop (): SimEvent | undefined {
    const h = this.heap
    if (h.length === 0) return undefined
    const top = h[0]!
    const last = h.pop()!
    if (h.length > 0) {
      h[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < h.length && before(h[l]!, h[m]!)) m = l
        if (r < h.length && before(h[r]!, h[m]!)) m = r
        if (m === i) break
        ;[h[i], h[m]] = [h[m]!, h[i]!]
        i = m
      }
    }
    this.now = top.time
    return top
  }

  peekTime (): number {
    return this.heap.length > 0 ? this.heap[0]!.time : Infinity
  }
}

function before (a: SimEvent, b: SimEvent): boolean {
  return a.time !== b.time ? a.time < b.time : a.seq < b.seq
}
