/**
 * The `flotilla` command line.
 */
import { readFileSync } from 'node:fs'
import { Command, Option } from 'commander'
import { loadConfig, ConfigError } from './config.js'
import { createLogger } from './logger.js'
import { RegistryNode, type JoinTarget } from './node.js'
import { clusterCommands } from './cli/cluster.js'
import { CliError } from './cli/client.js'
import { registerAdminCommands } from './cli/admin.js'
import { propCommands } from './cli/props.js'
import { siteCommands } from './cli/sites.js'
import { parseJoinAddress } from '../cluster/join.js'
import { joinTokenExpiry } from '../cluster/join-token.js'
import { startCpuProfile } from './cli/profile.js'
import { watchCatchUp } from './cli/progress.js'
import { p2pListenFailure } from './listen-errors.js'
import { certCommands } from './cli/cert.js'
import { backupCommands } from './cli/backup.js'
import { virtualCommands } from './cli/virtual.js'
import { searchCommands } from './cli/search.js'
import { remoteCommands } from './cli/remote.js'
import { checkTlsFiles } from './tls/server.js'
import { loadTrust } from './tls/trust.js'
import { rootCertificates } from 'node:tls'
import { clientTls, explainTlsFailure, httpsFetch, type ClientTls, type TlsOptions } from './cli/tls.js'
import type { JoinFetch } from '../cluster/cluster.js'
import { guardUnhandledRejections } from './unhandled.js'

/** package.json's version: next to src/ when run from the sources, two levels up from dist/src/. */
function packageVersion (): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'flotilla' && pkg.version !== undefined) return pkg.version
    } catch { /* try the next */ }
  }
  return 'unknown'
}

const program = new Command()
program
  .name('flotilla')
  .description('A container registry that runs as a cluster of equal peers.')
  .version(packageVersion(), '-V, --version', 'print the version')

interface ServeFlags { data?: string; listen?: string; p2p?: string; advertise?: string; config?: string; logLevel?: string; sitesAdvertise?: string; peerListen?: string; tlsCertificate?: string; tlsKey?: string; tlsClientCa?: string; tlsClientAuth?: string; tlsTrust?: string }

function serveOptions (cmd: Command): Command {
  return cmd
    .option('--data <dir>', 'data directory (default ./data, env FLOTILLA_DATA)')
    .option('--listen <host:port>', 'HTTP address (default 127.0.0.1:5000, env FLOTILLA_LISTEN)')
    .option('--p2p <host:port>', 'libp2p address for the cluster (default 127.0.0.1:0, env FLOTILLA_P2P)')
    .option('--advertise <url>', 'HTTP URL other nodes use to reach this one (default http://<listen>, https://<listen> with TLS)')
    .option('--tls-certificate <file>', 'serve HTTPS with this PEM certificate (and chain); reloaded when it changes (env FLOTILLA_TLS_CERTIFICATE)')
    .option('--tls-key <file>', 'the PEM private key of --tls-certificate (env FLOTILLA_TLS_KEY)')
    .option('--tls-client-ca <file>', 'PEM CA bundle for client certificates (mTLS; env FLOTILLA_TLS_CLIENT_CA)')
    .option('--tls-trust <files>', 'PEM CA bundles (comma-separated) trusted besides the system\'s for outgoing HTTPS: site links, webhooks, joins, remote upstreams (env FLOTILLA_TLS_TRUST)')
    .addOption(new Option('--tls-client-auth <mode>', 'client certificates: none, optional, or require (default require with --tls-client-ca; env FLOTILLA_TLS_CLIENT_AUTH)').choices(['none', 'optional', 'require']))
    .option('--sites-advertise <address>', 'HOST:PORT or multiaddr other sites dial to reach this node\'s p2p port (default: its own; env FLOTILLA_SITES_ADVERTISE)')
    .option('--peer-listen <host:port>', 'peer port: node-to-node HTTPS, mutual TLS with libp2p certificates (default <listen host>:0, env FLOTILLA_PEER_LISTEN)')
    .option('--config <file>', 'YAML configuration file (env FLOTILLA_CONFIG)')
    .addOption(new Option('--log-level <level>', 'log level (env FLOTILLA_LOG_LEVEL)').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
}

async function serve (opts: ServeFlags & { forceNewCluster?: boolean }, join?: JoinTarget, joinTls?: ClientTls): Promise<void> {
  const config = await loadConfig(opts)
  // Bad TLS files stop the start here, before the data dir is touched (src/tls/pair.ts says why).
  await checkTlsFiles(config.tls)
  // A join to an https:// member: --ca-cert (FLOTILLA_CA_CERT), else the node's tls.trust, on top of the system's CAs.
  if (join !== undefined && joinTls !== undefined) {
    const trust = joinTls.ca === undefined ? loadTrust(config.tls.trust ?? []) : []
    join = { ...join, fetch: httpsJoinFetch(join.address, trust.length > 0 ? { ...joinTls, ca: [...rootCertificates, ...trust] } : joinTls) }
  }
  const log = createLogger(config.log.level)
  guardUnhandledRejections(log)
  const profiled = await startCpuProfile(process.env.FLOTILLA_CPU_PROFILE)
  if (opts.forceNewCluster === true) process.stderr.write(FORCE_WARNING)
  const node = await RegistryNode.open(config, log, join, { forceNewCluster: opts.forceNewCluster === true })
  let stopping = false
  const shutdown = (signal: string): void => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'shutting down')
    node.stop()
      .then(async () => { await profiled?.() })
      .then(() => process.exit(0), (err: unknown) => { log.error({ err }, 'shutdown failed'); process.exit(1) })
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
  // A joiner catches up before it serves: show how far it is (a bar on a terminal, else log lines).
  const caughtUp = join === undefined
    ? undefined
    : watchCatchUp(() => {
      try { const st = node.cluster.status(); return { applied: st.applied, commit: st.commit } } catch { return undefined }
    }, { log })
  // A node removed from its cluster (leave, remove, or while it was down) stops and exits
  // non-zero, saying why, rather than serve requests that can never commit.
  void node.removed.then((why) => {
    if (stopping) return
    stopping = true
    process.stderr.write(`flotilla: this node was removed from its cluster (${why}); it has stopped. To bring the machine back, start it on a fresh data dir and join again.\n`)
    node.stop().finally(() => process.exit(3))
  })
  try {
    await node.start()
  } catch (err) {
    caughtUp?.(false)
    throw p2pListenFailure(err, config.p2p) ?? err
  }
  caughtUp?.(true)
}

