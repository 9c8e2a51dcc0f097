/**
 * Build container images offline, by hand: layers are tarballs made in Node, the runnable
 * one carries Debian's static busybox (package busybox-static) so nothing binary is shipped
 * in the repository. From one BuiltImage we write an OCI image layout (for skopeo), a
 * docker-archive (for `docker load`) or a plain rootfs tarball (for `docker/podman import`).
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { sha256 } from './registry.js'
import { tar, type TarEntry } from './tar.js'

export type { TarEntry } from './tar.js'

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip'
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
export const DOCKER_IMAGE_CONFIG = 'application/vnd.docker.container.image.v1+json'
export const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip'

/** The platform names images use, for the arch this machine runs (docker run checks it). */
export const ARCH = process.arch === 'x64' ? 'amd64' : process.arch === 'arm64' ? 'arm64' : process.arch

/** Where Debian's busybox-static puts its binary (/bin is a symlink to /usr/bin on Debian 12). */
export const BUSYBOX_PATH = process.env.FLOTILLA_TEST_BUSYBOX ?? '/bin/busybox'

export const HELLO_SCRIPT = '#!/bin/sh\necho "hello from flotilla"\n'

/** /bin/busybox, /bin/sh -> busybox and an executable /bin/hello script. */
export function busyboxEntries (): TarEntry[] {
  return [
    { type: 'dir', path: 'bin' },
    { type: 'file', path: 'bin/busybox', data: readFileSync(BUSYBOX_PATH), mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
    { type: 'symlink', path: 'bin/cat', target: 'busybox' },
    { type: 'file', path: 'bin/hello', data: Buffer.from(HELLO_SCRIPT), mode: 0o755 },
    { type: 'dir', path: 'tmp', mode: 0o1777 },
  ]
}

/** One file of `size` random (incompressible) bytes: for big images and for unique layers. */
export function randomEntries (size: number, path = `data/random-${randomBytes(4).toString('hex')}.bin`): TarEntry[] {
  const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : ''
  return [
    ...(dir !== '' ? [{ type: 'dir' as const, path: dir }] : []),
    { type: 'file', path, data: randomBytes(size) },
  ]
}

export function textEntries (files: Record<string, string>): TarEntry[] {
  return Object.entries(files).map(([path, text]) => ({ type: 'file' as const, path, data: Buffer.from(text) }))
}

export interface BuiltLayer {
  /** Uncompressed tar; its sha256 is the diff_id. */
  tar: Buffer
  gz: Buffer
  diffId: string
  /** Digest of the gzip blob, as the manifest names it. */
  digest: string
  size: number
}

export interface BuiltImage {
  layers: BuiltLayer[]
  config: Buffer
  configDigest: string
  manifest: Buffer
  manifestDigest: string
  /** Every blob by digest: config and gzip layers (not the manifest). */
  blobs: Map<string, Buffer>
}

export interface ImageSpec {
  /** Entries of each layer, bottom first. */
  layers: TarEntry[][]
  cmd?: string[]
  /** Extra config labels; a random nonce label is always added so each run's image is new. */
  labels?: Record<string, string>
  /** gzip level; 1 keeps big random layers cheap to build. */
  gzipLevel?: number
  /** Config architecture (default: this machine's, so docker/podman can run it). */
  architecture?: string
}

export function buildLayer (entries: TarEntry[], gzipLevel = 6): BuiltLayer {
  const t = tar(entries)
  const gz = gzipSync(t, { level: gzipLevel })
  return { tar: t, gz, diffId: sha256(t), digest: sha256(gz), size: gz.length }
}

export function buildImage (spec: ImageSpec): BuiltImage {
  const layers = spec.layers.map((l) => buildLayer(l, spec.gzipLevel ?? 6))
  const created = '2024-01-01T00:00:00Z'
  const config = Buffer.from(JSON.stringify({
    created,
    architecture: spec.architecture ?? ARCH,
    os: 'linux',
    config: {
      Env: ['PATH=/bin'],
      Cmd: spec.cmd ?? ['/bin/sh'],
      Labels: { 'flotilla.test.nonce': randomBytes(8).toString('hex'), ...spec.labels },
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created, created_by: `flotilla test harness: layer ${i}` })),
  }))
  const configDigest = sha256(config)
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
    layers: layers.map((l) => ({ mediaType: OCI_LAYER_GZIP, digest: l.digest, size: l.size })),
  }))
  const blobs = new Map<string, Buffer>([[configDigest, config], ...layers.map((l) => [l.digest, l.gz] as [string, Buffer])])
  return { layers, config, configDigest, manifest, manifestDigest: sha256(manifest), blobs }
}

