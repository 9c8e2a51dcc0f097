/**
 * Reads over the access-control state. They never write; the state machine is the only writer.
 * Permission targets are cached until `acl␀version` moves, so a request costs one key read.
 */
import type { KV } from '../../storage/kv/kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { decodeJSON } from '../metadata/state-machine.js'
import { akey } from './keys.js'
import {
  ANONYMOUS, grantsAllow, matches,
  type Action, type AuditEntry, type Grant, type GroupRecord, type ImmutableRule, type PermissionTarget, type TokenRecord, type TokenView, type UserRecord, type UserView,
} from './model.js'

export interface AuditFilter {
  user?: string
  action?: string
  repo?: string
  outcome?: string
  since?: number
  until?: number
  /** Only entries with a sequence number below this one (paging backwards). */
  before?: number
  limit?: number
}

export class AccessQueries {
  private cache: { version: number; targets: PermissionTarget[] } | undefined
  private key: { key: string; kid: string } | undefined

  constructor (private readonly kv: KV) {}

  private async json<T> (k: string): Promise<T | undefined> {
    const v = await this.kv.get(k)
    return v === undefined ? undefined : decodeJSON<T>(v)
  }

  private async * scan<T> (prefix: string): AsyncIterable<[string, T]> {
    for await (const [k, v] of this.kv.entries(prefixRange(prefix))) yield [k.slice(prefix.length), decodeJSON<T>(v)]
  }

  async version (): Promise<number> {
    return (await this.json<{ v: number }>(akey.version()))?.v ?? 0
  }

  /** The cluster's JWT signing key; fixed once created, so cached. */
  async signingKey (): Promise<{ key: string; kid: string } | undefined> {
    if (this.key === undefined) this.key = await this.json<{ key: string; kid: string }>(akey.signingKey())
    return this.key
  }

  async bootstrapped (): Promise<boolean> {
    return (await this.kv.get(akey.bootstrap())) !== undefined
  }

  async user (name: string): Promise<UserRecord | undefined> {
    return await this.json<UserRecord>(akey.user(name))
  }

  async groupsOf (user: string): Promise<string[]> {
    const out: string[] = []
    for await (const [g] of this.scan<unknown>(akey.memberOfPrefix(user))) out.push(g)
    return out
  }

  async userView (name: string): Promise<UserView | undefined> {
    const u = await this.user(name)
    if (u === undefined) return undefined
    const { passwordHash: _, ...rest } = u
    return { ...rest, groups: await this.groupsOf(name) }
  }

  async users (): Promise<UserView[]> {
    const out: UserView[] = []
    for await (const [name] of this.scan<UserRecord>(akey.userPrefix())) {
      const v = await this.userView(name)
      if (v !== undefined) out.push(v)
    }
    return out
  }

  async group (name: string): Promise<(GroupRecord & { members: string[] }) | undefined> {
    const g = await this.json<GroupRecord>(akey.group(name))
    if (g === undefined) return undefined
    const members: string[] = []
    for await (const [u] of this.scan<unknown>(akey.memberPrefix(name))) members.push(u)
    return { ...g, members }
  }

  async groups (): Promise<Array<GroupRecord & { members: string[] }>> {
    const out: Array<GroupRecord & { members: string[] }> = []
    for await (const [name] of this.scan<GroupRecord>(akey.groupPrefix())) {
      const g = await this.group(name)
      if (g !== undefined) out.push(g)
    }
    return out
  }

  async permission (name: string): Promise<PermissionTarget | undefined> {
    return await this.json<PermissionTarget>(akey.perm(name))
  }

  async permissions (): Promise<PermissionTarget[]> {
    const version = await this.version()
    if (this.cache?.version === version) return this.cache.targets
    const targets: PermissionTarget[] = []
    for await (const [, t] of this.scan<PermissionTarget>(akey.permPrefix())) targets.push(t)
    this.cache = { version, targets }
    return targets
  }

  /** What the targets give a user (through their own name or their groups); anonymous grants excluded. */
  async grantsFor (user: string, groups: readonly string[]): Promise<Grant[]> {
    const out: Grant[] = []
    for (const t of await this.permissions()) {
      const actions = new Set<Action>(t.users[user] ?? [])
      for (const g of groups) for (const a of t.groups[g] ?? []) actions.add(a)
      if (actions.size > 0) out.push({ repositories: t.repositories, actions: [...actions] })
    }
    return out
  }

  /** Grants to the reserved user `anonymous` (read-only by construction). */
  async anonymousGrants (): Promise<Grant[]> {
    return await this.grantsFor(ANONYMOUS, [])
  }

  async token (id: string): Promise<TokenRecord | undefined> {
    return await this.json<TokenRecord>(akey.token(id))
  }

  async tokens (owner?: string): Promise<TokenView[]> {
    const out: TokenView[] = []
    for await (const [, t] of this.scan<TokenRecord>(akey.tokenPrefix())) {
      if (owner !== undefined && t.owner !== owner) continue
      const { secretHash: _, ...view } = t
      out.push(view)
    }
    return out
  }

  async immutableRules (): Promise<ImmutableRule[]> {
    const out: ImmutableRule[] = []
    for await (const [, r] of this.scan<ImmutableRule>(akey.immutablePrefix())) out.push(r)
    return out
  }

  async isImmutable (repo: string): Promise<boolean> {
    return (await this.immutableRules()).some((r) => matches(r.pattern, repo))
  }

  /** Audit entries, newest first, that pass every filter given. */
  async audit (f: AuditFilter = {}): Promise<AuditEntry[]> {
    const limit = Math.min(Math.max(f.limit ?? 100, 1), 1000)
    const range = prefixRange(akey.auditPrefix())
    const r: { gte: string; lt: string; reverse: boolean } = { gte: range.gte, lt: f.before !== undefined ? akey.audit(f.before) : range.lt, reverse: true }
    const out: AuditEntry[] = []
    for await (const [, v] of this.kv.entries(r)) {
      const e = decodeJSON<AuditEntry>(v)
      if (f.until !== undefined && e.at > f.until) continue
      if (f.since !== undefined && e.at < f.since) break
      if (f.user !== undefined && e.user !== f.user) continue
      if (f.action !== undefined && e.action !== f.action) continue
      if (f.outcome !== undefined && e.outcome !== f.outcome) continue
      if (f.repo !== undefined && (e.repo === undefined || !matches(f.repo, e.repo))) continue
      out.push(e)
      if (out.length >= limit) break
    }
    return out
  }
}

export { grantsAllow }
