/**
 * Configuration, from lowest to highest precedence: built-in defaults, a YAML file
 * (--config FILE or FLOTILLA_CONFIG), FLOTILLA_* environment variables, command-line flags.
 *
 *   data: ./data                 FLOTILLA_DATA            --data DIR
 *   listen: 127.0.0.1:5000       FLOTILLA_LISTEN          --listen HOST:PORT
 *   p2p: 127.0.0.1:0             FLOTILLA_P2P             --p2p HOST:PORT      (0: any free port)
 *   advertise: http(s)://<listen> FLOTILLA_ADVERTISE      --advertise URL      (how peers reach our HTTP; https with tls)
 *   tls:                                                                       (off unless certificate and key are set)
 *     certificate: FILE          FLOTILLA_TLS_CERTIFICATE --tls-certificate FILE (PEM: the node's certificate, then the chain)
 *     key: FILE                  FLOTILLA_TLS_KEY         --tls-key FILE       (PEM private key; both reloaded when they change)
 *     clientCA: FILE             FLOTILLA_TLS_CLIENT_CA   --tls-client-ca FILE (PEM CA bundle that signs client certificates)
 *     clientAuth: none           FLOTILLA_TLS_CLIENT_AUTH --tls-client-auth M  (none | optional | require: refused at the handshake)
 *     clientCertUser: cn         FLOTILLA_TLS_CLIENT_CERT_USER                 (cn: a verified certificate's subject CN signs in as that user; none)
 *     trust: [FILE, …]           FLOTILLA_TLS_TRUST       --tls-trust FILE[,FILE] (PEM CAs trusted, besides the system's, for outgoing
 *                                                         HTTPS: site links, webhooks, joins, remote upstreams; env/flag: comma-separated)
 *   peerListen: <listen host>:0  FLOTILLA_PEER_LISTEN     --peer-listen HOST:PORT (node-to-node HTTPS, net/peer-https.ts;
 *                                                         its URL travels in the member record)
 *   cluster:
 *     reads: linearizable        FLOTILLA_READS                                (or local: may be stale)
 *     replicas: (all members)    FLOTILLA_REPLICAS                             (copies of each blob)
 *     probation:                                                               (strangers let in to join)
 *       maxPeers: 4              FLOTILLA_PROBATION_PEERS                      (at once)
 *       maxPerAddress: 1         FLOTILLA_PROBATION_PER_ADDRESS                (at once from one IP, or IPv6 /64)
 *   log:
 *     level: info                FLOTILLA_LOG_LEVEL       --log-level LEVEL
 *   storage:
 *     delete: true               FLOTILLA_DELETE_ENABLED
 *     directIO: false            FLOTILLA_DIRECT_IO                            (big blob I/O bypasses the page cache)
 *     diskHighWatermark: 90      FLOTILLA_DISK_HIGH_WATERMARK                  (% used: above it, no uploads here)
 *     diskLowWatermark: 85       FLOTILLA_DISK_LOW_WATERMARK                   (% used: under it, uploads again)
 *   limits:
 *     manifestMaxBytes: 4194304  FLOTILLA_MANIFEST_MAX_BYTES
 *   uploads:
 *     expireAfterHours: 24       FLOTILLA_UPLOAD_EXPIRE_HOURS
 *   gc:
 *     grace: 1h                  FLOTILLA_GC_GRACE                             (unreferenced this long before collected)
 *     interval: 1h               FLOTILLA_GC_INTERVAL                          (the leader collects this often; 0: never on its own)
 *     copyIdle: 1h               FLOTILLA_GC_COPY_IDLE                         (a copy kept outside its blob's placement goes once unread this long)
 *   sites:
 *     advertise: (p2p address)   FLOTILLA_SITES_ADVERTISE --sites-advertise ADDR  (HOST:PORT or multiaddr other sites dial; cluster/peering/)
 *     reconcileInterval: 5m      FLOTILLA_SITES_RECONCILE_INTERVAL             (a receiving site compares summary hashes with the other this often; 0: only behind a trimmed feed)
 *     feedRetain: 100000         FLOTILLA_SITES_FEED_RETAIN                    (the most change-feed entries kept; acknowledged ones go sooner)
 *     tombstoneTtl: 30d          FLOTILLA_SITES_TOMBSTONE_TTL                  (deleted tags' versions are kept this long; 0: for ever)
 *   properties:
 *     promote: true              FLOTILLA_PROMOTE_PROPERTIES                   (a promotion carries user properties unless it says otherwise)
 *   checksums:                                                                 (SHA-1 and MD5 of every blob, cluster/checksums/)
 *     enabled: true              FLOTILLA_CHECKSUMS                            (false: this node computes none; others' still arrive)
 *     workers: 1                 FLOTILLA_CHECKSUM_WORKERS                     (worker threads hashing at once)
 *     backfillMiBps: 64          FLOTILLA_CHECKSUM_BACKFILL_MIBPS              (pace of hashing older blobs with none; 0: unpaced)
 *   auth: …                    FLOTILLA_AUTH_*, FLOTILLA_INITIAL_ADMIN_PASSWORD  (src/auth/config.ts)
 *   (env only)                   FLOTILLA_FAULT_INJECTION=1                  (tests only: /api/v1/debug/partition)
 *   (join only)                  FLOTILLA_CA_CERT         --ca-cert FILE       (flotilla join https://…: trust this CA for the
 *                                FLOTILLA_CLIENT_CERT/KEY --client-cert/-key   member's certificate, show this client certificate; src/cli/tls.ts)
 */
