/**
 * Cluster helpers for scripts/bench/cluster.ts. Starting and stopping nodes is
 * scripts/lib/cluster.ts (shared with the tests); this adds what only the benchmark needs:
 * where a blob lands on disk and when it got there, images built around a large layer,
 * small pushes with short time limits (failover), and tag-PUT load.
 */
import http from 'node:http'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { expect, location, withDigest, setCredentials, HttpFailure, type BenchRequest } from './http.js'
import { pushMonolithic } from './ops.js'
import { percentile } from './stats.js'
import type { FileBlob } from './content.js'
import type { ClusterNode, TestCluster } from '../../lib/cluster.js'

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
const OCTET = 'application/octet-stream'

const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

/** Send the cluster's admin credentials (Basic) with every request to each of its nodes. */
export function authorize (c: TestCluster, node?: ClusterNode): void {
  for (const n of node !== undefined ? [node] : c.nodes) setCredentials(n.url, c.credentials.username, c.credentials.password)
}

/** DATA/blobs/sha256/<2 hex>/<hex>: where a node keeps a blob once it is durable. */
export function blobFile (dataDir: string, digest: string): string {
  const hex = digest.slice(digest.indexOf(':') + 1)
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex)
}

/** Whether the node holds the whole blob on disk now. */
export async function hasBlob (node: ClusterNode, digest: string, size: number): Promise<boolean> {
  try { return (await stat(blobFile(node.dataDir, digest))).size === size } catch { return false }
}

export interface Arrivals {
  /** performance.now() at which each node's file appeared (undefined: never, within the limit). */
  at: Map<ClusterNode, number | undefined>
  /** Resolves once every node has the file, or the limit passed (check `at`). */
  done: Promise<void>
  stop (): void
}

/**
 * Watch for the blob file on each node, every `everyMs`, from now on (start this before
 * the push, so arrivals on fast nodes are not missed). Bounded by `timeoutMs`.
 */
export function watchArrivals (nodes: ClusterNode[], digest: string, size: number, timeoutMs: number, everyMs = 10): Arrivals {
  const at = new Map<ClusterNode, number | undefined>(nodes.map((n) => [n, undefined]))
  let stopped = false
  const done = (async () => {
    const deadline = performance.now() + timeoutMs
    while (!stopped && performance.now() < deadline) {
      await Promise.all(nodes.map(async (n) => {
        if (at.get(n) !== undefined) return
        if (await hasBlob(n, digest, size)) at.set(n, performance.now())
      }))
      if ([...at.values()].every((v) => v !== undefined)) return
      await new Promise((resolve) => setTimeout(resolve, everyMs))
    }
  })()
  return { at, done, stop () { stopped = true } }
}

/** A small config blob, unique per call, for an image around a large layer. */
export function configFor (layerDigest: string): Buffer {
  return Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layerDigest] }, nonce: randomBytes(8).toString('hex') }))
}

export function manifestFor (config: Buffer, layers: Array<{ digest: string; size: number }>, layerType = 'application/vnd.oci.image.layer.v1.tar+gzip'): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: layers.map((l) => ({ mediaType: layerType, digest: l.digest, size: l.size })),
  }))
}

/** POST + PUT ?digest= of an in-memory blob, each request limited to `timeoutMs`. */
export async function putSmallBlob (base: string, repo: string, bytes: Buffer, agent: http.Agent, timeoutMs = 30_000): Promise<string> {
  const digest = sha(bytes)
  const post: BenchRequest = { method: 'POST', url: `${base}/v2/${repo}/blobs/uploads/`, headers: { 'content-length': 0 }, agent, timeoutMs }
  const loc = location(base, post, await expect(post, [202]))
  await expect({ method: 'PUT', url: withDigest(loc, digest), headers: { 'content-type': OCTET }, body: bytes, agent, timeoutMs }, [201])
  return digest
}

export async function putManifest (base: string, repo: string, ref: string, bytes: Buffer, agent: http.Agent, timeoutMs = 30_000): Promise<void> {
  await expect({ method: 'PUT', url: `${base}/v2/${repo}/manifests/${ref}`, headers: { 'content-type': OCI_MANIFEST }, body: bytes, agent, timeoutMs }, [201])
}