const FORCE_WARNING = `
!!! flotilla serve --force-new-cluster !!!
This makes this node a cluster of its own: every other member is removed for good, and writes
this node never received are lost. Use it only when a majority of the cluster is gone for good,
on the survivor with the highest applied index (flotilla status --local --data DIR). It is
refused while the old cluster still has a reachable leader. Remove the flag once it has started.

`

serveOptions(program.command('serve'))
  .description('run a registry node; a fresh data dir starts a new single-node cluster')
  .option('--force-new-cluster', 'disaster recovery: make this node (its data kept) the only member of its cluster, after losing a majority for good; refused while the old cluster has a reachable leader (README: disaster recovery)')
  .action(async (opts: ServeFlags & { forceNewCluster?: boolean }) => { await serve(opts) })

serveOptions(program.command('join'))
  .argument('<address>', 'any member\'s HTTP URL (http://10.0.0.1:5000, https:// with TLS) or libp2p multiaddr with its peer id (/ip4/10.0.0.1/tcp/7000/p2p/12D3Koo…, from flotilla status)')
  .option('--token <token>', 'a join token from flotilla token (or env FLOTILLA_JOIN_TOKEN, which other users cannot see in ps)')
  .option('--ca-cert <file>', 'trust this CA for an https:// member, besides the system\'s (env FLOTILLA_CA_CERT)')
  .option('--client-cert <file>', 'client certificate for an https:// member that asks for one (env FLOTILLA_CLIENT_CERT)')
  .option('--client-key <file>', 'the key of --client-cert (env FLOTILLA_CLIENT_KEY)')
  .description('start a new node that joins an existing cluster (then restart it with flotilla serve --data DIR)')
  .action(async (address: string, opts: ServeFlags & TlsOptions & { token?: string }) => {
    let where
    try {
      where = parseJoinAddress(address)
    } catch (err) {
      throw new CliError((err as Error).message)
    }
    const token = opts.token ?? process.env.FLOTILLA_JOIN_TOKEN
    if (token === undefined || token === '') throw new CliError('a join token is needed: pass --token TOKEN or set FLOTILLA_JOIN_TOKEN (get one with flotilla token on a member)')
    // Said here, before a data dir and ports are taken; the member checks the token again.
    const expiry = joinTokenExpiry(token)
    if (expiry === 'malformed') throw new CliError('the join token is malformed: copy the whole line flotilla token printed (--token or FLOTILLA_JOIN_TOKEN)')
    if (expiry !== undefined && expiry <= Date.now()) throw new CliError(`the join token expired at ${new Date(expiry).toISOString()}: ask a member for a new one with flotilla token`)
    // An https:// member: its certificate is checked against --ca-cert (or FLOTILLA_CA_CERT) and
    // the system's CAs, as every other command does (src/cli/tls.ts); files are read now, so a bad path is said at once.
    const https = where.kind === 'http' && where.url.startsWith('https:')
    await serve(opts, { address, token }, https ? clientTls(opts) : undefined)
  })

/** POST the join to an https:// member with our CA and client certificate; a TLS failure is said with its cause and fix. */
function httpsJoinFetch (base: string, tls: ClientTls): JoinFetch {
  return async (url, init) => {
    try {
      return await httpsFetch(url, init, tls, 60_000)
    } catch (err) {
      const cause = (err as { cause?: Error & { code?: string } }).cause
      throw new Error(explainTlsFailure(base, cause) ?? cause?.message ?? (err as Error).message)
    }
  }
}

registerAdminCommands(program)
propCommands(program)
clusterCommands(program)
certCommands(program)
siteCommands(program)
backupCommands(program)
virtualCommands(program)
searchCommands(program)
remoteCommands(program)

try {
  await program.parseAsync(process.argv)
} catch (err) {
  // One line, no stack: a library's multi-line message keeps its first line.
  const msg = err instanceof ConfigError || err instanceof CliError ? err.message : `flotilla: ${String((err as Error).message ?? err).split('\n')[0]!.trim()}`
  process.stderr.write(msg + '\n')
  process.exit(1)
}
