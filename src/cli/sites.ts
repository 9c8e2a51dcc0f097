/**
 * Cross-site peering commands (cluster/peering/), over the sites API (src/http/sites.ts):
 *
 *   flotilla site token [--ttl 1h]                      at site A: a peering token, alone on stdout's last line
 *   flotilla site peer ADDRESS --token T --name NAME    at site B: peer with A (ADDRESS: any member's HTTP URL or libp2p multiaddr)
 *        [--repos PATTERN]… [--direction pull|push|both] [--tags GLOB] [--deletes] [--access] [--bandwidth MiB/s] [--as NAME]
 *   flotilla site set NAME [the same rule options; --all-repos, --all-tags, --no-deletes, --no-access, --no-bandwidth]
 *   flotilla site explain NAME REPO:TAG
 *   flotilla site list
 *   flotilla site status [NAME]
 *   flotilla site remove NAME
 *
 * Each takes --node URL and --user NAME:PASSWORD (an administrator), and --json for the API's document.
 */
import { Option, type Command } from 'commander'
import { CliError, callApi, type NodeOptions } from './client.js'
import { DURATION_FORMS, parseDurationOption } from './duration.js'
import { printJson, record, table } from './format.js'
import type { SiteStatusDoc } from '../../cluster/peering/sites.js'
import type { ExplainDoc } from '../../cluster/peering/ops.js'

function withNode (cmd: Command): Command {
  return cmd
    .option('--node <url>', 'a node of this site (default http://127.0.0.1:5000, env FLOTILLA_NODE)')
    .option('--user <name:password>', 'an administrator\'s credentials (env FLOTILLA_USER; NAME alone asks for the password)')
    .option('--json', 'print the API\'s JSON document instead of text')
}

type Opts = NodeOptions & { json?: boolean }

const dash = (v: unknown): string => v === null || v === undefined || v === '' ? '-' : String(v)
const state = (s: SiteStatusDoc): string => !s.receiving ? (s.sending ? 'sending' : 'idle') : s.connected === null ? 'not shipping here' : s.connected ? 'connected' : 'DISCONNECTED'
const rulesText = (s: SiteStatusDoc): string => [
  s.rules.repos.length === 0 ? 'all repositories' : s.rules.repos.join(' '),
  s.rules.tags !== undefined ? `tags ${s.rules.tags}` : '',
  s.rules.deletes ? 'deletes' : '',
  s.rules.access ? 'access' : '',
  s.rules.bandwidth !== undefined ? `${s.rules.bandwidth} MiB/s` : '',
].filter((x) => x !== '').join(', ')

/** The last reconciliation round and the last that repaired something (cluster/peering/reconcile.ts). */
function reconciledText (s: SiteStatusDoc): string {
  const r = s.reconciliation ?? null
  if (r === null) return '-'
  const what = (x: NonNullable<typeof r.last>): string => `${x.repaired.manifests} manifests, ${x.repaired.tags} tags, ${x.repaired.untags} tag deletes repaired`
  const parts: string[] = []
  if (r.last !== null) parts.push(`${r.last.at}: ${r.last.inSync ? 'in sync' : `${r.last.reposCompared} of ${r.last.repos} repositories compared, ${what(r.last)}`}`)
  else parts.push('not yet')
  if (r.lastRepair !== null && r.lastRepair.at !== r.last?.at) parts.push(`last repair ${r.lastRepair.at}: ${what(r.lastRepair)}`)
  if (r.lastError !== null) parts.push(`error ${r.lastError.at}: ${r.lastError.message}`)
  return parts.join('; ')
}

