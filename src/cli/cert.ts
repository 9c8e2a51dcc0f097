/**
 * `flotilla cert …`: a small CA and certificates for a test or internal setup (src/tls/issue.ts).
 *
 *   flotilla cert init --hosts NAME,IP,… [--out DIR] [--port P] [--days N] [--force] [--json]
 *       DIR/ca.crt, DIR/ca.key (the CA) and DIR/node.crt, DIR/node.key (signed by it, a SAN per host);
 *       prints how to trust the CA (Docker's and containers' certs.d, the CLI, curl) and start the node
 *   flotilla cert server --ca-dir DIR --hosts NAME,IP,… [--name node] [--out DIR] …
 *       another server certificate from that CA (a second node, or a renewal)
 *   flotilla cert client --ca-dir DIR --user NAME [--out DIR] …
 *       DIR/NAME.crt, DIR/NAME.key: a client certificate whose subject CN is the user NAME (mTLS)
 *
 * Existing files are never overwritten without --force. Keys are written mode 0600.
 */
import { constants } from 'node:fs'
import { access, mkdir, readFile, writeFile, chmod } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { CliError } from './client.js'
import { printJson } from './format.js'
import { createCA, issueCertificate, parseHosts, type Hosts, type Issued } from '../tls/issue.js'

interface Common { out?: string; days?: string; force?: boolean; json?: boolean }

/** A word the shell takes as it is, or single-quoted. */
export function sh (s: string): string {
  return /^[A-Za-z0-9_/.:,@%+=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`
}

function days (v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1 || n > 36_500) throw new CliError(`--days ${v}: give a whole number of days from 1 to 36500`)
  return n
}

function port (v: string | undefined): number {
  const n = Number(v ?? '5000')
  if (!Number.isInteger(n) || n < 1 || n > 65_535) throw new CliError(`--port ${v ?? ''}: give the port the node will listen on, 1 to 65535`)
  return n
}

async function exists (p: string): Promise<boolean> {
  try { await access(p, constants.F_OK); return true } catch { return false }
}

/** Refuse before writing anything when a file is there and --force is not given. */
async function checkFree (files: string[], force: boolean | undefined): Promise<void> {
  if (force === true) return
  const there: string[] = []
  for (const f of files) if (await exists(f)) there.push(f)
  if (there.length > 0) throw new CliError(`${there.join(', ')} already exist${there.length === 1 ? 's' : ''}: remove ${there.length === 1 ? 'it' : 'them'}, choose another --out DIR, or pass --force to overwrite`)
}

async function writePair (certFile: string, keyFile: string, issued: Issued): Promise<void> {
  await writeFile(certFile, issued.certPem.trimEnd() + '\n', { mode: 0o644 })
  await writeFile(keyFile, issued.keyPem.trimEnd() + '\n', { mode: 0o600 })
  await chmod(keyFile, 0o600) // an existing file (--force) keeps its mode otherwise
}

/** host:port as certs.d names it ([v6]:port for IPv6). */
function hostPort (h: string, p: number): string {
  return h.includes(':') ? `[${h}]:${p}` : `${h}:${p}`
}

/** The commands that make each client trust the CA, and the one that starts the node. */
export function trustCommands (caFile: string, hosts: Hosts, p: number, certFile: string, keyFile: string): { docker: string[]; containers: string[]; cli: string[]; serve: string } {
  const all = [...hosts.dns.filter((h) => !h.startsWith('*.')), ...hosts.ips]
  const ca = sh(caFile)
  return {
    docker: all.map((h) => `mkdir -p ${sh(`/etc/docker/certs.d/${hostPort(h, p)}`)} && cp ${ca} ${sh(`/etc/docker/certs.d/${hostPort(h, p)}/ca.crt`)}`),
    containers: all.map((h) => `mkdir -p ${sh(`/etc/containers/certs.d/${hostPort(h, p)}`)} && cp ${ca} ${sh(`/etc/containers/certs.d/${hostPort(h, p)}/ca.crt`)}`),
    cli: [`export FLOTILLA_CA_CERT=${ca}`, `curl --cacert ${ca} https://${hostPort(all[0]!, p)}/v2/`],
    serve: `flotilla serve --listen 0.0.0.0:${p} --tls-certificate ${sh(certFile)} --tls-key ${sh(keyFile)}`,
  }
}

