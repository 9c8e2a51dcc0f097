/**
 * The access-control commands of the `flotilla` CLI. Each calls the admin REST API
 * (src/http/admin.ts) of a running node:
 *
 *   flotilla user list | show NAME | add NAME [--password P|--password-stdin] [--admin] | rm NAME
 *                | set NAME [--admin|--no-admin] [--disable|--enable] | passwd NAME [--password P|--password-stdin]
 *   flotilla password [--password P|--password-stdin]              change your own password
 *   flotilla group list | show NAME | add NAME [--member USER…] | rm NAME | member-add GROUP USER | member-rm GROUP USER
 *   flotilla permission list | show NAME | rm NAME
 *                | set NAME --repo PATTERN… [--allow-user NAME=ACTIONS…] [--allow-group NAME=ACTIONS…]
 *   flotilla token list [--owner USER] | create NAME --scope PATTERN=ACTIONS… [--expires 30d] [--owner USER] | revoke ID
 *   flotilla immutable list | add PATTERN | rm PATTERN
 *   flotilla promote SRC:TAG DST[:TAG] [--move] [--properties|--no-properties]
 *   flotilla gc [--dry-run] [--grace DURATION]
 *   flotilla quota set NAME --repos P… --max SIZE | list | rm NAME
 *   flotilla hook set NAME --url URL --events E,… [--repos P…] [--secret-stdin] | list | rm NAME | deliveries NAME
 *   flotilla retention set NAME --repos P… [--keep-last N] [--by push|semver] [--older-than D] [--not-pulled D] [--untagged] [--exclude GLOB…] | list | rm NAME | run [--dry-run]
 *   flotilla audit [--by USER] [--action A] [--repo PATTERN] [--outcome ok|failed|denied] [--since WHEN] [--until WHEN] [--limit N]
 *
 * Every command takes --node URL (env FLOTILLA_NODE, default http://127.0.0.1:5000; HOST:PORT
 * means http://HOST:PORT) and --user NAME:PASSWORD (env FLOTILLA_USER; NAME alone asks for the
 * password on a terminal); an access token works as the password. Each prints a table or a
 * line for people, times in ISO 8601; --json prints the API's JSON document instead.
 */
import { randomBytes } from 'node:crypto'
import { InvalidArgumentError, Option, type Command } from 'commander'
import { CliError, callApi, credentials } from './client.js'
import { grantsText, iso, printJson, record, table } from './format.js'
import { DURATION_FORMS, durationSeconds, parseDurationOption, parseTimeOption } from './duration.js'
import { spinner } from './progress.js'

export interface Conn { node?: string; user?: string; json?: boolean; caCert?: string; clientCert?: string; clientKey?: string }

export { CliError }

/** Call the admin API (PATH after /api/v1); answers the parsed JSON or throws a CliError with the registry's message. */
export async function api (opts: Conn, method: string, path: string, body?: unknown, how: { timeoutMs?: number } = {}): Promise<any> {
  return await callApi(opts, method, `/api/v1${path}`, body, how)
}

/** How long `gc` and `retention run` wait for their answer: a large store takes minutes. */
const LONG_MS = 6 * 3_600_000

/** The API's document with --json; otherwise what `human` prints. */
export function show (o: Conn, doc: unknown, human: () => string): void {
  if (o.json === true) printJson(doc)
  else process.stdout.write(human())
}

const UNITS: Record<string, number> = { b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 }

/** `500MiB`, `10GiB`, `1.5TB`, `1048576` → bytes; undefined when malformed. */
export function parseSize (text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(text.trim())
  if (m === null) return undefined
  const unit = UNITS[(m[2] ?? '').toLowerCase() || 'b']
  if (unit === undefined) return undefined
  const n = Math.round(Number(m[1]) * unit)
  return Number.isSafeInteger(n) ? n : undefined
}

