/**
 * Blob transfer between two processes: a libp2p stream (TCP + noise + yamux, what Raft and
 * gossip use) against peer-authenticated HTTP: plain (fetch, and node:http as replication
 * used it before the peer port) and over the peer port (net/peer-https.ts: mutual TLS with
 * libp2p certificates), read by node:https and by PeerClient.get (TLS decrypts into slabs,
 * net/peer-response.ts, lent to the consumer and read into again once it returns them, as
 * BlobFetcher.fetchInto and the upload store do: what replication uses now; issue 16's measure
 * is `copy` below). Prints MiB/s of each and the ratios, and for node:http and
 * both peer-port readers the CPU seconds each side spent per GiB (process.cpuUsage: it says
 * where the time goes, and moves less than MiB/s when other processes load the machine), and
 * the ratio those give when each side has a core of its own (the busier side's CPU per GiB
 * bounds the copy). The server side is this script run again with --serve; it answers with a
 * Content-Length through the node's blob route's own FsBlobStore.writeTo.
 *
 * Where the peer port's time goes (perf, 1 GiB): AES-128-GCM (_aesni_ctr32_ghash_6x, OpenSSL
 * 3.0 in node 20) is 30-39% of each side, about 0.17 CPU s per GiB each, the kernel's TCP
 * send or receive 20-30%; one JS callback per 16 KiB TLS record on the reader. Where both
 * processes share two busy cores, MiB/s follows the sum of both sides' CPU per GiB, and the
 * cipher alone (0.34) is 40-60% of plain node:http's sum (0.55-0.9): at 0.8x all the rest
 * would have to cost a fifth to a third less than plain HTTP's whole. With a core per side
 * (two machines) the busier side bounds it: the peer port's server (0.45-0.55) against
 * node:http's reader (0.32-0.37 on a quiet machine, up to 0.7 on a loaded one).
 *
 * `copy` makes what issue 16 measures, a node-to-node blob copy: a whole replica as
 * BlobFetcher.fetchInto makes one (the body appended to an upload session, hashed as written
 * and fsynced, then committed into the blob store), over the peer port and over plain HTTP as
 * replication did before the peer port. The bare paths above say where the time goes.
 *
 *   npm run bench:transfer -- [--size-mib 1024] [--rounds 3] [--only node-http,peer-get,copy]
 *
 * `--only` runs some of the paths (libp2p, fetch, node-http, peer-https, peer-get, copy), e.g. to
 * profile one: FLOTILLA_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" gives the server
 * process those node options (the client is this process: put them before the script).
 */
import { spawn } from 'node:child_process'
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http'
import { createReadStream } from 'node:fs'
import type { Readable } from 'node:stream'
import { writeFile, rm, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { FsBlobStore } from '../../storage/blobs/fs-blob-store.js'
import { FsUploadStore } from '../../storage/blobs/fs-upload-store.js'
import { parseDigest } from '../../storage/reference.js'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../../net/host.js'
import { signRequest, verifyRequest } from '../../net/peer-auth.js'
import { PeerClient, PeerServer, createPeerCredentials, createPeerMetrics, type PeerTarget } from '../../net/peer-https.js'
import { returnChunk } from '../../storage/blobs/source.js'
import { tempDir, ROOT } from '../lib/procs.js'
import { median, MiB, fmt } from './lib/stats.js'

const PROTO = '/flotilla/bench-transfer/1.0.0'
const args = process.argv.slice(2)
const opt = (name: string, def: string): string => { const i = args.indexOf(name); return i >= 0 ? args[i + 1]! : def }
const PATHS = ['libp2p', 'fetch', 'node-http', 'peer-https', 'peer-get', 'copy'] as const
const only = new Set(opt('--only', PATHS.join(',')).split(','))
for (const p of only) if (!(PATHS as readonly string[]).includes(p)) throw new Error(`--only: unknown path ${p} (paths: ${PATHS.join(', ')})`)
const runs = (p: typeof PATHS[number]): boolean => only.has(p)

/** CPU seconds (user + system) this process has used. */
const cpuSeconds = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6 }

