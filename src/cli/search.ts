/**
 * `flotilla search` and `flotilla latest` (GET /api/v1/search, GET /api/v1/latest/REPO; see
 * src/http/search.ts and the query language in cluster/metadata/search-query.ts):
 *
 *   flotilla search [-q EXPR] [--name GLOB] [--tag GLOB] [--prop K[=V]] [--sha1 HEX] [--md5 HEX]
 *                   [--digest D] [--media T] [--type T] [--pushed R] [--created R] [--pulled R]
 *                   [--size R] [--limit N] [--properties] [--json]
 *   flotilla latest REPO [--by semver|time] [--match GLOB] [--prop K[=V]] [--json]
 *
 * Every option is repeatable and all are ANDed with -q. A range R is `>=A`, `<B`, or `A..B`
 * (times: 2024-05-01, now-7d, epoch ms; sizes: 10MB, 512KiB). Search follows the API's cursor
 * until --limit results (default 100) and says when more remain; --json prints the items
 * (and the cursor to go on from, when more remain).
 */
import type { Command } from 'commander'
import { InvalidArgumentError } from 'commander'
import { api, show, withConn, type Conn } from './admin.js'
import { iso, table } from './format.js'

interface Hit { repo: string; digest: string; mediaType: string; artifactType?: string; size: number; pushedAt: number; createdAt?: number; pulledAt?: number; tags: string[]; properties?: Record<string, string[]> }

const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
const repeat = (v: string, prev: string[] = []): string[] => [...prev, v]
const FLAGS = ['name', 'tag', 'prop', 'sha1', 'md5', 'digest', 'media', 'type', 'pushed', 'created', 'pulled', 'size'] as const

function shortType (mt: string): string {
  return mt.replace(/^application\/vnd\./, '').replace(/\.v1\+json$/, '').replace(/\+json$/, '')
}

function sizeText (n: number): string {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`
}

export function searchCommands (program: Command): void {
  const search = withConn(program.command('search').description('find manifests by name, tag, digest, checksum, property, time, type or size (only where you may read)'))
    .option('-q, --query <expr>', 'an expression: criteria with AND, OR, NOT and ( ), e.g. "name:team/* AND (prop:qa=ok OR tag:v1.*)"')
  const help: Record<typeof FLAGS[number], string> = {
    name: 'repository glob (team/*), or ~TEXT for a substring',
    tag: 'tag glob (v1.*)',
    prop: 'property KEY (exists), KEY=VALUE, KEY>=N …',
    sha1: 'a blob with this SHA-1',
    md5: 'a blob with this MD5',
    digest: 'the manifest, or a blob it references',
    media: 'manifest media type (glob)',
    type: 'artifactType (glob)',
    pushed: 'push time range: >=2024-05-01, <now-7d, A..B',
    created: 'creation time range (org.opencontainers.image.created)',
    pulled: 'last pull time range (batched; may lag)',
    size: 'manifest size range: >=1KB, 1KB..1MB',
  }
  for (const f of FLAGS) search.option(`--${f} <value>`, `${help[f]} (repeatable)`, repeat)
  search
    .option('--limit <n>', 'at most this many results, following pages (default 100)', (v: string) => {
      if (!/^\d{1,7}$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('a whole number, 1 or more')
      return Number(v)
    })
    .option('--cursor <cursor>', 'go on from where an earlier search stopped')
    .option('--properties', 'list each result\'s properties')
    .action(async (o: Conn & Partial<Record<typeof FLAGS[number], string[]>> & { query?: string; limit?: number; cursor?: string; properties?: boolean }) => {
      const limit = o.limit ?? 100
      const params = new URLSearchParams()
      if (o.query !== undefined) params.append('q', o.query)
      for (const f of FLAGS) for (const v of o[f] ?? []) params.append(f, v)
      if (o.properties === true) params.set('properties', 'true')
      const items: Hit[] = []
      let cursor = o.cursor
      do {
        const p = new URLSearchParams(params)
        p.set('n', String(Math.min(1000, limit - items.length)))
        if (cursor !== undefined) p.set('cursor', cursor)
        const page = await api(o, 'GET', `/search?${p.toString()}`) as { items: Hit[]; cursor?: string }
        items.push(...page.items)
        cursor = page.cursor
      } while (cursor !== undefined && items.length < limit)
      show(o, { items, ...(cursor !== undefined ? { cursor } : {}) }, () => {
        if (items.length === 0) return 'no manifests match (in the repositories you may read)\n'
        const rows = items.map((h) => [
          h.repo,
          h.digest.slice(0, 19),
          h.tags.length === 0 ? '-' : h.tags.length > 3 ? `${h.tags.slice(0, 3).join(',')},+${h.tags.length - 3}` : h.tags.join(','),
          // An image's artifactType is its config's media type: only another one says more than the manifest's.
          shortType(h.artifactType !== undefined && h.artifactType !== OCI_CONFIG ? h.artifactType : h.mediaType),
          sizeText(h.size),
          iso(h.pushedAt),
          ...(o.properties === true ? [Object.entries(h.properties ?? {}).map(([k, v]) => `${k}=${v.join('|')}`).join(' ') || '-'] : []),
        ])
        const head = ['REPOSITORY', 'DIGEST', 'TAGS', 'TYPE', 'SIZE', 'PUSHED', ...(o.properties === true ? ['PROPERTIES'] : [])]
        return table(head, rows) + (cursor !== undefined ? `(${items.length} shown, more match: --limit N for more, or --cursor ${cursor} to go on)\n` : '')
      })
    })

  withConn(program.command('latest <repo>').description('the newest tag of a repository, by version (default) or push time'))
    .option('--by <order>', 'semver (tags read as versions: 1.2.3, v1.2, 2.0.0-rc.1) or time (last push)', (v: string) => {
      if (v !== 'semver' && v !== 'time') throw new InvalidArgumentError('semver or time')
      return v
    })
    .option('--match <glob>', 'only tags matching this pattern (v1.*)')
    .option('--prop <key[=value]>', 'only manifests with this property (and value)')
    .action(async (repo: string, o: Conn & { by?: string; match?: string; prop?: string }) => {
      const p = new URLSearchParams()
      if (o.by !== undefined) p.set('by', o.by)
      if (o.match !== undefined) p.set('match', o.match)
      if (o.prop !== undefined) p.set('prop', o.prop)
      const q = p.toString()
      const doc = await api(o, 'GET', `/latest/${repo.split('/').map(encodeURIComponent).join('/')}${q === '' ? '' : `?${q}`}`) as { repo: string; tag: string; digest: string; version?: string; pushedAt: number }
      show(o, doc, () => table(['IMAGE', 'DIGEST', 'VERSION', 'PUSHED'], [[`${doc.repo}:${doc.tag}`, doc.digest, doc.version ?? '-', iso(doc.pushedAt)]]))
    })
}