function printTrust (t: ReturnType<typeof trustCommands>, caFile: string): void {
  process.stdout.write([
    '',
    `Copy ${caFile} to each machine that pushes or pulls, then there, as root:`,
    '',
    '# Docker (read per request: no restart needed)',
    ...t.docker,
    '# podman, skopeo, buildah',
    ...t.containers,
    '# the flotilla CLI (or --ca-cert FILE) and curl',
    ...t.cli,
    '',
    'Start the node with the certificate (it is reloaded when the files change):',
    '',
    t.serve,
    '',
  ].join('\n'))
}

async function readCA (dir: string): Promise<{ certPem: string; keyPem: string; caFile: string }> {
  const caFile = join(dir, 'ca.crt')
  const keyFile = join(dir, 'ca.key')
  try {
    return { certPem: await readFile(caFile, 'utf8'), keyPem: await readFile(keyFile, 'utf8'), caFile }
  } catch (err) {
    throw new CliError(`cannot read the CA in ${dir} (ca.crt and ca.key): ${(err as Error).message}. Give the --ca-dir (or --out) that flotilla cert init wrote.`)
  }
}

function withCommon (c: Command): Command {
  return c
    .option('--out <dir>', 'where to write the files (default ./certs)')
    .option('--days <n>', 'validity in days (default 365; the CA of cert init: 3650)')
    .option('--force', 'overwrite existing files')
    .option('--json', 'print the files and commands as JSON')
}

