/**
 * Virtual repositories: a name prefix (`dev/`) in front of an ordered list of member prefixes
 * (`team-a/`, `hub/`: local namespaces, or remote repositories' prefixes). `dev/app` stands for
 * `team-a/app`, then `hub/app`: a pull takes the first member that has what it asks for; a push
 * goes to the default member (a local one). Nothing is ever stored under a virtual prefix.
 *
 *   virtual␀<name>   → VirtualRepo   {name, prefix, members, defaultMember}
 *
 * Refused when created (PutVirtual): a prefix that overlaps another virtual's prefix or a
 * repository already stored (a local namespace), a member that is or lies inside or around a
 * virtual prefix (a virtual in a virtual: cycles), a default that is not a member. Once a
 * virtual exists, no command may create a repository under its prefix (guardVirtualNames).
 *
 * Remote repositories claim prefixes too: `prefixClaims` below is where
 * their records are checked against a new virtual prefix, and a new remote prefix must be
 * checked against the virtuals in the same way (cluster/remote/apply.ts).
 *
 * Pure parts (validation, `resolve`) are shared with the HTTP layer (src/http/virtual.ts).
 */
import { FlotillaError } from '../../storage/errors.js'
import { isValidName } from '../access/model.js'
import type { TxLike } from '../access/apply.js'
import type { RefsTx } from './refs.js'
import { key, partsOf } from './keys.js'
import type { RemoteRecord } from '../remote/model.js'

export interface VirtualRepo {
  name: string
  /** `dev/`: every repository name under it is virtual. */
  prefix: string
  /** Member prefixes, in resolution order (`team-a/`, `hub/`). */
  members: string[]
  /** The member pushes (manifests, uploads, mounts) go to. */
  defaultMember: string
}

const SEP = '\u0000'
export const vkey = {
  virtual: (name: string): string => `virtual${SEP}${name}`,
  virtualPrefix: (): string => `virtual${SEP}`,
}

const REPO = `repo${SEP}`

/** A namespace prefix: a valid repository name followed by `/` (`team-a/`, `hub/library/`). */
const PREFIX_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*\/$/
export const MAX_MEMBERS = 32

export function isPrefix (s: unknown): s is string {
  return typeof s === 'string' && s.length <= 200 && PREFIX_RE.test(s)
}

/** One prefix lies inside the other (or they are equal): the same names would belong to both. */
export function overlaps (a: string, b: string): boolean {
  return a.startsWith(b) || b.startsWith(a)
}

/** Check a virtual repository's shape (not how it sits among the others: putVirtual does that). */
export function checkVirtual (v: VirtualRepo): void {
  const bad = (why: string): never => { throw new FlotillaError('BAD_REQUEST', `virtual repository: ${why}`) }
  if (typeof v !== 'object' || v === null) bad('expected an object {prefix, members, defaultMember}')
  if (typeof v.name !== 'string' || !isValidName(v.name)) bad('name must be letters, digits, ".", "_" or "-"')
  if (!isPrefix(v.prefix)) bad(`prefix ${JSON.stringify(String(v.prefix).slice(0, 80))} must be a repository namespace ending in "/", e.g. "dev/"`)
  if (!Array.isArray(v.members) || v.members.length === 0) bad('members must be one or more prefixes, in resolution order, e.g. ["team-a/", "hub/"]')
  if (v.members.length > MAX_MEMBERS) bad(`at most ${MAX_MEMBERS} members`)
  for (const m of v.members) if (!isPrefix(m)) bad(`member ${JSON.stringify(String(m).slice(0, 80))} must be a repository namespace ending in "/", e.g. "team-a/"`)
  if (new Set(v.members).size !== v.members.length) bad('a member is listed twice')
  for (const m of v.members) {
    if (overlaps(m, v.prefix)) bad(`member ${m} overlaps the virtual prefix ${v.prefix} itself`)
    for (const o of v.members) if (o !== m && overlaps(o, m)) bad(`members ${m} and ${o} overlap: one lies inside the other`)
  }
  if (typeof v.defaultMember !== 'string' || !v.members.includes(v.defaultMember)) bad(`defaultMember must be one of the members (${v.members.join(', ')}): pushes through ${v.prefix} go there`)
  for (const k of Object.keys(v)) if (!['name', 'prefix', 'members', 'defaultMember'].includes(k)) bad(`unknown field ${JSON.stringify(k.slice(0, 40))}`)
}

/** The virtual repository whose prefix `repo` lies under, if any. */
export function virtualOwning (list: readonly VirtualRepo[], repo: string): VirtualRepo | undefined {
  return list.find((v) => repo.startsWith(v.prefix))
}

/**
 * A repository name through a virtual: the member repositories it stands for, in order, and
 * the one pushes go to. `dev/app` in {dev/ → team-a/, hub/} → [team-a/app, hub/app].
 */
