/**
 * SHA-1 and MD5 of blob files, in a pool of worker threads, so the hashing (MD5 runs at about
 * 600 MiB/s on one core) never holds up the event loop that serves uploads. Each worker reads
 * its file once and feeds both hashes.
 *
 * The workers run a small CommonJS body from a string (no loader or build step: the same code
 * under tsx and compiled), with no execArgv of the parent's.
 */
import { Worker } from 'node:worker_threads'
import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'

export interface FileSums { sha1: string; md5: string; size: number }

const WORKER = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const { openSync, readSync, closeSync } = require('node:fs')
const buf = Buffer.allocUnsafe(1 << 20)
parentPort.on('message', ({ id, path }) => {
  let fd
  try {
    fd = openSync(path, 'r')
    const sha1 = createHash('sha1')
    const md5 = createHash('md5')
    let n
    let size = 0
    while ((n = readSync(fd, buf, 0, buf.length, null)) > 0) {
      const b = buf.subarray(0, n)
      sha1.update(b); md5.update(b); size += n
    }
    parentPort.postMessage({ id, sha1: sha1.digest('hex'), md5: md5.digest('hex'), size })
  } catch (err) {
    parentPort.postMessage({ id, error: String((err && err.message) || err), code: err && err.code })
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
})
`

interface Job { id: number; path: string; resolve: (s: FileSums) => void; reject: (e: Error) => void }
interface Slot { worker: Worker; job: Job | undefined }

export class HashError extends Error {
  static override name = 'HashError'
  constructor (message: string, readonly code?: string) { super(message); this.name = 'HashError' }
}

export class HashPool {
  private readonly slots: Slot[] = []
  private readonly queue: Job[] = []
  private next = 1
  private closed = false

  constructor (readonly size: number) {
    for (let i = 0; i < Math.max(1, size); i++) this.slots.push(this.spawn())
  }

  private spawn (): Slot {
    const worker = new Worker(WORKER, { eval: true, execArgv: [] })
    worker.unref()
    const slot: Slot = { worker, job: undefined }
    worker.on('message', (m: { id: number; sha1?: string; md5?: string; size?: number; error?: string; code?: string }) => {
      const job = slot.job
      slot.job = undefined
      if (job !== undefined && job.id === m.id) {
        if (m.error !== undefined) job.reject(new HashError(m.error, m.code)); else job.resolve({ sha1: m.sha1!, md5: m.md5!, size: m.size! })
      }
      this.pump()
    })
    worker.on('error', (err) => {
      // A worker that died takes its job with it; a new one takes its place.
      slot.job?.reject(err)
      slot.job = undefined
      const i = this.slots.indexOf(slot)
      if (i >= 0 && !this.closed) { this.slots[i] = this.spawn(); this.pump() }
    })
    return slot
  }

  /** SHA-1, MD5 and size of a file. Rejects with HashError (code ENOENT when it is gone). */
  async hashFile (path: string): Promise<FileSums> {
    if (this.closed) throw new HashError('the hash pool is closed')
    return await new Promise<FileSums>((resolve, reject) => {
      this.queue.push({ id: this.next++, path, resolve, reject })
      this.pump()
    })
  }

  /** Jobs waiting or running. */
  pending (): number {
    return this.queue.length + this.slots.filter((s) => s.job !== undefined).length
  }

  private pump (): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return
      if (slot.job !== undefined) continue
      const job = this.queue.shift()!
      slot.job = job
      slot.worker.postMessage({ id: job.id, path: job.path })
    }
  }

  async close (): Promise<void> {
    this.closed = true
    for (const j of this.queue.splice(0)) j.reject(new HashError('the hash pool is closed'))
    await Promise.all(this.slots.map(async (s) => { s.job?.reject(new HashError('the hash pool is closed')); await s.worker.terminate() }))
  }
}

/** The same sums from a stream, on this thread: for blob stores with no files (tests' memory store). */
export async function hashStream (stream: Readable | AsyncIterable<Uint8Array>): Promise<FileSums> {
  const sha1 = createHash('sha1')
  const md5 = createHash('md5')
  let size = 0
  for await (const c of stream) { const b = c as Uint8Array; sha1.update(b); md5.update(b); size += b.byteLength }
  return { sha1: sha1.digest('hex'), md5: md5.digest('hex'), size }
}
