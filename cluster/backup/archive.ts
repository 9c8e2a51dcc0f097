/**
 * A backup directory (`flotilla backup --out DIR`), and its verification.
 *
 *   DIR/
 *   ├── backup.json          BackupManifest: the snapshot's index, checksum and membership, and
 *   │                        every blob it references; written last (rename), so a backup cut
 *   │                        short leaves the previous backup.json, whose files are all there
 *   ├── snapshot-<index>.bin the metadata state machine as of <index> (cluster/metadata/snapshot.ts)
 *   └── blobs/
 *       └── sha256/ab/abcdef…  blob bytes by digest, the layout of a data dir's blobs/
 *                             (storage/blobs/fs-blob-store.ts): a second backup into DIR copies
 *                             only the blobs missing here, and a restore copies these files
 *
 * Verification: the snapshot's size and sha256 against backup.json, and that it decodes to the
 * end; every blob present, of its size, hashing to its digest. Each failure names its check.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { BackupInfo } from './sessions.js'
import { decodeState } from '../metadata/snapshot.js'

export const FORMAT = 1

export interface BackupManifest {
  format: number
  /** When the client finished writing it. */
  writtenAt: string
  /** The node it came from (its URL as given). */
  source: string
  metadataOnly: boolean
  index: number
  takenAt: string
  node: string
  clusterId: string
  membership: BackupInfo['membership']
  snapshot: { file: string; bytes: number; sha256: string }
  blobs: Array<{ digest: string; size: number }>
}

export function blobPath (dir: string, digest: string): string {
  const [alg, hex] = digest.split(':') as [string, string]
  return join(dir, 'blobs', alg, hex.slice(0, 2), hex)
}

export interface VerifyProblem {
  /** manifest, snapshot-size, snapshot-checksum, snapshot-format, blob-missing, blob-size, blob-digest */
  check: string
  /** The file or digest concerned. */
  what: string
  detail: string
}

export interface VerifyReport {
  ok: boolean
  manifest?: BackupManifest
  problems: VerifyProblem[]
  blobsChecked: number
  bytesChecked: number
}

export async function readManifest (dir: string): Promise<BackupManifest> {
  let text: string
  try {
    text = await readFile(join(dir, 'backup.json'), 'utf8')
  } catch (err) {
    throw new Error(`${dir} holds no backup: cannot read ${join(dir, 'backup.json')} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); give the DIR flotilla backup --out wrote`)
  }
  let m: BackupManifest
  try { m = JSON.parse(text) as BackupManifest } catch { throw new Error(`${join(dir, 'backup.json')} is not JSON: the backup is damaged; take a new one`) }
  if (m.format !== FORMAT || typeof m.snapshot?.sha256 !== 'string' || !Array.isArray(m.blobs)) {
    throw new Error(`${join(dir, 'backup.json')} is not a Flotilla backup of format ${FORMAT}`)
  }
  return m
}

/** sha256 of a file, streamed. */
export async function hashFile (path: string, algorithm = 'sha256'): Promise<{ hex: string; bytes: number }> {
  const h = createHash(algorithm)
  let bytes = 0
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer)
    bytes += (chunk as Buffer).length
  }
  return { hex: h.digest('hex'), bytes }
}

/** Check a backup directory; `onBlob` is told of each blob checked (progress). */
export async function verifyBackup (dir: string, opts: { onBlob?: (bytes: number) => void; concurrency?: number } = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = []
  let manifest: BackupManifest
  try {
    manifest = await readManifest(dir)
  } catch (err) {
    return { ok: false, problems: [{ check: 'manifest', what: join(dir, 'backup.json'), detail: (err as Error).message }], blobsChecked: 0, bytesChecked: 0 }
  }
  const snapPath = join(dir, manifest.snapshot.file)
  try {
    const data = await readFile(snapPath)
    if (data.length !== manifest.snapshot.bytes) {
      problems.push({ check: 'snapshot-size', what: snapPath, detail: `the snapshot is ${data.length} bytes, backup.json says ${manifest.snapshot.bytes}` })
    }
    const sum = createHash('sha256').update(data).digest('hex')
    if (sum !== manifest.snapshot.sha256) {
      problems.push({ check: 'snapshot-checksum', what: snapPath, detail: `the snapshot's sha256 is ${sum}, backup.json says ${manifest.snapshot.sha256}` })
    } else {
      try { for (const _ of decodeState(data)) void _ } catch (err) { problems.push({ check: 'snapshot-format', what: snapPath, detail: (err as Error).message }) }
    }
  } catch (err) {
    problems.push({ check: 'snapshot-missing', what: snapPath, detail: (err as NodeJS.ErrnoException).code ?? (err as Error).message })
  }
  let blobsChecked = 0
  let bytesChecked = 0
  if (!manifest.metadataOnly) {
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < manifest.blobs.length) {
        const b = manifest.blobs[next++]!
        const path = blobPath(dir, b.digest)
        const st = await stat(path).catch(() => undefined)
        if (st === undefined) { problems.push({ check: 'blob-missing', what: b.digest, detail: `${path} is missing` }); continue }
        if (st.size !== b.size) { problems.push({ check: 'blob-size', what: b.digest, detail: `${path} is ${st.size} bytes, the blob is ${b.size}` }); continue }
        const [alg, want] = b.digest.split(':') as [string, string]
        const { hex } = await hashFile(path, alg)
        if (hex !== want) problems.push({ check: 'blob-digest', what: b.digest, detail: `${path} hashes to ${alg}:${hex}` })
        blobsChecked++
        bytesChecked += st.size
        opts.onBlob?.(st.size)
      }
    }
    await Promise.all(Array.from({ length: opts.concurrency ?? 4 }, worker))
  }
  return { ok: problems.length === 0, manifest, problems, blobsChecked, bytesChecked }
}
