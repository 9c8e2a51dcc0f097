/**
 * File plumbing for the filesystem stores: a buffered, hashing writer, directory fsync,
 * and hashing a file from disk.
 */
import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, unlink, type FileHandle } from 'node:fs/promises'
import { checkNotOver, returnChunk } from './source.js'
import { acquireAligned, alignDown, alignUp, DIRECT_CHUNK, releaseAligned, writeFully } from './direct-io.js'

/**
 * highWaterMark for reading blobs. createReadStream of a 1 GiB file on the 2-core VM:
 * from the page cache 64 KiB 1.2–1.7 GiB/s, 256 KiB 2.7–4.2, 1 MiB 4.4–6.8, 4 MiB 3.9–9.5, 16 MiB 4.3–9.2;
 * from a cold cache 64 KiB 0.5–1.3, 256 KiB 1.0–1.8, 1 MiB 1.8–2.1, 4 MiB 1.0–2.2, 16 MiB 1.0–2.2.
 * 1 MiB: the steadiest cold (the case that matters for big layers), far above what HTTP can send
 * (~0.75 GiB/s), at a quarter of the memory per concurrent reader of 4 MiB.
 */
export const READ_CHUNK = 1 << 20

/**
 * Bytes gathered per write while ingesting. The chunks are written where they are, with
 * writev, instead of being copied into a buffer first: 1 GiB of 64 KiB chunks with sha256 on
 * the 2-core VM took 1.05 CPU s copied into 256 KiB buffers and 0.86 gathered by 1 MiB
 * (0.85 s against 0.64 s of wall time). Earlier, with copying: 64 KiB / 256 KiB / 1 MiB / 4 MiB
 * buffers measured 292 / 287 / 291 / 188 MiB/s on a loaded VM, so the size matters little
 * below 4 MiB.
 */
export const WRITE_CHUNK = 1 << 20

export function isErrno (err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code
}

/** Remove a file; resolves false when it was not there. */
export async function unlinkIfPresent (path: string): Promise<boolean> {
  try {
    await unlink(path)
    return true
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false
    throw err
  }
}

/** Make a rename or create in `dir` durable: fsync of the file alone does not cover its name. */
export async function fsyncDir (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try { await fh.sync() } finally { await fh.close() }
}

async function writevAll (fh: FileHandle, bufs: Uint8Array[], position: number): Promise<void> {
  let { bytesWritten } = await fh.writev(bufs, position)
  // A short write (rare, on regular files): finish it chunk by chunk.
  let at = position
  for (const b of bufs) {
    if (bytesWritten >= b.length) { bytesWritten -= b.length; at += b.length; continue }
    let done = bytesWritten
    bytesWritten = 0
    while (done < b.length) done += (await fh.write(b, done, b.length - done, at + done)).bytesWritten
    at += b.length
  }
}

/**
 * Copy `chunks` into `fh` from `position`, updating `hash` (if any), and return the byte count.
 * Chunks are gathered by reference into writes of about WRITE_CHUNK bytes, one write in flight
 * while the next is gathered and hashed. The producer must not reuse a chunk's memory after
 * yielding it (network and file streams never do) until it is returned (returnChunk, once its
 * write is done: source.ts).
 * Throws SIZE_INVALID as soon as more than `limit` bytes arrive.
 */
export async function writeHashed (fh: FileHandle, position: number, batches: AsyncIterable<Uint8Array[]>, hash: Hash | undefined, limit?: number, direct?: FileHandle): Promise<number> {
  if (direct !== undefined) return await writeHashedDirect(fh, direct, position, batches, hash, limit)
  let pending: Uint8Array[] = []
  let fill = 0
  let written = 0
  let size = 0
  let inflight: Promise<void> | undefined
  const flush = async (): Promise<void> => {
    await inflight
    const bufs = pending
    const p = writevAll(fh, bufs, position + written).then(() => { for (const b of bufs) returnChunk(b) })
    // Nobody awaits the write until the next flush: mark it handled so a failure is not fatal meanwhile.
    p.catch(() => {})
    inflight = p
    written += fill
    pending = []
    fill = 0
  }
  try {
    for await (const batch of batches) {
      size = account(batch, size, hash, limit)
      for (const chunk of batch) {
        pending.push(chunk)
        fill += chunk.length
        if (fill >= WRITE_CHUNK) await flush()
      }
    }
    if (fill > 0) await flush()
    await inflight
    return size
  } finally {
    // On error, make sure no write is still running before the caller truncates or unlinks.
    await inflight?.catch(() => {})
  }
}