import { readFile } from 'node:fs/promises'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { AuthConfigSchema, AUTH_ENV } from './auth/config.js'
import { TlsConfigSchema, TLS_ENV } from './tls/config.js'

/** HOST:PORT: a host name, an IPv4 address or an [IPv6] address, and a port from 0 (any free one) to 65535. */
const HOST_PORT = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/
const hostPort = z.string().superRefine((v, ctx) => {
  const m = HOST_PORT.exec(v)
  if (m === null || Number(m[2]) > 65535) ctx.addIssue({ code: 'custom', message: `expected HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:5000, not ${JSON.stringify(v)}` })
})

/** A duration setting: `90s`, `10m`, `1h`, `30d`, or a bare number of seconds. */
const duration = z.union([z.string(), z.number()]).superRefine((v, ctx) => {
  if (durationMs(v) === undefined) ctx.addIssue({ code: 'custom', message: `expected a duration such as 90s, 10m, 1h or 30d, not ${JSON.stringify(v)}` })
})

/** A duration setting in milliseconds (undefined when malformed). */
export function durationMs (v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? v * 1000 : undefined
  const m = /^(\d+(?:\.\d+)?)([smhd])?$/.exec(v.trim())
  if (m === null) return undefined
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'] * 1000
}

export const ConfigSchema = z.object({
  data: z.string().min(1).default('./data'),
  listen: hostPort.default('127.0.0.1:5000'),
  p2p: hostPort.default('127.0.0.1:0'),
  advertise: z.string().url().optional(),
  /** The peer port (src/peer-port.ts); unset: the listen host, any free port. */
  peerListen: hostPort.optional(),
  cluster: z.object({
    reads: z.enum(['linearizable', 'local']).default('linearizable'),
    /** Copies of each blob to keep; unset keeps one on every member. */
    replicas: z.number().int().min(1).optional(),
    /**
     * Unknown peers let connect, while a join token is unexpired, to join (cluster/probation.ts):
     * at most `maxPeers` at once, at most `maxPerAddress` of them from one source address, so
     * that one machine cannot hold every slot. Tests that run every node on 127.0.0.1 raise it.
     */
    probation: z.object({
      maxPeers: z.number().int().min(1).max(1024).default(4),
      maxPerAddress: z.number().int().min(1).max(1024).default(1),
    }).strict().default({ maxPeers: 4, maxPerAddress: 1 }),
  }).strict().default({ reads: 'linearizable', probation: { maxPeers: 4, maxPerAddress: 1 } }),
  log: z.object({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  }).strict().default({ level: 'info' }),
  storage: z.object({
    delete: z.boolean().default(true),
    /**
     * O_DIRECT for large blob writes and reads (storage/blobs/direct-io.ts); ignored where the
     * filesystem has none. Off by default: measured side by side (scripts/bench/registry.ts, 1 GiB
     * on the 2-core VM) a monolithic upload ran at the same speed either way (440 and 438 MiB/s:
     * hashing bounds it), while the first pull after a push read from disk at 0.47x the
     * reference's page-cache speed with it and 1.09x without.
     */
    directIO: z.boolean().default(false),
    /** Percent of the data directory's filesystem used above which the node takes no uploads (storage/disk-watch.ts). */
    diskHighWatermark: z.number().min(0).max(100).default(90),
    /** … until it is back under this percent. */
    diskLowWatermark: z.number().min(0).max(100).default(85),
  }).strict().default({ delete: true, directIO: false, diskHighWatermark: 90, diskLowWatermark: 85 }),
  limits: z.object({
    manifestMaxBytes: z.number().int().positive().max(64 * 1024 * 1024).default(4 * 1024 * 1024),
  }).strict().default({ manifestMaxBytes: 4 * 1024 * 1024 }),
  uploads: z.object({
    expireAfterHours: z.number().positive().default(24),
  }).strict().default({ expireAfterHours: 24 }),
  /** Garbage collection (cluster/gc/collector.ts): durations like 90s, 10m, 1h, 30d. */
  gc: z.object({
    /** How long a blob must have been unreferenced before it is collected. */
    grace: duration.default('1h'),
    /** How often the leader collects on its own; 0 turns the schedule off (`flotilla gc` still runs). */
    interval: duration.default('1h'),
    /**
     * A copy a node kept outside its blob's placement (served through it, cluster.replicas < members)
     * is dropped by the sweep once nobody has read it there for this long.
     */
    copyIdle: duration.default('1h'),
  }).strict().default({ grace: '1h', interval: '1h', copyIdle: '1h' }),
  /** Client-facing TLS: src/tls/config.ts. */
  tls: TlsConfigSchema,
  /** Cross-site peering (cluster/peering/). */
  sites: z.object({
    /**
     * The address other sites dial to reach this node's libp2p port: HOST:PORT or a multiaddr
     * (/ip4/…/tcp/…, /dns/…/tcp/…), e.g. a proxy or a NAT's public side. Unset: the node's own
     * p2p addresses. Peering tokens carry every member's.
     */
    advertise: z.string().superRefine((v, ctx) => {
      if (v.startsWith('/') ? !/^\/(ip4|ip6|dns|dns4|dns6)\/[^/]+\/tcp\/\d{1,5}$/.test(v) : !HOST_PORT.test(v)) ctx.addIssue({ code: 'custom', message: `expected HOST:PORT or a multiaddr such as /ip4/10.0.0.1/tcp/7000, not ${JSON.stringify(v)}` })
    }).optional(),
    /**
     * How often a receiving site reconciles with each site it receives from: compares summary
     * hashes of repositories, tags and digests and repairs what it lacks (cluster/peering/reconcile.ts).
     * 0: only when its cursor is behind the other site's trimmed feed.
     */
    reconcileInterval: duration.default('5m'),
    /**
     * The most entries this site's change feed keeps. Entries every receiving peering has
     * acknowledged are trimmed sooner; beyond this bound they go even unacknowledged (a peering
     * that far behind reconciles instead).
     */
    feedRetain: z.number().int().min(1).default(100_000),
    /**
     * How long a deleted tag's version (its tombstone, cluster/peering/hlc.ts) is kept. While it
     * is, an older update of the tag from another site cannot bring it back and reconciliation
     * can repair a missed delete; a site away for longer may do either. 0: kept for ever.
     */
    tombstoneTtl: duration.default('30d'),
  }).strict().default({ reconcileInterval: '5m', feedRetain: 100_000, tombstoneTtl: '30d' }),
  /** Properties of manifests (cluster/metadata/properties.ts). */
  properties: z.object({
    /** Whether `flotilla promote` (POST /api/v1/promote) carries user properties when the request does not say. */
    promote: z.boolean().default(true),
  }).strict().default({ promote: true }),
  /**
   * SHA-1 and MD5 of every blob (cluster/checksums/service.ts), computed by the node that
   * committed it in worker threads right after the commit, off the request path.
   */
  checksums: z.object({
    enabled: z.boolean().default(true),
    /** Worker threads hashing at once (each reads a file once for both sums, MD5 at ~600 MiB/s a core). */
    workers: z.number().int().min(1).max(64).default(1),
    /** How fast older blobs found without sums are hashed in the background, MiB/s; 0: unpaced. */
    backfillMiBps: z.number().min(0).default(64),
  }).strict().default({ enabled: true, workers: 1, backfillMiBps: 64 }),
  /** Authentication and access control: src/auth/config.ts. */
  auth: AuthConfigSchema,
  /** Tests only, from FLOTILLA_FAULT_INJECTION (never from the file): serve /api/v1/debug/* (src/http/debug.ts). */
  faultInjection: z.boolean().default(false),
}).strict()

