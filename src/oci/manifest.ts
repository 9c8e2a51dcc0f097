/**
 * Manifest parsing: what a pushed manifest is, and which blobs and child manifests it
 * references. The bytes themselves are stored untouched; this only reads them.
 */
import { FlotillaError } from '../../storage/errors.js'
import { isDigest } from '../../storage/reference.js'

export const MediaType = {
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
} as const

const IMAGE_TYPES = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest])
const INDEX_TYPES = new Set<string>([MediaType.OciIndex, MediaType.DockerList])
/** Layers that live elsewhere (Windows base layers) are not expected in the registry. */
const FOREIGN_LAYERS = new Set<string>([
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
])

export function isManifestMediaType (t: string): boolean {
  return IMAGE_TYPES.has(t) || INDEX_TYPES.has(t)
}

export interface Descriptor {
  mediaType: string
  digest: string
  size: number
  artifactType?: string
  annotations?: Record<string, string>
  urls?: string[]
}

export interface ParsedManifest {
  mediaType: string
  kind: 'image' | 'index'
  blobs: string[]
  manifests: string[]
  /** The size each descriptor gives, by digest (blobs and child manifests). */
  sizes: Map<string, number>
  subject?: string
  /** artifactType, else the config's media type (what the referrers API reports). */
  artifactType?: string
  annotations?: Record<string, string>
  /** An image manifest's config descriptor. */
  config?: Descriptor
}

function invalid (message: string): never {
  throw new FlotillaError('MANIFEST_INVALID', message)
}

function isObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function parseAnnotations (v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined) return undefined
  if (!isObject(v)) invalid(`${where}.annotations must be an object of strings`)
  for (const [k, s] of Object.entries(v)) if (typeof s !== 'string') invalid(`${where}.annotations.${k} must be a string`)
  return v as Record<string, string>
}

export function parseDescriptor (v: unknown, where: string): Descriptor {
  if (!isObject(v)) invalid(`${where} must be a descriptor object`)
  const { mediaType, digest, size } = v
  if (typeof mediaType !== 'string' || mediaType === '') invalid(`${where}.mediaType must be a non-empty string`)
  if (typeof digest !== 'string' || !isDigest(digest)) invalid(`${where}.digest ${JSON.stringify(digest)} is not a valid digest`)
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) invalid(`${where}.size must be a non-negative integer`)
  const d: Descriptor = { mediaType, digest, size }
  if (v.artifactType !== undefined) {
    if (typeof v.artifactType !== 'string') invalid(`${where}.artifactType must be a string`)
    d.artifactType = v.artifactType
  }
  const ann = parseAnnotations(v.annotations, where)
  if (ann !== undefined) d.annotations = ann
  if (v.urls !== undefined) {
    if (!Array.isArray(v.urls) || !v.urls.every((u) => typeof u === 'string')) invalid(`${where}.urls must be an array of strings`)
    d.urls = v.urls as string[]
  }
  return d
}

/** Strip parameters: `application/json; charset=utf-8` → `application/json`. */
export function bareMediaType (contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined
  const t = contentType.split(';')[0]?.trim().toLowerCase()
  return t === '' ? undefined : t
}

/**
 * Parse a pushed manifest. The body's own `mediaType` and the Content-Type header must agree
 * when both are there; podman omits the former, so the header says what the manifest is
 * then. With neither, or a header that is no manifest type, the manifest is refused.
 */
export function parseManifest (body: Uint8Array, contentType: string | undefined): ParsedManifest {
  let doc: unknown
  try {
    doc = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'))
  } catch (err) {
    invalid(`manifest is not valid JSON: ${(err as Error).message}`)
  }
  if (!isObject(doc)) invalid('manifest must be a JSON object')
  const header = bareMediaType(contentType)
  let mediaType: string
  const headerNamesManifest = header !== undefined && (isManifestMediaType(header) || header === MediaType.DockerSchema1 || header === MediaType.DockerSchema1Signed)
  if (doc.mediaType !== undefined) {
    if (typeof doc.mediaType !== 'string') invalid('mediaType must be a string')
    mediaType = doc.mediaType
    if (header !== undefined && header !== mediaType) {
      invalid(isManifestMediaType(header)
        ? `manifest mediaType ${mediaType} does not match Content-Type ${header}`
        : `Content-Type ${header} is not a manifest media type: send the manifest's own mediaType (${mediaType})`)
    }
  } else if (headerNamesManifest) {
    // podman sends OCI manifests without a mediaType in the body: the header says what it is.
    mediaType = header!
  } else if (header !== undefined) {
    invalid(`Content-Type ${header} is not a manifest media type, and the body has no mediaType: send an OCI or Docker schema 2 manifest type`)
  } else {
    invalid('the manifest has no mediaType and the request no Content-Type: one of them must say what the manifest is')
  }
  if (mediaType === MediaType.DockerSchema1 || mediaType === MediaType.DockerSchema1Signed || doc.schemaVersion === 1) {
    invalid('Docker schema 1 manifests are not supported: push with a current client, which sends schema 2 or OCI')
  }
  if (!isManifestMediaType(mediaType)) invalid(`unknown manifest media type ${JSON.stringify(mediaType)}: expected an OCI or Docker schema 2 manifest or index`)
  if (doc.schemaVersion !== 2) invalid('schemaVersion must be 2')

  const out: ParsedManifest = { mediaType, kind: IMAGE_TYPES.has(mediaType) ? 'image' : 'index', blobs: [], manifests: [], sizes: new Map() }
  const sized = (d: Descriptor, where: string): Descriptor => {
    const seen = out.sizes.get(d.digest)
    if (seen !== undefined && seen !== d.size) invalid(`${where} gives ${d.digest} a size of ${d.size}, another descriptor ${seen}`)
    out.sizes.set(d.digest, d.size)
    return d
  }
  if (out.kind === 'image') {
    if (doc.manifests !== undefined) invalid('an image manifest has no manifests field')
    const config = sized(parseDescriptor(doc.config, 'config'), 'config')
    if (!Array.isArray(doc.layers)) invalid('layers must be an array')
    const layers = doc.layers.map((l, i) => sized(parseDescriptor(l, `layers[${i}]`), `layers[${i}]`))
    out.blobs.push(config.digest)
    out.config = config
    for (const l of layers) if (!FOREIGN_LAYERS.has(l.mediaType) || (l.urls ?? []).length === 0) out.blobs.push(l.digest)
    out.artifactType = config.mediaType
  } else {
    if (!Array.isArray(doc.manifests)) invalid('manifests must be an array')
    if (doc.layers !== undefined && mediaType === MediaType.OciIndex && doc.config !== undefined) invalid('an index has no config field')
    for (const [i, m] of doc.manifests.entries()) out.manifests.push(sized(parseDescriptor(m, `manifests[${i}]`), `manifests[${i}]`).digest)
  }
  if (doc.artifactType !== undefined) {
    if (typeof doc.artifactType !== 'string') invalid('artifactType must be a string')
    out.artifactType = doc.artifactType
  }
  if (doc.subject !== undefined) out.subject = parseDescriptor(doc.subject, 'subject').digest
  const ann = parseAnnotations(doc.annotations, 'manifest')
  if (ann !== undefined) out.annotations = ann
  out.blobs = [...new Set(out.blobs)]
  out.manifests = [...new Set(out.manifests)]
  return out
}
