/**
 * Disaster recovery on the command line:
 *
 *   flotilla backup --node URL --user … --out DIR [--metadata-only]   online backup (src/http/backup.ts)
 *   flotilla backup verify DIR                                        check a backup (cluster/backup/archive.ts)
 *   flotilla restore DIR --data NEWDIR                                a new single-node cluster (cluster/backup/restore.ts)
 *   flotilla status --local --data DIR                                a stopped node's applied index (cluster/local-status.ts)
 *
 * A backup writes each blob to a temporary file while hashing it, checks the digest and size,
 * fsyncs it and renames it into place; the snapshot likewise against its checksum; backup.json
 * last. Blobs already in DIR (same size) are not fetched again. Progress on stderr (a bar on a
 * terminal), a table or --json on stdout.
 */
import { createHash, randomBytes } from 'node:crypto'
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { SingleBar } from 'cli-progress'
import type { Command } from 'commander'
import { blobPath, FORMAT, verifyBackup, type BackupManifest } from '../../cluster/backup/archive.js'
import { restoreBackup, RestoreRefused } from '../../cluster/backup/restore.js'
import type { BackupInfo } from '../../cluster/backup/sessions.js'
import { localStatus } from '../../cluster/local-status.js'
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { callApi, CliError, credentials, nodeUrl, type NodeOptions } from './client.js'
import { printJson, record, table } from './format.js'
import { clientTls } from './tls.js'

interface BackupFlags extends NodeOptions { out?: string; metadataOnly?: boolean; json?: boolean; concurrency: string }

const WRITE_RUN = 1 << 20
/** A blob download that receives nothing for this long is given up. */
const IDLE_MS = 60_000

/** A bytes bar on a terminal's stderr; nothing elsewhere. */
function bytesBar (label: string, total: number): { add: (n: number) => void; stop: () => void } {
  if (process.stderr.isTTY !== true || total === 0) return { add: () => {}, stop: () => {} }
  const bar = new SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% | {done} of {all} MiB | {eta_formatted} left`,
    barsize: 30,
    hideCursor: true,
  })
  const mib = (b: number): string => (b / 2 ** 20).toFixed(1)
  let done = 0
  bar.start(total, 0, { done: mib(0), all: mib(total) })
  return { add: (n) => { done += n; bar.update(done, { done: mib(done) }) }, stop: () => bar.stop() }
}

async function fsyncPath (path: string): Promise<void> {
  const fh = await open(path, 'r')
  try { await fh.sync() } finally { await fh.close() }
}

/** Write `chunks` to `final` through a temporary file: hashed, size- and digest-checked, fsynced, renamed. */
async function writeVerified (tmpDir: string, final: string, chunks: AsyncIterable<Uint8Array>, want: { algorithm: string; hex: string; size: number }, onBytes: (n: number) => void, mode = 0o444): Promise<void> {
  const tmp = join(tmpDir, randomBytes(9).toString('hex'))
  const fh = await open(tmp, 'w', 0o600)
  const h = createHash(want.algorithm)
  let size = 0
  // The response arrives in pieces of 16-64 KiB: written in runs of about WRITE_RUN bytes.
  let run: Uint8Array[] = []
  let runBytes = 0
  const flush = async (): Promise<void> => {
    if (runBytes === 0) return
    const bufs = run
    run = []
    runBytes = 0
    // One writev for the run: no copy into a larger buffer. A short write goes on from where it stopped.
    let { bytesWritten } = await fh.writev(bufs)
    const total = bufs.reduce((n, b) => n + b.byteLength, 0)
    while (bytesWritten < total) {
      const rest = Buffer.concat(bufs).subarray(bytesWritten)
      bytesWritten += (await fh.write(rest)).bytesWritten
    }
  }
  try {
    for await (const chunk of chunks) {
      h.update(chunk)
      size += chunk.byteLength
      run.push(chunk)
      runBytes += chunk.byteLength
      if (runBytes >= WRITE_RUN) await flush()
      onBytes(chunk.byteLength)
    }
    await flush()
    await fh.sync()
  } catch (err) {
    await fh.close().catch(() => {})
    await rm(tmp, { force: true })
    throw err
  }
  await fh.close()
  const hex = h.digest('hex')
  if (size !== want.size || hex !== want.hex) {
    await rm(tmp, { force: true })
    throw new CliError(`the node sent ${size} bytes hashing to ${want.algorithm}:${hex} for ${want.algorithm}:${want.hex} (${want.size} bytes): nothing was kept; run the backup again, and check that node's disk if it repeats`)
  }
  await chmod(tmp, mode)
  await mkdir(dirname(final), { recursive: true })
  await rename(tmp, final)
}

