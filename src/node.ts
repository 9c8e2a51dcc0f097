/**
 * A Flotilla node: its stores, its state machine and its HTTP server, with a lifecycle.
 *
 *   DATA/
 *   ├── node-id          this node's identity (random, created once)
 *   ├── blobs/           committed blobs, by digest (storage/blobs/fs-blob-store.ts)
 *   ├── tmp/             blobs being ingested; emptied at start
 *   ├── uploads/         upload sessions' bytes (storage/blobs/fs-upload-store.ts)
 *   └── meta/            the metadata LevelDB (cluster/metadata/keys.ts)
 */
import { createServer, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { mkdir, open, readFile, rename } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { FsBlobStore } from '../storage/blobs/fs-blob-store.js'
import { FsUploadStore } from '../storage/blobs/fs-upload-store.js'
import { LevelKV } from '../storage/kv/level-kv.js'
import { MetadataStateMachine } from '../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../cluster/metadata/queries.js'
import { LocalApplier } from '../cluster/metadata/applier.js'
import { createApp } from './http/app.js'
import type { RegistryDeps } from './http/deps.js'
import { splitHostPort, type Config } from './config.js'

async function writeFileDurable (path: string, data: string): Promise<void> {
  const tmp = `${path}.tmp`
  const fh = await open(tmp, 'w', 0o600)
  try { await fh.writeFile(data); await fh.sync() } finally { await fh.close() }
  await rename(tmp, path)
}

async function loadNodeId (dataDir: string): Promise<string> {
  const path = join(dataDir, 'node-id')
  try {
    return (await readFile(path, 'utf8')).trim()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const id = randomBytes(8).toString('hex')
  await writeFileDurable(path, id + '\n')
  return id
}

export class RegistryNode {
  private server: Server | undefined
  private readonly sockets = new Set<Socket>()
  private sweeper: NodeJS.Timeout | undefined
  private ready = false
  address: { host: string; port: number } | undefined

  private constructor (
    readonly config: Config,
    readonly log: Logger,
    readonly nodeId: string,
    private readonly kv: LevelKV,
    readonly deps: RegistryDeps,
  ) {}

  static async open (config: Config, log: Logger): Promise<RegistryNode> {
    const dataDir = resolve(config.data)
    await mkdir(dataDir, { recursive: true })
    const nodeId = await loadNodeId(dataDir)
    const blobs = new FsBlobStore(dataDir)
    await blobs.open()
    const uploads = new FsUploadStore(dataDir)
    await uploads.open()
    const kv = new LevelKV(join(dataDir, 'meta'))
    try {
      await kv.open()
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause
      if (cause?.code === 'LEVEL_LOCKED' || /lock/i.test(String((err as Error).message))) {
        throw new Error(`the data directory ${dataDir} is in use by another Flotilla process: stop it, or give this node its own --data DIR`)
      }
      throw err
    }
    const sm = new MetadataStateMachine(kv, { sync: true })
    const deps: RegistryDeps = {
      nodeId,
      blobs,
      uploads,
      queries: new MetadataQueries(kv),
      sink: new LocalApplier(sm),
      log,
      limits: { manifestMaxBytes: config.limits.manifestMaxBytes },
      deleteEnabled: config.storage.delete,
      now: () => Date.now(),
    }
    return new RegistryNode(config, log, nodeId, kv, deps)
  }

  /**
   * Reconcile upload sessions with their bytes after a crash: a record without bytes, or
   * bytes without a record, are the two halves of an interrupted start; expired ones go too.
   */
  async sweepUploads (): Promise<void> {
    const { queries, uploads, sink } = this.deps
    const cutoff = this.deps.now() - this.config.uploads.expireAfterHours * 3600_000
    const live = new Set<string>()
    for await (const [id, rec] of queries.uploads()) {
      if (rec.owner !== this.nodeId) continue
      const size = await uploads.size(id)
      if (size === undefined || rec.at < cutoff) {
        await sink.submit({ type: 'DeleteUpload', id })
        await uploads.remove(id)
        this.log.info({ upload: id, reason: size === undefined ? 'no data' : 'expired' }, 'upload session removed')
      } else {
        live.add(id)
      }
    }
    for await (const id of uploads.list()) {
      if (!live.has(id) && await queries.upload(id) === undefined) {
        await uploads.remove(id)
        this.log.info({ upload: id }, 'orphan upload data removed')
      }
    }
  }

  async start (): Promise<void> {
    await this.sweepUploads()
    const app = createApp({ deps: this.deps, log: this.log, ready: () => this.ready })
    const server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000 }, app.callback())
    // A client that stops sending mid-body must not pin a socket forever.
    server.setTimeout(120_000, (s: Socket) => s.destroy())
    server.on('connection', (s: Socket) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)) })
    const { host, port } = splitHostPort(this.config.listen)
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(err.code === 'EADDRINUSE' ? new Error(`cannot listen on ${this.config.listen}: the address is in use. Stop the other process or choose another --listen HOST:PORT`) : err)
      })
      server.listen(port, host, () => resolve())
    })
    this.server = server
    const addr = server.address()
    if (addr !== null && typeof addr === 'object') this.address = { host: addr.address, port: addr.port }
    this.sweeper = setInterval(() => { this.sweepUploads().catch((err: unknown) => this.log.error({ err }, 'upload sweep failed')) }, 3600_000)
    this.sweeper.unref()
    this.ready = true
    this.log.info({ listen: this.config.listen, data: resolve(this.config.data), nodeId: this.nodeId }, 'flotilla node serving')
  }

  async stop (): Promise<void> {
    this.ready = false
    if (this.sweeper !== undefined) clearInterval(this.sweeper)
    const server = this.server
    if (server !== undefined) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      // Give in-flight requests a moment, then cut them: their clients will retry.
      const timer = setTimeout(() => { for (const s of this.sockets) s.destroy() }, 5000)
      await closed
      clearTimeout(timer)
    }
    await this.deps.sink.barrier()
    await this.kv.close()
    this.log.info('flotilla node stopped')
  }
}