function statusText (s: SiteStatusDoc): string {
  const lines: Array<[string, string]> = [
    ['name', s.name],
    ['site', s.site],
    ['direction', `${s.rules.direction} (as seen from ${s.initiator ? 'this site' : 'the other site'}): ${s.receiving ? 'receives' : 'does not receive'}, ${s.sending ? 'sends' : 'does not send'}`],
    ['rules', rulesText(s)],
    ['members', s.members.map((m) => `${m.peerId} ${m.addrs.join(' ')}`).join('; ')],
    ['state', state(s)],
    ['shipper', dash(s.shipper)],
    ['cursor', s.cursor === null ? '-' : `${s.cursor.seq} (applied ${s.cursor.applied} changes, last at ${dash(s.cursor.at)})`],
    ['lag', s.lagEntries === null ? '-' : `${s.lagEntries} entries, ${(s.lagSeconds ?? 0).toFixed(1)} s`],
    ['last contact', dash(s.lastContact)],
    ['backlog', s.backlogBytes === null ? '-' : `${bytesText(s.backlogBytes)}`],
    ['throughput', `in ${bytesText(s.throughput.in)}/s, out ${bytesText(s.throughput.out)}/s (last 10 s)`],
    ['last error', s.lastError === null ? '-' : `${s.lastError.at}: ${s.lastError.message}`],
    ['rules set', `${s.rulesAt ?? 'at peering'}${s.rulesSynced ? '' : ' (NOT YET CONFIRMED by the other site: its leader retries)'}`],
    ['reconciled', reconciledText(s)],
    ['bytes received', dash(s.bytesReceived)],
    ['last served', dash(s.lastServed)],
    ['created', s.createdAt],
  ]
  let out = record(lines)
  if (s.waitingFor !== null && Object.keys(s.waitingFor).length > 0) out += `\nwaiting for blobs: ${Object.entries(s.waitingFor).map(([d, n]) => `${d} (${n} bytes left)`).join(', ')}\n`
  if (s.failures.length > 0) {
    out += '\nchanges that could not be applied here (most recent first):\n'
    out += table(['SEQ', 'OP', 'REPO', 'REF', 'CODE', 'MESSAGE'], s.failures.map((f) => [String(f.seq), f.op, f.repo, f.ref, f.code, f.message]))
  }
  return out
}

function bytesText (n: number): string {
  if (n < 1024) return `${Math.round(n)} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`
  return `${(n / 1024 ** 3).toFixed(2)} GiB`
}

function explainText (doc: ExplainDoc): string {
  let out = record([['peering', `${doc.name} (site ${doc.site})`], ['tag', `${doc.repo}:${doc.tag}`]]) + '\n'
  if (doc.directions.length === 0) return out + 'the peering ships nothing either way (direction)\n'
  out += table(['WAY', 'STATE', 'WHERE IT STANDS'], doc.directions.map((e) => [e.direction === 'in' ? 'to here' : 'from here', e.state.toUpperCase(), e.summary]))
  for (const e of doc.directions) {
    const lines: Array<[string, string]> = []
    if (e.sourceDigest !== null) lines.push(['source digest', e.sourceDigest])
    if (e.targetDigest !== null) lines.push(['receiver digest', e.targetDigest])
    if (e.seq !== null) lines.push(['change', `${e.seq} (receiver's cursor ${dash(e.cursor)})`])
    if (e.behindEntries !== null) lines.push(['behind', `${e.behindEntries} entries${e.lagSeconds !== null ? `, ${e.lagSeconds.toFixed(1)} s` : ''}`])
    if (e.pushedAt !== null) lines.push(['pushed at source', e.pushedAt])
    if (e.replicatedAt !== null) lines.push(['replicated at', e.replicatedAt])
    if (e.rule !== null) lines.push(['rule', e.rule])
    if (e.error !== null) lines.push(['error', `${e.error.at ?? ''} ${e.error.code ?? ''} ${e.error.message}`.trim()])
    if (lines.length > 0) out += `\n${e.direction === 'in' ? 'to here' : 'from here'}:\n` + record(lines)
    if (e.blobs.length > 0) out += table(['BLOB', 'SIZE', 'BYTES LEFT'], e.blobs.map((b) => [b.digest, String(b.size), String(b.bytesLeft)]))
  }
  return out
}

function collect (v: string, prev: string[]): string[] { return [...prev, v] }

function bandwidth (v: string): number {
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new CliError(`--bandwidth ${v}: give a positive number of MiB/s`)
  return n
}

