/**
 * A key-value store of registers for the linearizability checker: put, get and
 * compare-and-set on string keys, partitioned per key (each key is an independent register).
 */
import type { Model, Operation } from './porcupine.js'

export type KvInput =
  | { op: 'put', key: string, value: string }
  | { op: 'get', key: string }
  | { op: 'cas', key: string, from: string | null, to: string }

/** get: the value read (null: absent). cas: whether it swapped. put: nothing to check. */
export type KvOutput =
  | { op: 'put' }
  | { op: 'get', value: string | null }
  | { op: 'cas', ok: boolean }

export type KvOperation = Operation<KvInput, KvOutput>

/** The model's state: the value of each key written so far. Immutable; a write copies it. */
export type KvState = Readonly<Record<string, string>>

function valueOf (s: KvState, key: string): string | null {
  return Object.prototype.hasOwnProperty.call(s, key) ? s[key]! : null
}

function withValue (s: KvState, key: string, value: string): KvState {
  return { ...s, [key]: value }
}

export const kvModel: Model<KvState, KvInput, KvOutput> = {
  init: () => ({}),

  step (state, input, output) {
    const cur = valueOf(state, input.key)
    switch (input.op) {
      case 'put':
        return [true, withValue(state, input.key, input.value)]
      case 'get':
        // An unknown get constrains nothing.
        if (output === undefined) return [true, state]
        return [output.op === 'get' && output.value === cur, state]
      case 'cas': {
        // A cas is deterministic given the state: it swaps exactly when the value matches.
        const swaps = cur === input.from
        if (output !== undefined && (output.op !== 'cas' || output.ok !== swaps)) return [false, state]
        return [true, swaps ? withValue(state, input.key, input.to) : state]
      }
    }
  },

  partition (history) {
    const byKey = new Map<string, KvOperation[]>()
    for (const op of history) {
      let part = byKey.get(op.input.key)
      if (part === undefined) byKey.set(op.input.key, part = [])
      part.push(op)
    }
    return [...byKey.values()].map(pruneUnobserved)
  },

  stateKey (s) {
    const keys = Object.keys(s)
    if (keys.length === 1) return keys[0]! + '=' + s[keys[0]!]!
    return JSON.stringify(keys.sort().map(k => [k, s[k]]))
  },

  describeOperation (input, output) {
    const out = output === undefined
      ? '?'
      : output.op === 'get' ? JSON.stringify(output.value) : output.op === 'cas' ? String(output.ok) : 'ok'
    switch (input.op) {
      case 'put': return `put(${input.key}, ${JSON.stringify(input.value)}) -> ${out}`
      case 'get': return `get(${input.key}) -> ${out}`
      case 'cas': return `cas(${input.key}, ${JSON.stringify(input.from)}, ${JSON.stringify(input.to)}) -> ${out}`
    }
  }
}

/**
 * Drop operations of unknown outcome that cannot matter, in a register of puts and gets:
 * an unknown get constrains nothing, and an unknown put whose value no completed get returned
 * can always be linearized after everything else (its return time is infinite). Keeping them
 * makes the search exponential in their number, which a long run with crashes easily reaches.
 *
 * Sound both ways for puts and gets: a linearization of the pruned history plus those puts at
 * the end is one of the whole; and removing such a put from a linearization of the whole leaves
 * no read that saw it. Parts with a cas are left whole (a cas observes more than a get).
 */
function pruneUnobserved (part: KvOperation[]): KvOperation[] {
  if (part.some((op) => op.input.op === 'cas')) return part
  const observed = new Set<string | null>()
  for (const op of part) if (op.output?.op === 'get') observed.add(op.output.value)
  return part.filter((op) => {
    if (op.return !== Infinity) return true
    if (op.input.op === 'get') return false
    return op.input.op !== 'put' || observed.has(op.input.value)
  })
}

/** A readable dump of a history (for failure reports), one operation a line, in call order. */
export function describeHistory (ops: KvOperation[]): string {
  return [...ops].sort((a, b) => a.call - b.call)
    .map(o => `[${o.call}, ${o.return === Infinity ? '∞' : o.return}] c${o.clientId} ${kvModel.describeOperation!(o.input, o.return === Infinity ? undefined : o.output)}`)
    .join('\n')
}
