/**
 * Remote repositories (pull-through caches) benchmark: a Flotilla node in front of the CNCF
 * reference registry (docker-registry 2.8.2), both on 127.0.0.1, in the same run:
 *
 *   first pull    an uncached image through Flotilla (hub/…) against the same kind of image
 *                 pulled straight from the upstream. Target: at least 0.8×.
 *   cached pull   the same image through Flotilla again (from its cache) against the same
 *                 bytes pushed to a local repository of Flotilla. Target: at least 0.95×.
 *
 *   first pull   again with the upstream across a link (--link MBIT/RTT_MS, default 1000/10: one
 *   over a link  gigabit with 10 ms of round trip, test/helpers/tcp-proxy.ts), for both pulls. On
 *                loopback the upstream serves from the page cache with sendfile at 1-3 GB/s,
 *                and a cache that must receive, hash, store and send every byte is bound by
 *                its CPU there; a real upstream (Docker Hub, another site) is across a network.
 *
 * A pull is the manifest by tag then every blob, one after the other, bodies drained (not
 * hashed: the servers are measured, not this client). Each repetition uses a new image.
 *
 * The cached and local pulls alternate, --pulls of each per rep. Before each, the node is
 * left to finish its background work (checksums of the new blob, the fill's last steps),
 * which would otherwise slow whichever came first. Each pull also reports the CPU time the node spent on it (from /proc), a figure
 * that the machine's load sways much less than MiB/s.
 *
 *   npm run bench:remote -- [--size-mib 200] [--reps 3] [--pulls 3] [--link 1000/10|none] [--json FILE]
 */
import { parseArgs } from 'node:util'
import http from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import { rm, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { loadavg } from 'node:os'
import { startFlotilla, startReference, OPEN_ANONYMOUS, type RunningRegistry } from '../lib/procs.js'
import { startTcpProxy, type TcpProxy } from '../../test/helpers/tcp-proxy.js'

const { values: argv } = parseArgs({ options: { 'size-mib': { type: 'string', default: '200' }, reps: { type: 'string', default: '3' }, pulls: { type: 'string', default: '3' }, link: { type: 'string', default: '1000/10' }, json: { type: 'string' } } })
const SIZE = Number(argv['size-mib']) * 2 ** 20
const REPS = Number(argv.reps)
/** Cached and local pulls per rep, alternated: one each was too few against a loaded machine's noise. */
const PULLS = Number(argv.pulls)
/** --link MBIT/RTT_MS: the upstream also reached as across a network (test/helpers/tcp-proxy.ts); none: loopback only. */
const LINK = argv.link === 'none' ? undefined : (() => {
  const m = /^(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(argv.link)
  if (m === null) throw new Error(`--link ${argv.link}: expected MBIT/RTT_MS (for example 1000/10) or none`)
  return { mbit: Number(m[1]), rttMs: Number(m[2]) }
})()
const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
const OCI = 'application/vnd.oci.image.manifest.v1+json'
const agent = new http.Agent({ keepAlive: true })

function request (url: string, method: string, headers: Record<string, string> = {}, body?: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const keep: Buffer[] = []
      let bytes = 0
      // Only small bodies (manifests, errors) are kept; blobs are counted and dropped.
      res.on('data', (c: Buffer) => { bytes += c.length; if (bytes < 1 << 20) keep.push(c) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(keep), bytes }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function push (base: string, repo: string, tag: string, blobs: Buffer[], manifest: Buffer): Promise<void> {
  for (const b of blobs) {
    const start = await request(`${base}/v2/${repo}/blobs/uploads/`, 'POST')
    const loc = new URL(start.headers.location ?? '', base)
    loc.searchParams.set('digest', sha(b))
    const put = await request(loc.toString(), 'PUT', { 'content-type': 'application/octet-stream', 'content-length': String(b.length) }, b)
    if (put.status !== 201) throw new Error(`blob push to ${base} answered ${start.status}/${put.status}: ${put.body.toString().slice(0, 200)}`)
  }
  const m = await request(`${base}/v2/${repo}/manifests/${tag}`, 'PUT', { 'content-type': OCI }, manifest)
  if (m.status !== 201) throw new Error(`manifest push to ${base} answered ${m.status}: ${m.body.toString().slice(0, 200)}`)
}

/** Pull manifest + blobs; answers MiB/s over the whole pull. */
async function pull (base: string, repo: string, tag: string): Promise<number> {
  const t0 = performance.now()
  const m = await request(`${base}/v2/${repo}/manifests/${tag}`, 'GET', { accept: OCI })
  if (m.status !== 200) throw new Error(`${base}/v2/${repo}/manifests/${tag} answered ${m.status}: ${m.body.toString().slice(0, 200)}`)
  const doc = JSON.parse(m.body.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> }
  let bytes = 0
  for (const d of [doc.config.digest, ...doc.layers.map((l) => l.digest)]) {
    const b = await request(`${base}/v2/${repo}/blobs/${d}`, 'GET')
    if (b.status !== 200) throw new Error(`blob ${d} answered ${b.status}`)
    bytes += b.bytes
  }
  return bytes / 2 ** 20 / ((performance.now() - t0) / 1000)
}

/** CPU time (user + system, ms) a process has used so far, from /proc; undefined where there is none. */
function cpuMs (pid: number | undefined): number | undefined {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    // Fields 14 and 15 (utime, stime) in clock ticks; here after the name: indexes 11 and 12.
    return (Number(f[11]) + Number(f[12])) * 10
  } catch { return undefined }
}

/** A pull, with the CPU the node spent on it (ms; the machine's load does not inflate it as it does wall time). */
async function measured (pid: number | undefined, base: string, repo: string, tag: string): Promise<{ speed: number; cpu: number }> {
  const c0 = cpuMs(pid)
  const speed = await pull(base, repo, tag)
  const c1 = cpuMs(pid)
  return { speed, cpu: c0 === undefined || c1 === undefined ? NaN : c1 - c0 }
}

/** Until the node has no checksum to compute or record and no fill under way (at most 30 s), then 200 ms more. */
async function idle (base: string): Promise<void> {
  const until = Date.now() + 30_000
  while (Date.now() < until) {
    const m = (await request(`${base}/metrics`, 'GET')).body.toString()
    const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(m)?.[1] ?? 0)
    if (value('flotilla_checksum_backlog') === 0 && value('flotilla_remote_fills_active') === 0) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  await new Promise((resolve) => setTimeout(resolve, 200))
}

function image (): { blobs: Buffer[]; manifest: Buffer } {
  const layer = randomBytes(SIZE)
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }))
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }] }))
  return { blobs: [config, layer], manifest }
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }

