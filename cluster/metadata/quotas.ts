/**
 * Storage quotas per namespace (repository patterns). Usage is the size of the distinct blobs
 * linked into the namespace's repositories: a layer in two of its repositories counts once.
 *
 *   quota␀<name>            → Quota               {name, repositories, maxBytes}
 *   qusage␀<name>           → {bytes}             usage now
 *   qlink␀<name>␀<digest>   → {n, size}           repositories of the namespace that link the blob
 *
 * Kept from each command's link writes (like refs.ts), so every way a blob enters a repository
 * (an upload, a mount, a promotion, another site) counts and is held to the quota: a command
 * that raises a namespace's usage past its maximum is refused whole (QUOTA_EXCEEDED, 403
 * DENIED), and so is a new manifest in a namespace already over it (a quota lowered below use).
 */
import { FlotillaError } from '../../storage/errors.js'
import { isValidName, isValidPattern, matches } from '../access/model.js'
import { partsOf } from './keys.js'
import type { RefsTx } from './refs.js'
import type { TxLike } from '../access/apply.js'

export interface Quota { name: string; repositories: string[]; maxBytes: number }

const SEP = '\u0000'
export const qkey = {
  quota: (name: string): string => `quota${SEP}${name}`,
  quotaPrefix: (): string => `quota${SEP}`,
  usage: (name: string): string => `qusage${SEP}${name}`,
  link: (name: string, digest: string): string => `qlink${SEP}${name}${SEP}${digest}`,
  linkPrefix: (name: string): string => `qlink${SEP}${name}${SEP}`,
}

const LINK = 'link\u0000'
const MANIFEST = 'manifest\u0000'

export function gib (bytes: number): string {
  return bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(2)} GiB` : bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${bytes} bytes`
}

export function checkQuota (q: Quota): void {
  const bad = (why: string): never => { throw new FlotillaError('BAD_REQUEST', `quota: ${why}`) }
  if (typeof q.name !== 'string' || !isValidName(q.name)) bad('name must be letters, digits, ".", "_" or "-"')
  if (!Array.isArray(q.repositories) || q.repositories.length === 0 || !q.repositories.every((r) => typeof r === 'string' && isValidPattern(r))) bad('repositories must be one or more repository patterns, e.g. "team-a/**"')
  if (typeof q.maxBytes !== 'number' || !Number.isSafeInteger(q.maxBytes) || q.maxBytes < 0) bad('maxBytes must be a whole number of bytes')
  for (const k of Object.keys(q)) if (!['name', 'repositories', 'maxBytes'].includes(k)) bad(`unknown field ${JSON.stringify(k.slice(0, 40))}`)
}

async function quotas (tx: TxLike): Promise<Quota[]> {
  const out: Quota[] = []
  for (const k of await tx.keys(qkey.quotaPrefix())) {
    const q = await tx.getJSON<Quota>(k)
    if (q !== undefined) out.push(q)
  }
  return out
}

const inQuota = (q: Quota, repo: string): boolean => q.repositories.some((p) => matches(p, repo))

/** Follow the command's link writes; refuse it if it takes a namespace past its quota. */
export async function maintainQuotas (tx: RefsTx): Promise<void> {
  const links: Array<{ repo: string; digest: string; added: boolean; size: number }> = []
  const manifestRepos = new Set<string>()
  for (const [k, after] of [...tx.writes()]) {
    if (k.startsWith(LINK)) {
      const [repo, digest] = partsOf(k) as [string, string]
      const was = await tx.before(k)
      if ((was === undefined) === (after === null)) continue
      const v = JSON.parse(Buffer.from((after ?? was)!).toString()) as { size: number }
      links.push({ repo, digest, added: after !== null, size: v.size })
    } else if (k.startsWith(MANIFEST) && after !== null && await tx.before(k) === undefined) {
      manifestRepos.add(partsOf(k)[0]!)
    }
  }
  if (links.length === 0 && manifestRepos.size === 0) return
  for (const q of await quotas(tx)) {
    const mine = links.filter((l) => inQuota(q, l.repo))
    const usage = (await tx.getJSON<{ bytes: number }>(qkey.usage(q.name)))?.bytes ?? 0
    let next = usage
    for (const l of mine) {
      const k = qkey.link(q.name, l.digest)
      const n = (await tx.getJSON<{ n: number }>(k))?.n ?? 0
      const m = Math.max(0, n + (l.added ? 1 : -1))
      if (n === 0 && m > 0) next += l.size
      if (n > 0 && m === 0) next -= l.size
      if (m === 0) tx.del(k); else tx.putJSON(k, { n: m, size: l.size })
    }
    if (next > usage && next > q.maxBytes) {
      throw new FlotillaError('QUOTA_EXCEEDED', `quota ${q.name} (${q.repositories.join(', ')}) is ${gib(q.maxBytes)}: this would use ${gib(next)}. Delete images there (then run flotilla gc) or raise the quota`)
    }
    if ([...manifestRepos].some((r) => inQuota(q, r)) && next > q.maxBytes) {
      throw new FlotillaError('QUOTA_EXCEEDED', `quota ${q.name} (${q.repositories.join(', ')}) is ${gib(q.maxBytes)} and ${gib(next)} are used: no new manifest until images there are deleted or the quota is raised`)
    }
    if (next !== usage) tx.putJSON(qkey.usage(q.name), { bytes: next })
  }
}

/** Create or replace a quota, counting what its namespace uses now. */
export async function putQuota (tx: TxLike, q: Quota): Promise<{ usedBytes: number }> {
  checkQuota(q)
  for (const k of await tx.keys(qkey.linkPrefix(q.name))) tx.del(k)
  const seen = new Map<string, { n: number; size: number }>()
  for (const k of await tx.keys(LINK)) {
    const [repo, digest] = partsOf(k) as [string, string]
    if (!inQuota(q, repo)) continue
    const link = await tx.getJSON<{ size: number }>(k)
    const s = seen.get(digest) ?? { n: 0, size: link?.size ?? 0 }
    s.n++
    seen.set(digest, s)
  }
  let bytes = 0
  for (const [digest, s] of seen) { tx.putJSON(qkey.link(q.name, digest), s); bytes += s.size }
  tx.putJSON(qkey.quota(q.name), q)
  tx.putJSON(qkey.usage(q.name), { bytes })
  return { usedBytes: bytes }
}

export async function deleteQuota (tx: TxLike, name: string): Promise<void> {
  if (await tx.get(qkey.quota(name)) === undefined) throw new FlotillaError('NOT_FOUND', `no quota named ${name}`)
  for (const k of await tx.keys(qkey.linkPrefix(name))) tx.del(k)
  tx.del(qkey.quota(name))
  tx.del(qkey.usage(name))
}
