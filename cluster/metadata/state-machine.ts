/**
 * The metadata state machine. It is the only writer of metadata: a single node applies
 * commands directly, a cluster applies them as the Raft log commits them. apply() reads the
 * current state, decides, and writes all of a command's effects in one atomic batch, so a
 * crash leaves either all of a command or none of it.
 *
 * Determinism: the result depends only on the state and the command (time travels inside
 * the command), so every node that applies the same log reaches the same state.
 */
import type { KV, KVOp } from '../../storage/kv/kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { FlotillaError } from '../../storage/errors.js'
import { key } from './keys.js'
import { isAccessCommand } from '../access/commands.js'
import { applyAccess, applyAudited, guardImmutable } from '../access/apply.js'
import { collect, maintainRefs, rebuildRefs } from './refs.js'
import { checkPolicy } from '../retention/policy.js'
import { deleteQuota, maintainQuotas, putQuota } from './quotas.js'
import { maintainSearch, rebuildSearch } from './search-index.js'
import { deleteHook, putHook, queueEvents, recordResult } from '../hooks/hooks.js'
import { deleteVirtual, guardVirtualNames, putVirtual } from './virtual.js'
import { isPeeringCommand } from '../peering/commands.js'
import { appendFeed, applyPeering } from '../peering/apply.js'
import { applyProperties, isPropertyCommand, maintainProperties } from './properties.js'
import { applyRemote } from '../remote/apply.js'
import type { Command, CommandResult, DescriptorRecord, Envelope, ManifestRecord, MemberRecord, UploadRecord } from './commands.js'

const enc = new TextEncoder()
const dec = new TextDecoder()

export function encodeJSON (v: unknown): Uint8Array { return enc.encode(JSON.stringify(v)) }
export function decodeJSON<T> (b: Uint8Array): T { return JSON.parse(dec.decode(b)) as T }

/** Reads see the transaction's own writes; writes become one batch. */
class Tx {
  private readonly pending = new Map<string, Uint8Array | null>()
  constructor (private readonly kv: KV) {}

  async get (k: string): Promise<Uint8Array | undefined> {
    const p = this.pending.get(k)
    if (p !== undefined) return p ?? undefined
    return await this.kv.get(k)
  }

  async getJSON<T> (k: string): Promise<T | undefined> {
    const v = await this.get(k)
    return v === undefined ? undefined : decodeJSON<T>(v)
  }

  /** Keys under a prefix, merged with this transaction's pending writes. */
  async keys (prefix: string): Promise<string[]> {
    const out = new Set<string>()
    for await (const [k] of this.kv.entries(prefixRange(prefix))) out.add(k)
    for (const [k, v] of this.pending) {
      if (!k.startsWith(prefix)) continue
      if (v === null) out.delete(k); else out.add(k)
    }
    return [...out].sort()
  }

  /**
   * Entries under a prefix, lazily (a caller that stops early reads no further), with this
   * transaction's writes merged: its deletes skipped, its values seen, its new keys last.
   */
  async * scan (prefix: string): AsyncIterable<[string, Uint8Array]> {
    const seen = new Set<string>()
    for await (const [k, v] of this.kv.entries(prefixRange(prefix))) {
      seen.add(k)
      const p = this.pending.get(k)
      if (p === null) continue
      yield [k, p ?? v]
    }
    const added = [...this.pending].filter(([k, v]) => v !== null && k.startsWith(prefix) && !seen.has(k)).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
    for (const [k, v] of added) yield [k, v as Uint8Array]
  }

  put (k: string, v: Uint8Array): void { this.pending.set(k, v) }
  putJSON (k: string, v: unknown): void { this.pending.set(k, encodeJSON(v)) }
  del (k: string): void { this.pending.set(k, null) }
  clear (): void { this.pending.clear() }

  /** This transaction's writes in the order they were first made (null: a delete). */
  writes (): Iterable<[string, Uint8Array | null]> { return this.pending.entries() }
  /** A key's value before this transaction. */
  async before (k: string): Promise<Uint8Array | undefined> { return await this.kv.get(k) }

