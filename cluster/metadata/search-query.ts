/**
 * The search query language (GET /api/v1/search?q=…, `flotilla search -q …`): criteria
 * combined with AND, OR, NOT and parentheses. A parse error is a FlotillaError BAD_REQUEST
 * naming the position (1-based character) and what was expected there.
 *
 *   expr   := or
 *   or     := and ("OR" and)*
 *   and    := unary (["AND"] unary)*          two criteria side by side are ANDed
 *   unary  := "NOT" unary | "(" expr ")" | criterion
 *
 * Keywords are AND, OR, NOT in any case. A criterion is one word, FIELD then an operator then a
 * value; a value with spaces or parentheses goes in double quotes (`prop:note="two words"`).
 *
 *   name:GLOB   name=NAME   name~TEXT       repository: glob (* any run, ? one character,
 *                                           / included), exact, substring
 *   tag:GLOB    tag=TAG     tag~TEXT        a tag of the manifest
 *   digest:DIGEST                           the manifest's digest, or a blob or child manifest it references
 *   sha1:HEX    md5:HEX                     a blob the manifest references has this checksum
 *   prop:KEY                                the manifest has the property (any value)
 *   prop:KEY=VALUE   prop:KEY~TEXT          a value equal to / containing
 *   prop:KEY>V  >=  <  <=                   a value in range: numbers compare as numbers,
 *                                           dates (2024-05-01, 2024-05-01T12:00:00Z) as dates
 *   pushed>=WHEN  created<WHEN  pulled>WHEN time ranges (also FIELD:A..B: from A, before B);
 *                                           WHEN: ISO 8601 date or time, epoch ms, now, now-7d
 *   size>=10MB   size:1KB..1MiB             manifest size (B, KB, MB, GB, KiB, MiB, GiB)
 *   media:GLOB  media=TYPE                  manifest media type
 *   type:GLOB   type=TYPE                   artifactType (also artifactType:)
 *
 * `created` is the org.opencontainers.image.created annotation (manifests without it never
 * match); `pushed` is the last push of the manifest; `pulled` its last recorded pull.
 */
import { FlotillaError } from '../../storage/errors.js'
import { isDigest } from '../../storage/reference.js'

export type Cmp = '>' | '>=' | '<' | '<='
export interface Range { lo?: number; loIncl: boolean; hi?: number; hiIncl: boolean }
export type Text = { mode: 'glob' | 'exact' | 'sub'; value: string }

export type Criterion =
  | { field: 'name' | 'tag' | 'media' | 'type'; text: Text }
  | { field: 'digest'; digest: string }
  | { field: 'sha1' | 'md5'; hex: string }
  | { field: 'prop'; key: string; is?: { op: '=' | '~'; value: string } | { op: Cmp; value: string; num?: number; date?: number } }
  | { field: 'pushed' | 'created' | 'pulled' | 'size'; range: Range }

export type Query =
  | { op: 'and'; of: Query[] }
  | { op: 'or'; of: Query[] }
  | { op: 'not'; of: Query }
  | { op: 'is'; c: Criterion; text: string }

const bad = (pos: number, why: string): never => { throw new FlotillaError('BAD_REQUEST', `search query: at position ${pos}: ${why}`) }

interface Token { kind: '(' | ')' | 'word'; text: string; pos: number; quoted: boolean }

function tokenize (src: string): Token[] {
  const out: Token[] = []
  let i = 0
  while (i < src.length) {
    const ch = src[i]!
    if (/\s/.test(ch)) { i++; continue }
    if (ch === '(' || ch === ')') { out.push({ kind: ch, text: ch, pos: i + 1, quoted: false }); i++; continue }
    const start = i
    let text = ''
    let quoted = false
    while (i < src.length && !/[\s()]/.test(src[i]!)) {
      if (src[i] === '"') {
        quoted = true
        i++
        for (;;) {
          if (i >= src.length) bad(start + 1, 'a quoted value is not closed: add the closing "')
          const c = src[i]!
          if (c === '\\' && i + 1 < src.length) { text += src[i + 1]; i += 2; continue }
          if (c === '"') { i++; break }
          text += c
          i++
        }
        continue
      }
      text += src[i]
      i++
    }
    out.push({ kind: 'word', text, pos: start + 1, quoted })
  }
  return out
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 }
const DURATION: Record<string, number> = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 }

export function parseSizeValue (s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)([a-zA-Z]*)$/.exec(s)
  if (m === null) return undefined
  const unit = UNITS[m[2]!.toLowerCase()]
  if (unit === undefined) return undefined
  const n = Math.round(Number(m[1]) * unit)
  return Number.isSafeInteger(n) ? n : undefined
}

