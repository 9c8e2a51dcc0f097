/**
 * Soak (issue 15): 10 minutes of mixed pushes and pulls on 3 real nodes. Every node's open
 * file descriptors stay bounded (sampled from /proc), nothing is left for the garbage
 * collector to close ("Closing file descriptor N on garbage collection"), every acknowledged
 * push is served by every node at the end, and the cluster still commits.
 *
 * FLOTILLA_SOAK_SECONDS shortens or lengthens it (default 600).
 */
import t from 'tap'
import { readdir, readFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import {
  authFetch, checkImage, pushHttp, pushWorkload, sleep, startTestCluster,
  type ClusterNode, type PushRecord,
} from '../helpers/cluster.js'
import { blob, image, sha256, type Image } from '../helpers/oci.js'

const SECONDS = Number(process.env.FLOTILLA_SOAK_SECONDS ?? 600)
/** Descriptors a node may hold above its count after warm-up: sockets of concurrent requests, libp2p, LevelDB files. */
const HEADROOM = 150

// Two copies of each blob on three nodes: a third of the pulls stream through a node that lacks the blob.
const c = await startTestCluster(t, { size: 3, env: { FLOTILLA_REPLICAS: '2' } })

async function openFds (n: ClusterNode): Promise<number> {
  return (await readdir(`/proc/${n.proc.pid}/fd`)).length
}

/** Pullers: GET a random acknowledged image's manifest and blobs from a random node, whole, in a loop; or start reading a large layer and hang up. */
function pullWorkload (records: PushRecord[], big: Array<{ repo: string; img: Image }>, nodes: ClusterNode[], clients: number): { stop: () => Promise<{ pulls: number; problems: string[] }> } {
  let stopped = false
  let pulls = 0
  const problems: string[] = []
  const loops = Array.from({ length: clients }, async (_, i) => {
    for (let k = 0; !stopped && k < 1_000_000; k++) {
      const ok = records.filter((r) => r.result.outcome === 'ok')
      if (ok.length === 0) { await sleep(100); continue }
      const r = ok[(k * 7919 + i * 104729) % ok.length]!
      const node = nodes[(k + i) % nodes.length]!
      // Half the reads stop early: a client that hangs up mid-blob must not leak a descriptor.
      if (k % 2 === 0) {
        const found = await checkImage(node.url, c.credentials, r.repo, r.img, r.tag)
        problems.push(...found)
      } else {
        const b = big[k % big.length]!
        const headers: Record<string, string> = k % 8 === 3 ? { range: `bytes=${k % 1000}-${100_000 + (k % 5000)}` } : {}
        try {
          const res = await authFetch(`${node.url}/v2/${b.repo}/blobs/${b.img.layers[0]!.digest}`, c.credentials, { method: k % 4 === 1 ? 'HEAD' : 'GET', headers })
          const reader = res.body?.getReader()
          await reader?.read()
          await reader?.cancel()
        } catch { /* hung up on purpose */ }
      }
      pulls++
    }
  })
  return {
    async stop () { stopped = true; await Promise.all(loops); return { pulls, problems } },
  }
}

function manifestWith (img: Image, layer: ReturnType<typeof blob>): { manifest: Buffer; digest: string } {
  const doc = JSON.parse(img.manifest.toString()) as { layers: unknown[] }
  doc.layers = [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }]
  const manifest = Buffer.from(JSON.stringify(doc))
  return { manifest, digest: sha256(manifest) }
}

