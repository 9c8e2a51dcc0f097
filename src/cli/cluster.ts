/**
 * Cluster commands: token, status, leave, remove. (join is `serve` with a join target.)
 */
import { Option, type Command } from 'commander'
import { callApi, type NodeOptions } from './client.js'
import { DURATION_FORMS, parseDurationOption } from './duration.js'
import { printJson, table } from './format.js'
import type { ClusterStatusDoc } from '../http/cluster-api.js'
import { printLocalStatus } from './backup.js'

function withNode (cmd: Command): Command {
  return cmd
    .option('--node <url>', 'a node of the cluster (default http://127.0.0.1:5000, env FLOTILLA_NODE)')
    .option('--user <name:password>', 'credentials (env FLOTILLA_USER; NAME alone asks for the password)')
    .option('--ca-cert <file>', 'trust this CA for an https:// node, besides the system\'s (env FLOTILLA_CA_CERT)')
    .option('--client-cert <file>', 'TLS client certificate, for a node that asks for one (env FLOTILLA_CLIENT_CERT)')
    .option('--client-key <file>', 'its key (env FLOTILLA_CLIENT_KEY)')
    .option('--json', 'print the API\'s JSON document instead of text')
}

export function clusterCommands (program: Command): void {
  // `flotilla token` is also the access-token group (src/cli/admin.ts); a join token is its default.
  const tokenGroup = program.commands.find((c) => c.name() === 'token') ?? program.command('token')
  withNode(tokenGroup.command('join', { isDefault: true }))
    .description('print a join token for a new node (secret; it expires); the default of flotilla token')
    .addOption(new Option('--ttl <duration>', `lifetime: ${DURATION_FORMS}; at least 60 s`).argParser(parseDurationOption).default(3600, '1h'))
    .action(async (opts: NodeOptions & { ttl: number; json?: boolean }) => {
      const doc = await callApi(opts, 'POST', '/api/v1/cluster/tokens', { ttlSeconds: opts.ttl }) as { token: string; expiresAt: string }
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(doc.token + '\n')
      process.stderr.write(`expires at ${doc.expiresAt}\n`)
    })

  withNode(program.command('status'))
    .description('members, roles, leader, term, commit and applied indexes, lag; --local reads a stopped node\'s data dir')
    .option('--local', 'read the data dir of a stopped node (--data) instead of asking a node: its applied index, term, role (disaster recovery)')
    .option('--data <dir>', 'with --local: the node\'s data dir (default ./data, env FLOTILLA_DATA)')
    .action(async (opts: NodeOptions & { json?: boolean; local?: boolean; data?: string }) => {
      if (opts.local === true) { await printLocalStatus(opts.data ?? process.env.FLOTILLA_DATA ?? './data', opts.json === true); return }
      let doc = await callApi(opts, 'GET', '/api/v1/cluster') as ClusterStatusDoc
      // Lag is known to the leader only: ask it when we can.
      const leader = doc.members.find((m) => m.leader)
      if (leader?.http !== null && leader?.http !== undefined && leader.peerId !== doc.node) {
        try { doc = { ...await callApi({ ...opts, node: leader.http }, 'GET', '/api/v1/cluster', undefined, { wait: false }) as ClusterStatusDoc, node: doc.node } } catch { /* keep the local view */ }
      }
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(`node ${doc.node}\nleader ${doc.leader ?? '(none)'}  term ${doc.term}  commit ${doc.commit}  applied ${doc.applied}  blob copies pending ${doc.replicationBacklog}\n\n`)
      // P2P: full multiaddrs (…/p2p/<peer id>), what `flotilla join` takes besides an HTTP URL.
      const rows = doc.members.map((m) => [
        m.peerId + (m.leader ? ' *' : ''), m.role, m.reachable ? 'yes' : 'NO', m.lastContact ?? 'never', m.http ?? '-', m.peer ?? '-',
        m.lag === null ? '-' : String(m.lag) + (m.stalled !== null ? ' STALLED' : ''), m.p2p.join(' ') || '-'])
      // PEER PORT: node-to-node HTTPS (net/peer-https.ts).
      process.stdout.write(table(['PEER', 'ROLE', 'REACHABLE', 'LAST CONTACT', 'HTTP', 'PEER PORT', 'LAG', 'P2P'], rows))
      if (doc.disk !== undefined) {
        const gibs = (b: number): string => `${(b / 2 ** 30).toFixed(1)} GiB`
        process.stdout.write(`disk of ${doc.node}: ${doc.disk.usedPercent.toFixed(1)}% used, ${gibs(doc.disk.freeBytes)} free of ${gibs(doc.disk.totalBytes)}${doc.disk.full ? ' (FULL: above storage.diskHighWatermark, takes no uploads)' : ''}\n`)
      }
      // A stall names its cause (cluster/stall-watch.ts); print it whole, under the table.
      for (const m of doc.members) {
        if (m.stalled !== null) process.stdout.write(`\n${m.peerId}: replication stalled at index ${m.stalled.match} since ${m.stalled.since}: ${m.stalled.cause}\n`)
      }
    })

  withNode(program.command('leave'))
    .description('remove the node at --node from its cluster, safely')
    .action(async (opts: NodeOptions & { json?: boolean }) => {
      const doc = await callApi(opts, 'POST', '/api/v1/cluster/leave') as { removed: string }
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(`removed ${doc.removed}; stop its process now. Its identity will not be admitted again.\n`)
    })

  withNode(program.command('remove'))
    .argument('<node-id>', 'the peer id of the member to remove (see flotilla status)')
    .description('remove a member of the cluster, from any node')
    .action(async (id: string, opts: NodeOptions & { json?: boolean }) => {
      const doc = await callApi(opts, 'DELETE', `/api/v1/cluster/members/${encodeURIComponent(id)}`) as { removed: string }
      if (opts.json === true) { printJson(doc); return }
      process.stdout.write(`removed ${doc.removed}\n`)
    })
}
