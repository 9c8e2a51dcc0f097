/**
 * Small helpers for talking the OCI Distribution API in tests: digests, blob pushes,
 * manifests built from pushed blobs.
 */
import { createHash } from 'node:crypto'

import { OCI_LAYER_GZIP, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_CONFIG, DOCKER_MANIFEST } from './images.js'
export { OCI_MANIFEST, OCI_INDEX, OCI_CONFIG, DOCKER_MANIFEST } from './images.js'
export const OCI_LAYER = OCI_LAYER_GZIP
export const DOCKER_LIST = DOCKER_MANIFEST_LIST
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json'

export function sha256 (data: Uint8Array | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex')
}

export function sha512 (data: Uint8Array | string): string {
  return 'sha512:' + createHash('sha512').update(data).digest('hex')
}

export interface Blob { digest: string; size: number; data: Buffer; mediaType: string }

export function blob (content: string | Buffer, mediaType = OCI_LAYER): Blob {
  const data = Buffer.isBuffer(content) ? content : Buffer.from(content)
  return { digest: sha256(data), size: data.length, data, mediaType }
}

export function descriptor (b: { digest: string; size: number; mediaType: string }): { mediaType: string; digest: string; size: number } {
  return { mediaType: b.mediaType, digest: b.digest, size: b.size }
}

export async function pushBlob (base: string, repo: string, b: Blob): Promise<Response> {
  const res = await fetch(`${base}/v2/${repo}/blobs/uploads/?digest=${b.digest}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(b.size) },
    body: b.data,
  })
  await res.arrayBuffer()
  if (res.status !== 201) throw new Error(`push of blob ${b.digest} to ${repo} answered ${res.status}`)
  return res
}

export interface Image { config: Blob; layers: Blob[]; manifest: Buffer; digest: string; mediaType: string }

/** A small image: a config and `layers` random layers, as an OCI manifest (or Docker schema 2). */
export function image (opts: { layers?: number; mediaType?: string; seed?: string; extra?: Record<string, unknown> } = {}): Image {
  const seed = opts.seed ?? Math.random().toString(36)
  const mediaType = opts.mediaType ?? OCI_MANIFEST
  const docker = mediaType === DOCKER_MANIFEST
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }), docker ? 'application/vnd.docker.container.image.v1+json' : OCI_CONFIG)
  const layers = Array.from({ length: opts.layers ?? 1 }, (_, i) => blob(`layer ${i} of ${seed}`, docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : OCI_LAYER))
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, config: descriptor(config), layers: layers.map(descriptor), ...opts.extra }))
  return { config, layers, manifest, digest: sha256(manifest), mediaType }
}

export async function pushImage (base: string, repo: string, img: Image, ref?: string): Promise<Response> {
  for (const b of [img.config, ...img.layers]) await pushBlob(base, repo, b)
  const res = await fetch(`${base}/v2/${repo}/manifests/${ref ?? img.digest}`, {
    method: 'PUT',
    headers: { 'Content-Type': img.mediaType },
    body: img.manifest,
  })
  await res.arrayBuffer()
  if (res.status !== 201) throw new Error(`push of manifest ${img.digest} to ${repo} answered ${res.status}`)
  return res
}

/** The `errors[0].code` of an error response. */
export async function errorCode (res: Response): Promise<string | undefined> {
  const text = await res.text()
  try {
    return (JSON.parse(text) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code
  } catch {
    return undefined
  }
}
