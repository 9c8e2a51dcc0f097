/**
 * Cluster tests' harness: a cluster of real nodes (scripts/lib/cluster.ts) tied to a tap test's
 * lifecycle, and a small OCI client over plain HTTP with Basic credentials for workloads that
 * need many pushes and exact timings (real clients retry on their own for minutes).
 */
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { startCluster, basicAuth, type ClusterNode, type ClusterOptions, type Credentials, type TestCluster } from '../../scripts/lib/cluster.js'
import { image as smallImage, sha256, type Image } from './oci.js'
import type { Lifecycle } from './registry.js'

export * from '../../scripts/lib/cluster.js'

/**
 * Start a cluster for a test: teardown kills every node (even paused ones) whatever happened,
 * after printing the tail of each node's log when the test failed.
 */
export async function startTestCluster (t: Lifecycle, opts: ClusterOptions): Promise<TestCluster> {
  const c = await startCluster(opts)
  t.teardown(async () => {
    if (!t.passing()) t.comment(`node logs (tails):\n${await c.logs(40)}`)
    await c.destroy()
  })
  return c
}

/** Whether a node holds a committed copy of a blob in its own data dir (storage/blobs/fs-blob-store.ts layout). */
export async function hasBlobOnDisk (dataDir: string, digest: string): Promise<boolean> {
  const [alg, hex] = digest.split(':') as [string, string]
  return await stat(join(dataDir, 'blobs', alg, hex.slice(0, 2), hex)).then(() => true, () => false)
}

export interface PushOutcome {
  /** ok: the manifest PUT answered 201; failed: a definite refusal; unknown: no answer (timeout, connection lost). */
  outcome: 'ok' | 'failed' | 'unknown'
  status?: number
  error?: string
}

/** fetch with Basic credentials and a timeout; a network error or timeout rejects. */
export async function authFetch (url: string, creds: Credentials, init: RequestInit = {}, timeoutMs = 10_000): Promise<Response> {
  const headers = new Headers(init.headers)
  headers.set('authorization', basicAuth(creds))
  return await fetch(url, { ...init, headers, signal: AbortSignal.timeout(timeoutMs) })
}

/**
 * Push a small image (config, layers, manifest by tag) over HTTP: blobs monolithically
 * (POST ?digest=), then the manifest. The outcome is that of the manifest PUT; a failure on
 * a blob is 'failed' (nothing was acknowledged).
 */
export async function pushHttp (base: string, creds: Credentials, repo: string, img: Image, tag: string, timeoutMs = 10_000): Promise<PushOutcome> {
  for (const b of [img.config, ...img.layers]) {
    let res: Response
    try {
      res = await authFetch(`${base}/v2/${repo}/blobs/uploads/?digest=${b.digest}`, creds, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: b.data }, timeoutMs)
      await res.arrayBuffer()
    } catch (err) {
      return { outcome: 'failed', error: `blob: ${(err as Error).message}` }
    }
    if (res.status !== 201) return { outcome: 'failed', status: res.status, error: 'blob' }
  }
  let res: Response
  try {
    res = await authFetch(`${base}/v2/${repo}/manifests/${tag}`, creds, { method: 'PUT', headers: { 'content-type': img.mediaType }, body: img.manifest }, timeoutMs)
    const text = await res.text()
    if (res.status === 201) {
      if (res.headers.get('docker-content-digest') !== img.digest) return { outcome: 'failed', status: res.status, error: `digest header ${res.headers.get('docker-content-digest')}` }
      return { outcome: 'ok', status: 201 }
    }
    // 5xx after the request reached the node: the command may still commit later.
    return { outcome: res.status >= 500 ? 'unknown' : 'failed', status: res.status, error: text.slice(0, 200) }
  } catch (err) {
    return { outcome: 'unknown', error: (err as Error).message }
  }
}

/**
 * Check that `img` is served by tag from `base`: the manifest bytes and digest, and every
 * blob's bytes. Returns the list of problems (empty when all is well).
 */
