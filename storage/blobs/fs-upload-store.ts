/**
 * UploadStore on a local filesystem, beside FsBlobStore under the same ROOT:
 *
 *   ROOT/
 *   └── uploads/
 *       └── <id>          bytes received so far; fsynced after every append
 *
 * The sha256 state of each upload is kept in memory and advanced with every append, so committing
 * a 1 GiB upload does not read it again. After a restart (or any time the remembered byte count
 * differs from the file) it is rebuilt from the file. sha512 commits hash the file on demand.
 *
 * An append is all or nothing: if the source fails, aborts or delivers the wrong length, the file
 * is cut back to its previous size. One operation at a time per upload: a second append or a
 * commit while one runs is rejected with BLOB_UPLOAD_INVALID, never interleaved.
 *
 * A caller that hashed the bytes as it appended them (a remote repository's fill, which checks
 * the digest before its readers get the last byte) passes that digest to commit (`hashed`): the
 * file is not read again when every byte in it was appended by this process since create.
 */
import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, readdir, rm, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { FlotillaError } from '../errors.js'
import { digestAlgorithm, digestOf, type Digest } from '../reference.js'
import type { AppendOptions, BlobInfo, BlobStore, CommitOptions, UploadStore } from './blob-store.js'
import { checkDigest, checkExpectedSize, checkUploadId, isUploadId } from './checks.js'
import { FsBlobStore } from './fs-blob-store.js'
import { fsyncDir, hashFile, READ_CHUNK, isErrno, unlinkIfPresent, writeHashed } from './fs-io.js'
import { batchesOf, type Source } from './source.js'
import { openDirect } from './direct-io.js'

interface HashState { hash: Hash; bytes: number }

interface Running { controller: AbortController; done: Promise<void> }

export class FsUploadStore implements UploadStore {
  readonly root: string
  private readonly dir: string
  private readonly hashes = new Map<string, HashState>()
  /** Uploads whose every byte this process appended since create: their size then. */
  private readonly appended = new Map<string, number>()
  private readonly running = new Map<string, Running>()
  private opening: Promise<void> | undefined

  /** Whether appends write with O_DIRECT (direct-io.ts). */
  private readonly directIO: boolean

  constructor (root: string, opts: { directIO?: boolean } = {}) {
    this.root = root
    this.dir = join(root, 'uploads')
    this.directIO = opts.directIO ?? false
  }

  /** Create uploads/. Uploads left by a previous process are kept: clients may resume them. */
  async open (): Promise<void> {
    this.opening ??= mkdir(this.dir, { recursive: true }).then(() => {})
    await this.opening.catch((err: unknown) => { this.opening = undefined; throw err })
  }

  async close (): Promise<void> {}

  filePath (id: string): string {
    return this.pathOf(id)
  }

  private pathOf (id: string): string {
    return join(this.dir, id)
  }

  async create (id: string): Promise<void> {
    checkUploadId(id)
    await this.open()
    try {
      await (await open(this.pathOf(id), 'wx', 0o644)).close()
    } catch (err) {
      if (isErrno(err, 'EEXIST')) throw new FlotillaError('BLOB_UPLOAD_INVALID', `upload ${id} already exists`)
      throw err
    }
    // The upload must survive a restart once the client has been told its location.
    await fsyncDir(this.dir)
    this.hashes.set(id, { hash: createHash('sha256'), bytes: 0 })
    this.appended.set(id, 0)
  }

  async size (id: string): Promise<number | undefined> {
    if (!isUploadId(id)) return undefined
    try {
      return (await stat(this.pathOf(id))).size
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined
      throw err
    }
  }

  async append (id: string, source: Source, opts: AppendOptions = {}): Promise<number> {
    checkUploadId(id)
    return await this.exclusive(id, async (signal) => {
      const fh = await this.openUpload(id, 'r+')
      try {
        const { size: start } = await fh.stat()
        if (opts.offset !== undefined && opts.offset !== start) {
          throw new FlotillaError('UPLOAD_OUT_OF_ORDER', `chunk starts at ${opts.offset} but upload ${id} has ${start} bytes`, { size: start })
        }
        const hash = opts.deferHash === true ? undefined : (await this.hashAt(id, start)).copy()
        let end: number
        const direct = this.directIO ? await openDirect(this.pathOf(id), 'write') : undefined
        try {
          const n = await writeHashed(fh, start, batchesOf(source, AbortSignal.any(opts.signal ? [opts.signal, signal] : [signal])), hash, opts.length, direct)
          checkExpectedSize(opts.length, n)
          await fh.sync()
          end = start + n
        } catch (err) {
          // Cut back so the file matches the remembered hash; if this fails, hashAt() rebuilds later.
          if (!await fh.truncate(start).then(() => true, () => false)) this.appended.delete(id)
          throw err
        } finally {
          await direct?.close()
        }
        // Without a hash kept up to date, the next hashAt() rebuilds it from the file.
        if (hash !== undefined) this.hashes.set(id, { hash, bytes: end })
        else this.hashes.delete(id)
        if (this.appended.get(id) === start) this.appended.set(id, end)
        else this.appended.delete(id)
        return end
      } finally {
        await fh.close()
      }
    })
  }

