/**
 * Cross-site peering lag (issue 11's benchmark): two
 * single-node sites, B peered with A (pull). Prints
 *   - a small image: from the 201 of its manifest PUT at A until B serves it (runs, median, max);
 *   - N small tags pushed back to back at A: from the last 201 until B serves all of them;
 *   - a 10-layer image of 100 MiB: from the 201 at A until B serves it, against the floor, a
 *     plain TCP copy of the same bytes between two processes.
 * With --latency-ms or --cap-mib, A advertises a userspace proxy (test/helpers/tcp-proxy.ts) to
 * B, adding that latency each way and capping each direction of each connection; the floor
 * then goes through the same proxy. The issue's WAN run: --latency-ms 25 --cap-mib 50 (50 ms RTT).
 *
 *   npm run bench:sites -- [--runs 10] [--tags 1000] [--big-mib 100] [--latency-ms 25] [--cap-mib 50]
 */
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { startCluster, runCli, type TestCluster } from '../lib/cluster.js'
import { authFetch, pushHttp } from '../../test/helpers/cluster.js'
import { blob, descriptor, image, sha256, OCI_CONFIG, OCI_MANIFEST, type Image } from '../../test/helpers/oci.js'
import { median, fmt } from './lib/stats.js'
import { startTcpProxy, type TcpProxy } from '../../test/helpers/tcp-proxy.js'

const args = process.argv.slice(2)
const opt = (name: string, def: string): string => { const i = args.indexOf(name); return i >= 0 ? args[i + 1]! : def }
const RUNS = Number(opt('--runs', '10'))
const TAGS = Number(opt('--tags', '1000'))
const BIG_MIB = Number(opt('--big-mib', '100'))
const LATENCY_MS = Number(opt('--latency-ms', '0'))
const CAP_MIB = Number(opt('--cap-mib', '0'))
const WAN = LATENCY_MS > 0 || CAP_MIB > 0
const proxyOptions = { latencyMs: LATENCY_MS, ...(CAP_MIB > 0 ? { bytesPerSecond: CAP_MIB * 1024 * 1024 } : {}) }

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

async function servedAt (b: TestCluster, repo: string, ref: string, accept = OCI_MANIFEST): Promise<boolean> {
  const res = await authFetch(`${b.nodes[0]!.url}/v2/${repo}/manifests/${ref}`, b.credentials, { method: 'HEAD', headers: { accept } })
  await res.arrayBuffer()
  return res.status === 200
}

async function until (what: string, fn: () => Promise<boolean>, timeoutMs = 300_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!await fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

function bigImage (layers: number, layerBytes: number): Image {
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', seed: randomBytes(8).toString('hex') }), OCI_CONFIG)
  const ls = Array.from({ length: layers }, () => blob(randomBytes(layerBytes)))
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: ls.map(descriptor) }))
  return { config, layers: ls, manifest, digest: sha256(manifest), mediaType: OCI_MANIFEST }
}

/** The floor: `bytes` over a plain TCP connection from a child process to this one (ms), through the proxy when there is one. */
async function tcpFloor (bytes: number): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const direct = (server.address() as { port: number }).port
  const proxy = WAN ? await startTcpProxy({ target: { host: '127.0.0.1', port: direct }, ...proxyOptions }) : undefined
  const port = proxy?.port ?? direct
  const got = new Promise<number>((resolve) => {
    server.once('connection', (s) => {
      let n = 0
      const t0 = performance.now()
      s.on('data', (c: Buffer) => { n += c.length; if (n >= bytes) resolve(performance.now() - t0) })
    })
  })
  const child = spawn(process.execPath, ['-e', `const s=require('net').connect(${port},'127.0.0.1');const b=Buffer.alloc(1<<20,7);let left=${bytes};function w(){while(left>0){left-=b.length;if(!s.write(b)){s.once('drain',w);return}}s.end()}s.on('connect',w)`], { stdio: 'ignore' })
  const ms = await got
  child.kill()
  await proxy?.close()
  server.close()
  return ms
}

