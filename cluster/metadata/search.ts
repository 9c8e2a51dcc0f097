/**
 * Search over the metadata (issue 14): manifests matching a query (search-query.ts), in
 * (repository, digest) order, a page at a time after an opaque cursor, only in repositories
 * the caller may read; and the latest version of a repository. Reads only; the indexes it
 * uses are kept by the state machine (search-index.ts).
 *
 * How a query runs: each criterion that an index can answer is a *source* of candidates with
 * a rough cost (a digest: a handful; a property value or tag: a few; a time range: many; a
 * criterion no index answers, NOT above all: every manifest of every readable repository). An
 * AND draws its candidates from its cheapest source, an OR from the union of its branches'
 * (or from everything when a branch has none). Every candidate is then checked against the
 * whole query, so a source need only hold a superset of the matches.
 */
import type { KV } from '../../storage/kv/kv.js'
import { prefixRange } from '../../storage/kv/kv.js'
import { FlotillaError } from '../../storage/errors.js'
import { key, partsOf } from './keys.js'
import { decodeJSON } from './state-machine.js'
import type { ManifestRecord } from './commands.js'
import { createdOf, pad, sx, type NumKind } from './search-index.js'
import { globRegExp, inRange, literalPrefix, textMatches, type Criterion, type Query, type Range } from './search-query.js'
import { compareSemver, semver } from '../retention/policy.js'
import { blobsByChecksum, manifestsWithProperty, propertiesOf } from './properties.js'

const SEP = '\u0000'

/** Properties and checksums (cluster/metadata/properties.ts); a seam for unit tests. */
export interface PropertySource {
  propertiesOf (repo: string, digest: string): Promise<Array<{ key: string; values: string[] }>>
  manifestsWithProperty (key: string, value?: string): AsyncIterable<{ repo: string; digest: string }>
  blobsByChecksum (algorithm: 'sha1' | 'md5', hex: string): Promise<string[]>
}

export interface SearchHit {
  repo: string
  digest: string
  mediaType: string
  artifactType?: string
  size: number
  /** Last push of the manifest (ms). */
  pushedAt: number
  /** org.opencontainers.image.created (ms), when the manifest has it. */
  createdAt?: number
  /** Last recorded pull (ms); batched, so it may lag. */
  pulledAt?: number
  tags: string[]
  properties?: Record<string, string[]>
}

export interface SearchPage {
  items: SearchHit[]
  /** Where the next page starts (opaque); absent on the last page. */
  cursor?: string
  /** Candidates read to answer (the index's selectivity, for metrics and the benchmark). */
  scanned: number
}

interface Source {
  cost: number
  /** The criterion this source yields exactly the matches of (then not checked again per candidate). */
  exact?: Query
  /**
   * Candidates as `repo␀digest`, sorted, unique, each after `after`; only those starting with
   * `within` when given (a repository-name prefix the query requires: a source seeks to it).
   */
  keys (after: string | undefined, within?: string): AsyncIterable<string>
}

const split = (k: string): [string, string] => { const i = k.indexOf(SEP); return [k.slice(0, i), k.slice(i + 1)] }
const join = (repo: string, digest: string): string => `${repo}${SEP}${digest}`

export function encodeCursor (last: string): string { return Buffer.from(last, 'utf8').toString('base64url') }
export function decodeCursor (c: string): string {
  const s = /^[A-Za-z0-9_-]{1,2800}$/.test(c) ? Buffer.from(c, 'base64url').toString('utf8') : ''
  const i = s.indexOf(SEP)
  if (i <= 0 || i === s.length - 1) throw new FlotillaError('BAD_REQUEST', 'cursor is not one this registry handed out: take it from the previous answer\'s Link header (or drop it to start over)')
  return s
}