export function siteCommands (program: Command): void {
  const site = program.command('site').description('cross-site peering: tokens, peerings, their status')

  withNode(site.command('token'))
    .description('print a peering token for another site (secret; it expires), alone on the last line of stdout')
    .addOption(new Option('--ttl <duration>', `lifetime: ${DURATION_FORMS}; at least 60 s`).argParser(parseDurationOption).default(3600, '1h'))
    .action(async (opts: Opts & { ttl: number }) => {
      const doc = await callApi(opts, 'POST', '/api/v1/sites/tokens', { ttlSeconds: opts.ttl }) as { token: string; expiresAt: string; site: string }
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(doc.token + '\n')
      process.stderr.write(`site ${doc.site}; expires at ${doc.expiresAt}\n`)
    })

  withNode(site.command('peer'))
    .argument('<address>', 'any member of the other site: its HTTP URL (http://HOST:PORT) or libp2p multiaddr (/ip4/HOST/tcp/PORT[/p2p/ID])')
    .requiredOption('--token <token>', 'a peering token from flotilla site token at the other site')
    .requiredOption('--name <name>', 'this site\'s name for the other site')
    .option('--repos <pattern>', 'repositories to replicate (repeatable; !PATTERN excludes); default all', collect, [])
    .addOption(new Option('--direction <direction>', 'pull: the other site\'s images come here; push: ours go there; both').choices(['pull', 'push', 'both']).default('pull'))
    .option('--tags <glob>', 'only tags matching this glob (* and ?)')
    .option('--deletes', 'replicate tag and manifest deletions too')
    .option('--access', 'replicate users, groups and permission targets (password hashes travel, never passwords)')
    .option('--bandwidth <MiB/s>', 'limit the blob bytes of this peering, each way', bandwidth)
    .option('--as <name>', 'the other site\'s name for this one (default: this site\'s id)')
    .description('peer this site with another (run at the receiving site for --direction pull)')
    .action(async (address: string, opts: Opts & { token: string; name: string; repos: string[]; direction: string; tags?: string; deletes?: boolean; access?: boolean; bandwidth?: number; as?: string }) => {
      const body: Record<string, unknown> = { address, token: opts.token, name: opts.name, repos: opts.repos, direction: opts.direction, deletes: opts.deletes === true, access: opts.access === true }
      if (opts.tags !== undefined) body.tags = opts.tags
      if (opts.bandwidth !== undefined) body.bandwidth = opts.bandwidth
      if (opts.as !== undefined) body.as = opts.as
      const doc = await callApi(opts, 'POST', '/api/v1/sites', body) as SiteStatusDoc
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(`peered with site ${doc.site} as ${doc.name} (${doc.rules.direction}: ${rulesText(doc)})\n`)
    })

  withNode(site.command('set'))
    .argument('<name>', 'the peering')
    .option('--repos <pattern>', 'repositories to replicate, replacing the list (repeatable; !PATTERN excludes)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--all-repos', 'every repository (clears --repos)')
    .addOption(new Option('--direction <direction>', 'as seen from this site: pull (the other site\'s images come here), push, both').choices(['pull', 'push', 'both']))
    .option('--tags <glob>', 'only tags matching this glob')
    .option('--all-tags', 'every tag (clears --tags)')
    .option('--deletes', 'replicate deletions')
    .option('--no-deletes', 'do not replicate deletions')
    .option('--access', 'replicate users, groups and permission targets')
    .option('--no-access', 'do not replicate them')
    .option('--bandwidth <MiB/s>', 'limit the blob bytes of this peering, each way', bandwidth)
    .option('--no-bandwidth', 'no bandwidth limit')
    .description('change a peering\'s rules, here and at the other site (options left out are kept)')
    .action(async (name: string, opts: Opts & { repos?: string[]; allRepos?: boolean; direction?: string; tags?: string; allTags?: boolean; deletes?: boolean; access?: boolean; bandwidth?: number | false }) => {
      const body: Record<string, unknown> = {}
      if (opts.repos !== undefined && opts.allRepos === true) throw new CliError('give --repos or --all-repos, not both')
      if (opts.tags !== undefined && opts.allTags === true) throw new CliError('give --tags or --all-tags, not both')
      if (opts.repos !== undefined) body.repos = opts.repos
      if (opts.allRepos === true) body.repos = []
      if (opts.direction !== undefined) body.direction = opts.direction
      if (opts.tags !== undefined) body.tags = opts.tags
      if (opts.allTags === true) body.tags = null
      if (opts.deletes !== undefined) body.deletes = opts.deletes
      if (opts.access !== undefined) body.access = opts.access
      if (opts.bandwidth !== undefined) body.bandwidth = opts.bandwidth === false ? null : opts.bandwidth
      if (Object.keys(body).length === 0) throw new CliError('nothing to change: give at least one rule option (see flotilla site set --help)')
      const doc = await callApi(opts, 'PATCH', `/api/v1/sites/${encodeURIComponent(name)}`, body) as SiteStatusDoc & { told: boolean; message: string }
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(`rules of ${doc.name}: ${doc.rules.direction}: ${rulesText(doc)}\n${doc.message}\n`)
    })

  withNode(site.command('explain'))
    .argument('<name>', 'the peering')
    .argument('<repo:tag>', 'the tag, as REPO:TAG')
    .description('where a tag stands relative to a peering: replicated, waiting for blobs, in the backlog, filtered out, or blocked (and why)')
    .action(async (name: string, ref: string, opts: Opts) => {
      const at = ref.lastIndexOf(':')
      if (at <= 0 || at === ref.length - 1 || ref.slice(at).includes('/')) throw new CliError(`${ref}: give REPO:TAG, like team/app:v1`)
      const q = new URLSearchParams({ repo: ref.slice(0, at), tag: ref.slice(at + 1) })
      const doc = await callApi(opts, 'GET', `/api/v1/sites/${encodeURIComponent(name)}/explain?${q.toString()}`) as ExplainDoc
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(explainText(doc))
    })

  withNode(site.command('list'))
    .description('every peering of this site')
    .action(async (opts: Opts) => {
      const doc = await callApi(opts, 'GET', '/api/v1/sites') as { site: string; peerings: SiteStatusDoc[] }
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(`this site: ${doc.site}\n\n`)
      process.stdout.write(table(['NAME', 'SITE', 'DIRECTION', 'STATE', 'CURSOR', 'LAG', 'BACKLOG', 'IN/OUT', 'LAST ERROR', 'RULES'], doc.peerings.map((s) => [
        s.name, s.site, s.rules.direction, state(s), s.cursor === null ? '-' : String(s.cursor.seq),
        s.lagEntries === null ? '-' : `${s.lagEntries} (${(s.lagSeconds ?? 0).toFixed(1)} s)`,
        s.backlogBytes === null ? '-' : bytesText(s.backlogBytes), `${bytesText(s.throughput.in)}/s ${bytesText(s.throughput.out)}/s`,
        s.lastError === null ? '-' : `${s.lastError.at} ${s.lastError.message.slice(0, 60)}`, rulesText(s)])))
    })

  withNode(site.command('status'))
    .argument('[name]', 'one peering (default: all)')
    .description('state, cursor, lag, last error of a peering (from the node that ships: the leader)')
    .action(async (name: string | undefined, opts: Opts) => {
      if (name === undefined) {
        const doc = await callApi(opts, 'GET', '/api/v1/sites') as { site: string; peerings: SiteStatusDoc[] }
        if (opts.json === true) { printJson(doc); return }
        process.stdout.write(`this site: ${doc.site}\n`)
        for (const s of doc.peerings) process.stdout.write('\n' + statusText(s))
        if (doc.peerings.length === 0) process.stdout.write('no peerings: flotilla site peer ADDRESS --token T --name NAME\n')
        return
      }
      const doc = await callApi(opts, 'GET', `/api/v1/sites/${encodeURIComponent(name)}`) as SiteStatusDoc
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(statusText(doc))
    })

  withNode(site.command('remove'))
    .argument('<name>', 'the peering to remove')
    .description('remove a peering at this site (its members are no longer admitted); the other site keeps its own record until removed there')
    .action(async (name: string, opts: Opts) => {
      const doc = await callApi(opts, 'DELETE', `/api/v1/sites/${encodeURIComponent(name)}`) as { removed: string }
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(`removed the peering ${doc.removed}\n`)
    })
}
