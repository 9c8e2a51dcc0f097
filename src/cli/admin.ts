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
 *   flotilla promote SRC:TAG DST[:TAG] [--move]
 *   flotilla audit [--by USER] [--action A] [--repo PATTERN] [--outcome ok|failed|denied] [--since DATE] [--limit N]
 *
 * Every command takes --node URL (env FLOTILLA_NODE, default http://127.0.0.1:5000) and
 * --user NAME:PASSWORD (env FLOTILLA_USER); an access token works as the password.
 */
import { randomBytes } from 'node:crypto'
import type { Command } from 'commander'
import { CliError } from './client.js'

interface Conn { node?: string; user?: string }

export { CliError }

function connection (opts: Conn): { base: string; authorization: string } {
  const base = (opts.node ?? process.env.FLOTILLA_NODE ?? 'http://127.0.0.1:5000').replace(/\/+$/, '')
  const user = opts.user ?? process.env.FLOTILLA_USER
  if (user === undefined || user === '' || !user.includes(':')) throw new CliError('give --user NAME:PASSWORD (or set FLOTILLA_USER)')
  return { base, authorization: 'Basic ' + Buffer.from(user).toString('base64') }
}

/** Call the admin API; answers the parsed JSON or throws a CliError with the registry's message. */
export async function api (opts: Conn, method: string, path: string, body?: unknown): Promise<any> {
  const { base, authorization } = connection(opts)
  const headers: Record<string, string> = { authorization }
  const init: RequestInit = { method, headers }
  if (body !== undefined) { headers['content-type'] = 'application/json'; init.body = JSON.stringify(body) }
  let res: Response
  try {
    res = await fetch(`${base}/api/v1${path}`, init)
  } catch (err) {
    throw new CliError(`cannot reach ${base}: ${(err as Error).message}. Is the node running? (--node URL or FLOTILLA_NODE)`)
  }
  const text = await res.text()
  let parsed: any
  try { parsed = text === '' ? undefined : JSON.parse(text) } catch { parsed = text }
  if (!res.ok) {
    const e = parsed?.errors?.[0]
    const retry = res.headers.get('retry-after')
    throw new CliError(`${res.status} ${e?.code ?? ''}: ${e?.message ?? text}${retry !== null ? ` (retry after ${retry} s)` : ''}`)
  }
  return parsed
}

function print (v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n')
}

async function readStdin (): Promise<string> {
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

/** `90s`, `15m`, `12h`, `30d` → seconds. */
export function parseDuration (s: string): number {
  const m = /^(\d+(?:\.\d+)?)([smhd])$/.exec(s)
  if (m === null) throw new CliError(`expected a duration like 90s, 15m, 12h or 30d, got ${JSON.stringify(s)}`)
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd']
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

function withConn (c: Command): Command {
  return c
    .option('--node <url>', 'node URL (env FLOTILLA_NODE, default http://127.0.0.1:5000)')
    .option('--user <name:password>', 'credentials (env FLOTILLA_USER); a token works as the password')
}

export function registerAdminCommands (program: Command): void {
  const user = program.command('user').description('manage users (admin)')
  withConn(user.command('list').description('list users')).action(async (o: Conn) => print((await api(o, 'GET', '/users')).users))
  withConn(user.command('show <name>').description('show a user')).action(async (name: string, o: Conn) => print(await api(o, 'GET', `/users/${name}`)))
  withConn(user.command('add <name>').description('create a user (a random password is printed unless one is given)'))
    .option('--password <password>', 'the password').option('--password-stdin', 'read the password from stdin').option('--admin', 'make an administrator')
    .action(async (name: string, o: Conn & { password?: string; passwordStdin?: boolean; admin?: boolean }) => {
      const given = await passwordFrom(o)
      const password = given ?? randomBytes(15).toString('base64url')
      const u = await api(o, 'POST', '/users', { name, password, admin: o.admin === true })
      print(given === undefined ? { ...u, password } : u)
    })
  withConn(user.command('rm <name>').description('delete a user (their tokens are revoked)')).action(async (name: string, o: Conn) => print(await api(o, 'DELETE', `/users/${name}`)))
  withConn(user.command('set <name>').description('change a user\'s flags'))
    .option('--admin', 'make an administrator').option('--no-admin', 'remove administrator rights')
    .option('--disable', 'refuse their sign-ins').option('--enable', 'allow their sign-ins again')
    .action(async (name: string, o: Conn & { admin?: boolean; disable?: boolean; enable?: boolean }) => {
      const body: Record<string, boolean> = {}
      if (o.admin !== undefined) body.admin = o.admin
      if (o.disable === true) body.disabled = true
      if (o.enable === true) body.disabled = false
      print(await api(o, 'PATCH', `/users/${name}`, body))
    })
  withConn(user.command('passwd <name>').description('set a user\'s password'))
    .option('--password <password>', 'the new password').option('--password-stdin', 'read it from stdin')
    .action(async (name: string, o: Conn & { password?: string; passwordStdin?: boolean }) => {
      const password = await passwordFrom(o)
      if (password === undefined) throw new CliError('give --password or --password-stdin')
      print(await api(o, 'PUT', `/users/${name}/password`, { password }))
    })

  withConn(program.command('password').description('change your own password (the user of --user)'))
    .option('--password <password>', 'the new password').option('--password-stdin', 'read it from stdin')
    .action(async (o: Conn & { password?: string; passwordStdin?: boolean }) => {
      const password = await passwordFrom(o)
      if (password === undefined) throw new CliError('give --password or --password-stdin')
      const name = (o.user ?? process.env.FLOTILLA_USER ?? '').split(':')[0] ?? ''
      print(await api(o, 'PUT', `/users/${name}/password`, { password }))
    })

  const group = program.command('group').description('manage groups (admin)')
  withConn(group.command('list').description('list groups and members')).action(async (o: Conn) => print((await api(o, 'GET', '/groups')).groups))
  withConn(group.command('show <name>').description('show a group')).action(async (name: string, o: Conn) => print(await api(o, 'GET', `/groups/${name}`)))
  withConn(group.command('add <name>').description('create a group')).option('--member <user>', 'a member (repeatable)', collect, [])
    .action(async (name: string, o: Conn & { member: string[] }) => print(await api(o, 'POST', '/groups', { name, members: o.member })))
  withConn(group.command('rm <name>').description('delete a group')).action(async (name: string, o: Conn) => print(await api(o, 'DELETE', `/groups/${name}`)))
  withConn(group.command('member-add <group> <user>').description('add a member')).action(async (g: string, u: string, o: Conn) => print(await api(o, 'PUT', `/groups/${g}/members/${u}`)))
  withConn(group.command('member-rm <group> <user>').description('remove a member')).action(async (g: string, u: string, o: Conn) => print(await api(o, 'DELETE', `/groups/${g}/members/${u}`)))

  const perm = program.command('permission').description('manage permission targets (admin)')
  withConn(perm.command('list').description('list permission targets')).action(async (o: Conn) => print((await api(o, 'GET', '/permissions')).permissions))
  withConn(perm.command('show <name>').description('show a permission target')).action(async (name: string, o: Conn) => print(await api(o, 'GET', `/permissions/${name}`)))
  withConn(perm.command('set <name>').description('create or replace a permission target'))
    .requiredOption('--repo <pattern>', 'repository pattern, e.g. team-a/** (repeatable)', collect, [])
    .option('--allow-user <name=actions>', 'a user and actions, e.g. alice=read,write (repeatable; anonymous=read for anonymous pulls)', collect, [])
    .option('--allow-group <name=actions>', 'a group and actions, e.g. qa=read (repeatable)', collect, [])
    .action(async (name: string, o: Conn & { repo: string[]; allowUser: string[]; allowGroup: string[] }) => {
      const users = Object.fromEntries(o.allowUser.map(splitAssign))
      const groups = Object.fromEntries(o.allowGroup.map(splitAssign))
      print(await api(o, 'PUT', `/permissions/${name}`, { repositories: o.repo, users, groups }))
    })
  withConn(perm.command('rm <name>').description('delete a permission target')).action(async (name: string, o: Conn) => print(await api(o, 'DELETE', `/permissions/${name}`)))

  // `flotilla token` alone prints a cluster join token (its default subcommand, src/cli/cluster.ts).
  const token = program.command('token').description('access tokens for robots and CI (list, create, revoke); alone, a join token')
  withConn(token.command('list').description('list tokens (yours; all for an admin)')).option('--owner <user>', 'only this owner\'s (admin)')
    .action(async (o: Conn & { owner?: string }) => print((await api(o, 'GET', `/tokens${o.owner !== undefined ? `?owner=${encodeURIComponent(o.owner)}` : ''}`)).tokens))
  withConn(token.command('create <name>').description('create a token; its value is printed once'))
    .requiredOption('--scope <pattern=actions>', 'e.g. ci/**=read,write (repeatable)', collect, [])
    .option('--expires <duration>', 'lifetime: 90s, 15m, 12h, 30d (default: never)')
    .option('--owner <user>', 'owner (admin only; default: you)')
    .action(async (name: string, o: Conn & { scope: string[]; expires?: string; owner?: string }) => {
      const scopes = o.scope.map(splitAssign).map(([p, actions]) => ({ repositories: [p], actions }))
      const body: Record<string, unknown> = { name, scopes }
      if (o.expires !== undefined) body.expiresInSeconds = parseDuration(o.expires)
      if (o.owner !== undefined) body.owner = o.owner
      print(await api(o, 'POST', '/tokens', body))
    })
  withConn(token.command('revoke <id>').description('revoke a token, on every node at once')).action(async (id: string, o: Conn) => print(await api(o, 'DELETE', `/tokens/${id}`)))

  const imm = program.command('immutable').description('immutable-tag rules')
  withConn(imm.command('list').description('list rules')).action(async (o: Conn) => print((await api(o, 'GET', '/immutable')).rules))
  withConn(imm.command('add <pattern>').description('make tags in matching repositories immutable (admin)')).action(async (p: string, o: Conn) => print(await api(o, 'PUT', '/immutable', { pattern: p })))
  withConn(imm.command('rm <pattern>').description('remove a rule (admin)')).action(async (p: string, o: Conn) => print(await api(o, 'DELETE', `/immutable?pattern=${encodeURIComponent(p)}`)))

  withConn(program.command('promote <src> <dst>').description('copy SRC:TAG (or SRC@DIGEST) to DST[:TAG] server-side, with its referrers'))
    .option('--move', 'also remove it from the source')
    .action(async (src: string, dst: string, o: Conn & { move?: boolean }) => print(await api(o, 'POST', '/promote', { from: src, to: dst, move: o.move === true })))

  withConn(program.command('audit').description('query the audit log, newest first (admin)'))
    .option('--by <user>', 'only this user\'s actions').option('--action <action>', 'only this action (PutManifest, denied, login …)')
    .option('--repo <pattern>', 'only repositories matching').option('--outcome <outcome>', 'ok, failed or denied')
    .option('--since <date>', 'ISO date or epoch ms').option('--until <date>', 'ISO date or epoch ms').option('--limit <n>', 'at most n entries (default 100)')
    .action(async (o: Conn & Record<string, string | undefined>) => {
      const q = new URLSearchParams()
      for (const k of ['action', 'repo', 'outcome', 'since', 'until', 'limit']) if (o[k] !== undefined) q.set(k, o[k]!)
      if (o.by !== undefined) q.set('user', o.by)
      print((await api(o, 'GET', `/audit?${q.toString()}`)).entries)
    })
}