/** One candidate manifest, its parts read once, when a criterion first needs them. */
class Candidate {
  private rec?: Promise<ManifestRecord | undefined>
  private tagList?: Promise<string[]>
  private props?: Promise<Array<{ key: string; values: string[] }>>
  private pulledAt?: Promise<number | undefined>
  constructor (private readonly s: MetadataSearch, readonly repo: string, readonly digest: string) {}
  record (): Promise<ManifestRecord | undefined> { return (this.rec ??= this.s.json<ManifestRecord>(key.manifest(this.repo, this.digest))) }
  tags (): Promise<string[]> { return (this.tagList ??= this.s.tagsOf(this.repo, this.digest)) }
  properties (): Promise<Array<{ key: string; values: string[] }>> { return (this.props ??= this.s.props().propertiesOf(this.repo, this.digest)) }
  pulled (): Promise<number | undefined> { return (this.pulledAt ??= this.s.json<{ at: number }>(key.pulled(this.repo, this.digest)).then((p) => p?.at)) }
}

/** Costs: a rough count of candidates each source yields, for choosing the cheapest. */
const COST = { digest: 1, checksum: 2, nameExact: 5, tagExact: 10, propEq: 20, namePrefix: 50, tagPrefix: 100, name: 300, typeExact: 2000, range: 5000, propAny: 5000, typeGlob: 8000, tagAny: 50000, all: Infinity }

export class MetadataSearch {
  private readonly properties: PropertySource
  constructor (private readonly kv: KV, properties?: PropertySource) {
    this.properties = properties ?? {
      propertiesOf: async (repo, digest) => await propertiesOf(kv, repo, digest),
      manifestsWithProperty: (k, value) => manifestsWithProperty(kv, k, value),
      blobsByChecksum: async (alg, hex) => await blobsByChecksum(kv, alg, hex),
    }
  }

  async json<T> (k: string): Promise<T | undefined> {
    const v = await this.kv.get(k)
    return v === undefined ? undefined : decodeJSON<T>(v)
  }

  props (): PropertySource {
    return this.properties
  }

  /** Whether the indexes are complete (else the RebuildSearchIndex command must run first). */
  async ready (): Promise<boolean> {
    return (await this.kv.get(sx.version())) !== undefined
  }

  /** A manifest's tags, sorted: one read of sx␀tags␀… (a scan of tagsof␀… costs far more per result). */
  async tagsOf (repo: string, digest: string): Promise<string[]> {
    return (await this.json<{ tags: string[] }>(sx.tagsOf(repo, digest)))?.tags ?? []
  }

  private async * scan (prefix: string, from?: string): AsyncIterable<string> {
    const r = prefixRange(prefix)
    for await (const [k] of this.kv.entries(from !== undefined && from > prefix ? { gt: from, lt: r.lt } : r)) yield k.slice(prefix.length)
  }

  /** Manifests of the repositories `repos` yields (sorted), after `after`. */
  private async * manifestsOf (repos: AsyncIterable<string>, after: string | undefined): AsyncIterable<string> {
    const [ar, ad] = after === undefined ? ['', ''] : split(after)
    for await (const repo of repos) {
      if (after !== undefined && repo < ar) continue
      const prefix = key.manifestPrefix(repo)
      for await (const d of this.scan(prefix, after !== undefined && repo === ar ? prefix + ad : undefined)) yield join(repo, d)
    }
  }

  /** Repositories whose names start with `prefix`, from `from` on, that `keep` accepts. */
  private async * repos (prefix: string, from: string, keep: (repo: string) => boolean): AsyncIterable<string> {
    const base = key.repoPrefix()
    const r = prefixRange(base + prefix)
    const gte = base + from > r.gte ? base + from : r.gte
    for await (const [k] of this.kv.entries({ gte, lt: r.lt })) {
      const repo = k.slice(base.length)
      if (keep(repo)) yield repo
    }
  }