async function runBackup (opts: BackupFlags): Promise<void> {
  if (opts.out === undefined || opts.out === '') throw new CliError('--out DIR is needed: the directory the backup goes to (a second backup into it copies only new blobs)')
  const concurrency = Number(opts.concurrency)
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new CliError('--concurrency must be a whole number from 1 to 64')
  const out = resolve(opts.out)
  const started = Date.now()
  const base = nodeUrl(opts)
  const tls = clientTls(opts)
  const user = await credentials(opts)
  const auth: Record<string, string> = user !== undefined ? { authorization: 'Basic ' + Buffer.from(user).toString('base64') } : {}
  // The snapshot holds secrets (password hashes, the token signing key, webhook secrets): DIR is the owner's only.
  await mkdir(out, { recursive: true, mode: 0o700 })
  await chmod(out, 0o700)
  await mkdir(join(out, 'blobs'), { recursive: true })
  const tmpDir = join(out, 'tmp')
  await rm(tmpDir, { recursive: true, force: true })
  await mkdir(tmpDir, { recursive: true })

  const info = await callApi(opts, 'POST', '/api/v1/backups') as BackupInfo
  // The node holds the snapshot's blobs against GC while the lease is renewed.
  const renew = setInterval(() => { void callApi(opts, 'POST', `/api/v1/backups/${info.id}/lease`, undefined, { wait: false }).catch(() => {}) }, Math.max(1000, Math.floor(info.leaseMs / 3)))
  let outcome: 'ok' | 'failed' = 'failed'
  // Keep-alive connections, and no limit on a whole download (a large blob takes as long as it
  // takes): only a connection idle for IDLE_MS is given up.
  const agent = base.startsWith('https:') ? new HttpsAgent({ keepAlive: true, maxSockets: concurrency, ...tls }) : new HttpAgent({ keepAlive: true, maxSockets: concurrency })
  const get = async (path: string): Promise<{ body: AsyncIterable<Uint8Array> }> => {
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = (base.startsWith('https:') ? httpsRequest : httpRequest)(base + path, { method: 'GET', headers: auth, agent, timeout: IDLE_MS }, resolve)
      req.on('timeout', () => req.destroy(new Error(`the node sent nothing for ${IDLE_MS / 1000} s`)))
      req.on('error', (err) => reject(new CliError(`GET ${path} failed: ${err.message}. Is the node at ${base} up? Run the backup again: blobs already written are kept`)))
      req.end()
    })
    if (res.statusCode !== 200) {
      const chunks: Buffer[] = []
      for await (const c of res) chunks.push(c as Buffer)
      const text = Buffer.concat(chunks).toString('utf8')
      let msg = text.slice(0, 300)
      try { msg = (JSON.parse(text) as { errors: Array<{ message: string }> }).errors[0]!.message } catch { /* raw text */ }
      throw new CliError(`GET ${path} answered ${res.statusCode ?? '?'}: ${msg}`)
    }
    return { body: res }
  }
  try {
    // 1. The snapshot, against its checksum.
    const snapFile = `snapshot-${info.index}.bin`
    const snapRes = await get(`/api/v1/backups/${info.id}/snapshot`)
    await writeVerified(tmpDir, join(out, snapFile), snapRes.body, { algorithm: 'sha256', hex: info.snapshot.sha256, size: info.snapshot.bytes }, () => {}, 0o400)

    // 2. Every blob it references and DIR lacks.
    const missing: BackupInfo['blobs'] = []
    if (opts.metadataOnly !== true) {
      for (const b of info.blobs) {
        const st = await stat(blobPath(out, b.digest)).catch(() => undefined)
        if (st === undefined || st.size !== b.size) missing.push(b)
      }
    }
    const total = missing.reduce((n, b) => n + b.size, 0)
    const bar = opts.json === true ? { add: () => {}, stop: () => {} } : bytesBar(`backup of ${info.blobs.length} blobs, ${missing.length} new`, total)
    let copied = 0
    let next = 0
    const dirs = new Set<string>()
    try {
      await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, missing.length)) }, async () => {
        while (next < missing.length) {
          const b = missing[next++]!
          const [algorithm, hex] = b.digest.split(':') as [string, string]
          const res = await get(`/api/v1/backups/${info.id}/blobs/${b.digest}`)
          const final = blobPath(out, b.digest)
          await writeVerified(tmpDir, final, res.body, { algorithm, hex, size: b.size }, (n) => bar.add(n))
          dirs.add(dirname(final))
          copied += b.size
        }
      }))
    } finally { bar.stop() }
    for (const d of dirs) await fsyncPath(d)

    // 3. backup.json last: until it is renamed into place, DIR still describes the previous backup.
    const manifest: BackupManifest = {
      format: FORMAT,
      writtenAt: new Date().toISOString(),
      source: base,
      metadataOnly: opts.metadataOnly === true,
      index: info.index,
      takenAt: info.takenAt,
      node: info.node,
      clusterId: info.clusterId,
      membership: info.membership,
      snapshot: { file: snapFile, bytes: info.snapshot.bytes, sha256: info.snapshot.sha256 },
      blobs: info.blobs,
    }
    const tmpManifest = join(tmpDir, 'backup.json')
    const fh = await open(tmpManifest, 'w', 0o600)
    try { await fh.writeFile(JSON.stringify(manifest, null, 1) + '\n'); await fh.sync() } finally { await fh.close() }
    await rename(tmpManifest, join(out, 'backup.json'))
    await fsyncPath(out)
    // Older snapshots are no longer named by backup.json.
    for (const f of await readdir(out)) if (/^snapshot-\d+\.bin$/.test(f) && f !== snapFile) await rm(join(out, f), { force: true })
    await rm(tmpDir, { recursive: true, force: true })
    outcome = 'ok'
    const doc = {
      dir: out,
      index: info.index,
      node: info.node,
      clusterId: info.clusterId,
      takenAt: info.takenAt,
      snapshotBytes: info.snapshot.bytes,
      metadataOnly: opts.metadataOnly === true,
      blobs: { total: info.blobs.length, copied: missing.length, alreadyThere: opts.metadataOnly === true ? 0 : info.blobs.length - missing.length, bytesCopied: copied, bytesTotal: info.blobs.reduce((n, b) => n + b.size, 0) },
      seconds: (Date.now() - started) / 1000,
    }
    if (opts.json === true) { printJson(doc); return }
    process.stdout.write(record([
      ['backup', out],
      ['index', String(doc.index)],
      ['taken at', doc.takenAt],
      ['from node', doc.node],
      ['snapshot', `${doc.snapshotBytes} bytes, sha256 checked`],
      ['blobs', opts.metadataOnly === true ? `${doc.blobs.total} referenced, none copied (--metadata-only)` : `${doc.blobs.total} (${doc.blobs.copied} copied, ${doc.blobs.alreadyThere} already there), each checked against its digest`],
      ['bytes copied', `${(copied / 2 ** 20).toFixed(1)} MiB of ${(doc.blobs.bytesTotal / 2 ** 20).toFixed(1)} MiB`],
      ['took', `${doc.seconds.toFixed(1)} s`],
    ]))
  } finally {
    clearInterval(renew)
    agent.destroy()
    await callApi(opts, 'DELETE', `/api/v1/backups/${info.id}?outcome=${outcome}`, undefined, { wait: false }).catch(() => {})
  }
}