async function serve (file: string): Promise<void> {
  const { size } = await stat(file)
  // The node's blob route itself (src/http/blobs.ts serveLocal): FsBlobStore.writeTo, page-cache
  // case, a ring of 4 reused 1 MiB buffers whose next read starts in the write's callback, so
  // reads overlap the sending of the others. The loop of its own this replaced read each buffer
  // only when its turn came, one read at a time: over TLS, where a write encrypts before it
  // returns, that server spent 1.1-1.6 of 1.3-1.6 s per GiB waiting for reads. Piping
  // createReadStream (a fresh buffer per read) cost the server about twice the CPU per GiB on
  // the peer port (1.0 against 0.45 s).
  const store = new FsBlobStore(join(dirname(file), 'store'))
  await store.open()
  const blob = await store.ingest(createReadStream(file, { highWaterMark: 1 << 20 }))
  const send = (res: ServerResponse): void => {
    res.setHeader('content-length', size)
    store.writeTo(blob.digest, undefined, res).catch((err: unknown) => res.destroy(err as Error))
  }
  const key = await generateKeyPair('Ed25519')
  const host = await createHost({ privateKey: key, listen: ['/ip4/127.0.0.1/tcp/0'], admit: () => true })
  await host.handle(PROTO, (stream) => {
    void (async () => {
      for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
        // The next 'drain' event: libp2p 3.3's onDrain() answers at once after the first one.
        if (!stream.send(chunk as Buffer)) await new Promise((resolve) => stream.addEventListener('drain', resolve, { once: true }))
      }
      await stream.close()
    })()
  })
  const http = createServer((req, res) => {
    // The server's CPU time so far, for the client's per-GiB figures.
    if (req.url === '/cpu') { res.end(String(cpuSeconds())); return }
    void verifyRequest(req.headers.authorization, req.method ?? 'GET', req.url ?? '/').then((peer) => {
      if (peer === undefined) { res.statusCode = 401; res.end(); return }
      send(res)
    })
  })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  const port = (http.address() as { port: number }).port
  // The peer port: every client admitted here (the bench has no cluster), the signature still checked.
  const peerServer = new PeerServer({
    credentials: await createPeerCredentials(key),
    admits: () => true,
    metrics: createPeerMetrics(),
    handler: (req, res) => {
      void verifyRequest(req.headers.authorization, req.method ?? 'GET', req.url ?? '/').then((peer) => {
        if (peer === undefined) { res.statusCode = 401; res.end(); return }
        send(res)
      })
    },
  })
  const pp = await peerServer.listen('127.0.0.1', 0)
  process.stdout.write(JSON.stringify({ ma: host.getMultiaddrs()[0]!.toString(), http: `http://127.0.0.1:${port}`, digest: blob.digest, peer: { peerId: peerIdFromPrivateKey(key).toString(), url: `https://127.0.0.1:${pp.port}` } }) + '\n')
  process.stdin.resume()
  process.stdin.on('end', () => process.exit(0))
}