  /** A source whose candidates come unordered: read them all, sort, and start after the cursor. */
  private collected (cost: number, gather: (within?: string) => AsyncIterable<string>): Source {
    return {
      cost,
      keys: async function * (after, within) {
        const set = new Set<string>()
        for await (const k of gather(within)) if (within === undefined || k.startsWith(within)) set.add(k)
        for (const k of [...set].sort()) if (after === undefined || k > after) yield k
      },
    }
  }

  /**
   * A source read in order from keys `prefix` + `repo␀digest…`, seeking past the cursor: the
   * first page of a large match costs a page, not the whole match.
   */
  private ordered (cost: number, prefix: string, pick: (rest: string, value: Uint8Array) => string | undefined): Source {
    const kv = this.kv
    return {
      cost,
      keys: async function * (after, within) {
        // Keys may end with the repository (sx␀tag␀…): the window is the name prefix without its separator.
        const r = prefixRange(prefix + (within ?? '').replace(/\u0000$/, ''))
        const range = after !== undefined && prefix + after >= r.gte ? { gt: prefix + after, lt: r.lt } : r
        for await (const [k, v] of kv.entries(range)) {
          const c = pick(k.slice(prefix.length), v)
          if (c !== undefined && (after === undefined || c > after) && (within === undefined || c.startsWith(within))) yield c
        }
      },
    }
  }

  private numRange (kind: NumKind, r: Range): Source {
    const p = sx.numPrefix(kind)
    const self = this
    return this.collected(COST.range, async function * () {
      const lt = r.hi === undefined ? prefixRange(p).lt : p + pad(r.hi) + (r.hiIncl ? '\u0001' : '')
      for await (const [k] of self.kv.entries({ gte: p + (r.lo === undefined ? '' : pad(r.lo)), lt })) {
        const [, repo, digest] = partsOf(k.slice(3))
        yield join(repo!, digest!)
      }
    })
  }

  private source (q: Query, canRead: (repo: string) => boolean): Source | undefined {
    if (q.op === 'not') return undefined
    if (q.op === 'and') {
      let best: Source | undefined
      for (const sub of q.of) { const s = this.source(sub, canRead); if (s !== undefined && (best === undefined || s.cost < best.cost)) best = s }
      return best
    }
    if (q.op === 'or') {
      const subs = q.of.map((sub) => this.source(sub, canRead))
      if (subs.some((s) => s === undefined)) return undefined
      return this.collected(subs.reduce((n, s) => n + s!.cost, 0), async function * (within) { for (const s of subs) yield * s!.keys(undefined, within) })
    }
    const src = this.criterionSource(q.c, canRead)
    // These sources yield exactly their criterion's matches; the others (ranges, tag globs,
    // property existence and ranges) a superset, checked per candidate.
    const f = q.c.field
    const exact = f === 'name' || f === 'digest' || f === 'sha1' || f === 'md5' || f === 'media' || f === 'type' ||
      (f === 'tag' && q.c.text.mode === 'exact') || (f === 'prop' && q.c.is?.op === '=')
    if (src !== undefined && exact) src.exact = q
    return src
  }