export async function checkImage (base: string, creds: Credentials, repo: string, img: Image, tag: string, timeoutMs = 15_000): Promise<string[]> {
  const problems: string[] = []
  try {
    const res = await authFetch(`${base}/v2/${repo}/manifests/${tag}`, creds, { headers: { accept: img.mediaType } }, timeoutMs)
    const body = Buffer.from(await res.arrayBuffer())
    if (res.status !== 200) problems.push(`${repo}:${tag} manifest answered ${res.status}`)
    else {
      if (res.headers.get('docker-content-digest') !== img.digest) problems.push(`${repo}:${tag} digest ${res.headers.get('docker-content-digest')} != ${img.digest}`)
      if (!body.equals(img.manifest)) problems.push(`${repo}:${tag} manifest bytes differ`)
    }
    for (const b of [img.config, ...img.layers]) {
      const r = await authFetch(`${base}/v2/${repo}/blobs/${b.digest}`, creds, {}, timeoutMs)
      const data = Buffer.from(await r.arrayBuffer())
      if (r.status !== 200) problems.push(`${repo} blob ${b.digest} answered ${r.status}`)
      else if (sha256(data) !== b.digest) problems.push(`${repo} blob ${b.digest} bytes hash to ${sha256(data)}`)
    }
  } catch (err) {
    problems.push(`${repo}:${tag}: ${(err as Error).message}`)
  }
  return problems
}

export interface PushRecord {
  client: number
  repo: string
  tag: string
  img: Image
  node: string
  start: number
  end: number
  result: PushOutcome
}

/**
 * `clients` concurrent pushers, each pushing new small images in a loop to the nodes
 * `targets()` names (round-robin, skipping none: a dead node simply fails fast), until stop().
 */
export function pushWorkload (opts: { clients: number; creds: Credentials; targets: () => Array<{ url: string; name: string }>; repoPrefix: string; timeoutMs?: number; pauseMs?: number; layers?: number }): { records: PushRecord[]; stop: () => Promise<void> } {
  const records: PushRecord[] = []
  let stopped = false
  const loops = Array.from({ length: opts.clients }, async (_, client) => {
    for (let i = 0; !stopped && i < 100_000; i++) {
      const targets = opts.targets()
      const target = targets[(client + i) % targets.length]!
      const repo = `${opts.repoPrefix}/c${client}`
      const tag = `t${i}`
      const img = smallImage({ layers: opts.layers ?? 2, seed: `${opts.repoPrefix}-${client}-${i}-${Math.random()}` })
      const start = Date.now()
      const result = await pushHttp(target.url, opts.creds, repo, img, tag, opts.timeoutMs ?? 5000)
      records.push({ client, repo, tag, img, node: target.name, start, end: Date.now(), result })
      if (result.outcome !== 'ok') await new Promise((resolve) => setTimeout(resolve, 50))
      else if (opts.pauseMs !== undefined) await new Promise((resolve) => setTimeout(resolve, opts.pauseMs))
    }
  })
  return {
    records,
    async stop () { stopped = true; await Promise.all(loops) },
  }
}

/**
 * Cut `node` off from `peers` with its fault-injection hook (FLOTILLA_FAULT_INJECTION=1,
 * src/http/debug.ts); no peers heals it. One-sided: cutOff() cuts both ways.
 */
export async function setPartition (c: TestCluster, node: ClusterNode, peers: ClusterNode[]): Promise<void> {
  const res = await authFetch(`${node.url}/api/v1/debug/partition`, c.credentials, {
    method: peers.length === 0 ? 'DELETE' : 'PUT',
    headers: { 'content-type': 'application/json' },
    ...(peers.length === 0 ? {} : { body: JSON.stringify({ peers: peers.map((p) => p.peerId) }) }),
  })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`${node.name}: partition hook answered ${res.status}: ${text}`)
}

/** Cut `node` off from every other live node, on every node's hook (both directions). */
export async function cutOff (c: TestCluster, node: ClusterNode): Promise<void> {
  const others = c.live().filter((n) => n !== node)
  await Promise.all([setPartition(c, node, others), ...others.map(async (o) => await setPartition(c, o, [node]))])
}

export async function healAll (c: TestCluster): Promise<void> {
  await Promise.all(c.live().map(async (n) => await setPartition(c, n, [])))
}

/**
 * PUT an OCI manifest of a fresh config (pushed first) and one already-pushed layer, tagged v1:
 * its status, how long the PUT took (it waits for the layer's write quorum), and its body.
 */
export async function putLayerManifest (base: string, creds: Credentials, repo: string, layer: { digest: string; size: number }, timeoutMs: number): Promise<{ status: number; ms: number; body: string }> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, nonce: Math.random().toString(36).slice(2) }))
  const cfg = await authFetch(`${base}/v2/${repo}/blobs/uploads/?digest=${sha256(config)}`, creds, { method: 'POST', body: config }, 30_000)
  await cfg.arrayBuffer()
  if (cfg.status !== 201) throw new Error(`config upload answered ${cfg.status}`)
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer.digest, size: layer.size }],
  })
  const t0 = Date.now()
  const res = await authFetch(`${base}/v2/${repo}/manifests/v1`, creds, { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest }, timeoutMs)
  const body = await res.text()
  return { status: res.status, ms: Date.now() - t0, body }
}