async function main (): Promise<void> {
  const proxy: TcpProxy | undefined = WAN ? await startTcpProxy({ target: { host: '127.0.0.1', port: 0 }, ...proxyOptions }) : undefined
  const a = await startCluster({ size: 1, ...(proxy !== undefined ? { env: { FLOTILLA_SITES_ADVERTISE: `127.0.0.1:${proxy.port}` } } : {}) })
  proxy?.retarget({ host: '127.0.0.1', port: a.nodes[0]!.p2pPort })
  const b = await startCluster({ size: 1 })
  process.stdout.write(WAN ? `link through a proxy: ${LATENCY_MS} ms each way (${2 * LATENCY_MS} ms RTT), ${CAP_MIB > 0 ? `${CAP_MIB} MiB/s cap` : 'no cap'}\n` : 'link: loopback, no proxy\n')
  try {
    const user = (c: TestCluster): string => `admin:${c.credentials.password}`
    const tok = await runCli(['site', 'token', '--node', a.nodes[0]!.url, '--user', user(a)])
    const token = tok.stdout.trimEnd().split('\n').at(-1)!
    const peer = await runCli(['site', 'peer', a.nodes[0]!.url, '--token', token, '--name', 'site-a', '--node', b.nodes[0]!.url, '--user', user(b)])
    if (peer.code !== 0) throw new Error(peer.stderr)
    const A = a.nodes[0]!.url

    const lags: number[] = []
    for (let i = 0; i < RUNS; i++) {
      const img = image({ layers: 2 })
      const r = await pushHttp(A, a.credentials, 'bench/small', img, `r${i}`)
      if (r.outcome !== 'ok') throw new Error(JSON.stringify(r))
      const t0 = performance.now()
      await until(`bench/small:r${i} at B`, async () => await servedAt(b, 'bench/small', `r${i}`))
      lags.push(performance.now() - t0)
    }
    process.stdout.write(`small image, ack at A → served at B: median ${fmt(median(lags))} ms, max ${fmt(Math.max(...lags))} ms (${RUNS} runs; target 2000 ms)\n`)

    const t1 = performance.now()
    for (let i = 0; i < TAGS; i++) {
      const r = await pushHttp(A, a.credentials, 'bench/tags', image({ layers: 1 }), `t${i}`)
      if (r.outcome !== 'ok') throw new Error(JSON.stringify(r))
    }
    const pushed = performance.now()
    await until(`bench/tags:t${TAGS - 1} at B`, async () => await servedAt(b, 'bench/tags', `t${TAGS - 1}`))
    const last = performance.now() - pushed
    // Every tag, checked after the last one is there (the feed is applied in order).
    for (let i = 0; i < TAGS; i++) if (!await servedAt(b, 'bench/tags', `t${i}`)) throw new Error(`bench/tags:t${i} missing at B`)
    process.stdout.write(`${TAGS} small tags pushed back to back in ${fmt((pushed - t1) / 1000)} s: all served at B ${fmt(last)} ms after the last ack (target 10000 ms)\n`)

    const big = bigImage(10, Math.floor(BIG_MIB * 1024 * 1024 / 10))
    const r = await pushHttp(A, a.credentials, 'bench/big', big, 'v1', 600_000)
    if (r.outcome !== 'ok') throw new Error(JSON.stringify(r))
    const t2 = performance.now()
    await until('bench/big:v1 at B', async () => await servedAt(b, 'bench/big', 'v1'))
    const bigLag = performance.now() - t2
    const floor = await tcpFloor(BIG_MIB * 1024 * 1024)
    process.stdout.write(`10-layer ${BIG_MIB} MiB image, ack at A → served at B: ${fmt(bigLag)} ms; plain TCP copy of the same bytes: ${fmt(floor)} ms; target 1000 + 1.2 × floor = ${fmt(1000 + 1.2 * floor)} ms\n`)
  } finally {
    await a.destroy()
    await b.destroy()
    await proxy?.close()
  }
}

await main()
