/**
 * Running the retention policies: evaluate each policy over the repositories it matches
 * (policy.ts), then delete what it names with ordinary DeleteTag and DeleteManifest commands
 * through the log, so that every member agrees and immutability still holds. A dry run only
 * reports. GC frees the bytes afterwards (cluster/gc/collector.ts).
 */
import type { Logger } from 'pino'
import { Counter } from 'prom-client'
import { FlotillaError } from '../../storage/errors.js'
import type { CommandSink } from '../metadata/applier.js'
import type { MetadataQueries } from '../metadata/queries.js'
import { appliesTo, evaluate, type RetentionPolicy, type Verdict } from './policy.js'

export interface RetentionReport {
  dryRun: boolean
  policies: Array<{
    name: string
    repositories: number
    tags: Verdict['tags']
    manifests: Verdict['manifests']
    /** Manifests the policy names that stay for now: a peered site has not received them yet. */
    kept: Array<{ repo: string; digest: string; why: string }>
  }>
  deleted: { tags: number; manifests: number }
  /** Deletions the log refused (an immutable rule set meanwhile, a tag moved): they stay. */
  errors: Array<{ repo: string; ref: string; code: string; message: string }>
}

export interface RetentionOptions {
  queries: MetadataQueries
  sink: CommandSink
  immutable: (repo: string) => Promise<boolean>
  /** Manifests not yet shipped to a peered site (`repo@digest` → its peerings' names): kept. */
  unshipped?: () => Promise<Map<string, string[]>>
  log: Logger
  now?: () => number
}

export class RetentionRunner {
  private running: Promise<RetentionReport> | undefined
  private readonly metrics = {
    runs: new Counter({ name: 'flotilla_retention_runs_total', help: 'Retention runs from this node, by outcome', labelNames: ['outcome'] as const, registers: [] }),
    tags: new Counter({ name: 'flotilla_retention_tags_deleted_total', help: 'Tags deleted by retention policies', registers: [] }),
    manifests: new Counter({ name: 'flotilla_retention_manifests_deleted_total', help: 'Untagged manifests deleted by retention policies', registers: [] }),
  }

  constructor (private readonly opts: RetentionOptions) {}

  all (): Counter[] { return Object.values(this.metrics) }

  async run (opts: { dryRun?: boolean; only?: string } = {}): Promise<RetentionReport> {
    if (this.running !== undefined) return await this.running
    this.running = this.apply(opts)
    try {
      const r = await this.running
      this.metrics.runs.inc({ outcome: opts.dryRun === true ? 'dry-run' : 'ok' })
      return r
    } catch (err) {
      this.metrics.runs.inc({ outcome: 'failed' })
      throw err
    } finally {
      this.running = undefined
    }
  }

  private async apply ({ dryRun = false, only }: { dryRun?: boolean; only?: string }): Promise<RetentionReport> {
    const { queries, sink, log } = this.opts
    const now = (this.opts.now ?? Date.now)()
    await sink.barrier()
    // An index's children count as referenced only through the reference counts: build them first.
    if (!await queries.refsReady()) {
      const r = await sink.submit({ type: 'RebuildRefs', at: now })
      if (!r.ok) throw new FlotillaError(r.code, r.message)
    }
    let policies: RetentionPolicy[] = await queries.retentionPolicies()
    if (only !== undefined) {
      policies = policies.filter((p) => p.name === only)
      if (policies.length === 0) throw new FlotillaError('NOT_FOUND', `no retention policy named ${only}`)
    }
    const repos: string[] = []
    for (let last: string | undefined; ;) {
      const page = await queries.repositories({ n: 1000, ...(last !== undefined ? { last } : {}) })
      repos.push(...page.items)
      if (!page.more) break
      last = page.items.at(-1)
    }
    const report: RetentionReport = { dryRun, policies: [], deleted: { tags: 0, manifests: 0 }, errors: [] }
    const unshipped = await this.opts.unshipped?.() ?? new Map<string, string[]>()
    for (const p of policies) {
      const entry: RetentionReport['policies'][number] = { name: p.name, repositories: 0, tags: [], manifests: [], kept: [] }
      for (const repo of repos) {
        if (!appliesTo(p, repo)) continue
        entry.repositories++
        const v = evaluate(p, { ...await queries.repoState(repo), immutable: await this.opts.immutable(repo) }, now)
        // A manifest on its way to a peered site stays until that site has it (its tags may go:
        // the untag ships too, and the manifest still arrives by digest).
        const waiting = v.manifests.filter((m) => unshipped.has(`${repo}@${m.digest}`))
        v.manifests = v.manifests.filter((m) => !unshipped.has(`${repo}@${m.digest}`))
        for (const m of waiting) entry.kept.push({ repo, digest: m.digest, why: `not yet shipped to site ${unshipped.get(`${repo}@${m.digest}`)!.join(', ')}` })
        entry.tags.push(...v.tags)
        entry.manifests.push(...v.manifests)
        if (dryRun) continue
        for (const t of v.tags) {
          const r = await sink.submit({ type: 'DeleteTag', repo, tag: t.tag })
          if (r.ok) { report.deleted.tags++; this.metrics.tags.inc() } else report.errors.push({ repo, ref: t.tag, code: r.code, message: r.message })
        }
        for (const m of v.manifests) {
          const r = await sink.submit({ type: 'DeleteManifest', repo, digest: m.digest })
          if (r.ok) { report.deleted.manifests++; this.metrics.manifests.inc() } else report.errors.push({ repo, ref: m.digest, code: r.code, message: r.message })
        }
      }
      report.policies.push(entry)
    }
    if (!dryRun && (report.deleted.tags > 0 || report.deleted.manifests > 0)) log.info({ tags: report.deleted.tags, manifests: report.deleted.manifests, errors: report.errors.length }, 'retention: policies applied')
    return report
  }
}