/** Uploaders that hang up: a monolithic POST that sends 1 MiB of an announced 8 MiB, then closes the connection. */
function abandonedUploads (nodes: ClusterNode[]): { stop: () => Promise<number> } {
  let stopped = false
  let n = 0
  const loop = (async () => {
    for (let k = 0; !stopped && k < 100_000; k++) {
      const node = nodes[k % nodes.length]!
      const ctl = new AbortController()
      const body = new ReadableStream<Uint8Array>({
        async pull (controller) {
          controller.enqueue(randomBytes(1 << 20))
          await sleep(50)
          ctl.abort()
        },
      })
      await authFetch(`${node.url}/v2/soak/abandoned/blobs/uploads/?digest=sha256:${'0'.repeat(64)}`, c.credentials, {
        method: 'POST', body, signal: ctl.signal, headers: { 'content-length': String(8 << 20) }, duplex: 'half',
      } as RequestInit).catch(() => {})
      n++
      await sleep(200)
    }
  })()
  return { async stop () { stopped = true; await loop; return n } }
}

t.test(`${SECONDS} s of mixed pushes and pulls on 3 nodes`, async (t) => {
  const nodes = c.live()
  // A few images with 8 MiB layers, read in part and abandoned by the pullers.
  const big: Array<{ repo: string; img: Image }> = []
  for (let i = 0; i < 6; i++) {
    const layer = blob(randomBytes(8 << 20))
    const img = image({ seed: `soak-big-${i}` })
    const withBig: Image = { ...img, layers: [layer], ...manifestWith(img, layer) }
    const r = await pushHttp(nodes[i % nodes.length]!.url, c.credentials, `soak/big${i}`, withBig, 'v1', 60_000)
    t.equal(r.outcome, 'ok', `big image ${i} pushed`)
    big.push({ repo: `soak/big${i}`, img: withBig })
  }
  const pushes = pushWorkload({ clients: 4, creds: c.credentials, targets: () => nodes.map((n) => ({ url: n.url, name: n.name })), repoPrefix: 'soak', layers: 2, pauseMs: 20 })
  const pulls = pullWorkload(pushes.records, big, nodes, 4)
  const abandoned = abandonedUploads(nodes)
  const samples = new Map<string, number[]>(nodes.map((n) => [n.name, []]))
  const end = Date.now() + SECONDS * 1000
  while (Date.now() < end) {
    await sleep(Math.min(5000, Math.max(0, end - Date.now())))
    for (const n of nodes) samples.get(n.name)!.push(await openFds(n))
  }
  await pushes.stop()
  const pulled = await pulls.stop()
  t.comment(`${await abandoned.stop()} uploads abandoned half-way`)
  const ok = pushes.records.filter((r) => r.result.outcome === 'ok')
  t.comment(`${pushes.records.length} pushes (${ok.length} acknowledged), ${pulled.pulls} pulls`)
  t.ok(ok.length > SECONDS, 'pushes kept being acknowledged')
  t.same(pulled.problems.slice(0, 10), [], 'every pull of an acknowledged image was whole')

  for (const n of nodes) {
    const s = samples.get(n.name)!
    // Warm-up: the first fifth (connections, LevelDB files); after it, the count may not creep.
    const warm = s.slice(0, Math.max(1, Math.floor(s.length / 5)))
    const base = Math.max(...warm)
    const peak = Math.max(...s)
    t.comment(`${n.name} open fds: warm-up ≤ ${base}, peak ${peak}, last ${s[s.length - 1]} (${s.join(' ')})`)
    t.ok(peak <= base + HEADROOM, `${n.name}: descriptors stay bounded (peak ${peak}, warm-up ${base})`)
    const log = await readFile(n.logFile, 'utf8')
    const gc = log.split('\n').filter((l) => l.includes('on garbage collection'))
    t.same(gc.slice(0, 3), [], `${n.name}: no file handle was left to the garbage collector`)
  }

  await c.converged()
  const sample = ok.filter((_, i) => i % Math.max(1, Math.floor(ok.length / 60)) === 0)
  for (const n of nodes) {
    const problems: string[] = []
    for (const r of sample) problems.push(...await checkImage(n.url, c.credentials, r.repo, r.img, r.tag))
    t.same(problems.slice(0, 10), [], `${n.name} serves every sampled acknowledged push (${sample.length})`)
  }
})
