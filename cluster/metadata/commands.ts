/**
 * Every metadata change is one of these commands. They are plain JSON so the Raft log can
 * carry them; everything the state machine needs (time included) is inside the command,
 * which keeps apply() deterministic on every node.
 */
import type { ErrorCode } from '../../storage/errors.js'
import type { AccessCommand, AuditedCommand } from '../access/commands.js'
import type { RetentionPolicy } from '../retention/policy.js'
import type { Quota } from './quotas.js'
import type { Hook } from '../hooks/hooks.js'
import type { PeeringCommand } from '../peering/commands.js'
import type { VirtualRepo } from './virtual.js'
import type { PropertyCommand } from './properties.js'
import type { RemoteRecord } from '../remote/model.js'

export interface DescriptorRecord {
  mediaType: string
  digest: string
  size: number
  artifactType?: string
  annotations?: Record<string, string>
}

export interface ManifestRecord {
  mediaType: string
  size: number
  at: number
  /** Blobs (config and layers) the manifest references. */
  blobs: string[]
  /** Child manifests (for an index). */
  manifests: string[]
  subject?: string
  artifactType?: string
  annotations?: Record<string, string>
  /** Labels and annotations of the image config (read-only properties, properties.ts). */
  labels?: Record<string, string>
  /** Cached from a remote's upstream (PutManifest partial): not shipped to peered sites. */
  cached?: boolean
}

export interface UploadRecord {
  repo: string
  /** Node that holds the upload's bytes. */
  owner: string
  at: number
  algorithm: 'sha256' | 'sha512'
}

export type Command =
  | { type: 'CreateUpload'; id: string; repo: string; owner: string; algorithm: 'sha256' | 'sha512'; at: number }
  | { type: 'DeleteUpload'; id: string }
  /** Make a durable blob servable from a repository; closes the upload it came from, if any. */
  | { type: 'LinkBlob'; repo: string; digest: string; size: number; uploadId?: string; holder?: string; mount?: boolean; at: number }
  /** A node has the blob durable on its disk. */
  | { type: 'AddHolder'; digest: string; size: number; peerId: string }
  /**
   * A node is about to delete its copy (garbage collection of a copy kept outside the blob's
   * placement). Refused when that node is the blob's only recorded holder.
   */
  | { type: 'DropHolder'; digest: string; peerId: string }
  | { type: 'UnlinkBlob'; repo: string; digest: string }
  | {
    type: 'PutManifest'
    repo: string
    digest: string
    /** base64 of the exact bytes pushed. */
    body: string
    mediaType: string
    tags: string[]
    blobs: string[]
    manifests: string[]
    subject?: string
    artifactType?: string
    annotations?: Record<string, string>
    /** The image config's labels and annotations, when the config blob was small and at hand. */
    labels?: Record<string, string>
    /**
     * A manifest cached from a remote's upstream (cluster/remote/): its blobs and child
     * manifests are fetched when first pulled, so they need not be in the repository yet.
     */
    partial?: boolean
    at: number
  }
  | { type: 'DeleteTag'; repo: string; tag: string }
  | { type: 'DeleteManifest'; repo: string; digest: string }
  /** Users, groups, permissions, tokens, immutability, audit, promotion: cluster/access/. */
  | AccessCommand
  /** Cross-site peerings, and changes received from another site: cluster/peering/. */
  | PeeringCommand
  /** Properties of manifests, checksums of blobs: properties.ts. */
  | PropertyCommand
  /** Any command, applied together with an audit entry naming who asked (cluster/access/apply.ts). */
  | AuditedCommand<Command>
  /** Create the cluster's shared secret (signs join tokens); once, by the founding node. */
  | { type: 'InitCluster'; clusterId: string; secret: string; at: number }
  /** Record a member's addresses; a removed peer id is refused forever. */
  | { type: 'AddPeer'; peerId: string; p2p: string[]; http: string; site?: string[]; peer?: string; at: number }
  | { type: 'RemovePeer'; peerId: string; at: number }
  /**
   * A join token was handed out (its JWT id and expiry, ms). While one is unexpired, members
   * let an unknown libp2p peer connect on probation to join (cluster/probation.ts). Records
   * that expired by `at` are dropped.
   */
  | { type: 'IssueJoinToken'; id: string; expiresAt: number; at: number }
  /** Recompute GC's reference counts from scratch (refs.ts); once, on a store that predates them. */
  | { type: 'RebuildRefs'; at: number }
  /** Build the search indexes from scratch (search-index.ts); once, on a store that predates them. */
  | { type: 'RebuildSearchIndex'; at: number }
  /**
   * Garbage collection (refs.ts collect): unlink blobs unreferenced since `before` (ms) and
   * forget blobs no repository links, except the digests in `keep`; at most `limit` of each.
   */
  | { type: 'CollectGarbage'; before: number; keep: string[]; limit?: number; at: number }
  /** Create or replace a retention policy (cluster/retention/policy.ts). */
  | { type: 'PutRetention'; policy: RetentionPolicy; at: number }
  | { type: 'DeleteRetention'; name: string; at: number }
  /** Webhooks (cluster/hooks/hooks.ts): a subscription, and the outcome of one delivery attempt. */
  | { type: 'PutHook'; hook: Hook; at: number }
  | { type: 'DeleteHook'; name: string; at: number }
  | { type: 'HookResult'; hook: string; seq: number; ok: boolean; status?: number; error?: string; at: number }
  /** Create or replace a storage quota, counting its namespace's usage now (quotas.ts). */
  | { type: 'PutQuota'; quota: Quota; at: number }
  | { type: 'DeleteQuota'; name: string; at: number }
  /** Create or replace a virtual repository (virtual.ts): a prefix resolved through members. */
  | { type: 'PutVirtual'; virtual: VirtualRepo; at: number }
  | { type: 'DeleteVirtual'; name: string; at: number }
  /** Remote repositories, pull-through caches of another registry (cluster/remote/model.ts). */
  | { type: 'PutRemote'; remote: RemoteRecord; at: number }
  | { type: 'DeleteRemote'; name: string; at: number }
  /** A remote's cached tag was checked upstream at `at` and still names `digest` (its TTL starts again). */
  | { type: 'RemoteTagChecked'; repo: string; tag: string; digest: string; at: number }
  /** Last pulls of manifests, batched by each node (cluster/retention/pulls.ts); a later time wins. */
  | { type: 'RecordPulls'; pulls: Array<{ repo: string; digest: string; at: number }> }
  /** Forget deduplication records of commands proposed before `before` (ms). */
  | { type: 'ExpireSessions'; before: number }

export interface MemberRecord {
  peerId: string
  p2p: string[]
  /** Its client API (HTTP) URL. */
  http: string
  /** The libp2p addresses other sites dial to reach this member (`sites.advertise`); p2p when absent. */
  site?: string[]
  /**
   * Its peer port (https://HOST:PORT, net/peer-https.ts), where all node-to-node HTTP goes.
   * Absent in records written before there was one: then node-to-node HTTP uses `http`.
   */
  peer?: string
  at: number
}

export type CommandResult =
  | { ok: true; value?: unknown }
  | { ok: false; code: ErrorCode; message: string }

/** A command as proposed: the client id and sequence number let retries be deduplicated. */
export interface Envelope {
  clientId?: string
  seq?: number
  /** When the command was first proposed (ms); dates its deduplication record. */
  at?: number
  command: Command
}

export function encodeEnvelope (e: Envelope): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(e))
}

export function decodeEnvelope (bytes: Uint8Array): Envelope {
  return JSON.parse(new TextDecoder().decode(bytes)) as Envelope
}