export function certCommands (program: Command): void {
  const cert = program.command('cert').description('a small CA and certificates for TLS in a test or internal setup')

  withCommon(cert.command('init'))
    .description('write a CA (ca.crt, ca.key) and a node certificate signed by it (node.crt, node.key)')
    .requiredOption('--hosts <names>', 'DNS names and IP addresses clients use to reach the node, comma-separated (each gets a subjectAltName)')
    .option('--port <port>', 'the port the node listens on, for the printed commands (default 5000)')
    .action(async (o: Common & { hosts: string; port?: string }) => {
      const hosts = hostsOf(o.hosts)
      const p = port(o.port)
      const dir = resolve(o.out ?? 'certs')
      const files = { ca: join(dir, 'ca.crt'), caKey: join(dir, 'ca.key'), cert: join(dir, 'node.crt'), key: join(dir, 'node.key') }
      await checkFree(Object.values(files), o.force)
      await mkdir(dir, { recursive: true })
      const ca = await createCA({ days: days(o.days, 3650) })
      const node = await issueCertificate(ca, { kind: 'server', hosts, days: days(o.days, 365) })
      await writePair(files.ca, files.caKey, ca)
      await writePair(files.cert, files.key, node)
      const trust = trustCommands(files.ca, hosts, p, files.cert, files.key)
      if (o.json === true) { printJson({ files, hosts, serial: node.serial, notAfter: node.notAfter.toISOString(), commands: trust }); return }
      process.stdout.write(`wrote ${files.ca} and ${files.caKey} (the CA; keep ca.key secret)\nwrote ${files.cert} and ${files.key} for ${[...hosts.dns, ...hosts.ips].join(', ')}, valid until ${node.notAfter.toISOString()}\n`)
      printTrust(trust, files.ca)
    })

  withCommon(cert.command('server'))
    .description('another server certificate from the CA in --ca-dir (a second node, or a renewal)')
    .requiredOption('--ca-dir <dir>', 'the directory holding ca.crt and ca.key (from cert init)')
    .requiredOption('--hosts <names>', 'DNS names and IP addresses, comma-separated')
    .option('--name <name>', 'file name: NAME.crt and NAME.key (default node)')
    .option('--port <port>', 'the port the node listens on, for the printed commands (default 5000)')
    .action(async (o: Common & { caDir: string; hosts: string; name?: string; port?: string }) => {
      const hosts = hostsOf(o.hosts)
      const p = port(o.port)
      const ca = await readCA(resolve(o.caDir))
      const name = fileName(o.name ?? 'node', '--name')
      const dir = resolve(o.out ?? o.caDir)
      const files = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) }
      await checkFree(Object.values(files), o.force)
      await mkdir(dir, { recursive: true })
      const issued = await issueCertificate(ca, { kind: 'server', hosts, days: days(o.days, 365) })
      await writePair(files.cert, files.key, issued)
      const trust = trustCommands(ca.caFile, hosts, p, files.cert, files.key)
      if (o.json === true) { printJson({ files, hosts, serial: issued.serial, notAfter: issued.notAfter.toISOString(), commands: trust }); return }
      process.stdout.write(`wrote ${files.cert} and ${files.key} for ${[...hosts.dns, ...hosts.ips].join(', ')}, valid until ${issued.notAfter.toISOString()}\n`)
      printTrust(trust, ca.caFile)
    })

  withCommon(cert.command('client'))
    .description('a client certificate for mTLS: its subject CN is the user name it signs in as')
    .requiredOption('--ca-dir <dir>', 'the directory holding ca.crt and ca.key (the CA the node has as --tls-client-ca)')
    .requiredOption('--user <name>', 'the user name (an existing, enabled user of the registry)')
    .option('--registry <host:port>', 'the node as clients name it, for the printed certs.d commands (default HOST:5000)')
    .action(async (o: Common & { caDir: string; user: string; registry?: string }) => {
      const user = o.user.trim()
      if (user === '' || /[\n\r]/.test(user)) throw new CliError('--user: give the user name the certificate signs in as')
      const ca = await readCA(resolve(o.caDir))
      const dir = resolve(o.out ?? o.caDir)
      const base = fileName(user, '--user')
      const files = { cert: join(dir, `${base}.crt`), key: join(dir, `${base}.key`) }
      await checkFree(Object.values(files), o.force)
      await mkdir(dir, { recursive: true })
      const issued = await issueCertificate(ca, { kind: 'client', user, days: days(o.days, 365) })
      await writePair(files.cert, files.key, issued)
      const reg = o.registry ?? 'HOST:5000'
      // certs.d: *.crt are CAs; a client pair is NAME.cert with NAME.key (Docker's and containers' docs).
      const commands = {
        docker: [`mkdir -p ${sh(`/etc/docker/certs.d/${reg}`)}`, `cp ${sh(files.cert)} ${sh(`/etc/docker/certs.d/${reg}/${base}.cert`)}`, `cp ${sh(files.key)} ${sh(`/etc/docker/certs.d/${reg}/${base}.key`)}`],
        containers: [`mkdir -p ${sh(`/etc/containers/certs.d/${reg}`)}`, `cp ${sh(files.cert)} ${sh(`/etc/containers/certs.d/${reg}/${base}.cert`)}`, `cp ${sh(files.key)} ${sh(`/etc/containers/certs.d/${reg}/${base}.key`)}`],
        curl: `curl --cacert ${sh(ca.caFile)} --cert ${sh(files.cert)} --key ${sh(files.key)} https://${reg}/v2/`,
      }
      if (o.json === true) { printJson({ files, user, serial: issued.serial, notAfter: issued.notAfter.toISOString(), commands }); return }
      process.stdout.write([
        `wrote ${files.cert} and ${files.key}: signs in as ${user}, valid until ${issued.notAfter.toISOString()}`,
        '',
        `The node needs --tls-client-ca ${sh(ca.caFile)} (and --tls-client-auth optional or require). On a client machine, as root:`,
        '',
        '# Docker',
        ...commands.docker,
        '# podman, skopeo, buildah',
        ...commands.containers,
        '# curl; the flotilla CLI takes FLOTILLA_CLIENT_CERT and FLOTILLA_CLIENT_KEY',
        commands.curl,
        '',
      ].join('\n'))
    })
}

function hostsOf (list: string): Hosts {
  try { return parseHosts(list) } catch (err) { throw new CliError((err as Error).message) }
}

/** A name safe as a file name in --out. */
function fileName (s: string, flag: string): string {
  if (!/^[A-Za-z0-9._@-]+$/.test(s) || s.startsWith('.')) throw new CliError(`${flag} ${JSON.stringify(s)}: letters, digits, '.', '_', '@' and '-' only, as it names the files`)
  return s
}
