/**
 * Where commands go. A single node applies them directly, one at a time; a cluster
 * proposes them to the Raft log and answers once they are committed and applied here.
 */
import type { Command, CommandResult } from './commands.js'
import type { MetadataStateMachine } from './state-machine.js'

export interface CommandSink {
  /** Resolves once the command is durable and applied (committed, in a cluster). */
  submit (command: Command): Promise<CommandResult>
  /** Resolves once local reads reflect every command committed before the call (ReadIndex in a cluster). */
  barrier (): Promise<void>
}

/** Applies commands in arrival order on this node; the state machine fsyncs each batch. */
export class LocalApplier implements CommandSink {
  private tail: Promise<unknown> = Promise.resolve()
  constructor (private readonly sm: MetadataStateMachine) {}

  async submit (command: Command): Promise<CommandResult> {
    // `at` dates what the command makes unreferenced (GC's grace), as Raft envelopes do.
    const run = this.tail.then(async () => await this.sm.apply({ at: Date.now(), command }))
    this.tail = run.catch(() => undefined)
    return await run
  }

  async barrier (): Promise<void> {
    await this.tail
  }
}
