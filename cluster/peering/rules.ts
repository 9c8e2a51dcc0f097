/**
 * Changing a peering's rules after the fact (`flotilla site set NAME …`, PATCH
 * /api/v1/sites/NAME): applied through this site's log (SetSiteRules), then told to the other
 * site over the link (cluster/peering/ops.ts), which applies the same through its own log, so
 * both record the same rules. Until the other site confirms, the record says so
 * (`rulesSynced: false`) and the leader tells it again every few seconds.
 *
 * Both sites may change the rules at once: each change carries its version (the time it was
 * made and the site that made it); a site keeps the later version (then the larger site id),
 * so both end with the same rules whichever message arrives first.
 */
import { FlotillaError } from '../../storage/errors.js'
import type { TxLike } from '../access/apply.js'
import { key } from '../metadata/keys.js'
import type { CommandResult } from '../metadata/commands.js'
import type { PeeringCommand } from './commands.js'
import { rulesProblem, type Direction, type PeeringRecord, type PeeringRules } from './model.js'

/** The version of a record's rules: when they were last set, and where. */
export function rulesVersion (p: PeeringRecord): [number, string] {
  return [p.rulesAt ?? p.createdAt, p.rulesBy ?? '']
}

/** Whether version a is later than version b. */
export function laterThan (a: [number, string], b: [number, string]): boolean {
  return a[0] !== b[0] ? a[0] > b[0] : a[1] > b[1]
}

/** A direction as seen from this site, turned into the record's (as seen from the initiator), and back: the same map. */
export function asInitiatorSees (p: Pick<PeeringRecord, 'initiator'>, d: Direction): Direction {
  if (p.initiator || d === 'both') return d
  return d === 'pull' ? 'push' : 'pull'
}

/** What `site set` may change: any rule; options left out keep their value, null clears tags or bandwidth. */
export interface RulesPatch {
  repos?: string[]
  /** As seen from the site where `site set` runs. */
  direction?: Direction
  tags?: string | null
  deletes?: boolean
  access?: boolean
  bandwidth?: number | null
}

/** The rules after a patch made at this site (direction translated to the initiator's view). */
export function patchRules (p: PeeringRecord, patch: RulesPatch): PeeringRules {
  const r: PeeringRules = { ...p.rules, repos: [...p.rules.repos] }
  if (patch.repos !== undefined) r.repos = patch.repos
  if (patch.direction !== undefined) r.direction = asInitiatorSees(p, patch.direction)
  if (patch.tags === null) delete r.tags
  else if (patch.tags !== undefined) r.tags = patch.tags
  if (patch.deletes !== undefined) r.deletes = patch.deletes
  if (patch.access !== undefined) r.access = patch.access
  if (patch.bandwidth === null) delete r.bandwidth
  else if (patch.bandwidth !== undefined) r.bandwidth = patch.bandwidth
  return r
}

export async function applyRules (tx: TxLike, c: Extract<PeeringCommand, { type: 'SetSiteRules' | 'SiteRulesSynced' }>): Promise<CommandResult> {
  const p = await tx.getJSON<PeeringRecord>(key.sitePeer(c.name))
  if (p === undefined) throw new FlotillaError('NOT_FOUND', `no peering named ${c.name}: see flotilla site list`)
  if (c.type === 'SiteRulesSynced') {
    // Only the version the other site confirmed: a later change made here meanwhile stays unsynced.
    if ((p.rulesAt ?? p.createdAt) === c.rulesAt && p.rulesSynced === false) tx.putJSON(key.sitePeer(c.name), { ...p, rulesSynced: true, updatedAt: c.at })
    return { ok: true }
  }
  const why = rulesProblem(c.rules)
  if (why !== undefined) throw new FlotillaError('BAD_REQUEST', why)
  if (typeof c.rulesAt !== 'number' || typeof c.by !== 'string') throw new FlotillaError('BAD_REQUEST', 'rules need a version (rulesAt, by)')
  const mine = rulesVersion(p)
  if (!laterThan([c.rulesAt, c.by], mine)) {
    // Older than (or the same as) what is recorded: kept as is; the answer says which version stands.
    return { ok: true, value: { kept: true, rules: p.rules, rulesAt: mine[0], by: mine[1] } }
  }
  const next: PeeringRecord = { ...p, rules: c.rules, rulesAt: c.rulesAt, rulesBy: c.by, rulesSynced: c.synced, updatedAt: c.at }
  tx.putJSON(key.sitePeer(c.name), next)
  return { ok: true, value: { kept: false, rules: c.rules, rulesAt: c.rulesAt, by: c.by } }
}
