import type { Forwarding } from './forwarded.js'
import type { Logger } from 'pino'
import type { BlobStore, UploadStore } from '../../storage/blobs/blob-store.js'
import type { MetadataQueries } from '../../cluster/metadata/queries.js'
import type { CommandSink } from '../../cluster/metadata/applier.js'
import type { Command } from '../../cluster/metadata/commands.js'
import { FlotillaError } from '../../storage/errors.js'
import type { Readable } from 'node:stream'
import type { ByteRange } from '../../storage/blobs/blob-store.js'
import type { Digest } from '../../storage/reference.js'
import { requestActor, shouldAudit } from '../auth/context.js'
import type { AuthService } from '../auth/service.js'
import type { UploadMirror } from '../../cluster/replication/upload-mirror.js'
import type { Collector, InUse } from '../../cluster/gc/collector.js'
import type { RetentionRunner } from '../../cluster/retention/runner.js'
import type { DiskState } from '../../storage/disk-watch.js'
import type { HookDeliverer } from '../../cluster/hooks/deliverer.js'
import type { PullRecorder } from '../../cluster/retention/pulls.js'
import type { PeerClient, PeerTarget } from '../../net/peer-https.js'
import type { SearchService } from './search.js'
import type { RemoteService } from './remote.js'
import type { CachedList } from './cached-list.js'
import type { VirtualRepo } from '../../cluster/metadata/virtual.js'

/** Blobs across nodes: present in a cluster, absent on a lone node in tests. */
export interface BlobReplication {
  /**
   * Stream a blob this node lacks from a peer that holds it (storing a whole-blob read here at
   * the same time). Undefined when no holder answers.
   */
  fetchThrough (digest: Digest, range?: ByteRange): Promise<Readable | undefined>
  /** Resolve once every blob is durable on the write quorum of nodes. */
  waitForCopies (digests: string[]): Promise<void>
  /** Where to reach another member for node-to-node HTTP (e.g. the owner of an upload session). */
  peerTarget (peerId: string): PeerTarget | undefined
  /** Node-to-node HTTP over the members' peer ports (net/peer-https.ts). */
  peers: PeerClient
  /** Copies of uploads made while they arrive (cluster/replication/upload-mirror.ts). */
  mirror?: Pick<UploadMirror, 'wants' | 'tee' | 'commit' | 'abandon'>
  /** Marks on requests passed to another node (forwarded.ts). */
  forwarding: Forwarding
}

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
  replication?: BlobReplication
  /** Wall clock, injectable for tests. */
  now: () => number
  /** Authentication and access control (src/auth/); every route goes through it. */
  auth: AuthService
  /** Garbage collection: requests hold the digests they are about to reference (cluster/gc/). */
  gc?: { collector: Collector; inUse: InUse; graceMs: number }
  /**
   * This node's disk against its watermarks (storage/disk-watch.ts), and a member (peer id)
   * with room for an upload this node is too full to take (undefined: none).
   */
  disk?: { state: () => DiskState; roomElsewhere: () => Promise<string | undefined> }
  /** Webhook deliveries, sent by the leader (cluster/hooks/). */
  hooks?: HookDeliverer
  /** Whether a promotion carries user properties when the request does not say (config properties.promote). */
  promoteProperties?: boolean
  /** Retention policies, and the pull times they may use (cluster/retention/). */
  retention?: { runner: RetentionRunner; pulls: PullRecorder }
  /** Search and latest-version lookups over the state machine's indexes (search.ts). */
  search?: SearchService
  /** Remote repositories, pull-through caches of other registries (remote.ts). */
  remotes?: RemoteService
  /** The virtual repositories, kept in memory (virtual.ts; the node drops it on PutVirtual/DeleteVirtual). */
  virtuals?: CachedList<VirtualRepo>
}

/** Submit a command and turn a refusal into the error it names. */
export async function submit (deps: RegistryDeps, command: Command): Promise<unknown> {
  // Inside a request, the command is applied together with its audit entry (src/auth/context.ts).
  const actor = requestActor.getStore()
  const r = await deps.sink.submit(actor !== undefined && shouldAudit(command.type) ? { type: 'Audited', actor: { ...actor, at: deps.now() }, command } : command)
  if (!r.ok) throw new FlotillaError(r.code, r.message)
  return r.value
}