  async commit (id: string, digest: Digest, blobs: BlobStore, opts: CommitOptions = {}): Promise<BlobInfo> {
    checkUploadId(id)
    return await this.exclusive(id, async () => {
      const path = this.pathOf(id)
      const fh = await this.openUpload(id, 'r')
      let size: number
      try {
        size = (await fh.stat()).size
        const { hashed } = opts
        if (hashed !== undefined && hashed.size === size && this.appended.get(id) === size) {
          // The caller's hash covers exactly these bytes (this process wrote each of them): trusted.
          checkDigest(digest, hashed.digest)
        } else {
          const actual = digestAlgorithm(digest) === 'sha256'
            ? (await this.hashAt(id, size)).copy().digest('hex')
            : (await hashFile(path, 'sha512')).hash.digest('hex')
          checkDigest(digest, digestOf(digestAlgorithm(digest), actual))
        }
        await fh.sync()
      } finally {
        await fh.close()
      }
      const info: BlobInfo = { digest, size }
      let adopted = false
      if (blobs instanceof FsBlobStore) {
        try {
          await blobs.adopt(path, info)
          adopted = true
        } catch (err) {
          // Another filesystem: fall through to copying.
          if (!isErrno(err, 'EXDEV')) throw err
        }
      }
      if (!adopted) {
        await blobs.ingest(createReadStream(path, { highWaterMark: READ_CHUNK }), { expected: digest, expectedSize: size })
        await rm(path, { force: true })
      }
      this.hashes.delete(id)
      this.appended.delete(id)
      return info
    })
  }

  /** Discard an upload; an append still running on it is aborted first. */
  async remove (id: string): Promise<boolean> {
    if (!isUploadId(id)) return false
    for (let r = this.running.get(id); r !== undefined; r = this.running.get(id)) {
      r.controller.abort(new FlotillaError('BLOB_UPLOAD_UNKNOWN', `upload ${id} was removed`))
      await r.done
    }
    this.hashes.delete(id)
    this.appended.delete(id)
    return await unlinkIfPresent(this.pathOf(id))
  }

  async * list (): AsyncIterable<string> {
    let names: string[]
    try {
      names = await readdir(this.dir)
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return
      throw err
    }
    for (const name of names.sort()) if (isUploadId(name)) yield name
  }

  /** Run `fn` as the only operation on upload `id`; reject at once if another is running. */
  private async exclusive<T> (id: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.running.has(id)) {
      throw new FlotillaError('BLOB_UPLOAD_INVALID', `another request is writing upload ${id}`)
    }
    const controller = new AbortController()
    const { promise, resolve } = promiseWithResolvers()
    this.running.set(id, { controller, done: promise })
    try {
      return await fn(controller.signal)
    } finally {
      this.running.delete(id)
      resolve()
    }
  }

  private async openUpload (id: string, flags: 'r' | 'r+'): Promise<FileHandle> {
    try {
      return await open(this.pathOf(id), flags)
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new FlotillaError('BLOB_UPLOAD_UNKNOWN', `upload ${id} unknown`)
      throw err
    }
  }

  /** The sha256 state of the first `size` bytes of the upload, rebuilt from the file when stale. */
  private async hashAt (id: string, size: number): Promise<Hash> {
    const known = this.hashes.get(id)
    if (known !== undefined && known.bytes === size) return known.hash
    const { hash, size: read } = await hashFile(this.pathOf(id), 'sha256')
    if (read !== size) throw new FlotillaError('INTERNAL', `upload ${id} changed size while hashing (${size} → ${read})`)
    this.hashes.set(id, { hash, bytes: size })
    return hash
  }
}

// Promise.withResolvers is Node 22; the polyfill is the entry point's business, not storage's.
function promiseWithResolvers (): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((res) => { resolve = res })
  return { promise, resolve }
}
