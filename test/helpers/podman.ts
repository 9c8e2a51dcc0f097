/**
 * Private config for the containers/image family (podman, buildah, skopeo): vfs storage in
 * a temp dir, a registries.conf marking the registry under test insecure (plain HTTP), an
 * auth file of our own, and a containers.conf for running without systemd. Nothing here
 * reads or writes /etc/containers, /var/lib/containers/storage or the user's auth.json.
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { removeTree } from './cleanup.js'
import { run, runOk, type RunOptions, type RunResult } from './exec.js'
import type { Lifecycle } from './registry.js'

export interface ContainersEnv {
  dir: string
  /** CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF, CONTAINERS_CONF, REGISTRY_AUTH_FILE. */
  env: NodeJS.ProcessEnv
  authFile: string
  podman (args: string[], opts?: RunOptions): Promise<RunResult>
  podmanOk (args: string[], opts?: RunOptions): Promise<RunResult>
  buildah (args: string[], opts?: RunOptions): Promise<RunResult>
  buildahOk (args: string[], opts?: RunOptions): Promise<RunResult>
  skopeo (args: string[], opts?: RunOptions): Promise<RunResult>
  skopeoOk (args: string[], opts?: RunOptions): Promise<RunResult>
  /** `TOOL login` to host (password on stdin); writes the shared auth file all three tools read. */
  login (tool: 'skopeo' | 'podman' | 'buildah', host: string, creds: { username: string, password: string }): Promise<RunResult>
}

/** TOML basic string (paths from mkdtemp have no quotes, but be safe). */
const q = (s: string): string => JSON.stringify(s)

export async function containersEnv (t: Lifecycle, insecureRegistries: string[]): Promise<ContainersEnv> {
  const dir = await mkdtemp(join(tmpdir(), 'fl-containers-'))
  await mkdir(join(dir, 'tmp'))
  const storageConf = join(dir, 'storage.conf')
  const registriesConf = join(dir, 'registries.conf')
  const containersConf = join(dir, 'containers.conf')
  const authFile = join(dir, 'auth.json')
  await writeFile(storageConf, [
    '[storage]',
    'driver = "vfs"',
    `runroot = ${q(join(dir, 'run'))}`,
    `graphroot = ${q(join(dir, 'storage'))}`,
    '',
  ].join('\n'))
  await writeFile(registriesConf, [
    'unqualified-search-registries = []',
    ...insecureRegistries.flatMap((r) => ['', '[[registry]]', `location = ${q(r)}`, 'insecure = true']),
    '',
  ].join('\n'))
  // No systemd or journald here: cgroupfs and file events; tmp_dir keeps libpod's state private.
  await writeFile(containersConf, [
    '[engine]',
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    `events_logfile_path = ${q(join(dir, 'events.log'))}`,
    `tmp_dir = ${q(join(dir, 'tmp'))}`,
    '',
  ].join('\n'))
  // podman and buildah refuse to start when REGISTRY_AUTH_FILE names a missing file.
  await writeFile(authFile, '{"auths":{}}')
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CONTAINERS_STORAGE_CONF: storageConf,
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    CONTAINERS_CONF: containersConf,
    REGISTRY_AUTH_FILE: authFile,
    TMPDIR: join(dir, 'tmp'),
  }
  t.teardown(async () => { await removeTree(dir) })
  const bind = (cmd: string) => [
    async (a: string[], o: RunOptions = {}): Promise<RunResult> => await run(cmd, a, { env, ...o }),
    async (a: string[], o: RunOptions = {}): Promise<RunResult> => await runOk(cmd, a, { env, ...o }),
  ] as const
  const [podman, podmanOk] = bind('podman')
  const [buildah, buildahOk] = bind('buildah')
  const [skopeo, skopeoOk] = bind('skopeo')
  const login = async (tool: 'skopeo' | 'podman' | 'buildah', host: string, creds: { username: string, password: string }): Promise<RunResult> =>
    await runOk(tool, ['login', '--tls-verify=false', '-u', creds.username, '--password-stdin', host], { env, input: creds.password })
  return { dir, env, authFile, podman, podmanOk, buildah, buildahOk, skopeo, skopeoOk, login }
}