export type Config = z.infer<typeof ConfigSchema>

export class ConfigError extends Error {
  static override name = 'ConfigError'
  constructor (message: string) { super(message); this.name = 'ConfigError' }
}

type Partial = Record<string, unknown>

function set (obj: Partial, path: string[], value: unknown): void {
  let cur = obj
  for (const p of path.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {}
    cur = cur[p] as Partial
  }
  cur[path[path.length - 1]!] = value
}

function merge (base: Partial, over: Partial): Partial {
  const out: Partial = { ...base }
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue
    const b = out[k]
    out[k] = typeof v === 'object' && v !== null && !Array.isArray(v) && typeof b === 'object' && b !== null ? merge(b as Partial, v as Partial) : v
  }
  return out
}

const ENV: Array<[string, string[], (s: string) => unknown]> = [
  ['FLOTILLA_DATA', ['data'], (s) => s],
  ['FLOTILLA_LISTEN', ['listen'], (s) => s],
  ['FLOTILLA_P2P', ['p2p'], (s) => s],
  ['FLOTILLA_ADVERTISE', ['advertise'], (s) => s],
  ['FLOTILLA_PEER_LISTEN', ['peerListen'], (s) => s],
  ['FLOTILLA_READS', ['cluster', 'reads'], (s) => s],
  ['FLOTILLA_REPLICAS', ['cluster', 'replicas'], (s) => Number(s)],
  ['FLOTILLA_PROBATION_PEERS', ['cluster', 'probation', 'maxPeers'], (s) => Number(s)],
  ['FLOTILLA_PROBATION_PER_ADDRESS', ['cluster', 'probation', 'maxPerAddress'], (s) => Number(s)],
  ['FLOTILLA_LOG_LEVEL', ['log', 'level'], (s) => s],
  ['FLOTILLA_DELETE_ENABLED', ['storage', 'delete'], (s) => s === 'true' || s === '1' ? true : s === 'false' || s === '0' ? false : s],
  ['FLOTILLA_DIRECT_IO', ['storage', 'directIO'], (s) => s === 'true' || s === '1' ? true : s === 'false' || s === '0' ? false : s],
  ['FLOTILLA_DISK_HIGH_WATERMARK', ['storage', 'diskHighWatermark'], (s) => Number(s)],
  ['FLOTILLA_DISK_LOW_WATERMARK', ['storage', 'diskLowWatermark'], (s) => Number(s)],
  ['FLOTILLA_MANIFEST_MAX_BYTES', ['limits', 'manifestMaxBytes'], (s) => Number(s)],
  ['FLOTILLA_UPLOAD_EXPIRE_HOURS', ['uploads', 'expireAfterHours'], (s) => Number(s)],
  ['FLOTILLA_GC_GRACE', ['gc', 'grace'], (s) => s],
  ['FLOTILLA_GC_INTERVAL', ['gc', 'interval'], (s) => s],
  ['FLOTILLA_GC_COPY_IDLE', ['gc', 'copyIdle'], (s) => s],
  ['FLOTILLA_SITES_ADVERTISE', ['sites', 'advertise'], (s) => s],
  ['FLOTILLA_SITES_RECONCILE_INTERVAL', ['sites', 'reconcileInterval'], (s) => s],
  ['FLOTILLA_SITES_FEED_RETAIN', ['sites', 'feedRetain'], (s) => Number(s)],
  ['FLOTILLA_SITES_TOMBSTONE_TTL', ['sites', 'tombstoneTtl'], (s) => s],
  ['FLOTILLA_PROMOTE_PROPERTIES', ['properties', 'promote'], (s) => s === 'true' || s === '1' ? true : s === 'false' || s === '0' ? false : s],
  ['FLOTILLA_CHECKSUMS', ['checksums', 'enabled'], (s) => s === 'true' || s === '1' ? true : s === 'false' || s === '0' ? false : s],
  ['FLOTILLA_CHECKSUM_WORKERS', ['checksums', 'workers'], (s) => Number(s)],
  ['FLOTILLA_CHECKSUM_BACKFILL_MIBPS', ['checksums', 'backfillMiBps'], (s) => Number(s)],
  ['FLOTILLA_FAULT_INJECTION', ['faultInjection'], (s) => s === 'true' || s === '1' ? true : s === 'false' || s === '0' ? false : s],
  ...AUTH_ENV,
  ...TLS_ENV,
]