async function runVerify (dir: string, json: boolean): Promise<void> {
  const d = resolve(dir)
  let total = 0
  try {
    const m = JSON.parse(await readFile(join(d, 'backup.json'), 'utf8')) as BackupManifest
    total = m.metadataOnly ? 0 : m.blobs.reduce((n, b) => n + b.size, 0)
  } catch { /* verifyBackup names the problem */ }
  const bar = json ? { add: () => {}, stop: () => {} } : bytesBar('verifying', total)
  const report = await verifyBackup(d, { onBlob: (n) => bar.add(n) }).finally(() => bar.stop())
  const doc = { dir: d, ok: report.ok, index: report.manifest?.index ?? null, metadataOnly: report.manifest?.metadataOnly ?? null, blobsChecked: report.blobsChecked, bytesChecked: report.bytesChecked, problems: report.problems }
  if (json) printJson(doc)
  else if (report.ok) process.stdout.write(`backup ${d} is sound: snapshot at index ${doc.index} matches its checksum; ${report.blobsChecked} blobs (${(report.bytesChecked / 2 ** 20).toFixed(1)} MiB) match their digests${report.manifest?.metadataOnly === true ? ' (metadata only: no blobs)' : ''}\n`)
  else {
    process.stdout.write(table(['CHECK', 'WHAT', 'DETAIL'], report.problems.map((p) => [p.check, p.what, p.detail])))
  }
  if (!report.ok) throw new CliError(`the backup in ${d} failed verification: ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'} (first: ${report.problems[0]!.check} ${report.problems[0]!.what}). Take a new backup; a restore refuses this one`)
}