/** Hash a batch and add it to `size`; SIZE_INVALID as soon as the total passes `limit`. */
function account (batch: Uint8Array[], size: number, hash: Hash | undefined, limit: number | undefined): number {
  for (const chunk of batch) {
    size += chunk.length
    checkNotOver(limit, size)
    hash?.update(chunk)
  }
  return size
}

/**
 * writeHashed through `direct`, a handle on the same file opened with O_DIRECT (direct-io.ts):
 * chunks are copied into aligned staging buffers and written a DIRECT_CHUNK at a time, one
 * write in flight while the next buffer fills. The bytes before the first ALIGN boundary (an
 * append that starts mid-block) and after the last one go through `fh`. If the filesystem
 * turns a direct write down (EINVAL), the rest goes through `fh` too.
 */
async function writeHashedDirect (fh: FileHandle, direct: FileHandle, position: number, batches: AsyncIterable<Uint8Array[]>, hash: Hash | undefined, limit?: number): Promise<number> {
  let size = 0
  let pos = position
  const headEnd = alignUp(position)
  const head: Uint8Array[] = []
  let target = direct
  let buf: Buffer | undefined
  let bufPos = 0
  let fill = 0
  let inflight: Promise<void> | undefined
  let inflightBuf: Buffer | undefined
  const settle = async (): Promise<void> => {
    await inflight
    if (inflightBuf !== undefined) releaseAligned(inflightBuf)
    inflight = undefined
    inflightBuf = undefined
  }
  const writeBlock = async (b: Buffer, length: number, at: number): Promise<void> => {
    try {
      await writeFully(target, b, length, at)
    } catch (err) {
      if ((err as { code?: string }).code !== 'EINVAL' || target === fh) throw err
      target = fh
      await writeFully(fh, b, length, at)
    }
  }
  const submit = async (b: Buffer, length: number, at: number): Promise<void> => {
    await settle()
    const p = writeBlock(b, length, at)
    // Awaited by the next submit or at the end; marked handled so a failure is not fatal meanwhile.
    p.catch(() => {})
    inflight = p
    inflightBuf = b
  }
  try {
    for await (const batch of batches) {
      size = account(batch, size, hash, limit)
      for (const chunk of batch) {
        let c = chunk
        if (pos < headEnd) {
          const n = Math.min(c.length, headEnd - pos)
          head.push(c.subarray(0, n))
          pos += n
          c = c.subarray(n)
          if (pos === headEnd) { await writevAll(fh, head, position); head.length = 0 }
        }
        while (c.length > 0) {
          if (buf === undefined) { buf = acquireAligned(); bufPos = pos; fill = 0 }
          const n = Math.min(c.length, DIRECT_CHUNK - fill)
          buf.set(n === c.length ? c : c.subarray(0, n), fill)
          fill += n
          pos += n
          c = c.subarray(n)
          if (fill === DIRECT_CHUNK) { await submit(buf, fill, bufPos); buf = undefined }
        }
        // Copied into the staging buffers (and hashed): unless part of it waits in `head`.
        if (head.length === 0) returnChunk(chunk)
      }
    }
    await settle()
    // An append that never reached a block boundary.
    if (head.length > 0) await writevAll(fh, head, position)
    if (buf !== undefined) {
      // The whole blocks directly, then the tail (shorter than a block) through the page cache.
      const whole = alignDown(fill)
      if (whole > 0) await writeBlock(buf, whole, bufPos)
      if (fill > whole) await writeFully(fh, buf.subarray(whole, fill), fill - whole, bufPos + whole)
    }
    return size
  } finally {
    // On error, make sure no write is still running before the caller truncates or unlinks.
    await inflight?.catch(() => {})
    if (inflightBuf !== undefined) releaseAligned(inflightBuf)
    if (buf !== undefined) releaseAligned(buf)
  }
}

/** Hash a file from disk (used when no incremental hash state is at hand). */
export async function hashFile (path: string, algorithm: 'sha256' | 'sha512', hash: Hash = createHash(algorithm)): Promise<{ hash: Hash; size: number }> {
  let size = 0
  for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK })) {
    hash.update(chunk as Buffer)
    size += (chunk as Buffer).length
  }
  return { hash, size }
}
