/**
 * A linearizability checker: the Wing–Gong search with Lowe's memoization, as in Porcupine
 * (anishathalye/porcupine, `checker.go`).
 *
 * A history is a list of operations, each with the time it was called and the time it
 * returned. It is linearizable if every operation can be given a point between its call and
 * its return such that running the operations in that order through the sequential `model`
 * yields exactly the recorded outputs.
 *
 * An operation whose outcome is unknown (the client timed out or crashed) has `return`
 * Infinity; the model sees `undefined` as its output and must accept any result. Because it
 * may be linearized after everything else, it may or may not have happened.
 *
 * The search walks the call/return events in time order, linearizes a pending call whenever
 * the model allows it, and backtracks at a return whose call could not be linearized. A cache
 * of (set of linearized operations, model state) cuts repeated states. With `partition`, each
 * part (e.g. one key) is checked on its own (P-compositionality), which keeps the search small.
 */

export interface Operation<I, O> {
  clientId: number | string
  input: I
  /** Ignored when `return` is Infinity (outcome unknown). */
  output: O | undefined
  call: number
  /** Infinity when the outcome is unknown. */
  return: number
}

export interface Model<S, I, O> {
  init (): S
  /** Apply `input` to `state`; ok when the model could have produced `output` (undefined: unknown). */
  step (state: S, input: I, output: O | undefined): [boolean, S]
  /** Split a history into parts that can be checked independently. */
  partition? (history: Array<Operation<I, O>>): Array<Array<Operation<I, O>>>
  /** A string that is equal for equal states (for the cache). Default: JSON.stringify. */
  stateKey? (state: S): string
  describeOperation? (input: I, output: O | undefined): string
}

export type CheckResult = 'ok' | 'illegal' | 'unknown'

export interface CheckReport<I, O> {
  result: CheckResult
  partitions: number
  /** The first part that is not linearizable (or that hit the budget). */
  failedPartition?: Array<Operation<I, O>>
  /** The longest linearizable prefix found in that part, in linearization order. */
  longestPrefix?: Array<Operation<I, O>>
  /** Search steps taken over all parts. */
  steps: number
}

export interface CheckOptions {
  /** Give up with 'unknown' after this many search steps per part. Default 5 million. */
  maxSteps?: number
}

interface Node {
  /** Operation index within its part. */
  id: number
  isCall: boolean
  time: number
  /** For a call, its return event. */
  match: Node | null
  prev: Node | null
  next: Node | null
}

/** Check a whole history: each part from `model.partition` on its own. */
export function checkOperations<S, I, O> (model: Model<S, I, O>, history: Array<Operation<I, O>>, opts: CheckOptions = {}): CheckReport<I, O> {
  const parts = model.partition !== undefined ? model.partition(history) : [history]
  let steps = 0
  let unknown: CheckReport<I, O> | null = null
  for (const part of parts) {
    const r = checkPart(model, part, opts.maxSteps ?? 5_000_000)
    steps += r.steps
    if (r.result === 'illegal') {
      return { result: 'illegal', partitions: parts.length, failedPartition: part, longestPrefix: r.longest, steps }
    }
    if (r.result === 'unknown' && unknown === null) {
      unknown = { result: 'unknown', partitions: parts.length, failedPartition: part, steps: 0 }
    }
  }
  if (unknown !== null) return { ...unknown, steps }
  return { result: 'ok', partitions: parts.length, steps }
}

/** Build the doubly linked list of call and return events, in time order, with a head sentinel. */
function makeEvents<I, O> (ops: Array<Operation<I, O>>): Node {
  const events: Node[] = []
  ops.forEach((op, id) => {
    if (!(op.return >= op.call)) throw new RangeError(`lincheck: operation ${id} returns (${op.return}) before its call (${op.call})`)
    const ret: Node = { id, isCall: false, time: op.return, match: null, prev: null, next: null }
    const call: Node = { id, isCall: true, time: op.call, match: ret, prev: null, next: null }
    events.push(call, ret)
  })
  // Equal times: calls first, so operations that touch at one instant count as concurrent.
  events.sort((a, b) => a.time !== b.time ? a.time - b.time : (a.isCall === b.isCall ? 0 : a.isCall ? -1 : 1))
  const head: Node = { id: -1, isCall: false, time: -Infinity, match: null, prev: null, next: null }
  let last = head
  for (const e of events) { last.next = e; e.prev = last; last = e }
  return head
}

/** Take a call and its return out of the list. */
function lift (call: Node): void {
  call.prev!.next = call.next
  if (call.next !== null) call.next.prev = call.prev
  const ret = call.match!
  ret.prev!.next = ret.next
  if (ret.next !== null) ret.next.prev = ret.prev
}

/** Put them back (in the reverse order of lift). */
function unlift (call: Node): void {
  const ret = call.match!
  ret.prev!.next = ret
  if (ret.next !== null) ret.next.prev = ret
  call.prev!.next = call
  if (call.next !== null) call.next.prev = call
}

class Bitset {
  readonly words: Uint32Array
  constructor (n: number) { this.words = new Uint32Array(Math.ceil(n / 32) || 1) }
  set (i: number): void { this.words[i >>> 5]! |= 1 << (i & 31) }
  clear (i: number): void { this.words[i >>> 5]! &= ~(1 << (i & 31)) }
  /** The key with bit `i` also set, without changing this set. */
  keyWith (i: number): string {
    const w = i >>> 5
    let s = ''
    for (let k = 0; k < this.words.length; k++) {
      const v = k === w ? (this.words[k]! | (1 << (i & 31))) >>> 0 : this.words[k]!
      s += v.toString(36) + ','
    }
    return s
  }
}

function checkPart<S, I, O> (model: Model<S, I, O>, ops: Array<Operation<I, O>>, maxSteps: number): { result: CheckResult, longest: Array<Operation<I, O>>, steps: number } {
  const stateKey = model.stateKey ?? ((s: S) => JSON.stringify(s))
  const head = makeEvents(ops)
  const linearized = new Bitset(ops.length)
  const cache = new Set<string>()
  const calls: Array<{ node: Node, state: S }> = []
  let longest: number[] = []
  let state = model.init()
  let entry = head.next
  let steps = 0
  while (head.next !== null) {
    if (++steps > maxSteps) return { result: 'unknown', longest: [], steps }
    if (entry === null) throw new Error('lincheck: ran off the event list') // cannot happen: a return ends every pending call
    if (entry.isCall) {
      const op = ops[entry.id]!
      const output = op.return === Infinity ? undefined : op.output
      const [ok, next] = model.step(state, op.input, output)
      if (ok) {
        const key = linearized.keyWith(entry.id) + '|' + stateKey(next)
        if (!cache.has(key)) {
          cache.add(key)
          calls.push({ node: entry, state })
          state = next
          linearized.set(entry.id)
          lift(entry)
          entry = head.next
          continue
        }
      }
      entry = entry.next
    } else {
      // A return whose call is still pending: nothing linearizes it here, so backtrack.
      if (calls.length === 0) {
        return { result: 'illegal', longest: longest.map(i => ops[i]!), steps }
      }
      if (calls.length > longest.length) longest = calls.map(c => c.node.id)
      const top = calls.pop()!
      state = top.state
      linearized.clear(top.node.id)
      unlift(top.node)
      entry = top.node.next
    }
  }
  return { result: 'ok', longest: [], steps }
}
