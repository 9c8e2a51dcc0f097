/**
 * Benchmark content, written to disk once and streamed from there: a random blob, and an
 * OCI image layout with one incompressible gzip layer (a tar holding one random file).
 */
import { open, mkdir, writeFile, stat } from 'node:fs/promises'
import { createWriteStream } from 'node:fs'
import { createHash, randomFillSync } from 'node:crypto'
import { createGzip } from 'node:zlib'
import { join } from 'node:path'
import { once } from 'node:events'
import { MiB } from './stats.js'

export interface FileBlob { path: string; size: number; digest: string }

/** Write `size` random bytes to `path` in 8 MiB pieces; returns its sha256 digest. */
export async function writeRandomFile (path: string, size: number): Promise<FileBlob> {
  const fh = await open(path, 'w')
  const hash = createHash('sha256')
  const buf = Buffer.allocUnsafe(8 * MiB)
  try {
    let left = size
    for (let i = 0; left > 0 && i < 1_000_000; i++) {
      const n = Math.min(left, buf.length)
      const piece = buf.subarray(0, n)
      randomFillSync(piece)
      hash.update(piece)
      await fh.write(piece, 0, n)
      left -= n
    }
  } finally { await fh.close() }
  return { path, size, digest: 'sha256:' + hash.digest('hex') }
}

function tarHeader (name: string, size: number): Buffer {
  const h = Buffer.alloc(512)
  const put = (s: string, off: number, len: number): void => { h.write(s, off, len, 'ascii') }
  const octal = (n: number, len: number): string => n.toString(8).padStart(len - 1, '0') + '\0'
  put(name, 0, 100)
  put(octal(0o644, 8), 100, 8)
  put(octal(0, 8), 108, 8)
  put(octal(0, 8), 116, 8)
  put(octal(size, 12), 124, 12)
  put(octal(1_700_000_000, 12), 136, 12)
  put('        ', 148, 8)
  put('0', 156, 1)
  put('ustar\0', 257, 6)
  put('00', 263, 2)
  let sum = 0
  for (const b of h) sum += b
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8)
  return h
}

export interface OciLayout {
  dir: string
  tag: string
  layer: { digest: string; size: number; diffId: string }
  config: { digest: string; size: number }
  manifest: { digest: string; size: number }
}

/** An OCI image layout at `dir` with one gzip layer holding a `payloadSize`-byte random file. */
export async function writeOciLayout (dir: string, payloadSize: number, tag = 'bench'): Promise<OciLayout> {
  const blobs = join(dir, 'blobs', 'sha256')
  await mkdir(blobs, { recursive: true })
  const tmp = join(blobs, 'layer.tmp')
  const out = createWriteStream(tmp)
  const gz = createGzip({ level: 1 })
  const gzHash = createHash('sha256')
  const tarHash = createHash('sha256')
  let gzSize = 0
  gz.on('data', (c: Buffer) => { gzHash.update(c); gzSize += c.length })
  gz.pipe(out)
  const write = async (b: Buffer): Promise<void> => {
    tarHash.update(b)
    if (!gz.write(b)) await once(gz, 'drain')
  }
  await write(tarHeader('payload.bin', payloadSize))
  const buf = Buffer.allocUnsafe(MiB)
  let left = payloadSize
  for (let i = 0; left > 0 && i < 1_000_000; i++) {
    const n = Math.min(left, buf.length)
    randomFillSync(buf, 0, n)
    await write(Buffer.from(buf.subarray(0, n)))
    left -= n
  }
  const pad = (512 - (payloadSize % 512)) % 512
  await write(Buffer.alloc(pad + 1024))
  gz.end()
  await once(out, 'close')
  const layerDigest = 'sha256:' + gzHash.digest('hex')
  const diffId = 'sha256:' + tarHash.digest('hex')
  const { rename } = await import('node:fs/promises')
  await rename(tmp, join(blobs, layerDigest.slice(7)))
  if ((await stat(join(blobs, layerDigest.slice(7)))).size !== gzSize) throw new Error('layer size mismatch')

  const put = async (bytes: Buffer): Promise<{ digest: string; size: number }> => {
    const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex')
    await writeFile(join(blobs, digest.slice(7)), bytes)
    return { digest, size: bytes.length }
  }
  const config = await put(Buffer.from(JSON.stringify({
    created: new Date().toISOString(),
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: [diffId] },
    history: [{ created: new Date().toISOString(), created_by: 'flotilla bench' }],
  })))
  const manifest = await put(Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: gzSize }],
  })))
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  await writeFile(join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: manifest.digest,
      size: manifest.size,
      annotations: { 'org.opencontainers.image.ref.name': tag },
    }],
  }))
  return { dir, tag, layer: { digest: layerDigest, size: gzSize, diffId }, config, manifest }
}

/** A tiny image (config + one small layer + manifest) held in memory, for the manifest GET load. */
export function smallImage (): { config: Buffer; layer: Buffer; manifest: Buffer; digests: { config: string; layer: string; manifest: string } } {
  const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
  const layer = randomFillSync(Buffer.alloc(1024))
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha(layer)] } }))
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
  }))
  return { config, layer, manifest, digests: { config: sha(config), layer: sha(layer), manifest: sha(manifest) } }
}