/** ISO 8601 date or time, epoch ms, `now`, `now-7d` → ms; undefined when none of those. */
export function parseWhen (s: string, now: number): number | undefined {
  if (/^\d{10,15}$/.test(s)) return Number(s)
  const rel = /^now(?:-(\d+)([smhdw]))?$/.exec(s)
  if (rel !== null) return rel[1] === undefined ? now : now - Number(rel[1]) * DURATION[rel[2]!]!
  if (!/^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(s)) return undefined
  const ms = Date.parse(s.length === 10 ? `${s}T00:00:00Z` : s)
  return Number.isFinite(ms) ? ms : undefined
}

const FIELDS = ['name', 'tag', 'digest', 'sha1', 'md5', 'prop', 'pushed', 'created', 'pulled', 'size', 'media', 'type'] as const
const ALIASES: Record<string, typeof FIELDS[number]> = { mediatype: 'media', artifacttype: 'type', repo: 'name' }
const OPS = ['>=', '<=', '>', '<', '=', '~', ':'] as const

/** One criterion from its word (`tok.pos` for errors). */
export function parseCriterion (word: string, pos: number, now: number): Criterion {
  const fm = /^[A-Za-z][A-Za-z0-9]*/.exec(word)
  if (fm === null) return bad(pos, `expected a criterion such as name:team/* or prop:KEY=VALUE, found ${JSON.stringify(word.slice(0, 40))}`)
  const fname = fm[0].toLowerCase()
  const field = (FIELDS as readonly string[]).includes(fname) ? fname as typeof FIELDS[number] : ALIASES[fname]
  if (field === undefined) return bad(pos, `unknown field ${JSON.stringify(fm[0])}: use one of ${FIELDS.join(', ')}`)
  let rest = word.slice(fm[0].length)
  const opAt = pos + fm[0].length
  let op = OPS.find((o) => rest.startsWith(o))
  if (op === undefined) return bad(opAt, `expected an operator after ${fm[0]} (: = ~ > >= < <=)`)
  rest = rest.slice(op.length)
  // `pushed:>=2024-01-01` reads as `pushed>=2024-01-01`.
  if (op === ':' && field !== 'prop') {
    const inner = OPS.find((o) => o !== ':' && o !== '=' && o !== '~' && rest.startsWith(o))
    if (inner !== undefined) { op = inner; rest = rest.slice(inner.length) }
  }
  const valAt = opAt + op.length
  if (rest === '' && field !== 'prop') return bad(valAt, `expected a value after ${fm[0]}${op}`)
  const onlyOps = (allowed: readonly string[]): void => { if (!allowed.includes(op)) bad(opAt, `${field} takes ${allowed.join(' ')}, not ${op}`) }
  switch (field) {
    case 'name': case 'tag': case 'media': case 'type': {
      onlyOps(field === 'name' || field === 'tag' ? [':', '=', '~'] : [':', '='])
      const mode = op === '~' ? 'sub' : op === '=' || !/[*?]/.test(rest) ? 'exact' : 'glob'
      return { field, text: { mode, value: rest } }
    }
    case 'digest':
      onlyOps([':', '='])
      if (!isDigest(rest)) return bad(valAt, `${JSON.stringify(rest.slice(0, 80))} is not a digest (sha256:<64 hex>)`)
      return { field, digest: rest }
    case 'sha1': case 'md5': {
      onlyOps([':', '='])
      const len = field === 'sha1' ? 40 : 32
      if (!new RegExp(`^[0-9a-fA-F]{${len}}$`).test(rest)) return bad(valAt, `${field} takes ${len} hexadecimal digits`)
      return { field, hex: rest.toLowerCase() }
    }
    case 'prop': {
      onlyOps([':'])
      const km = /^[^=~<>]+/.exec(rest)
      if (km === null) return bad(valAt, 'expected a property key after prop: (prop:KEY, prop:KEY=VALUE, prop:KEY>=N)')
      const key = km[0]
      const after = rest.slice(key.length)
      if (after === '') return { field, key }
      const found = OPS.find((o) => o !== ':' && after.startsWith(o))!
      const value = after.slice(found.length)
      if (found === '=' || found === '~') return { field, key, is: { op: found, value } }
      const pop = found as Cmp
      const at = valAt + key.length + pop.length
      if (/^-?\d+(\.\d+)?$/.test(value)) return { field, key, is: { op: pop, value, num: Number(value) } }
      const date = parseWhen(value, now)
      if (date === undefined) return bad(at, `prop:${key}${pop} compares numbers or dates: ${JSON.stringify(value.slice(0, 40))} is neither`)
      return { field, key, is: { op: pop, value, date } }
    }
    case 'pushed': case 'created': case 'pulled': case 'size': {
      onlyOps([':', '>', '>=', '<', '<='])
      const conv = (s: string, at: number): number => {
        const n = field === 'size' ? parseSizeValue(s) : parseWhen(s, now)
        if (n === undefined) bad(at, field === 'size' ? `${JSON.stringify(s.slice(0, 40))} is not a size (10MB, 512KiB, 1024)` : `${JSON.stringify(s.slice(0, 40))} is not a time (2024-05-01, 2024-05-01T12:00:00Z, epoch ms, now-7d)`)
        return n!
      }
      if (op === ':') {
        const dots = rest.indexOf('..')
        if (dots < 0) {
          if (field === 'size') { const n = conv(rest, valAt); return { field, range: { lo: n, loIncl: true, hi: n, hiIncl: true } } }
          return bad(valAt, `${field} takes a range: ${field}>=A, ${field}<B or ${field}:A..B`)
        }
        const r: Range = { loIncl: true, hiIncl: false }
        if (dots > 0) r.lo = conv(rest.slice(0, dots), valAt)
        if (dots + 2 < rest.length) r.hi = conv(rest.slice(dots + 2), valAt + dots + 2)
        return { field, range: r }
      }
      const n = conv(rest, valAt)
      const cmp = op as Cmp
      return { field, range: cmp === '>' || cmp === '>=' ? { lo: n, loIncl: cmp === '>=', hiIncl: false } : { hi: n, hiIncl: cmp === '<=', loIncl: false } }
    }
  }
}

