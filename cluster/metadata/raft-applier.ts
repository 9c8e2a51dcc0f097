/**
 * Commands through the Raft log. submit() proposes on this node (a follower forwards to the
 * leader), and resolves once the command is committed and applied here, so the caller reads
 * its own write on this node. Each command carries this node's client id and a sequence
 * number: a retry after an unknown outcome (leader lost, timeout) is deduplicated by the
 * state machine instead of being applied twice.
 */
import { randomBytes } from 'node:crypto'
import type { RaftDriver } from '../raft/driver.js'
import { ErrLeadershipLost, ErrNotLeader, ErrProposalDropped, ErrProposalTooLarge, ErrTimeout } from '../raft/errors.js'
import { FlotillaError } from '../../storage/errors.js'
import type { CommandSink } from './applier.js'
import { encodeEnvelope, type Command, type CommandResult } from './commands.js'

const RETRYABLE = new Set<unknown>([ErrLeadershipLost, ErrNotLeader, ErrProposalDropped, ErrTimeout])

export interface RaftApplierOptions {
  /** Give up (503) after this long without a leader or a commit. Default 15 s. */
  deadlineMs?: number
  /** Serve tag and manifest reads from local state without a ReadIndex round (may be stale). */
  localReads?: boolean
}

export class RaftApplier implements CommandSink {
  /** Unique per process; with the counter it names each command (concurrent submits never share one). */
  private readonly prefix = randomBytes(9).toString('base64url')
  private counter = 0
  private readonly deadlineMs: number
  private readonly localReads: boolean

  constructor (private readonly driver: RaftDriver, opts: RaftApplierOptions = {}) {
    this.deadlineMs = opts.deadlineMs ?? 15_000
    this.localReads = opts.localReads ?? false
  }

  async submit (command: Command): Promise<CommandResult> {
    // One client id per command, sequence 1: its retries (same bytes) are deduplicated.
    const data = encodeEnvelope({ clientId: `${this.prefix}.${++this.counter}`, seq: 1, at: Date.now(), command })
    if (data.byteLength > this.driver.maxProposalBytes) throw tooLarge(data.byteLength, this.driver.maxProposalBytes)
    const deadline = Date.now() + this.deadlineMs
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.driver.propose(data, { timeoutMs: Math.max(1, Math.min(5000, deadline - Date.now())) }) as CommandResult
      } catch (err) {
        if (err === ErrProposalTooLarge) throw tooLarge(data.byteLength, this.driver.maxProposalBytes)
        if (!RETRYABLE.has(err) || Date.now() >= deadline) throw unavailable(err)
        await new Promise((resolve) => setTimeout(resolve, Math.min(50 * 2 ** attempt, 500)))
      }
    }
  }

  /**
   * Resolve once this node has applied every write committed before the call. Concurrent
   * callers share ReadIndex rounds, as etcd's read loop does: a call that finds no round under
   * way starts one; a call that finds one under way waits for the next, which starts when that
   * one ends (the round under way may have fixed its read index before the call came in).
   */
  async barrier (): Promise<void> {
    if (this.localReads) return
    if (this.round === undefined) return await this.startRound()
    this.nextRound ??= this.round.then(() => {}, () => {}).then(async () => {
      this.nextRound = undefined
      await this.startRound()
    })
    return await this.nextRound
  }

  private round: Promise<void> | undefined
  private nextRound: Promise<void> | undefined

  private async startRound (): Promise<void> {
    const round = this.readRound()
    this.round = round
    try {
      await round
    } finally {
      if (this.round === round) this.round = undefined
    }
  }

  private async readRound (): Promise<void> {
    const deadline = Date.now() + this.deadlineMs
    for (let attempt = 0; ; attempt++) {
      try {
        // A ReadIndex the leader dropped (it stepped down, or the message was lost) is never
        // answered: ask again soon, as etcd's read loop does, backing off for a slow cluster.
        await this.driver.linearizableRead({ timeoutMs: Math.max(1, Math.min(500 * 2 ** attempt, 5000, deadline - Date.now())) })
        return
      } catch (err) {
        if (!RETRYABLE.has(err) || Date.now() >= deadline) throw unavailable(err)
        await new Promise((resolve) => setTimeout(resolve, Math.min(50 * 2 ** attempt, 500)))
      }
    }
  }
}

function tooLarge (bytes: number, limit: number): FlotillaError {
  return new FlotillaError('COMMAND_TOO_LARGE', `this change is a ${bytes}-byte command, over the ${limit} bytes the cluster can replicate in one Raft entry: lower limits.manifestMaxBytes, or make the request smaller`, { bytes, limit })
}

function unavailable (err: unknown): FlotillaError {
  return new FlotillaError('UNAVAILABLE', `the cluster could not commit in time (${(err as Error).message}): is a majority of the voters up and connected? See flotilla status`)
}