  private criterionSource (c: Criterion, canRead: (repo: string) => boolean): Source | undefined {
    const self = this
    switch (c.field) {
      case 'name': {
        const t = c.text
        const prefix = t.mode === 'exact' ? t.value : t.mode === 'glob' ? literalPrefix(t.value) : ''
        const re = t.mode === 'glob' ? globRegExp(t.value) : undefined
        const keep = (r: string): boolean => (t.mode === 'exact' ? r === t.value : re !== undefined ? re.test(r) : r.includes(t.value)) && canRead(r)
        return {
          cost: t.mode === 'exact' ? COST.nameExact : prefix.length > 0 ? COST.namePrefix : COST.name,
          keys: (after) => self.manifestsOf(self.repos(prefix, after === undefined ? '' : split(after)[0], keep), after),
        }
      }
      case 'digest':
        return this.collected(COST.digest, async function * () {
          for await (const repo of self.scan(sx.digPrefix(c.digest))) yield join(repo, c.digest)
          for await (const rest of self.scan(sx.refPrefix(c.digest))) yield rest
        })
      case 'sha1': case 'md5':
        return this.collected(COST.checksum, async function * () {
          for (const blob of await self.props().blobsByChecksum(c.field, c.hex)) yield * self.scan(sx.refPrefix(blob))
        })
      case 'tag': {
        const t = c.text
        // sx␀tag␀<tag>␀<repo> → {digest}: one entry per repository, in repository order.
        if (t.mode === 'exact') return this.ordered(COST.tagExact, sx.tagPrefix(t.value), (repo, v) => join(repo, decodeJSON<{ digest: string }>(v).digest))
        const lit = t.mode === 'glob' ? literalPrefix(t.value) : ''
        return this.collected(lit.length >= 2 ? COST.tagPrefix : COST.tagAny, async function * () {
          const base = sx.tagPrefix()
          for await (const [k, v] of self.kv.entries(prefixRange(base + lit))) {
            const [tag, repo] = split(k.slice(base.length))
            if (textMatches(t, tag) && canRead(repo)) yield join(repo, decodeJSON<{ digest: string }>(v).digest)
          }
        })
      }
      case 'media': case 'type': {
        const kind = c.field === 'media' ? 'media' : 'atype'
        const t = c.text
        if (t.mode === 'exact') return this.ordered(COST.typeExact, sx.strPrefix(kind, t.value), (rest) => rest)
        const lit = t.mode === 'glob' ? literalPrefix(t.value) : ''
        const base = sx.strPrefix(kind)
        return this.collected(COST.typeGlob, async function * () {
          for await (const [k] of self.kv.entries(prefixRange(base + lit))) {
            const parts = partsOf(k.slice(3))
            const [value, repo, digest] = [parts.slice(0, -2).join(SEP), parts[parts.length - 2]!, parts[parts.length - 1]!]
            if (textMatches(t, value)) yield join(repo, digest)
          }
        })
      }
      case 'pushed': return this.numRange('at', c.range)
      case 'created': return this.numRange('created', c.range)
      case 'pulled': return this.numRange('pulled', c.range)
      case 'size': return this.numRange('size', c.range)
      case 'prop': {
        const eq = c.is?.op === '=' ? c.is.value : undefined
        // propidx␀<key>␀<value>␀<repo>␀<digest> (properties.ts): one value's entries come in (repo, digest) order.
        if (eq !== undefined) return this.ordered(COST.propEq, key.propIndexValuePrefix(c.key, eq), (rest) => rest)
        return this.collected(eq !== undefined ? COST.propEq : COST.propAny, async function * () {
          for await (const m of self.props().manifestsWithProperty(c.key, eq)) yield join(m.repo, m.digest)
        })
      }
    }
  }

  /** Every checksum criterion's blobs, looked up once per query. */
  private async checksumBlobs (q: Query, out: Map<Criterion, Set<string>>): Promise<void> {
    if (q.op === 'is') {
      if (q.c.field === 'sha1' || q.c.field === 'md5') out.set(q.c, new Set(await this.props().blobsByChecksum(q.c.field, q.c.hex)))
    } else if (q.op === 'not') await this.checksumBlobs(q.of, out)
    else for (const sub of q.of) await this.checksumBlobs(sub, out)
  }

