/**
 * The registry under test and plain-HTTP probes of it. FLOTILLA_TEST_TARGET=reference runs
 * the same client tests against the CNCF reference registry (docker-registry 2.8.2), which
 * is how the harness itself is checked; the default is a Flotilla node.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { startFlotilla, startReference, type RunningRegistry } from '../../scripts/lib/procs.js'

/** What the harness needs from a tap Test (structural, so helpers don't pull in tap's types). */
export interface Lifecycle {
  teardown (fn: () => unknown): void
  comment (...args: unknown[]): void
  passing (): boolean
}

export type TargetKind = 'flotilla' | 'reference'

export function targetKind (): TargetKind {
  const v = process.env.FLOTILLA_TEST_TARGET ?? 'flotilla'
  if (v !== 'flotilla' && v !== 'reference') throw new Error(`FLOTILLA_TEST_TARGET must be flotilla or reference, not ${v}`)
  return v
}

export interface Target {
  kind: TargetKind
  /** host:port, as clients name the registry; stays the same across restart(). */
  host: string
  url: string
  dataDir: string
  /** The process currently serving. */
  readonly current: RunningRegistry
  /** Stop (SIGTERM, or `signal` e.g. SIGKILL for a crash) and start again on the same data dir and port. */
  restart (signal?: NodeJS.Signals): Promise<void>
}

/**
 * Start the registry under test as its own process; teardown stops it, prints the tail of
 * its log when the test failed, and removes its temp dir.
 */
export async function startTarget (t: Lifecycle): Promise<Target> {
  const kind = targetKind()
  let current = kind === 'reference' ? await startReference() : await startFlotilla()
  // Both start* helpers put data/ and the log side by side in one fresh temp dir.
  const { dataDir, host, url } = current
  const base = dirname(dataDir)
  const port = Number(host.split(':')[1])
  t.teardown(async () => {
    await current.stop()
    if (!t.passing()) {
      for (const f of (await readdir(base).catch(() => [] as string[])).filter((n) => n.endsWith('.log'))) {
        const text = await readFile(join(base, f), 'utf8').catch(() => '')
        t.comment(`${kind} log ${f} (last 40 lines):\n${text.split('\n').slice(-40).join('\n')}`)
      }
    }
    await rm(base, { recursive: true, force: true })
  })
  return {
    kind,
    host,
    url,
    dataDir,
    get current () { return current },
    async restart (signal?: NodeJS.Signals) {
      if (signal === undefined) await current.stop()
      else await current.kill(signal)
      current = kind === 'reference'
        ? await startReference({ dataDir, port, baseDir: base })
        : await startFlotilla({ dataDir, port })
    },
  }
}

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ')

export interface ManifestResponse {
  status: number
  digest: string | null
  contentType: string | null
  contentLength: string | null
  body: Buffer
}

/** GET (or HEAD) /v2/NAME/manifests/REF with every manifest type accepted. */
export async function fetchManifest (reg: { url: string }, name: string, ref: string, method: 'GET' | 'HEAD' = 'GET'): Promise<ManifestResponse> {
  const res = await fetch(`${reg.url}/v2/${name}/manifests/${ref}`, { method, headers: { accept: MANIFEST_ACCEPT } })
  const body = Buffer.from(await res.arrayBuffer())
  return {
    status: res.status,
    digest: res.headers.get('docker-content-digest'),
    contentType: res.headers.get('content-type'),
    contentLength: res.headers.get('content-length'),
    body,
  }
}

export async function fetchBlob (reg: { url: string }, name: string, digest: string): Promise<{ status: number, body: Buffer, digest: string | null }> {
  const res = await fetch(`${reg.url}/v2/${name}/blobs/${digest}`)
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), digest: res.headers.get('docker-content-digest') }
}

export function sha256 (data: Buffer | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex')
}