let upstream: RunningRegistry | undefined
let node: RunningRegistry | undefined
let link: (TcpProxy & { url: string }) | undefined
try {
  console.log(`remote bench: ${REPS} reps of a ${SIZE / 2 ** 20} MiB image; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`)
  upstream = await startReference()
  node = await startFlotilla({ anonymous: OPEN_ANONYMOUS })
  const admin = 'Basic ' + Buffer.from(`${node.credentials!.username}:${node.credentials!.password}`).toString('base64')
  const put = await request(`${node.url}/api/v1/remotes/hub`, 'PUT', { authorization: admin, 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ prefix: 'hub/', upstream: upstream.url, ttlSeconds: 3600 })))
  if (put.status !== 200) throw new Error(`remote add answered ${put.status}: ${put.body.toString()}`)
  if (LINK !== undefined) {
    // The same upstream behind a link, as a team's Docker Hub or other site is: a second remote.
    const u = new URL(upstream.url)
    const proxy = await startTcpProxy({ target: { host: u.hostname, port: Number(u.port) }, latencyMs: LINK.rttMs / 2, bytesPerSecond: LINK.mbit * 1e6 / 8 })
    link = Object.assign(proxy, { url: `http://127.0.0.1:${proxy.port}` })
    const wan = await request(`${node.url}/api/v1/remotes/wan`, 'PUT', { authorization: admin, 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ prefix: 'wan/', upstream: link.url, ttlSeconds: 3600 })))
    if (wan.status !== 200) throw new Error(`remote add answered ${wan.status}: ${wan.body.toString()}`)
  }
  const direct: number[] = []
  const first: number[] = []
  const cached: number[] = []
  const local: number[] = []
  const directLink: number[] = []
  const firstLink: number[] = []
  const cpu = { first: [] as number[], cached: [] as number[], local: [] as number[] }
  const pid = node.proc.pid
  for (let i = 0; i < REPS; i++) {
    // Two images per rep, pushed alike to the upstream: one pulled straight, one through Flotilla.
    const a = image()
    const b = image()
    await push(upstream.url, `library/direct${i}`, '1', a.blobs, a.manifest)
    await push(upstream.url, `library/cached${i}`, '1', b.blobs, b.manifest)
    direct.push(await pull(upstream.url, `library/direct${i}`, '1'))
    const f = await measured(pid, node.url, `hub/library/cached${i}`, '1')
    first.push(f.speed)
    cpu.first.push(f.cpu)
    // After the first pull: blobs already in Flotilla are linked, not downloaded, by a remote.
    await push(node.url, `bench/local${i}`, '1', b.blobs, b.manifest)
    // The last link applied, and the node's background work after the fill and the push
    // (checksums, warming) done: it would slow whichever of the two pulls below came first.
    await idle(node.url)
    // Alternated, so that neither side always goes first.
    const c = async (): Promise<void> => { await idle(node!.url); const m = await measured(pid, node!.url, `hub/library/cached${i}`, '1'); cached.push(m.speed); cpu.cached.push(m.cpu) }
    const l = async (): Promise<void> => { await idle(node!.url); const m = await measured(pid, node!.url, `bench/local${i}`, '1'); local.push(m.speed); cpu.local.push(m.cpu) }
    for (let k = 0; k < PULLS; k++) if ((i + k) % 2 === 0) { await c(); await l() } else { await l(); await c() }
    if (link !== undefined) {
      // Across the link: straight from the upstream against through Flotilla, new images again.
      const c = image()
      const d = image()
      await push(upstream.url, `library/wdirect${i}`, '1', c.blobs, c.manifest)
      await push(upstream.url, `library/wcached${i}`, '1', d.blobs, d.manifest)
      await idle(node.url)
      directLink.push(await pull(link.url, `library/wdirect${i}`, '1'))
      firstLink.push(await pull(node.url, `wan/library/wcached${i}`, '1'))
      console.log(`rep ${i + 1}, upstream over a ${LINK!.mbit} Mbit/s link with ${LINK!.rttMs} ms RTT: direct ${directLink[i]!.toFixed(0)} MiB/s, first through Flotilla ${firstLink[i]!.toFixed(0)} MiB/s`)
    }
    const mine = (xs: number[]): string => xs.slice(-PULLS).map((x) => x.toFixed(0)).join('/')
    console.log(`rep ${i + 1}: direct ${direct[i]!.toFixed(0)} MiB/s, first through Flotilla ${first[i]!.toFixed(0)} MiB/s (node CPU ${cpu.first[i]} ms), cached ${mine(cached)} MiB/s (${mine(cpu.cached)} ms), local ${mine(local)} MiB/s (${mine(cpu.local)} ms); load ${loadavg()[0]!.toFixed(1)}`)
  }
  const r1 = median(first) / median(direct)
  const r2 = median(cached) / median(local)
  console.log('')
  console.log('| pull | MiB/s (median) | node CPU ms (median) | against | MiB/s | node CPU ms | ratio | target |')
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |')
  console.log(`| first, through Flotilla (upstream on loopback) | ${median(first).toFixed(0)} | ${median(cpu.first)} | straight from the upstream | ${median(direct).toFixed(0)} | - | ${r1.toFixed(2)}× | ≥ 0.8× |`)
  const r3 = link !== undefined ? median(firstLink) / median(directLink) : undefined
  if (r3 !== undefined) console.log(`| first, through Flotilla (upstream over ${LINK!.mbit} Mbit/s, ${LINK!.rttMs} ms RTT) | ${median(firstLink).toFixed(0)} | - | straight from the upstream, same link | ${median(directLink).toFixed(0)} | - | ${r3.toFixed(2)}× | ≥ 0.8× |`)
  console.log(`| cached, through Flotilla | ${median(cached).toFixed(0)} | ${median(cpu.cached)} | local repository | ${median(local).toFixed(0)} | ${median(cpu.local)} | ${r2.toFixed(2)}× | ≥ 0.95× |`)
  console.log(`load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`)
  if (argv.json !== undefined) await writeFile(argv.json, JSON.stringify({ sizeMiB: SIZE / 2 ** 20, reps: REPS, pulls: PULLS, link: LINK, direct, first, directLink, firstLink, cached, local, cpu, firstRatio: r1, firstLinkRatio: r3, cachedRatio: r2, load: loadavg() }, null, 2))
} finally {
  await link?.close()
  await node?.stop()
  await upstream?.stop()
  for (const r of [node, upstream]) if (r !== undefined) await rm(dirname(r.dataDir), { recursive: true, force: true })
}