  private async test (q: Query, m: Candidate, ctx: { checksums: Map<Criterion, Set<string>> }): Promise<boolean> {
    if (q.op === 'not') return !await this.test(q.of, m, ctx)
    if (q.op === 'and') { for (const sub of q.of) if (!await this.test(sub, m, ctx)) return false; return true }
    if (q.op === 'or') { for (const sub of q.of) if (await this.test(sub, m, ctx)) return true; return false }
    const c = q.c
    if (c.field === 'name') return textMatches(c.text, m.repo)
    if (c.field === 'tag') return (await m.tags()).some((t) => textMatches(c.text, t))
    const rec = await m.record()
    if (rec === undefined) return false
    switch (c.field) {
      case 'digest': return m.digest === c.digest || rec.blobs.includes(c.digest) || rec.manifests.includes(c.digest)
      case 'sha1': case 'md5': { const set = ctx.checksums.get(c)!; return rec.blobs.some((b) => set.has(b)) || rec.manifests.some((b) => set.has(b)) }
      case 'media': return textMatches(c.text, rec.mediaType)
      case 'type': return rec.artifactType !== undefined && textMatches(c.text, rec.artifactType)
      case 'size': return inRange(c.range, rec.size)
      case 'pushed': return inRange(c.range, rec.at)
      case 'created': { const t = createdOf(rec); return t !== undefined && inRange(c.range, t) }
      case 'pulled': { const t = await m.pulled(); return t !== undefined && inRange(c.range, t) }
      case 'prop': {
        // Equality is one read of the inverted index; the rest need the manifest's properties.
        if (c.is?.op === '=') return await this.kv.get(key.propIndex(c.key, c.is.value, m.repo, m.digest)) !== undefined
        const p = (await m.properties()).find((x) => x.key === c.key)
        if (p === undefined) return false
        const is = c.is
        if (is === undefined) return true
        return p.values.some((v) => {
          if (is.op === '=') return v === is.value
          if (is.op === '~') return v.includes(is.value)
          if (!('num' in is) && !('date' in is)) return false
          const n = is.num !== undefined ? (/^-?\d+(\.\d+)?$/.test(v) ? Number(v) : undefined) : parseDateValue(v)
          const bound = is.num ?? is.date!
          if (n === undefined) return false
          return is.op === '>' ? n > bound : is.op === '>=' ? n >= bound : is.op === '<' ? n < bound : n <= bound
        })
      }
    }
  }

  /**
   * One page of the manifests matching `q` that `canRead` allows, after `cursor`. `limit`
   * items at most; a cursor is handed back only when another match follows.
   */
  async search (q: Query, opts: { limit: number; cursor?: string; canRead: (repo: string) => boolean; withProperties?: boolean }): Promise<SearchPage> {
    const readable = new Map<string, boolean>()
    const canRead = (repo: string): boolean => { let v = readable.get(repo); if (v === undefined) { v = opts.canRead(repo); readable.set(repo, v) } return v }
    const after = opts.cursor === undefined ? undefined : decodeCursor(opts.cursor)
    const src = this.source(q, canRead) ?? this.criterionSource({ field: 'name', text: { mode: 'glob', value: '*' } }, canRead)!
    // What the source answers exactly need not be checked again: the root, or one term of a root AND.
    const rest: Query | undefined = src.exact === q ? undefined : q.op === 'and' && src.exact !== undefined && q.of.includes(src.exact) ? { op: 'and', of: q.of.filter((x) => x !== src.exact) } : q
    // A repository-name prefix the whole query requires (a name criterion at its root or in its
    // root AND): every source seeks to it rather than reading the matches elsewhere and dropping them.
    let within: string | undefined
    for (const x of q.op === 'and' ? q.of : [q]) {
      if (x.op !== 'is' || x.c.field !== 'name' || x.c.text.mode === 'sub') continue
      const p = x.c.text.mode === 'exact' ? x.c.text.value + SEP : literalPrefix(x.c.text.value)
      if (p !== '' && (within === undefined || p.length > within.length)) within = p
    }
    const ctx = { checksums: new Map<Criterion, Set<string>>() }
    await this.checksumBlobs(q, ctx.checksums)
    const items: SearchHit[] = []
    let scanned = 0
    for await (const k of src.keys(after, within)) {
      scanned++
      const [repo, digest] = split(k)
      if (!canRead(repo)) continue
      const m = new Candidate(this, repo, digest)
      if (rest !== undefined && !await this.test(rest, m, ctx)) continue
      if (rest === undefined && await m.record() === undefined) continue
      if (items.length === opts.limit) return { items, cursor: encodeCursor(join(items[items.length - 1]!.repo, items[items.length - 1]!.digest)), scanned }
      items.push(await this.hit(m, opts.withProperties === true))
    }
    return { items, scanned }
  }