export function resolve (v: VirtualRepo, repo: string): { rest: string; members: string[]; push: string } {
  const rest = repo.slice(v.prefix.length)
  return { rest, members: v.members.map((m) => m + rest), push: v.defaultMember + rest }
}

export async function listVirtuals (tx: Pick<TxLike, 'keys' | 'getJSON'>): Promise<VirtualRepo[]> {
  const out: VirtualRepo[] = []
  for (const k of await tx.keys(vkey.virtualPrefix())) {
    const v = await tx.getJSON<VirtualRepo>(k)
    if (v !== undefined) out.push(v)
  }
  return out
}

/**
 * Other owners of name prefixes, checked against a new virtual prefix: each answers what
 * claims names under (or around) `prefix`, or undefined. Stored repositories (local
 * namespaces) here; remote repositories add their records' check when merged.
 */
const prefixClaims: Array<(tx: TxLike, prefix: string) => Promise<string | undefined>> = [
  async (tx, prefix) => {
    // A repository under the prefix, or one the prefix lies under (`dev` itself is fine:
    // `dev/` is only what follows the slash).
    const under = (await tx.keys(REPO + prefix))[0]
    if (under !== undefined) return `repository ${partsOf(under)[0]!} is stored under ${prefix}: a virtual prefix must name no stored repository (choose another prefix, or delete those repositories)`
    return undefined
  },
  async (tx, prefix) => {
    for (const k of await tx.keys(key.remotePrefix())) {
      const r = await tx.getJSON<RemoteRecord>(k)
      if (r !== undefined && overlaps(r.prefix, prefix)) return `prefix ${prefix} overlaps ${r.prefix} of remote repository ${r.name}: a name belongs to one remote or virtual repository (choose another prefix; a remote can be a member)`
    }
    return undefined
  },
]

/** Create or replace a virtual repository (PutVirtual). */
export async function putVirtual (tx: TxLike, v: VirtualRepo): Promise<{ created: boolean }> {
  checkVirtual(v)
  const others = (await listVirtuals(tx)).filter((o) => o.name !== v.name)
  for (const o of others) {
    if (overlaps(o.prefix, v.prefix)) throw new FlotillaError('ALREADY_EXISTS', `prefix ${v.prefix} overlaps ${o.prefix} of virtual repository ${o.name}: choose another prefix`)
    for (const m of v.members) {
      if (overlaps(m, o.prefix)) throw new FlotillaError('BAD_REQUEST', `member ${m} is (or overlaps) the prefix of virtual repository ${o.name} (${o.prefix}): a virtual cannot contain another virtual; list that one's members instead`)
    }
    for (const m of o.members) {
      if (overlaps(m, v.prefix)) throw new FlotillaError('BAD_REQUEST', `virtual repository ${o.name} has member ${m}, which overlaps ${v.prefix}: a virtual cannot contain another virtual; choose another prefix`)
    }
  }
  for (const claim of prefixClaims) {
    const why = await claim(tx, v.prefix)
    if (why !== undefined) throw new FlotillaError('ALREADY_EXISTS', why)
  }
  for (const k of await tx.keys(key.remotePrefix())) {
    const r = await tx.getJSON<RemoteRecord>(k)
    if (r !== undefined && overlaps(r.prefix, v.defaultMember)) throw new FlotillaError('BAD_REQUEST', `default member ${v.defaultMember} is remote repository ${r.name} (${r.prefix}), a read-only cache: pushes through ${v.prefix} need a local member as the default (--default)`)
  }
  const created = await tx.get(vkey.virtual(v.name)) === undefined
  tx.putJSON(vkey.virtual(v.name), v)
  return { created }
}

export async function deleteVirtual (tx: TxLike, name: string): Promise<void> {
  if (await tx.get(vkey.virtual(name)) === undefined) throw new FlotillaError('NOT_FOUND', `no virtual repository named ${name} (flotilla virtual list shows them)`)
  tx.del(vkey.virtual(name))
}

/**
 * After any command: it may not create a repository under a virtual prefix (a promotion, an
 * image from another site, a push that bypassed the HTTP layer's redirection). Names there
 * would be hidden behind the virtual for good.
 */
export async function guardVirtualNames (tx: RefsTx): Promise<void> {
  let list: VirtualRepo[] | undefined
  for (const [k, after] of [...tx.writes()]) {
    if (!k.startsWith(REPO) || after === null) continue
    const repo = k.slice(REPO.length)
    list ??= await listVirtuals(tx)
    if (list.length === 0) return
    const v = virtualOwning(list, repo)
    if (v !== undefined && await tx.before(k) === undefined) {
      throw new FlotillaError('NAME_INVALID', `${repo} is under ${v.prefix}, the prefix of virtual repository ${v.name}: nothing is stored there; use ${resolve(v, repo).push} (its default member) instead`)
    }
  }
}