  ops (): KVOp[] {
    const ops: KVOp[] = []
    for (const [k, v] of this.pending) ops.push(v === null ? { type: 'del', key: k } : { type: 'put', key: k, value: v })
    return ops
  }
}

/** When a command was made (ms): its own time, else its envelope's (0 when it has neither). */
function commandTime (env: Envelope): number {
  const c = env.command.type === 'Audited' ? env.command.command : env.command
  const at = (c as { at?: unknown }).at
  return typeof at === 'number' ? at : env.at ?? 0
}

interface SessionRecord { seq: number; result: CommandResult; at: number }

export interface StateMachineOptions {
  /**
   * fsync each applied batch. A single node must (its metadata is the only copy);
   * a Raft member need not, since it replays the durable log after a crash.
   */
  sync: boolean
  /** Keep the search indexes (search-index.ts); false only for the benchmark's baseline (bench:search). */
  searchIndex?: boolean
}

export class MetadataStateMachine {
  constructor (private readonly kv: KV, private readonly opts: StateMachineOptions) {}

  async appliedIndex (): Promise<number> {
    const v = await this.kv.get(key.applied())
    return v === undefined ? 0 : decodeJSON<{ index: number }>(v).index
  }

  /** Apply one command. Callers must not call apply() concurrently. */
  async apply (env: Envelope, index?: number): Promise<CommandResult> {
    const tx = new Tx(this.kv)
    const dedup = env.clientId !== undefined && env.seq !== undefined
    let result: CommandResult | undefined
    if (dedup) {
      const s = await tx.getJSON<SessionRecord>(key.session(env.clientId!))
      if (s !== undefined && s.seq >= env.seq!) {
        // A retry of a command already applied: answer as the first time, change nothing.
        result = s.seq === env.seq ? s.result : { ok: false, code: 'BAD_REQUEST', message: `command sequence ${env.seq!} is older than ${s.seq} already applied for this client` }
      }
    }
    if (result === undefined) {
      const at = commandTime(env)
      try {
        const c = env.command
        // An audited command's refusal (a quota breach found below included) keeps its audit entry.
        result = c.type === 'Audited' ? await applyAudited(tx, c, async (inner) => await this.execDerived(tx, inner, at)) : await this.execDerived(tx, c, at)
        // This site's own replicable changes go to its change feed (cluster/peering/apply.ts);
        // changes received from another site keep their origin and are not shipped again.
        const inner = c.type === 'Audited' ? c.command : c
        if (result.ok && !isPeeringCommand(inner)) await appendFeed(tx, at)
      } catch (err) {
        if (!(err instanceof FlotillaError)) throw err
        tx.clear()
        result = { ok: false, code: err.code, message: err.message }
      }
      // Webhooks: the events of what was applied, and of some refusals (cluster/hooks/).
      await queueEvents(tx, env.command, result, at)
      if (dedup) tx.putJSON(key.session(env.clientId!), { seq: env.seq, result, at: env.at ?? 0 })
    }
    if (index !== undefined) tx.putJSON(key.applied(), { index })
    const ops = tx.ops()
    if (ops.length > 0) await this.kv.batch(ops, { sync: this.opts.sync })
    return result
  }

  /**
   * What `command` would do now, written nowhere: GC's dry run. Callers must not call it
   * concurrently with apply() (the state may move under it).
   */
  async preview (command: Command): Promise<CommandResult> {
    try {
      return await this.exec(new Tx(this.kv), command)
    } catch (err) {
      if (!(err instanceof FlotillaError)) throw err
      return { ok: false, code: err.code, message: err.message }
    }
  }

  /**
   * A command, then what follows from its writes: GC's reference counts (refs.ts) and the
   * quotas' usage (quotas.ts; a breach refuses the command). Exactly once per command.
   */
  private async execDerived (tx: Tx, c: Command, at: number): Promise<CommandResult> {
    const result = await this.exec(tx, c)
    if (result.ok) {
      await maintainRefs(tx, at)
      await maintainQuotas(tx)
      await guardVirtualNames(tx)
      await maintainProperties(tx)
      if (this.opts.searchIndex !== false) await maintainSearch(tx)
    }
    return result
  }