/** Parse a query expression; throws BAD_REQUEST naming the position of the first error. */
export function parseQuery (src: string, now: number): Query {
  if (src.length > 4096) bad(4097, 'the query is longer than 4096 characters')
  const toks = tokenize(src)
  let i = 0
  const kw = (t: Token | undefined, k: string): boolean => t !== undefined && t.kind === 'word' && !t.quoted && t.text.toUpperCase() === k
  const end = (): number => src.length + 1
  let depth = 0
  const parseOr = (): Query => {
    const of = [parseAnd()]
    while (kw(toks[i], 'OR')) { i++; of.push(parseAnd()) }
    return of.length === 1 ? of[0]! : { op: 'or', of }
  }
  const parseAnd = (): Query => {
    const of = [parseUnary()]
    for (;;) {
      const t = toks[i]
      if (t === undefined || t.kind === ')' || kw(t, 'OR')) break
      if (kw(t, 'AND')) i++
      of.push(parseUnary())
    }
    return of.length === 1 ? of[0]! : { op: 'and', of }
  }
  const parseUnary = (): Query => {
    const t = toks[i]
    if (t === undefined) return bad(end(), 'expected a criterion, NOT or ( at the end of the query')
    if (kw(t, 'NOT')) { i++; return { op: 'not', of: parseUnary() } }
    if (t.kind === '(') {
      i++
      if (++depth > 32) bad(t.pos, 'parentheses nested deeper than 32')
      const q = parseOr()
      const c = toks[i]
      if (c === undefined || c.kind !== ')') return bad(c?.pos ?? end(), `expected ) to close the ( at position ${t.pos}`)
      i++
      depth--
      return q
    }
    if (t.kind === ')') return bad(t.pos, 'unexpected ): no ( to close')
    if (kw(t, 'AND') || kw(t, 'OR')) return bad(t.pos, `expected a criterion before ${t.text}`)
    i++
    return { op: 'is', c: parseCriterion(t.text, t.pos, now), text: t.text }
  }
  if (toks.length === 0) bad(1, 'the query is empty: give at least one criterion, e.g. name:team/*')
  const q = parseOr()
  if (i < toks.length) bad(toks[i]!.pos, toks[i]!.kind === ')' ? 'unexpected ): no ( to close' : `unexpected ${JSON.stringify(toks[i]!.text.slice(0, 40))}`)
  return q
}

/** A glob (* any run of characters, ? one) as an anchored regular expression. */
export function globRegExp (glob: string): RegExp {
  return new RegExp('^' + glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$', 's')
}

/** The literal text a glob starts with (before its first * or ?). */
export function literalPrefix (glob: string): string {
  const m = /[*?]/.exec(glob)
  return m === null ? glob : glob.slice(0, m.index)
}

export function textMatches (t: Text, s: string): boolean {
  if (t.mode === 'exact') return s === t.value
  if (t.mode === 'sub') return s.includes(t.value)
  return globRegExp(t.value).test(s)
}

export function inRange (r: Range, n: number): boolean {
  if (r.lo !== undefined && (r.loIncl ? n < r.lo : n <= r.lo)) return false
  if (r.hi !== undefined && (r.hiIncl ? n > r.hi : n >= r.hi)) return false
  return true
}