/** A runnable busybox image, optionally with extra layers on top (random ones of the given sizes). */
export function busyboxImage (opts: { randomLayerSizes?: number[], extraLayers?: TarEntry[][], cmd?: string[], architecture?: string } = {}): BuiltImage {
  return buildImage({
    architecture: opts.architecture,
    layers: [
      busyboxEntries(),
      ...(opts.randomLayerSizes ?? []).map((n) => randomEntries(n)),
      ...(opts.extraLayers ?? []),
    ],
    cmd: opts.cmd ?? ['/bin/hello'],
    gzipLevel: 1,
  })
}

export interface Platform { architecture: string, os: string, variant?: string }

/** A multi-platform image: an OCI image index over per-platform images. */
export interface BuiltIndex {
  index: Buffer
  indexDigest: string
  images: Array<{ image: BuiltImage, platform: Platform }>
}

export function buildIndex (images: Array<{ image: BuiltImage, platform: Platform }>): BuiltIndex {
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: images.map(({ image, platform }) => ({
      mediaType: OCI_MANIFEST, digest: image.manifestDigest, size: image.manifest.length, platform,
    })),
  }))
  return { index, indexDigest: sha256(index), images }
}

function blobPath (layoutDir: string, digest: string): string {
  const [alg, hex] = digest.split(':')
  return join(layoutDir, 'blobs', alg ?? 'sha256', hex ?? '')
}

interface IndexJson { schemaVersion: number, mediaType?: string, manifests: Array<{ mediaType: string, digest: string, size: number, annotations?: Record<string, string> }> }

/**
 * Write (or add to) an OCI image layout: oci-layout, blobs/sha256/*, and index.json naming
 * the manifest with `org.opencontainers.image.ref.name` = tag, which is how `oci:DIR:TAG` finds it.
 */
export async function writeOciLayout (dir: string, image: BuiltImage | BuiltIndex, tag: string): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true })
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  const singles = 'images' in image ? image.images.map((i) => i.image) : [image]
  for (const img of singles) {
    for (const [digest, data] of img.blobs) await writeFile(blobPath(dir, digest), data)
    await writeFile(blobPath(dir, img.manifestDigest), img.manifest)
  }
  const top = 'images' in image
    ? { mediaType: OCI_INDEX, digest: image.indexDigest, bytes: image.index }
    : { mediaType: OCI_MANIFEST, digest: image.manifestDigest, bytes: image.manifest }
  await writeFile(blobPath(dir, top.digest), top.bytes)
  let index: IndexJson = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }
  try { index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as IndexJson } catch {}
  index.manifests = index.manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] !== tag)
  index.manifests.push({
    mediaType: top.mediaType,
    digest: top.digest,
    size: top.bytes.length,
    annotations: { 'org.opencontainers.image.ref.name': tag },
  })
  await writeFile(join(dir, 'index.json'), JSON.stringify(index))
}

export interface LayoutImage {
  manifestDigest: string
  manifest: Buffer
  /** Parsed manifest. */
  parsed: { mediaType?: string, config: { digest: string, mediaType: string }, layers: Array<{ digest: string, mediaType: string, size: number }> }
  readBlob (digest: string): Promise<Buffer>
}

/** Read back the image tagged `tag` from an OCI layout (e.g. one skopeo pulled into). */
export async function readOciLayout (dir: string, tag: string): Promise<LayoutImage> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as IndexJson
  const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)
  if (desc === undefined) throw new Error(`no manifest tagged ${tag} in ${dir}/index.json: ${JSON.stringify(index)}`)
  const manifest = await readFile(blobPath(dir, desc.digest))
  return {
    manifestDigest: desc.digest,
    manifest,
    parsed: JSON.parse(manifest.toString()) as LayoutImage['parsed'],
    readBlob: async (digest) => await readFile(blobPath(dir, digest)),
  }
}

/**
 * A docker-archive (what `docker save` writes and `docker load` reads): manifest.json, the
 * config as <hex>.json and each layer as an uncompressed <diffid-hex>/layer.tar.
 */
export function dockerArchive (image: BuiltImage, repoTags: string[]): Buffer {
  const configName = `${image.configDigest.slice(7)}.json`
  const layerNames = image.layers.map((l) => `${l.diffId.slice(7)}/layer.tar`)
  const entries: TarEntry[] = [
    { type: 'file', path: configName, data: image.config },
    ...image.layers.flatMap((l, i): TarEntry[] => [
      { type: 'dir', path: `${l.diffId.slice(7)}` },
      { type: 'file', path: layerNames[i] ?? '', data: l.tar },
    ]),
    { type: 'file', path: 'manifest.json', data: Buffer.from(JSON.stringify([{ Config: configName, RepoTags: repoTags, Layers: layerNames }])) },
  ]
  return tar(entries)
}

/** A flat root filesystem tarball for `docker import` / `podman import`. */
export function rootfsTar (extra: TarEntry[] = []): Buffer {
  return tar([...busyboxEntries(), ...extra])
}