export interface FlagValues {
  config?: string
  data?: string
  listen?: string
  p2p?: string
  advertise?: string
  sitesAdvertise?: string
  logLevel?: string
  tlsCertificate?: string
  tlsKey?: string
  tlsClientCa?: string
  tlsClientAuth?: string
  tlsTrust?: string
  peerListen?: string
}

/** Build the effective configuration. Throws ConfigError naming the bad setting and its source. */
export async function loadConfig (flags: FlagValues, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  let fromFile: Partial = {}
  const file = flags.config ?? env.FLOTILLA_CONFIG
  if (file !== undefined && file !== '') {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}. Check the path given to --config or FLOTILLA_CONFIG.`)
    }
    try {
      fromFile = (parseYaml(text) ?? {}) as Partial
    } catch (err) {
      throw new ConfigError(`config file ${file} is not valid YAML: ${(err as Error).message}`)
    }
    if (typeof fromFile !== 'object' || Array.isArray(fromFile)) throw new ConfigError(`config file ${file} must hold a YAML mapping`)
    if ('faultInjection' in fromFile) throw new ConfigError(`config file ${file}: faultInjection is for tests only and is set with the FLOTILLA_FAULT_INJECTION environment variable`)
  }
  const fromEnv: Partial = {}
  for (const [name, path, conv] of ENV) {
    const v = env[name]
    if (v !== undefined && v !== '') set(fromEnv, path, conv(v))
  }
  const fromFlags: Partial = {}
  if (flags.data !== undefined) fromFlags.data = flags.data
  if (flags.listen !== undefined) fromFlags.listen = flags.listen
  if (flags.p2p !== undefined) fromFlags.p2p = flags.p2p
  if (flags.advertise !== undefined) fromFlags.advertise = flags.advertise
  if (flags.sitesAdvertise !== undefined) set(fromFlags, ['sites', 'advertise'], flags.sitesAdvertise)
  if (flags.logLevel !== undefined) set(fromFlags, ['log', 'level'], flags.logLevel)
  if (flags.tlsCertificate !== undefined) set(fromFlags, ['tls', 'certificate'], flags.tlsCertificate)
  if (flags.tlsKey !== undefined) set(fromFlags, ['tls', 'key'], flags.tlsKey)
  if (flags.tlsClientCa !== undefined) set(fromFlags, ['tls', 'clientCA'], flags.tlsClientCa)
  if (flags.tlsClientAuth !== undefined) set(fromFlags, ['tls', 'clientAuth'], flags.tlsClientAuth)
  if (flags.tlsTrust !== undefined) set(fromFlags, ['tls', 'trust'], flags.tlsTrust)
  if (flags.peerListen !== undefined) fromFlags.peerListen = flags.peerListen
  const merged = merge(merge(fromFile, fromEnv), fromFlags)
  const result = ConfigSchema.safeParse(merged)
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}${whereSet(i.path.join('.'))}`).join('; ')
    throw new ConfigError(`invalid configuration: ${problems}. See the Configuration section of README.md.`)
  }
  return result.data
}