  private async exec (tx: Tx, c: Command): Promise<CommandResult> {
    if (c.type === 'Audited') return await applyAudited(tx, c, async (inner) => await this.exec(tx, inner))
    if (isAccessCommand(c)) return await applyAccess(tx, c)
    if (isPeeringCommand(c)) return await applyPeering(tx, c, async (inner) => await this.exec(tx, inner))
    // Properties describe an image; an immutable tag does not freeze them.
    if (isPropertyCommand(c)) return await applyProperties(tx, c)
    await guardImmutable(tx, c)
    switch (c.type) {
      case 'CreateUpload': {
        const rec: UploadRecord = { repo: c.repo, owner: c.owner, at: c.at, algorithm: c.algorithm }
        tx.putJSON(key.upload(c.id), rec)
        return { ok: true }
      }
      case 'DeleteUpload': {
        if (await tx.get(key.upload(c.id)) === undefined) throw new FlotillaError('BLOB_UPLOAD_UNKNOWN', `upload ${c.id} is unknown`)
        tx.del(key.upload(c.id))
        return { ok: true }
      }
      case 'LinkBlob': {
        // A mount links bytes some node already holds: they must still be known (GC may have
        // forgotten them since the mount was checked), else the client uploads them again.
        if (c.mount === true && await tx.get(key.blob(c.digest)) === undefined) {
          throw new FlotillaError('BLOB_UNKNOWN', `blob ${c.digest} is no longer in the registry: upload it`, { digest: c.digest })
        }
        if (c.uploadId !== undefined) {
          const up = await tx.getJSON<UploadRecord>(key.upload(c.uploadId))
          if (up === undefined || up.repo !== c.repo) throw new FlotillaError('BLOB_UPLOAD_UNKNOWN', `upload ${c.uploadId} is unknown in ${c.repo}`)
          tx.del(key.upload(c.uploadId))
        }
        await this.link(tx, c.repo, c.digest, c.size, c.at)
        if (c.holder !== undefined) tx.putJSON(key.holder(c.digest, c.holder), {})
        return { ok: true }
      }
      case 'AddHolder': {
        tx.putJSON(key.holder(c.digest, c.peerId), {})
        const b = await tx.getJSON<{ size: number; links: number }>(key.blob(c.digest))
        if (b === undefined) tx.putJSON(key.blob(c.digest), { size: c.size, links: 0 })
        return { ok: true }
      }
      case 'DropHolder': {
        if (await tx.get(key.holder(c.digest, c.peerId)) === undefined) return { ok: true, value: { dropped: false } }
        const holders = await tx.keys(key.holderPrefix(c.digest))
        if (holders.length <= 1) throw new FlotillaError('DENIED', `${c.peerId} is the only recorded holder of blob ${c.digest}: its copy stays`)
        tx.del(key.holder(c.digest, c.peerId))
        return { ok: true, value: { dropped: true } }
      }
      case 'UnlinkBlob': {
        if (await tx.get(key.link(c.repo, c.digest)) === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${c.digest} is not in ${c.repo}`)
        tx.del(key.link(c.repo, c.digest))
        const b = await tx.getJSON<{ size: number; links: number }>(key.blob(c.digest))
        // links reaching zero leaves the record for garbage collection to find.
        if (b !== undefined) tx.putJSON(key.blob(c.digest), { size: b.size, links: Math.max(0, b.links - 1) })
        return { ok: true }
      }
      case 'PutManifest':
        return await this.putManifest(tx, c)
      case 'InitCluster': {
        if (await tx.get(key.clusterInfo()) !== undefined) throw new FlotillaError('BAD_REQUEST', 'the cluster is already initialized')
        tx.putJSON(key.clusterInfo(), { clusterId: c.clusterId, secret: c.secret })
        return { ok: true }
      }
      case 'AddPeer': {
        if (await tx.get(key.removed(c.peerId)) !== undefined) {
          throw new FlotillaError('DENIED', `peer ${c.peerId} was removed from this cluster and cannot rejoin: start the node on a fresh data dir to get a new identity`)
        }
        const rec: MemberRecord = { peerId: c.peerId, p2p: c.p2p, http: c.http, ...(c.peer !== undefined ? { peer: c.peer } : {}), at: c.at }
        if (c.site !== undefined) rec.site = c.site
        tx.putJSON(key.member(c.peerId), rec)
        return { ok: true }
      }
      case 'RemovePeer': {
        tx.del(key.member(c.peerId))
        tx.putJSON(key.removed(c.peerId), { at: c.at })
        return { ok: true }
      }
      case 'IssueJoinToken': {
        if (c.id === '' || !(c.expiresAt > c.at)) throw new FlotillaError('BAD_REQUEST', 'a join token needs an id and an expiry after its issue time')
        // Forget the tokens expired by now (the command's time, so every node drops the same ones).
        for (const k of await tx.keys(key.joinTokenPrefix())) {
          const rec = await tx.getJSON<{ expiresAt: number }>(k)
          if (rec !== undefined && rec.expiresAt <= c.at) tx.del(k)
        }
        tx.putJSON(key.joinToken(c.id), { expiresAt: c.expiresAt })
        return { ok: true }
      }
      case 'ExpireSessions': {
        for (const k of await tx.keys(key.sessionPrefix())) {
          const rec = await tx.getJSON<SessionRecord>(k)
          if (rec !== undefined && rec.at < c.before) tx.del(k)
        }
        return { ok: true }
      }
      case 'RebuildRefs':
        return { ok: true, value: await rebuildRefs(tx, c.at) }
      case 'RebuildSearchIndex':
        return { ok: true, value: await rebuildSearch(tx) }
      case 'CollectGarbage': {
        if (await tx.get(key.refsVersion()) === undefined) throw new FlotillaError('UNAVAILABLE', 'reference counts are not built yet: the collector rebuilds them first (RebuildRefs), retry')
        return { ok: true, value: await collect(tx, c.before, new Set(c.keep), c.limit ?? Infinity) }
      }
      case 'PutRetention': {
        checkPolicy(c.policy)
        tx.putJSON(key.retention(c.policy.name), c.policy)
        return { ok: true }
      }
      case 'DeleteRetention': {
        if (await tx.get(key.retention(c.name)) === undefined) throw new FlotillaError('NOT_FOUND', `no retention policy named ${c.name}`)
        tx.del(key.retention(c.name))
        return { ok: true }
      }
      case 'PutHook':
        await putHook(tx, c.hook)
        return { ok: true }
      case 'DeleteHook':
        await deleteHook(tx, c.name)
        return { ok: true }
      case 'HookResult':
        await recordResult(tx, c)
        return { ok: true }
      case 'PutQuota':
        return { ok: true, value: await putQuota(tx, c.quota) }
      case 'DeleteQuota':
        await deleteQuota(tx, c.name)
        return { ok: true }
      case 'PutVirtual':
        return { ok: true, value: await putVirtual(tx, c.virtual) }
      case 'DeleteVirtual':
        await deleteVirtual(tx, c.name)
        return { ok: true }
      case 'PutRemote':
      case 'DeleteRemote':
      case 'RemoteTagChecked':
        return await applyRemote(tx, c)
      case 'RecordPulls': {
        for (const p of c.pulls) {
          // A pull of a manifest deleted since is not worth remembering.
          if (await tx.get(key.manifest(p.repo, p.digest)) === undefined) continue
          const was = await tx.getJSON<{ at: number }>(key.pulled(p.repo, p.digest))
          if (was === undefined || was.at < p.at) tx.putJSON(key.pulled(p.repo, p.digest), { at: p.at })
        }
        return { ok: true }
      }
      case 'DeleteTag': {
        const t = await tx.getJSON<{ digest: string }>(key.tag(c.repo, c.tag))
        if (t === undefined) throw new FlotillaError('MANIFEST_UNKNOWN', `tag ${c.tag} is unknown in ${c.repo}`)
        tx.del(key.tag(c.repo, c.tag))
        tx.del(key.tagsOf(c.repo, t.digest, c.tag))
        return { ok: true }
      }
      case 'DeleteManifest': {
        const m = await tx.getJSON<ManifestRecord>(key.manifest(c.repo, c.digest))
        if (m === undefined) throw new FlotillaError('MANIFEST_UNKNOWN', `manifest ${c.digest} is unknown in ${c.repo}`)
        tx.del(key.manifest(c.repo, c.digest))
        tx.del(key.body(c.repo, c.digest))
        const prefix = key.tagsOfPrefix(c.repo, c.digest)
        for (const k of await tx.keys(prefix)) {
          tx.del(k)
          tx.del(key.tag(c.repo, k.slice(prefix.length)))
        }
        if (m.subject !== undefined) tx.del(key.referrer(c.repo, m.subject, c.digest))
        tx.del(key.pulled(c.repo, c.digest))
        return { ok: true }
      }
    }
  }

  private async link (tx: Tx, repo: string, digest: string, size: number, at: number): Promise<void> {
    await this.ensureRepo(tx, repo, at)
    // Linked again (uploaded or mounted anew): rewritten, so that GC's grace counts from now
    // for a link nothing references yet (refs.ts), without counting the repository twice.
    if (await tx.get(key.link(repo, digest)) !== undefined) { tx.putJSON(key.link(repo, digest), { size, at }); return }
    tx.putJSON(key.link(repo, digest), { size, at })
    const b = await tx.getJSON<{ size: number; links: number }>(key.blob(digest))
    tx.putJSON(key.blob(digest), { size, links: (b?.links ?? 0) + 1 })
  }

  private async ensureRepo (tx: Tx, repo: string, at: number): Promise<void> {
    if (await tx.get(key.repo(repo)) === undefined) tx.putJSON(key.repo(repo), { at })
  }

  private async putManifest (tx: Tx, c: Extract<Command, { type: 'PutManifest' }>): Promise<CommandResult> {
    // Checked here, not only by the HTTP layer, so a blob deleted by a command
    // committed just before this one cannot leave a dangling manifest. A manifest cached
    // from a remote (partial) gets its blobs as they are first pulled.
    for (const d of c.partial === true ? [] : c.blobs) {
      if (await tx.get(key.link(c.repo, d)) === undefined) {
        throw new FlotillaError('MANIFEST_BLOB_UNKNOWN', `manifest references blob ${d}, which is not in ${c.repo}: push the blob first`, { digest: d })
      }
    }
    for (const d of c.partial === true ? [] : c.manifests) {
      if (await tx.get(key.manifest(c.repo, d)) === undefined) {
        throw new FlotillaError('MANIFEST_BLOB_UNKNOWN', `index references manifest ${d}, which is not in ${c.repo}: push the child manifest first`, { digest: d })
      }
    }
    await this.ensureRepo(tx, c.repo, c.at)
    const body = Buffer.from(c.body, 'base64')
    const rec: ManifestRecord = { mediaType: c.mediaType, size: body.length, at: c.at, blobs: c.blobs, manifests: c.manifests }
    if (c.subject !== undefined) rec.subject = c.subject
    if (c.artifactType !== undefined) rec.artifactType = c.artifactType
    if (c.annotations !== undefined) rec.annotations = c.annotations
    // A manifest put again without them (a tag moved by another site) keeps its config's labels.
    const labels = c.labels ?? (await tx.getJSON<ManifestRecord>(key.manifest(c.repo, c.digest)))?.labels
    if (labels !== undefined) rec.labels = labels
    if (c.partial === true) rec.cached = true
    tx.putJSON(key.manifest(c.repo, c.digest), rec)
    tx.put(key.body(c.repo, c.digest), body)
    for (const tag of c.tags) {
      const old = await tx.getJSON<{ digest: string }>(key.tag(c.repo, tag))
      if (old !== undefined && old.digest !== c.digest) tx.del(key.tagsOf(c.repo, old.digest, tag))
      tx.putJSON(key.tag(c.repo, tag), { digest: c.digest, at: c.at })
      tx.putJSON(key.tagsOf(c.repo, c.digest, tag), {})
    }
    if (c.subject !== undefined) {
      const desc: DescriptorRecord = { mediaType: c.mediaType, digest: c.digest, size: body.length }
      if (c.artifactType !== undefined) desc.artifactType = c.artifactType
      if (c.annotations !== undefined) desc.annotations = c.annotations
      tx.putJSON(key.referrer(c.repo, c.subject, c.digest), desc)
    }
    return { ok: true }
  }
}