async function runRestore (dir: string, opts: { data?: string; json?: boolean }): Promise<void> {
  if (opts.data === undefined || opts.data === '') throw new CliError('--data NEWDIR is needed: the new, empty data dir of the restored node')
  const data = resolve(opts.data)
  let bar: { add: (n: number) => void; stop: () => void } | undefined
  let vbar: { add: (n: number) => void; stop: () => void } | undefined
  let total = 0
  try {
    const m = JSON.parse(await readFile(join(resolve(dir), 'backup.json'), 'utf8')) as BackupManifest
    total = m.blobs.reduce((n, b) => n + b.size, 0)
  } catch { /* the restore names the problem */ }
  let result
  try {
    if (opts.json !== true) vbar = bytesBar('verifying', total)
    result = await restoreBackup(resolve(dir), data, {
      onVerifyBlob: (n) => vbar?.add(n),
      onVerified: () => { vbar?.stop(); if (opts.json !== true) bar = bytesBar('restoring blobs', total) },
      onBlob: (n) => bar?.add(n),
    })
  } catch (err) {
    if (err instanceof RestoreRefused) throw new CliError(`restore refused: ${err.message}`)
    throw err
  } finally { vbar?.stop(); bar?.stop() }
  if (opts.json === true) { printJson(result); return }
  process.stdout.write(record([
    ['data dir', result.dataDir],
    ['node', result.peerId],
    ['new cluster id', result.clusterId],
    ['index', String(result.index)],
    ['blobs', `${result.blobs} (${(result.bytes / 2 ** 20).toFixed(1)} MiB)`],
  ]))
  process.stdout.write(`\nStart it with: flotilla serve --data ${result.dataDir}\nThen add nodes as usual: flotilla token on it, flotilla join on each new node.\n`)
}

export async function printLocalStatus (dataDir: string, json: boolean): Promise<void> {
  let st
  try { st = await localStatus(resolve(dataDir)) } catch (err) { throw new CliError((err as Error).message) }
  if (json) { printJson(st); return }
  process.stdout.write(record([
    ['data dir', st.dataDir],
    ['node', st.node],
    ['cluster id', st.clusterId ?? '-'],
    ['applied index', String(st.applied)],
    ['commit index', String(st.commit)],
    ['last log index', String(st.lastIndex)],
    ['term', String(st.term)],
    ['role', st.role],
    ['voters', st.voters.join(' ') || '-'],
    ['learners', st.learners.join(' ') || '-'],
    ...(st.forced !== null ? [['forced new cluster', `${st.forced.at}, at index ${st.forced.index}, removed ${st.forced.removed.join(' ')}`] as [string, string]] : []),
  ]))
}

export function backupCommands (program: Command): void {
  const backup = program.command('backup')
    .description('online, consistent backup of the cluster through one node: metadata as of one applied index, and every blob it references (a second run into DIR copies only new blobs)')
    .option('--node <url>', 'a node of the cluster (default http://127.0.0.1:5000, env FLOTILLA_NODE)')
    .option('--user <name:password>', 'an administrator\'s credentials (env FLOTILLA_USER; NAME alone asks for the password)')
    .option('--ca-cert <file>', 'trust this CA for an https:// node, besides the system\'s (env FLOTILLA_CA_CERT)')
    .option('--client-cert <file>', 'TLS client certificate, for a node that asks for one (env FLOTILLA_CLIENT_CERT)')
    .option('--client-key <file>', 'its key (env FLOTILLA_CLIENT_KEY)')
    .option('--out <dir>', 'the backup directory')
    .option('--metadata-only', 'write the metadata snapshot only, no blobs')
    .option('--concurrency <n>', 'blobs fetched at once', '4')
    .option('--json', 'print a JSON summary instead of text (no progress bar)')
    .action(async (opts: BackupFlags) => { await runBackup(opts) })
  backup.command('verify')
    .argument('<dir>', 'a backup directory')
    .description('check a backup: the snapshot against its checksum, every blob against its digest; names each failure')
    .option('--json', 'print the report as JSON')
    // `backup verify DIR --json`: commander gives --json to `backup`, which declares it too.
    .action(async (dir: string, opts: { json?: boolean }) => { await runVerify(dir, opts.json === true || backup.opts().json === true) })

  program.command('restore')
    .argument('<dir>', 'a backup directory (flotilla backup --out)')
    .option('--data <dir>', 'the new node\'s data dir: must be empty or absent')
    .option('--json', 'print the result as JSON')
    .description('create a new single-node cluster (new identity, new cluster id) from a verified backup; start it with flotilla serve --data NEWDIR')
    .action(async (dir: string, opts: { data?: string; json?: boolean }) => { await runRestore(dir, opts) })
}