function sizeText (bytes: number): string {
  for (const [u, f] of [['TiB', 2 ** 40], ['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) if (bytes >= f) return `${(bytes / f).toFixed(1)} ${u}`
  return `${bytes} B`
}

interface RetentionDoc { name: string; repositories: string[]; exclude?: string[]; keepLast?: number; by?: string; olderThanDays?: number; notPulledDays?: number; untagged?: boolean; untaggedAfterHours?: number }
interface RetentionRunDoc {
  dryRun: boolean
  policies: Array<{ name: string; repositories: number; tags: Array<{ repo: string; tag: string; why: string }>; manifests: Array<{ repo: string; digest: string; why: string }>; kept?: Array<{ repo: string; digest: string; why: string }> }>
  deleted: { tags: number; manifests: number }
  errors: Array<{ repo: string; ref: string; code: string; message: string }>
}

function policyRules (p: RetentionDoc): string {
  const r: string[] = []
  if (p.keepLast !== undefined) r.push(`keep last ${p.keepLast}${p.by === 'semver' ? ' by version' : ''}`)
  if (p.olderThanDays !== undefined) r.push(`older than ${p.olderThanDays}d`)
  if (p.notPulledDays !== undefined) r.push(`not pulled in ${p.notPulledDays}d`)
  if (p.untagged === true) r.push(`untagged after ${p.untaggedAfterHours ?? 24}h`)
  return r.join(', ')
}

function retentionText (d: RetentionRunDoc): string {
  const rows: string[][] = []
  for (const p of d.policies) {
    for (const t of p.tags) rows.push([p.name, `${t.repo}:${t.tag}`, t.why])
    for (const m of p.manifests) rows.push([p.name, `${m.repo}@${m.digest}`, m.why])
  }
  const n = rows.length
  const head = d.dryRun ? `would delete ${n} tag(s) and manifest(s)\n` : `deleted ${d.deleted.tags} tag(s) and ${d.deleted.manifests} untagged manifest(s); run flotilla gc to free their space now\n`
  const errs = d.errors.map((e) => `not deleted: ${e.repo} ${e.ref}: ${e.message}\n`).join('')
  const kept = d.policies.flatMap((p) => (p.kept ?? []).map((k) => `kept for now: ${k.repo}@${k.digest}: ${k.why}\n`)).join('')
  return head + (n > 0 ? table(['POLICY', 'DELETE', 'WHY'], rows) : '') + errs + kept
}

interface GcDoc {
  dryRun: boolean
  graceMs: number
  unlinked: number
  blobs: Array<{ digest: string; size: number }>
  bytes: number
  kept: number
  nodes: Array<{ peerId: string; ok: boolean; deleted: number; bytes: number; error?: string }>
  pending: string[]
}

function mib (bytes: number): string {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${bytes} bytes`
}

function gcText (d: GcDoc): string {
  const head = d.dryRun
    ? `would collect ${d.blobs.length} blob(s), ${mib(d.bytes)}, and remove ${d.unlinked} repository link(s) (grace ${d.graceMs / 1000}s; ${d.kept} digest(s) in use left alone)\n`
    : `collected ${d.blobs.length} blob(s), ${mib(d.bytes)}, and removed ${d.unlinked} repository link(s) (grace ${d.graceMs / 1000}s; ${d.kept} digest(s) in use left alone)\n`
  if (d.dryRun) return head + (d.blobs.length > 0 ? table(['DIGEST', 'SIZE'], d.blobs.map((b) => [b.digest, mib(b.size)])) : '')
  const nodes = table(['NODE', 'DELETED', 'FREED', 'STATUS'], d.nodes.map((n) => [n.peerId, String(n.deleted), mib(n.bytes), n.ok ? 'ok' : `unreachable: ${n.error ?? ''}`]))
  const later = d.pending.length > 0 ? `${d.pending.length} node(s) did not answer; they delete their bytes when they come back: ${d.pending.join(', ')}\n` : ''
  return head + nodes + later
}

interface UserDoc { name: string; admin: boolean; disabled: boolean; groups?: string[]; createdAt: number; updatedAt: number }
interface GroupDoc { name: string; members?: string[]; createdAt: number }
interface PermissionDoc { name: string; repositories: string[]; users: Record<string, string[]>; groups: Record<string, string[]>; updatedAt: number }
interface TokenDoc { id: string; kind: string; name: string; owner: string; scopes: Array<{ repositories: string[]; actions: string[] }>; createdAt: number; expiresAt: number; revokedAt?: number; token?: string }
interface AuditDoc { seq: number; at: number; user: string; token?: string; address: string; action: string; repo?: string; outcome: string; code?: string; detail?: Record<string, unknown> }

const yes = (b: boolean | undefined): string => b === true ? 'yes' : 'no'
const list = (xs: string[] | undefined): string => xs === undefined || xs.length === 0 ? '-' : xs.join(',')

const userRow = (u: UserDoc): string[] => [u.name, yes(u.admin), yes(u.disabled), list(u.groups), iso(u.createdAt), iso(u.updatedAt)]
const USER_HEAD = ['NAME', 'ADMIN', 'DISABLED', 'GROUPS', 'CREATED', 'UPDATED']
const userRecord = (u: UserDoc): string => record([['name', u.name], ['admin', yes(u.admin)], ['disabled', yes(u.disabled)], ['groups', list(u.groups)], ['created', iso(u.createdAt)], ['updated', iso(u.updatedAt)]])
const groupRecord = (g: GroupDoc): string => record([['name', g.name], ['members', list(g.members)], ['created', iso(g.createdAt)]])
const permissionRow = (p: PermissionDoc): string[] => [p.name, p.repositories.join(','), grantsText(p.users), grantsText(p.groups), iso(p.updatedAt)]
const permissionRecord = (p: PermissionDoc): string => record([['name', p.name], ['repositories', p.repositories.join(',')], ['users', grantsText(p.users)], ['groups', grantsText(p.groups)], ['updated', iso(p.updatedAt)]])
const scopesText = (t: TokenDoc): string => t.scopes.map((g) => `${g.repositories.join(',')}=${g.actions.join(',')}`).join(' ') || '-'
const tokenState = (t: TokenDoc, now = Date.now()): string => t.revokedAt !== undefined ? `revoked ${iso(t.revokedAt)}` : t.expiresAt !== 0 && t.expiresAt <= now ? 'expired' : 'active'
const tokenRow = (t: TokenDoc): string[] => [t.id, t.name, t.owner, t.kind, scopesText(t), iso(t.createdAt), iso(t.expiresAt, 'never'), tokenState(t)]
/** `k=v …`, each value cut at 60 characters: --json has them whole. */
const detailText = (d: Record<string, unknown> | undefined): string => Object.entries(d ?? {}).map(([k, v]) => {
  const text = typeof v === 'string' ? v : JSON.stringify(v)
  return `${k}=${text.length > 60 ? text.slice(0, 59) + '…' : text}`
}).join(' ') || '-'
const auditRow = (e: AuditDoc): string[] => [iso(e.at), e.user + (e.token !== undefined ? ` (token ${e.token})` : ''), e.address, e.action, e.repo ?? '-', e.outcome + (e.code !== undefined ? ` ${e.code}` : ''), detailText(e.detail)]

export async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
}

async function passwordFrom (o: { password?: string; passwordStdin?: boolean }): Promise<string | undefined> {
  if (o.passwordStdin === true) return await readStdin()
  return o.password
}

/** `PATTERN=read,write` → {repositories, actions}; `NAME=read,write` → [name, actions]. */
function splitAssign (s: string): [string, string[]] {
  const eq = s.lastIndexOf('=')
  if (eq <= 0) throw new CliError(`expected NAME=ACTION[,ACTION…], got ${JSON.stringify(s)}`)
  return [s.slice(0, eq), s.slice(eq + 1).split(',').map((a) => a.trim()).filter((a) => a !== '')]
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

export function withConn (c: Command): Command {
  return c
    .option('--node <url>', 'node URL (env FLOTILLA_NODE, default http://127.0.0.1:5000)')
    .option('--user <name:password>', 'credentials (env FLOTILLA_USER; NAME alone asks for the password); a token works as the password')
    .option('--ca-cert <file>', 'trust this CA for an https:// node, besides the system\'s (env FLOTILLA_CA_CERT)')
    .option('--client-cert <file>', 'TLS client certificate, for a node that asks for one (env FLOTILLA_CLIENT_CERT)')
    .option('--client-key <file>', 'its key (env FLOTILLA_CLIENT_KEY)')
    .option('--json', 'print the API\'s JSON document instead of a table')
}

export function registerAdminCommands (program: Command): void {
  const user = program.command('user').description('manage users (admin)')
  withConn(user.command('list').description('list users')).action(async (o: Conn) => {
    const doc = await api(o, 'GET', '/users')
    show(o, doc, () => table(USER_HEAD, (doc.users as UserDoc[]).map(userRow)))
  })
  withConn(user.command('show <name>').description('show a user')).action(async (name: string, o: Conn) => {
    const doc = await api(o, 'GET', `/users/${name}`)
    show(o, doc, () => userRecord(doc))
  })
  withConn(user.command('add <name>').description('create a user (a random password is printed unless one is given)'))
    .option('--password <password>', 'the password').option('--password-stdin', 'read the password from stdin').option('--admin', 'make an administrator')
    .action(async (name: string, o: Conn & { password?: string; passwordStdin?: boolean; admin?: boolean }) => {
      const given = await passwordFrom(o)
      const password = given ?? randomBytes(15).toString('base64url')
      const u = await api(o, 'POST', '/users', { name, password, admin: o.admin === true })
      show(o, given === undefined ? { ...u, password } : u, () => userRecord(u) + (given === undefined ? record([['password', `${password}   (random; shown only now)`]]) : ''))
    })
  withConn(user.command('rm <name>').description('delete a user (their tokens are revoked)')).action(async (name: string, o: Conn) => {
    show(o, await api(o, 'DELETE', `/users/${name}`), () => `deleted the user ${name}\n`)
  })
  withConn(user.command('set <name>').description('change a user\'s flags'))
    .option('--admin', 'make an administrator').option('--no-admin', 'remove administrator rights')
    .option('--disable', 'refuse their sign-ins').option('--enable', 'allow their sign-ins again')
    .action(async (name: string, o: Conn & { admin?: boolean; disable?: boolean; enable?: boolean }) => {
      const body: Record<string, boolean> = {}
      if (o.admin !== undefined) body.admin = o.admin
      if (o.disable === true) body.disabled = true
      if (o.enable === true) body.disabled = false
      const doc = await api(o, 'PATCH', `/users/${name}`, body)
      show(o, doc, () => userRecord(doc))
    })
  withConn(user.command('passwd <name>').description('set a user\'s password'))
    .option('--password <password>', 'the new password').option('--password-stdin', 'read it from stdin')
    .action(async (name: string, o: Conn & { password?: string; passwordStdin?: boolean }) => {
      const password = await passwordFrom(o)
      if (password === undefined) throw new CliError('give --password or --password-stdin')
      show(o, await api(o, 'PUT', `/users/${name}/password`, { password }), () => `changed the password of ${name}\n`)
    })

  withConn(program.command('password').description('change your own password (the user of --user)'))
    .option('--password <password>', 'the new password').option('--password-stdin', 'read it from stdin')
    .action(async (o: Conn & { password?: string; passwordStdin?: boolean }) => {
      const password = await passwordFrom(o)
      if (password === undefined) throw new CliError('give --password or --password-stdin')
      const name = (o.user ?? process.env.FLOTILLA_USER ?? '').split(':')[0] ?? ''
      show(o, await api(o, 'PUT', `/users/${name}/password`, { password }), () => `changed the password of ${name}\n`)
    })

  const group = program.command('group').description('manage groups (admin)')
  withConn(group.command('list').description('list groups and members')).action(async (o: Conn) => {
    const doc = await api(o, 'GET', '/groups')
    show(o, doc, () => table(['NAME', 'MEMBERS', 'CREATED'], (doc.groups as GroupDoc[]).map((g) => [g.name, list(g.members), iso(g.createdAt)])))
  })
  withConn(group.command('show <name>').description('show a group')).action(async (name: string, o: Conn) => {
    const doc = await api(o, 'GET', `/groups/${name}`)
    show(o, doc, () => groupRecord(doc))
  })
  withConn(group.command('add <name>').description('create a group')).option('--member <user>', 'a member (repeatable)', collect, [])
    .action(async (name: string, o: Conn & { member: string[] }) => {
      const doc = await api(o, 'POST', '/groups', { name, members: o.member })
      show(o, doc, () => groupRecord(doc))
    })
  withConn(group.command('rm <name>').description('delete a group')).action(async (name: string, o: Conn) => {
    show(o, await api(o, 'DELETE', `/groups/${name}`), () => `deleted the group ${name}\n`)
  })
  withConn(group.command('member-add <group> <user>').description('add a member')).action(async (g: string, u: string, o: Conn) => {
    const doc = await api(o, 'PUT', `/groups/${g}/members/${u}`)
    show(o, doc, () => groupRecord(doc))
  })
  withConn(group.command('member-rm <group> <user>').description('remove a member')).action(async (g: string, u: string, o: Conn) => {
    const doc = await api(o, 'DELETE', `/groups/${g}/members/${u}`)
    show(o, doc, () => groupRecord(doc))
  })

  const perm = program.command('permission').description('manage permission targets (admin)')
  withConn(perm.command('list').description('list permission targets')).action(async (o: Conn) => {
    const doc = await api(o, 'GET', '/permissions')
    show(o, doc, () => table(['NAME', 'REPOSITORIES', 'USERS', 'GROUPS', 'UPDATED'], (doc.permissions as PermissionDoc[]).map(permissionRow)))
  })
  withConn(perm.command('show <name>').description('show a permission target')).action(async (name: string, o: Conn) => {
    const doc = await api(o, 'GET', `/permissions/${name}`)
    show(o, doc, () => permissionRecord(doc))
  })
  withConn(perm.command('set <name>').description('create or replace a permission target'))
    .requiredOption('--repo <pattern>', 'repository pattern, e.g. team-a/** (repeatable)', collect, [])
    .option('--allow-user <name=actions>', 'a user and actions, e.g. alice=read,write (repeatable; anonymous=read for anonymous pulls)', collect, [])
    .option('--allow-group <name=actions>', 'a group and actions, e.g. qa=read (repeatable)', collect, [])
    .action(async (name: string, o: Conn & { repo: string[]; allowUser: string[]; allowGroup: string[] }) => {
      const users = Object.fromEntries(o.allowUser.map(splitAssign))
      const groups = Object.fromEntries(o.allowGroup.map(splitAssign))
      const doc = await api(o, 'PUT', `/permissions/${name}`, { repositories: o.repo, users, groups })
      show(o, doc, () => permissionRecord(doc))
    })
  withConn(perm.command('rm <name>').description('delete a permission target')).action(async (name: string, o: Conn) => {
    show(o, await api(o, 'DELETE', `/permissions/${name}`), () => `deleted the permission target ${name}\n`)
  })

  // `flotilla token` alone prints a cluster join token (its default subcommand, src/cli/cluster.ts).
  const token = program.command('token').description('access tokens for robots and CI (list, create, revoke); alone, a join token')
  withConn(token.command('list').description('list tokens (yours; all for an admin)')).option('--owner <user>', 'only this owner\'s (admin)')
    .action(async (o: Conn & { owner?: string }) => {
      const doc = await api(o, 'GET', `/tokens${o.owner !== undefined ? `?owner=${encodeURIComponent(o.owner)}` : ''}`)
      show(o, doc, () => table(['ID', 'NAME', 'OWNER', 'KIND', 'SCOPES', 'CREATED', 'EXPIRES', 'STATE'], (doc.tokens as TokenDoc[]).map(tokenRow)))
    })
  withConn(token.command('create <name>').description('create a token; its value is printed once'))
    .requiredOption('--scope <pattern=actions>', 'e.g. ci/**=read,write (repeatable)', collect, [])
    .addOption(new Option('--expires <duration>', `lifetime: ${DURATION_FORMS} (default: never)`).argParser(parseDurationOption))
    .option('--owner <user>', 'owner (admin only; default: you)')
    .action(async (name: string, o: Conn & { scope: string[]; expires?: number; owner?: string }) => {
      const scopes = o.scope.map(splitAssign).map(([p, actions]) => ({ repositories: [p], actions }))
      const body: Record<string, unknown> = { name, scopes }
      if (o.expires !== undefined) body.expiresInSeconds = o.expires
      if (o.owner !== undefined) body.owner = o.owner
      const doc = await api(o, 'POST', '/tokens', body) as TokenDoc
      show(o, doc, () => record([['id', doc.id], ['name', doc.name], ['owner', doc.owner], ['scopes', scopesText(doc)], ['expires', iso(doc.expiresAt, 'never')], ['token', `${doc.token ?? ''}   (shown only now)`]]))
    })
  withConn(token.command('revoke <id>').description('revoke a token, on every node at once')).action(async (id: string, o: Conn) => {
    show(o, await api(o, 'DELETE', `/tokens/${id}`), () => `revoked the token ${id}\n`)
  })

  const imm = program.command('immutable').description('immutable-tag rules')
  withConn(imm.command('list').description('list rules')).action(async (o: Conn) => {
    const doc = await api(o, 'GET', '/immutable')
    show(o, doc, () => table(['PATTERN', 'CREATED'], (doc.rules as Array<{ pattern: string; createdAt: number }>).map((r) => [r.pattern, iso(r.createdAt)])))
  })
  withConn(imm.command('add <pattern>').description('make tags in matching repositories immutable (admin)')).action(async (p: string, o: Conn) => {
    show(o, await api(o, 'PUT', '/immutable', { pattern: p }), () => `tags in repositories matching ${p} are immutable now\n`)
  })
  withConn(imm.command('rm <pattern>').description('remove a rule (admin)')).action(async (p: string, o: Conn) => {
    show(o, await api(o, 'DELETE', `/immutable?pattern=${encodeURIComponent(p)}`), () => `removed the immutable-tag rule ${p}\n`)
  })

  withConn(program.command('promote <src> <dst>').description('copy SRC:TAG (or SRC@DIGEST) to DST[:TAG] server-side, with its referrers'))
    .option('--move', 'also remove it from the source')
    .option('--properties', 'carry the manifests\' user properties (the node\'s default: properties.promote, on unless set off)')
    .option('--no-properties', 'leave user properties behind (read-only ones, the image\'s annotations and labels, always come)')
    .action(async (src: string, dst: string, o: Conn & { move?: boolean; properties?: boolean }) => {
      // One request, applied as one command: nothing to count while it runs, so a spinner on a
      // terminal. A password to ask for is asked before it starts.
      await credentials(o)
      const doc = await spinner(`${o.move === true ? 'moving' : 'promoting'} ${src} to ${dst}`, async () => await api(o, 'POST', '/promote', { from: src, to: dst, move: o.move === true, ...(o.properties !== undefined ? { properties: o.properties } : {}) })) as { digest: string; manifests: string[]; blobs: number; referrers: number; properties?: number }
      show(o, doc, () => `${o.move === true ? 'moved' : 'promoted'} ${src} to ${dst} (${doc.digest}): ${doc.manifests.length} manifest(s), ${doc.blobs} blob(s), ${doc.referrers} referrer(s)${(doc.properties ?? 0) > 0 ? `, ${doc.properties!} user propert${doc.properties === 1 ? 'y' : 'ies'}` : ''}\n`)
    })

  const hook = program.command('hook').description('webhooks: registry events POSTed to a URL, signed and retried (admin)')
  withConn(hook.command('set <name>').description('create or replace a webhook'))
    .requiredOption('--url <url>', 'where deliveries are POSTed')
    .requiredOption('--events <list>', `events, comma-separated: ${['push', 'delete', 'promote', 'pull', 'immutable', 'quota', 'gc'].join(', ')}`)
    .option('--repos <pattern>', 'repositories (repeatable; default all: **)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--secret-stdin', 'read the signing secret from standard input (else one is made and printed once)')
    .action(async (name: string, o: Conn & { url: string; events: string; repos?: string[]; secretStdin?: boolean }) => {
      const secret = o.secretStdin === true ? (await readStdin()).trim() : randomBytes(24).toString('base64url')
      const body = { url: o.url, secret, events: o.events.split(',').map((e) => e.trim()).filter((e) => e !== ''), repositories: o.repos ?? ['**'] }
      const doc = await api(o, 'PUT', `/hooks/${encodeURIComponent(name)}`, body)
      show(o, o.secretStdin === true ? doc : { ...doc, secret }, () => `webhook ${name} set: ${body.events.join(', ')} in ${body.repositories.join(' ')} to ${o.url}\n${o.secretStdin === true ? '' : `signing secret (shown once; verify Flotilla-Signature with it):\n${secret}\n`}`)
    })
  withConn(hook.command('list').description('the webhooks')).action(async (o: Conn) => {
    const doc = await api(o, 'GET', '/hooks')
    show(o, doc, () => table(['NAME', 'URL', 'EVENTS', 'REPOSITORIES'], (doc.hooks as Array<{ name: string; url: string; events: string[]; repositories: string[] }>).map((h) => [h.name, h.url, h.events.join(','), h.repositories.join(' ')])))
  })
  withConn(hook.command('rm <name>').description('remove a webhook and its queued deliveries')).action(async (name: string, o: Conn) => {
    show(o, await api(o, 'DELETE', `/hooks/${encodeURIComponent(name)}`), () => `removed webhook ${name}\n`)
  })
  withConn(hook.command('deliveries <name>').description('queued deliveries and the delivery log, newest first')).action(async (name: string, o: Conn) => {
    const doc = await api(o, 'GET', `/hooks/${encodeURIComponent(name)}/deliveries`) as { queued: Array<{ event: { id: string; type: string; repo?: string }; attempts: number; nextAt: number; lastError?: string }>; log: Array<{ id: string; type: string; repo?: string; outcome: string; attempts: number; at: number; lastError?: string }> }
    show(o, doc, () => table(['DELIVERY', 'EVENT', 'REPO', 'STATE', 'ATTEMPTS', 'WHEN', 'LAST ERROR'], [
      ...doc.queued.map((d) => [d.event.id, d.event.type, d.event.repo ?? '-', 'queued', String(d.attempts), `next ${iso(d.nextAt)}`, d.lastError ?? '-']),
      ...doc.log.map((l) => [l.id, l.type, l.repo ?? '-', l.outcome, String(l.attempts), iso(l.at), l.lastError ?? '-']),
    ]))
  })

  const quota = program.command('quota').description('storage quotas per namespace (admin)')
  withConn(quota.command('set <name>').description('create or replace a quota'))
    .requiredOption('--repos <pattern>', 'repositories it covers (repeatable), e.g. team-a/**', (v: string, prev: string[] = []) => [...prev, v])
    .requiredOption('--max <size>', 'largest usage: 500MiB, 10GiB, 2TiB or bytes')
    .action(async (name: string, o: Conn & { repos: string[]; max: string }) => {
      const maxBytes = parseSize(o.max)
      if (maxBytes === undefined) throw new CliError(`--max takes a size such as 500MiB, 10GiB or a number of bytes, not ${JSON.stringify(o.max)}`)
      const doc = await api(o, 'PUT', `/quotas/${encodeURIComponent(name)}`, { repositories: o.repos, maxBytes })
      show(o, doc, () => `quota ${name} set: ${o.repos.join(', ')} may use ${sizeText(maxBytes)} (${sizeText(doc.usedBytes)} used now)\n`)
    })
  withConn(quota.command('list').description('the quotas and what each namespace uses')).action(async (o: Conn) => {
    const doc = await api(o, 'GET', '/quotas')
    show(o, doc, () => table(['NAME', 'REPOSITORIES', 'USED', 'MAX', 'USE'], (doc.quotas as Array<{ name: string; repositories: string[]; maxBytes: number; usedBytes: number }>).map((q) => [q.name, q.repositories.join(' '), sizeText(q.usedBytes), sizeText(q.maxBytes), q.maxBytes === 0 ? '-' : `${Math.round(100 * q.usedBytes / q.maxBytes)}%`])))
  })
  withConn(quota.command('rm <name>').description('remove a quota')).action(async (name: string, o: Conn) => {
    show(o, await api(o, 'DELETE', `/quotas/${encodeURIComponent(name)}`), () => `removed quota ${name}\n`)
  })

  const ret = program.command('retention').description('retention policies: which tags and untagged manifests to delete (admin)')
  const days = (what: string) => (v: string): number => {
    const sec = durationSeconds(v)
    if (sec === undefined) throw new InvalidArgumentError(`expected a duration for ${what}: ${DURATION_FORMS}.`)
    return sec / 86400
  }
  const collectList = (v: string, prev: string[] = []): string[] => [...prev, v]
  withConn(ret.command('set <name>').description('create or replace a policy'))
    .requiredOption('--repos <pattern>', 'repositories it applies to (repeatable), e.g. ci/**', collectList)
    .option('--exclude <glob>', 'tags never deleted (repeatable), e.g. release-*', collectList)
    .option('--keep-last <n>', 'always keep the n newest tags (alone: delete the rest)')
    .addOption(new Option('--by <order>', 'newest by push time or by semantic version').choices(['push', 'semver']))
    .addOption(new Option('--older-than <duration>', 'delete tags pushed longer ago (30d)').argParser(days('--older-than')))
    .addOption(new Option('--not-pulled <duration>', 'delete tags not pulled within (90d)').argParser(days('--not-pulled')))
    .option('--untagged', 'delete untagged manifests')
    .addOption(new Option('--untagged-after <duration>', 'only untagged manifests pushed longer ago (default 24h)').argParser((v) => days('--untagged-after')(v) * 24))
    .action(async (name: string, o: Conn & { repos: string[]; exclude?: string[]; keepLast?: string; by?: string; olderThan?: number; notPulled?: number; untagged?: boolean; untaggedAfter?: number }) => {
      const keepLast = o.keepLast === undefined ? undefined : Number(o.keepLast)
      if (keepLast !== undefined && !(Number.isInteger(keepLast) && keepLast >= 0)) throw new CliError(`--keep-last takes a whole number, not ${JSON.stringify(o.keepLast)}`)
      const body = {
        repositories: o.repos,
        ...(o.exclude !== undefined ? { exclude: o.exclude } : {}),
        ...(keepLast !== undefined ? { keepLast } : {}),
        ...(o.by !== undefined ? { by: o.by } : {}),
        ...(o.olderThan !== undefined ? { olderThanDays: o.olderThan } : {}),
        ...(o.notPulled !== undefined ? { notPulledDays: o.notPulled } : {}),
        ...(o.untagged === true ? { untagged: true } : {}),
        ...(o.untaggedAfter !== undefined ? { untaggedAfterHours: o.untaggedAfter } : {}),
      }
      show(o, await api(o, 'PUT', `/retention/${encodeURIComponent(name)}`, body), () => `retention policy ${name} set\n`)
    })
  withConn(ret.command('list').description('list the policies')).action(async (o: Conn) => {
    const doc = await api(o, 'GET', '/retention')
    show(o, doc, () => table(['NAME', 'REPOSITORIES', 'RULES', 'EXCLUDE'], (doc.policies as RetentionDoc[]).map((p) => [p.name, p.repositories.join(' '), policyRules(p), (p.exclude ?? []).join(' ') || '-'])))
  })
  withConn(ret.command('rm <name>').description('remove a policy')).action(async (name: string, o: Conn) => {
    show(o, await api(o, 'DELETE', `/retention/${encodeURIComponent(name)}`), () => `removed retention policy ${name}\n`)
  })
  withConn(ret.command('run').description('apply the policies now (garbage collection frees the space afterwards)'))
    .option('--dry-run', 'say what would be deleted; change nothing')
    .option('--policy <name>', 'only this policy')
    .action(async (o: Conn & { dryRun?: boolean; policy?: string }) => {
      await credentials(o)
      const doc = await spinner(o.dryRun === true ? 'evaluating retention policies' : 'applying retention policies', async () => await api(o, 'POST', '/retention/run', { dryRun: o.dryRun === true, ...(o.policy !== undefined ? { policy: o.policy } : {}) }, { timeoutMs: LONG_MS })) as RetentionRunDoc
      show(o, doc, () => retentionText(doc))
    })

  withConn(program.command('gc').description('collect garbage: delete blobs no manifest references, on every node (admin)'))
    .option('--dry-run', 'say what would go; change nothing')
    .addOption(new Option('--grace <duration>', `unreferenced at least this long (${DURATION_FORMS}; 0s: everything not in use; default: the node's gc.grace)`).argParser((v) => {
      const s = durationSeconds(v)
      if (s === undefined) throw new InvalidArgumentError(`expected a duration: ${DURATION_FORMS}.`)
      return s
    }))
    .action(async (o: Conn & { dryRun?: boolean; grace?: number }) => {
      // One request: the collection commits, then every node deletes its bytes. Nothing to
      // count from here while it runs, so a spinner on a terminal.
      await credentials(o)
      const doc = await spinner(o.dryRun === true ? 'finding garbage' : 'collecting garbage on every node', async () => await api(o, 'POST', '/gc', { dryRun: o.dryRun === true, ...(o.grace !== undefined ? { graceSeconds: o.grace } : {}) }, { timeoutMs: LONG_MS })) as GcDoc
      show(o, doc, () => gcText(doc))
    })

  withConn(program.command('audit').description('query the audit log, newest first (admin)'))
    .option('--by <user>', 'only this user\'s actions').option('--action <action>', 'only this action (PutManifest, denied, login …)')
    .option('--repo <pattern>', 'only repositories matching')
    .addOption(new Option('--outcome <outcome>', 'only this outcome').choices(['ok', 'failed', 'denied']))
    .addOption(new Option('--since <when>', 'from: a duration ago (10m, 1h, 30d), an ISO date, or epoch ms').argParser((v) => parseTimeOption(v)))
    .addOption(new Option('--until <when>', 'to: a duration ago, an ISO date, or epoch ms').argParser((v) => parseTimeOption(v)))
    .option('--limit <n>', 'at most n entries (default 100)')
    .action(async (o: Conn & { by?: string; action?: string; repo?: string; outcome?: string; since?: number; until?: number; limit?: string }) => {
      const q = new URLSearchParams()
      for (const k of ['action', 'repo', 'outcome', 'since', 'until', 'limit'] as const) if (o[k] !== undefined) q.set(k, String(o[k]))
      if (o.by !== undefined) q.set('user', o.by)
      const doc = await api(o, 'GET', `/audit?${q.toString()}`)
      show(o, doc, () => table(['TIME', 'USER', 'ADDRESS', 'ACTION', 'REPO', 'OUTCOME', 'DETAIL'], (doc.entries as AuditDoc[]).map(auditRow)))
    })
}
