/**
 * `flotilla remote`: remote repositories, pull-through caches of another registry (admin):
 *
 *   flotilla remote add NAME --prefix PREFIX --upstream URL [--username U --password-stdin] [--ttl DURATION]
 *                           [--allow PATTERN…] [--block PATTERN…]
 *   flotilla remote list
 *   flotilla remote rm NAME
 *
 * They call the admin API (src/http/remotes-api.ts); --json prints its document.
 */
import type { Command } from 'commander'
import { CliError, api, readStdin, show, withConn, type Conn } from './admin.js'
import { table } from './format.js'
import { DURATION_FORMS, parseDurationOption } from './duration.js'

interface RemoteDoc { name: string; prefix: string; upstream: string; username?: string; hasPassword: boolean; ttlSeconds: number; allow: string[]; block: string[] }

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

function ttlText (s: number): string {
  if (s > 0 && s % 86400 === 0) return `${s / 86400}d`
  if (s > 0 && s % 3600 === 0) return `${s / 3600}h`
  if (s > 0 && s % 60 === 0) return `${s / 60}m`
  return `${s}s`
}

export function remoteCommands (program: Command): void {
  const remote = program.command('remote').description('remote repositories: pull-through caches of another registry (admin)')
  withConn(remote.command('add <name>').description('create or replace a remote: pulls of PREFIX/NAME fetch NAME from the upstream once, then serve it from the cluster'))
    .requiredOption('--prefix <prefix>', 'repository name prefix, ending with / (e.g. hub/: hub/library/alpine is library/alpine upstream)')
    .requiredOption('--upstream <url>', 'the upstream registry, http://HOST[:PORT] or https://HOST[:PORT] (e.g. https://registry-1.docker.io)')
    .option('--username <user>', 'upstream user name (with --password-stdin); anonymous without')
    .option('--password-stdin', 'read the upstream password (or token) from standard input')
    .option('--ttl <duration>', `how long a cached tag is trusted before it is checked upstream again: ${DURATION_FORMS} (default 5m)`, parseDurationOption)
    .option('--allow <pattern>', 'upstream repositories that may be pulled (repeatable; default all: **)', collect)
    .option('--block <pattern>', 'upstream repositories that may not be pulled (repeatable; wins over --allow)', collect)
    .action(async (name: string, o: Conn & { prefix: string; upstream: string; username?: string; passwordStdin?: boolean; ttl?: number; allow?: string[]; block?: string[] }) => {
      if ((o.username === undefined) !== (o.passwordStdin !== true)) throw new CliError('give --username with --password-stdin (the password on standard input), or neither for anonymous access')
      const password = o.passwordStdin === true ? (await readStdin()).trim() : undefined
      if (password === '') throw new CliError('--password-stdin read an empty password: pipe it in, e.g. echo "$TOKEN" | flotilla remote add …')
      const body = {
        prefix: o.prefix.endsWith('/') ? o.prefix : `${o.prefix}/`,
        upstream: o.upstream.replace(/\/+$/, ''),
        ...(o.username !== undefined ? { username: o.username, password } : {}),
        ...(o.ttl !== undefined ? { ttlSeconds: o.ttl } : {}),
        ...(o.allow !== undefined ? { allow: o.allow } : {}),
        ...(o.block !== undefined ? { block: o.block } : {}),
      }
      const doc = await api(o, 'PUT', `/remotes/${encodeURIComponent(name)}`, body) as { remote: RemoteDoc }
      show(o, doc, () => `remote ${name}: ${doc.remote.prefix}NAME pulls NAME from ${doc.remote.upstream}${doc.remote.username !== undefined ? ` as ${doc.remote.username}` : ' anonymously'}; tags checked again after ${ttlText(doc.remote.ttlSeconds)}\n`)
    })
  withConn(remote.command('list').description('the remotes (passwords are never shown)')).action(async (o: Conn) => {
    const doc = await api(o, 'GET', '/remotes') as { remotes: RemoteDoc[] }
    show(o, doc, () => table(['NAME', 'PREFIX', 'UPSTREAM', 'USER', 'TTL', 'ALLOW', 'BLOCK'], doc.remotes.map((r) => [r.name, r.prefix, r.upstream, r.username ?? '(anonymous)', ttlText(r.ttlSeconds), r.allow.join(' ') || '**', r.block.join(' ') || '-'])))
  })
  withConn(remote.command('rm <name>').description('remove a remote (what it cached stays until GC or retention removes it)')).action(async (name: string, o: Conn) => {
    show(o, await api(o, 'DELETE', `/remotes/${encodeURIComponent(name)}`), () => `removed remote ${name}\n`)
  })
}
