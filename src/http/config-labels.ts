/**
 * The labels (`config.Labels`) and annotations of an image config, read when its manifest is
 * pushed so they can be indexed as read-only properties (cluster/metadata/properties.ts).
 *
 * Only a config that is small (MAX_CONFIG_BYTES) and already on this node is read: a config
 * pushed through another node and not copied here yet is skipped rather than waited for, and
 * then the manifest has its own annotations as properties but not its config's labels. Docker,
 * podman and skopeo push the config through the same node as the manifest, so in practice the
 * labels are there. A config that is not JSON, or labels that are not strings, are ignored:
 * the manifest is valid whatever its config says.
 */
import type { BlobStore } from '../../storage/blobs/blob-store.js'
import { isDigest, type Digest } from '../../storage/reference.js'
import type { Descriptor } from '../oci/manifest.js'

export const MAX_CONFIG_BYTES = 1024 * 1024

const CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json'])

export async function configLabels (blobs: BlobStore, config: Descriptor | undefined): Promise<Record<string, string> | undefined> {
  if (config === undefined || !CONFIG_TYPES.has(config.mediaType) || config.size > MAX_CONFIG_BYTES || !isDigest(config.digest)) return undefined
  const digest = config.digest as Digest
  try {
    const info = await blobs.stat(digest)
    if (info === undefined || info.size > MAX_CONFIG_BYTES) return undefined
    const chunks: Buffer[] = []
    for await (const c of await blobs.read(digest)) chunks.push(Buffer.from(c as Uint8Array))
    const doc = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { config?: { Labels?: unknown }; annotations?: unknown }
    const out: Record<string, string> = {}
    for (const src of [doc?.config?.Labels, doc?.annotations]) {
      if (typeof src !== 'object' || src === null || Array.isArray(src)) continue
      for (const [k, v] of Object.entries(src as Record<string, unknown>)) if (typeof v === 'string' && !(k in out)) out[k] = v
    }
    return Object.keys(out).length > 0 ? out : undefined
  } catch {
    return undefined
  }
}
