/**
 * `flotilla virtual`: virtual repositories (cluster/metadata/virtual.ts), through the admin API
 * (/api/v1/virtuals):
 *
 *   flotilla virtual add NAME --prefix dev/ --member team-a/ --member hub/ [--default team-a/]
 *   flotilla virtual list
 *   flotilla virtual rm NAME
 *
 * Prefixes may be given without their trailing slash (`dev` is `dev/`). --default is the
 * member pushes go to: the first member when left out. Same connection options and --json
 * as the other admin commands.
 */
import { type Command } from 'commander'
import { CliError, callApi, type NodeOptions } from './client.js'
import { printJson, table } from './format.js'
import type { VirtualRepo } from '../../cluster/metadata/virtual.js'

type Opts = NodeOptions & { json?: boolean }

function withConn (c: Command): Command {
  return c
    .option('--node <url>', 'node URL (env FLOTILLA_NODE, default http://127.0.0.1:5000)')
    .option('--user <name:password>', 'credentials (env FLOTILLA_USER; NAME alone asks for the password)')
    .option('--ca-cert <file>', 'trust this CA for an https:// node, besides the system\'s (env FLOTILLA_CA_CERT)')
    .option('--client-cert <file>', 'TLS client certificate, for a node that asks for one (env FLOTILLA_CLIENT_CERT)')
    .option('--client-key <file>', 'its key (env FLOTILLA_CLIENT_KEY)')
    .option('--json', 'print the API\'s JSON document instead of a table')
}

/** `dev` → `dev/`; anything else is left for the node to judge (its message names the fix). */
export function asPrefix (s: string): string {
  const t = s.trim()
  return t === '' || t.endsWith('/') ? t : `${t}/`
}

async function api (o: Opts, method: string, path: string, body?: unknown): Promise<any> {
  return await callApi(o, method, `/api/v1${path}`, body)
}

export function virtualCommands (program: Command): void {
  const virtual = program.command('virtual').description('virtual repositories: one name prefix over an ordered list of repositories (admin to change)')
  withConn(virtual.command('add <name>').description('create or replace a virtual repository'))
    .requiredOption('--prefix <prefix>', 'the names it answers for, e.g. dev/ (dev/app resolves to <member>app)')
    .requiredOption('--member <prefix>', 'a member prefix, in resolution order (repeatable): local namespaces or remote repositories, e.g. team-a/', (v: string, prev: string[] = []) => [...prev, v])
    .option('--default <prefix>', 'the member pushes go to (default: the first member)')
    .action(async (name: string, o: Opts & { prefix: string; member: string[]; default?: string }) => {
      const members = o.member.map(asPrefix)
      const defaultMember = asPrefix(o.default ?? members[0]!)
      if (!members.includes(defaultMember)) throw new CliError(`--default ${defaultMember} is not one of the members (${members.join(', ')}): add --member ${defaultMember}, or pick one of them`)
      const doc = await api(o, 'PUT', `/virtuals/${encodeURIComponent(name)}`, { prefix: asPrefix(o.prefix), members, defaultMember }) as { virtual: VirtualRepo; created: boolean }
      if (o.json === true) return printJson(doc)
      const v = doc.virtual
      process.stdout.write(`virtual repository ${v.name} ${doc.created ? 'created' : 'replaced'}: ${v.prefix}NAME resolves to ${v.members.map((m) => `${m}NAME`).join(', then ')}; pushes go to ${v.defaultMember}NAME\n`)
    })
  withConn(virtual.command('list').description('the virtual repositories')).action(async (o: Opts) => {
    const doc = await api(o, 'GET', '/virtuals') as { virtuals: VirtualRepo[] }
    if (o.json === true) return printJson(doc)
    process.stdout.write(table(['NAME', 'PREFIX', 'MEMBERS (IN ORDER)', 'PUSHES TO'], doc.virtuals.map((v) => [v.name, v.prefix, v.members.join(' '), v.defaultMember])))
  })
  withConn(virtual.command('rm <name>').description('remove a virtual repository (its members keep their images)')).action(async (name: string, o: Opts) => {
    const doc = await api(o, 'DELETE', `/virtuals/${encodeURIComponent(name)}`)
    if (o.json === true) return printJson(doc)
    process.stdout.write(`removed virtual repository ${name}\n`)
  })
}