export interface LayerPush { blobMs: number; manifestMs: number; totalMs: number; blobDoneAt: number }

/**
 * Push an image whose one layer is `blob` (streamed from disk): config blob, the layer
 * (monolithic POST + PUT), then the manifest PUT, which a cluster acknowledges only once
 * the blobs are on its write quorum.
 */
export async function pushLayerImage (base: string, repo: string, tag: string, blob: FileBlob, agent: http.Agent): Promise<LayerPush> {
  const t0 = performance.now()
  const config = configFor(blob.digest)
  await putSmallBlob(base, repo, config, agent)
  await pushMonolithic(base, repo, blob, agent)
  const blobDoneAt = performance.now()
  await expect({ method: 'PUT', url: `${base}/v2/${repo}/manifests/${tag}`, headers: { 'content-type': OCI_MANIFEST }, body: manifestFor(config, [blob]), agent, timeoutMs: 10 * 60_000 }, [201])
  const end = performance.now()
  return { blobMs: blobDoneAt - t0, manifestMs: end - blobDoneAt, totalMs: end - t0, blobDoneAt }
}

/** A fresh small image (random 1 KiB layer) pushed whole: config, layer, manifest by tag. */
export async function pushSmallImage (base: string, repo: string, tag: string, agent: http.Agent, timeoutMs = 30_000): Promise<{ manifest: Buffer }> {
  const layer = randomBytes(1024)
  const config = configFor(sha(layer))
  await putSmallBlob(base, repo, config, agent, timeoutMs)
  await putSmallBlob(base, repo, layer, agent, timeoutMs)
  const manifest = manifestFor(config, [{ digest: sha(layer), size: layer.length }], 'application/vnd.oci.image.layer.v1.tar')
  await putManifest(base, repo, tag, manifest, agent, timeoutMs)
  return { manifest }
}

export interface TagLoad { ok: number; errors: number; firstErrors: string[]; ms: number; perSec: number; p50: number; p99: number; max: number }

/**
 * Tag PUTs (the same manifest under new tags: one Raft commit each) from `concurrency`
 * workers, until `count` were issued or `durationMs` passed, whichever comes first.
 * Stops early after 50 errors.
 */
export async function tagLoad (base: string, repo: string, manifest: Buffer, opts: { prefix: string; concurrency: number; count?: number; durationMs?: number }): Promise<TagLoad> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency })
  const lat: number[] = []
  const firstErrors: string[] = []
  let errors = 0
  let issued = 0
  const start = performance.now()
  const end = opts.durationMs !== undefined ? start + opts.durationMs : Infinity
  const limit = opts.count ?? Number.MAX_SAFE_INTEGER
  await Promise.all(Array.from({ length: opts.concurrency }, async () => {
    while (issued < limit && performance.now() < end && errors < 50) {
      const i = issued++
      const t0 = performance.now()
      try {
        await putManifest(base, repo, `${opts.prefix}${i}`, manifest, agent, 60_000)
        lat.push(performance.now() - t0)
      } catch (err) {
        errors++
        if (firstErrors.length < 3) firstErrors.push(err instanceof HttpFailure ? `${err.why}: ${err.response?.body.toString().slice(0, 200) ?? ''}` : String(err))
      }
    }
  }))
  const ms = performance.now() - start
  agent.destroy()
  return { ok: lat.length, errors, firstErrors, ms, perSec: lat.length / (ms / 1000), p50: percentile(lat, 50), p99: percentile(lat, 99), max: percentile(lat, 100) }
}

/** GET a manifest by tag on one node; the status (0 on a network error). */
export async function getTagStatus (base: string, repo: string, tag: string, timeoutMs = 5000): Promise<{ status: number; body: Buffer }> {
  try {
    const res = await expect({ method: 'GET', url: `${base}/v2/${repo}/manifests/${tag}`, headers: { accept: OCI_MANIFEST }, timeoutMs }, [200, 404, 401, 500, 503])
    return { status: res.status, body: res.body }
  } catch { return { status: 0, body: Buffer.alloc(0) } }
}