async function main (): Promise<void> {
  if (args.includes('--serve')) return await serve(opt('--file', ''))
  const size = Number(opt('--size-mib', '1024')) * MiB
  const rounds = Number(opt('--rounds', '3'))
  const dir = await tempDir('bench-transfer-')
  const file = join(dir, 'blob')
  // Random bytes, written in 64 MiB pieces so the script never holds the blob.
  await writeFile(file, '')
  const { appendFile } = await import('node:fs/promises')
  for (let done = 0; done < size; done += 64 * MiB) await appendFile(file, randomBytes(Math.min(64 * MiB, size - done)))
  const nodeArgs = (process.env.FLOTILLA_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')
  const child = spawn(process.execPath, [...nodeArgs, '--import', join(ROOT, 'scripts/polyfill.mjs'), '--import', 'tsx', join(ROOT, 'scripts/bench/transfer.ts'), '--serve', '--file', file], { stdio: ['pipe', 'pipe', 'inherit'], cwd: ROOT })
  const info = await new Promise<{ ma: string; http: string; digest: string; peer: PeerTarget }>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(JSON.parse(d.toString()) as { ma: string; http: string; digest: string; peer: PeerTarget })))
  const key = await generateKeyPair('Ed25519')
  const peer = peerIdFromPrivateKey(key).toString()
  const host = await createHost({ privateKey: key, listen: ['/ip4/127.0.0.1/tcp/0'], admit: () => true })
  const client = new PeerClient(await createPeerCredentials(key), createPeerMetrics())
  const libp2p: number[] = []
  const http: number[] = []
  const nodeHttp: number[] = []
  const peerHttps: number[] = []
  const peerGet: number[] = []
  const copyHttp: number[] = []
  const copyPeer: number[] = []
  // CPU seconds spent by the client (this process) and the server, per path.
  const cpu = { nodeHttp: { client: 0, server: 0 }, peerHttps: { client: 0, server: 0 }, peerGet: { client: 0, server: 0 }, copyHttp: { client: 0, server: 0 }, copyPeer: { client: 0, server: 0 } }
  // --only copy: a whole replica, as BlobFetcher.fetchInto makes one (cluster/replication/blob-fetcher.ts):
  // the body appended to an upload session (hashed as written, fsynced), then committed into
  // the blob store (digest checked, fsynced, renamed); the blob is deleted before the next copy.
  const copyStores = { blobs: new FsBlobStore(join(dir, 'copy')), uploads: new FsUploadStore(join(dir, 'copy')) }
  await copyStores.blobs.open()
  await copyStores.uploads.open()
  const digest = parseDigest(info.digest)
  let copies = 0
  const copy = async (body: Readable): Promise<void> => {
    const id = `bench-copy-${copies++}`
    await copyStores.uploads.create(id)
    const n = await copyStores.uploads.append(id, body)
    if (n !== size) throw new Error(`copy ${id} received ${n} of ${size} bytes`)
    await copyStores.uploads.commit(id, digest, copyStores.blobs)
    await copyStores.blobs.delete(digest)
  }
  const serverCpu = async (): Promise<number> => Number(await (await fetch(`${info.http}/cpu`)).text())
  const timed = async (path: keyof typeof cpu, run: () => Promise<void>): Promise<number> => {
    const s0 = await serverCpu()
    const c0 = cpuSeconds()
    const t0 = performance.now()
    await run()
    const mibs = size / MiB / ((performance.now() - t0) / 1000)
    cpu[path].client += cpuSeconds() - c0
    cpu[path].server += await serverCpu() - s0
    return mibs
  }
  // node:http and the peer port, read the way a replica is stored: BlobFetcher's answer is a
  // plain Readable that the upload store drains through 'data' events (storage/blobs/source.ts),
  // and returns each chunk once written (a no-op but for PeerClient.get with recycle, as
  // BlobFetcher.fetchInto asks: its slabs are read into again).
  const drain = async (res: Readable, what: string): Promise<void> => {
    let n = 0
    res.on('data', (chunk: Buffer) => { n += chunk.byteLength; returnChunk(chunk) })
    await new Promise<void>((resolve, reject) => { res.once('end', resolve); res.once('error', reject) })
    if (n !== size) throw new Error(`${what} delivered ${n} of ${size} bytes`)
  }
  for (let r = 0; r < rounds; r++) {
    if (runs('libp2p')) {
      const t0 = performance.now()
      const stream = await host.dialProtocol(multiaddr(info.ma), PROTO)
      let got = 0
      for await (const chunk of stream) got += chunk.byteLength
      if (got !== size) throw new Error(`libp2p delivered ${got} of ${size} bytes`)
      libp2p.push(size / MiB / ((performance.now() - t0) / 1000))
    }
    if (runs('fetch')) {
      const t0 = performance.now()
      const res = await fetch(`${info.http}/blob`, { headers: { authorization: await signRequest(key, peer, 'GET', '/blob') } })
      let got = 0
      for await (const chunk of res.body!) got += (chunk as Uint8Array).byteLength
      if (got !== size) throw new Error(`HTTP delivered ${got} of ${size} bytes`)
      http.push(size / MiB / ((performance.now() - t0) / 1000))
    }
    if (runs('node-http')) {
      const url = new URL('/blob', info.http)
      const authorization = await signRequest(key, peer, 'GET', '/blob')
      nodeHttp.push(await timed('nodeHttp', async () => {
        await drain(await new Promise<IncomingMessage>((resolve, reject) => request({ host: url.hostname, port: url.port, path: '/blob', headers: { authorization } }, resolve).on('error', reject).end()), 'node:http')
      }))
    }
    if (runs('peer-https')) {
      const auth2 = await signRequest(key, peer, 'GET', '/blob')
      peerHttps.push(await timed('peerHttps', async () => {
        await drain(await new Promise<IncomingMessage>((resolve, reject) => client.request(info.peer, { path: '/blob', headers: { authorization: auth2 } }, resolve).on('error', reject).end()), 'peer HTTPS')
      }))
    }
    if (runs('peer-get')) {
      // What replication uses: PeerClient.get reads the TLS socket into one reused buffer.
      const auth3 = await signRequest(key, peer, 'GET', '/blob')
      peerGet.push(await timed('peerGet', async () => {
        await drain(await client.get(info.peer, { method: 'GET', path: '/blob', headers: { authorization: auth3 }, timeoutMs: 60_000, recycle: true }), 'peer get')
      }))
    }
    if (runs('copy')) {
      // Alternated, so that neither always meets the page cache's writeback of the one before.
      const plain = async (): Promise<void> => {
        const url = new URL('/blob', info.http)
        const authorization = await signRequest(key, peer, 'GET', '/blob')
        copyHttp.push(await timed('copyHttp', async () => {
          await copy(await new Promise<IncomingMessage>((resolve, reject) => request({ host: url.hostname, port: url.port, path: '/blob', headers: { authorization } }, resolve).on('error', reject).end()))
        }))
      }
      const tls = async (): Promise<void> => {
        const authorization = await signRequest(key, peer, 'GET', '/blob')
        copyPeer.push(await timed('copyPeer', async () => {
          await copy(await client.get(info.peer, { method: 'GET', path: '/blob', headers: { authorization }, timeoutMs: 60_000, recycle: true }))
        }))
      }
      if (r % 2 === 0) { await plain(); await tls() } else { await tls(); await plain() }
    }
  }
  client.close()
  await host.stop()
  child.stdin.end()
  await rm(dir, { recursive: true, force: true })
  const l = median(libp2p)
  const h = median(http)
  const nh = median(nodeHttp)
  const ph = median(peerHttps)
  const pg = median(peerGet)
  process.stdout.write(`blob transfer between two processes, ${size / MiB} MiB, median of ${rounds}\n`)
  process.stdout.write(`  libp2p (tcp+noise+yamux)          ${fmt(l)} MiB/s\n`)
  process.stdout.write(`  plain HTTP, fetch                 ${fmt(h)} MiB/s\n`)
  // Every round too: on a shared 2-core machine a round may run at half the speed of the next.
  const each = (xs: number[]): string => xs.length > 1 ? `  (rounds: ${xs.map((x) => fmt(x, 0)).join(', ')})` : ''
  process.stdout.write(`  plain HTTP, node:http             ${fmt(nh)} MiB/s${each(nodeHttp)}\n`)
  process.stdout.write(`  peer port (mutual TLS), node:http ${fmt(ph)} MiB/s\n`)
  process.stdout.write(`  peer port, PeerClient.get         ${fmt(pg)} MiB/s${each(peerGet)}\n`)
  process.stdout.write(`  plain fetch / libp2p              ${fmt(h / l, 2)}x\n`)
  process.stdout.write(`  peer port / plain node:http       ${fmt(ph / nh, 2)}x\n`)
  process.stdout.write(`  peer get / plain node:http        ${fmt(pg / nh, 2)}x\n`)
  process.stdout.write(`  peer port / plain fetch           ${fmt(ph / h, 2)}x\n`)
  const gib = rounds * size / (1024 * MiB)
  const per = (c: { client: number; server: number }): string => `client ${fmt(c.client / gib, 2)}, server ${fmt(c.server / gib, 2)}`
  process.stdout.write(`  CPU s per GiB, plain node:http    ${per(cpu.nodeHttp)}\n`)
  process.stdout.write(`  CPU s per GiB, peer port          ${per(cpu.peerHttps)}\n`)
  process.stdout.write(`  CPU s per GiB, peer get           ${per(cpu.peerGet)}\n`)
  // Two nodes on machines of their own: each side has a core to itself, and the copy goes as
  // fast as the busier side can go; a ceiling that the load of other processes here moves less.
  const busier = (c: { client: number; server: number }): number => Math.max(c.client, c.server)
  process.stdout.write(`  peer get / plain node:http, busier side's CPU per GiB  ${fmt(busier(cpu.nodeHttp) / busier(cpu.peerGet), 2)}x  (each node on a machine of its own)\n`)
  if (runs('copy')) {
    // What issue 16 compares: a node-to-node blob copy (a replica made durable) over the peer
    // port against the same copy over plain HTTP, as replication made it before the peer port.
    const ch = median(copyHttp)
    const cp = median(copyPeer)
    process.stdout.write(`blob copy (replica: upload session hashed and fsynced, committed into the blob store)\n`)
    process.stdout.write(`  plain HTTP, node:http             ${fmt(ch)} MiB/s${each(copyHttp)}\n`)
    process.stdout.write(`  peer port, PeerClient.get         ${fmt(cp)} MiB/s${each(copyPeer)}\n`)
    process.stdout.write(`  peer port / plain HTTP            ${fmt(cp / ch, 2)}x  (issue 16: at least 0.8x)\n`)
    process.stdout.write(`  CPU s per GiB, plain HTTP copy    ${per(cpu.copyHttp)}\n`)
    process.stdout.write(`  CPU s per GiB, peer port copy     ${per(cpu.copyPeer)}\n`)
    process.stdout.write(`  peer port / plain HTTP, busier side's CPU per GiB  ${fmt(busier(cpu.copyHttp) / busier(cpu.copyPeer), 2)}x  (each node on a machine of its own)\n`)
  }
}

await main()