  private async hit (m: Candidate, withProperties: boolean): Promise<SearchHit> {
    const rec = (await m.record())!
    const h: SearchHit = { repo: m.repo, digest: m.digest, mediaType: rec.mediaType, size: rec.size, pushedAt: rec.at, tags: await m.tags() }
    if (rec.artifactType !== undefined) h.artifactType = rec.artifactType
    const created = createdOf(rec)
    if (created !== undefined) h.createdAt = created
    const pulled = await m.pulled()
    if (pulled !== undefined) h.pulledAt = pulled
    if (withProperties) h.properties = Object.fromEntries((await m.properties()).map((p) => [p.key, p.values]))
    return h
  }

  /**
   * The newest tag of `repo`: by semantic version (tags that are no version left out) or by
   * push time, among tags matching `match` (a glob), whose manifest has property `prop` (and
   * value, when given). Undefined when no tag qualifies.
   */
  async latest (repo: string, opts: { by: 'semver' | 'time'; match?: string; prop?: { key: string; value?: string } }): Promise<LatestAnswer | undefined> {
    const re = opts.match === undefined ? undefined : globRegExp(opts.match)
    const tags: Array<{ tag: string; digest: string; at: number; v?: NonNullable<ReturnType<typeof semver>> }> = []
    const prefix = key.tagPrefix(repo)
    for await (const [k, val] of this.kv.entries(prefixRange(prefix))) {
      const tag = k.slice(prefix.length)
      if (re !== undefined && !re.test(tag)) continue
      // Tags that are no version are skipped before their value is even parsed.
      const v = opts.by === 'semver' ? semver(tag) : undefined
      if (opts.by === 'semver' && v === undefined) continue
      const t = decodeJSON<{ digest: string; at: number }>(val)
      tags.push({ tag, digest: t.digest, at: t.at, ...(v !== undefined ? { v } : {}) })
    }
    // Newest first; ties (the same version as v1.2 and 1.2.0, or one push time) by the later push, then the tag.
    tags.sort((a, b) => (opts.by === 'semver' ? compareSemver(a.v!, b.v!) : 0) || b.at - a.at || (a.tag < b.tag ? 1 : a.tag > b.tag ? -1 : 0))
    for (const t of tags) {
      if (opts.prop?.value !== undefined) {
        if (await this.kv.get(key.propIndex(opts.prop.key, opts.prop.value, repo, t.digest)) === undefined) continue
      } else if (opts.prop !== undefined) {
        if (!(await this.props().propertiesOf(repo, t.digest)).some((x) => x.key === opts.prop!.key)) continue
      }
      const rec = await this.json<ManifestRecord>(key.manifest(repo, t.digest))
      if (rec === undefined) continue
      return { repo, tag: t.tag, digest: t.digest, mediaType: rec.mediaType, size: rec.size, pushedAt: t.at, ...(t.v !== undefined ? { version: t.v.core.join('.') + (t.v.pre !== undefined ? `-${t.v.pre}` : '') } : {}), candidates: tags.length }
    }
    return undefined
  }
}

export interface LatestAnswer {
  repo: string
  tag: string
  digest: string
  mediaType: string
  size: number
  /** When the tag was last pushed (ms). */
  pushedAt: number
  /** The version the tag reads as (by=semver). */
  version?: string
  /** Tags that matched the pattern (and are versions, by=semver) before the property filter. */
  candidates: number
}

function parseDateValue (v: string): number | undefined {
  if (!/^\d{4}-\d{2}-\d{2}/.test(v)) return undefined
  const ms = Date.parse(v.length === 10 ? `${v}T00:00:00Z` : v)
  return Number.isFinite(ms) ? ms : undefined
}