const FLAGS: Record<string, string> = {
  data: '--data', listen: '--listen', p2p: '--p2p', advertise: '--advertise', 'log.level': '--log-level', 'sites.advertise': '--sites-advertise', peerListen: '--peer-listen',
  'tls.certificate': '--tls-certificate', 'tls.key': '--tls-key', 'tls.clientCA': '--tls-client-ca', 'tls.clientAuth': '--tls-client-auth', 'tls.trust': '--tls-trust',
}

/** ` (--listen, FLOTILLA_LISTEN)`: where a setting can come from besides the file, for its error. */
function whereSet (path: string): string {
  const from = [FLAGS[path], ...ENV.filter(([, p]) => p.join('.') === path).map(([name]) => name)].filter((x) => x !== undefined)
  return from.length === 0 ? '' : ` (${from.join(', ')})`
}

/** `sites.advertise` as a multiaddr (HOST:PORT converted), or undefined when unset. */
export function siteAdvertiseAddrs (config: Config): string[] | undefined {
  const v = config.sites.advertise
  if (v === undefined) return undefined
  return [v.startsWith('/') ? v : toMultiaddr(v)]
}

/** HOST:PORT as a libp2p TCP multiaddr. */
export function toMultiaddr (hp: string): string {
  const { host, port } = splitHostPort(hp)
  const proto = host.includes(':') ? 'ip6' : /^[0-9.]+$/.test(host) ? 'ip4' : 'dns'
  return `/${proto}/${host}/tcp/${port}`
}

export function splitHostPort (hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':')
  const host = hp.slice(0, i).replace(/^\[|\]$/g, '')
  return { host, port: Number(hp.slice(i + 1)) }
}
