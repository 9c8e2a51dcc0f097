/**
 * Direct I/O (O_DIRECT) for blob bytes: writes, reads nobody will repeat soon (a peer copying
 * a blob), and a client's first read of a blob written that way (it is not in the cache),
 * bypass the page cache. That first read then warms the cache in the background: a layer
 * pulled once is often pulled again, and from the cache it is several times faster.
 *
 * Why: a registry streams gigabytes it will not read again soon, and on the VMs we run on,
 * taking fresh page-cache pages is what costs. Writing 1 GiB and fsyncing it cost 0.2 s of
 * system time into an empty cache and 1.4–2.3 s once a few GiB were cached; with O_DIRECT it
 * is 0.1 s every time. Reading 1 GiB not in the cache: 1.2–1.6 s system time buffered, 0.05 s
 * direct (and twice as fast). MinIO writes and reads large objects the same way.
 *
 * O_DIRECT wants the memory address, the file offset and the length aligned to the device's
 * logical block. Plain Buffers are not page aligned; a WebAssembly.Memory's backing store is,
 * so staging buffers come from there (a small pool, reused). Bytes outside whole ALIGN blocks
 * (the head of an append that starts mid-block, the tail of a blob) go through the page
 * cache on the ordinary handle. A filesystem without O_DIRECT (tmpfs) refuses the open with
 * EINVAL: the caller then uses its ordinary handle for everything.
 */
import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'

/** Alignment of offsets and lengths: the largest logical block size in common use. */
export const ALIGN = 4096
/** Size of one staging buffer (one write or read). */
export const DIRECT_CHUNK = 1 << 20

// Node has it; the project's TypeScript libs (no DOM) do not declare it.
declare const WebAssembly: { Memory: new (d: { initial: number; maximum?: number }) => { buffer: ArrayBuffer } }

/**
 * Size of one direct read when serving a blob: the device answers 4 MiB reads about twice as
 * fast as 1 MiB ones here (dd iflag=direct: 3.5 GB/s against 1.8), and 8 MiB ones a little
 * faster again (2.3 against 2.8 GB/s at queue depth 1 on a busy VM).
 */
export const DIRECT_READ_CHUNK = 8 << 20
/** The smaller read used once WIDE_READS_MAX wide reads are running (fs-blob-store.ts). */
export const DIRECT_READ_CHUNK_NARROW = 4 << 20

const WASM_PAGE = 64 * 1024
const POOL_MAX = 8
const pools = new Map<number, Buffer[]>()

/** A buffer of `size` bytes (a multiple of 64 KiB) whose address is page aligned. Give it back with `releaseAligned`. */
export function acquireAligned (size = DIRECT_CHUNK): Buffer {
  const b = pools.get(size)?.pop()
  if (b !== undefined) return b
  const mem = new WebAssembly.Memory({ initial: size / WASM_PAGE, maximum: size / WASM_PAGE })
  return Buffer.from(mem.buffer, 0, size)
}

/** Only for a buffer no pending I/O still refers to. */
export function releaseAligned (b: Buffer): void {
  let pool = pools.get(b.length)
  if (pool === undefined) { pool = []; pools.set(b.length, pool) }
  if (pool.length < POOL_MAX) pool.push(b)
}

export const alignDown = (n: number): number => n - (n % ALIGN)
export const alignUp = (n: number): number => alignDown(n + ALIGN - 1)

// No O_DIRECT on this platform, or no WebAssembly for aligned memory (node --jitless): no direct I/O.
const O_DIRECT = typeof WebAssembly === 'undefined' ? undefined : (constants as { O_DIRECT?: number }).O_DIRECT

/**
 * Open `path` for direct I/O, or undefined when this platform or filesystem has none (the
 * caller goes through the page cache). Other errors (ENOENT, EACCES) are thrown.
 */
export async function openDirect (path: string, mode: 'read' | 'write'): Promise<FileHandle | undefined> {
  if (O_DIRECT === undefined) return undefined
  try {
    return await open(path, (mode === 'read' ? constants.O_RDONLY : constants.O_WRONLY) | O_DIRECT)
  } catch (err) {
    if ((err as { code?: string }).code === 'EINVAL') return undefined
    throw err
  }
}

/** Write all of `buf[0, length)` at `position`, finishing short writes. */
export async function writeFully (fh: FileHandle, buf: Uint8Array, length: number, position: number): Promise<void> {
  let done = 0
  while (done < length) {
    const { bytesWritten } = await fh.write(buf, done, length - done, position + done)
    if (bytesWritten === 0) throw new Error(`a write at ${position + done} wrote nothing`)
    done += bytesWritten
  }
}
