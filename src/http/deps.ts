import type { Logger } from 'pino'
import type { BlobStore, UploadStore } from '../../storage/blobs/blob-store.js'
import type { MetadataQueries } from '../../cluster/metadata/queries.js'
import type { CommandSink } from '../../cluster/metadata/applier.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { FlotillaError } from '../../storage/errors.js'

/** What the registry handlers need; the node wires it up. */
export interface RegistryDeps {
  nodeId: string
  blobs: BlobStore
  uploads: UploadStore
  queries: MetadataQueries
  sink: CommandSink
  log: Logger
  limits: { manifestMaxBytes: number }
  /** When false, DELETE of blobs and manifests answers 405. */
  deleteEnabled: boolean
  /** Wall clock, injectable for tests. */
  now: () => number
}

/** Submit a command and turn a refusal into the error it names. */
export async function submit (deps: RegistryDeps, command: Command): Promise<unknown> {
  const r = await deps.sink.submit(command)
  if (!r.ok) throw new FlotillaError(r.code, r.message)
  return r.value
}
