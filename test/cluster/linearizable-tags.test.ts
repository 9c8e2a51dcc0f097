/**
 * Tags are linearizable registers under crashes and pauses (a Jepsen-style check on real
 * processes). Five small images are pushed once; then five clients, for about 45 s, move
 * three tags between manifests over those images' blobs (manifest PUT by tag, a new manifest
 * each time: a write of a unique value) and read them (GET or HEAD
 * by tag, Docker-Content-Digest: a read; 404 MANIFEST_UNKNOWN reads null) on random nodes
 * (down, frozen or starting ones too), while a nemesis kill -9s a node (the leader included)
 * and restarts it on its data dir, or freezes one (SIGSTOP) for 5 s, one fault at a time. The history goes through the
 * linearizability checker (cluster/lincheck, one register per tag). A write without an answer
 * (timeout, reset, 5xx) may or may not have happened: it stays, with an infinite return; a
 * read without an answer is dropped, as is a request whose connection was refused (never sent).
 * No answer may be a 500: a node that cannot serve says 503. After the heal every node reads
 * the same final value of every tag (those reads join the history), and serves every image in full.
 */
import t from 'tap'
import { performance } from 'node:perf_hooks'
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { authFetch, checkImage, pushHttp, sleep, startTestCluster, type ClusterNode, type TestCluster } from '../helpers/cluster.js'
import { image, type Image } from '../helpers/oci.js'
import { checkOperations } from '../../cluster/lincheck/porcupine.js'
import { describeHistory, kvModel, type KvOperation } from '../../cluster/lincheck/kv-model.js'

const REPO = 'jepsen/tags'
const KEYS = ['k0', 'k1', 'k2']
const IMAGES = 5
const CLIENTS = 5
const RUN_MS = 45_000
const FAULT_EVERY_MS = 9000
const REQUEST_TIMEOUT_MS = 5000

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!

/** A request that never reached the node (nothing listens on the port): certainly not applied. */
function refused (err: unknown): boolean {
  const cause = (err as { cause?: { code?: string } }).cause
  return cause?.code === 'ECONNREFUSED'
}

interface Outcomes {
  ok: number
  unknown: number
  /** Connection refused: the node was down. */
  refused: number
  /** Answers other than success, by status (or 'timeout', 'network'). */
  other: Map<string, number>
  /** Writes refused with a 4xx. */
  refusals: Map<string, number>
}
const count = (m: Map<string, number>, k: string): void => { m.set(k, (m.get(k) ?? 0) + 1) }

/** One read of `key` from `node`: the digest (null: no such tag), or undefined when the outcome is unknown. */
async function readTag (c: TestCluster, node: ClusterNode, key: string, method: 'GET' | 'HEAD', byDigest: Map<string, Image>, problems: string[]): Promise<{ value: string | null } | { error: string }> {
  try {
    const res = await authFetch(`${node.url}/v2/${REPO}/manifests/${key}`, c.credentials, { method, headers: { accept: byDigest.values().next().value!.mediaType } }, REQUEST_TIMEOUT_MS)
    const body = Buffer.from(await res.arrayBuffer())
    if (res.status === 200) {
      const digest = res.headers.get('docker-content-digest') ?? ''
      const img = byDigest.get(digest)
      if (img === undefined) problems.push(`${method} ${node.name} ${key}: digest ${digest} is none of the images written`)
      else if (method === 'GET' && !body.equals(img.manifest)) problems.push(`GET ${node.name} ${key}: the body is not the manifest of ${digest}`)
      return { value: digest }
    }
    if (res.status === 404) {
      // HEAD has no body; the repository exists (pushed before the run), so a 404 is the tag's.
      if (method === 'HEAD') return { value: null }
      const code = (JSON.parse(body.toString() || '{}') as { errors?: Array<{ code?: string }> }).errors?.[0]?.code
      if (code === 'MANIFEST_UNKNOWN') return { value: null }
      return { error: `404 ${code}` }
    }
    return { error: String(res.status) }
  } catch (err) {
    return { error: refused(err) ? 'refused' : ((err as Error).name === 'TimeoutError' ? 'timeout' : 'network') }
  }
}

/** `img` with an annotation: another manifest (and digest) over the same blobs. */
function variant (img: Image, tag: string): Image {
  const doc = JSON.parse(img.manifest.toString()) as Record<string, unknown>
  const manifest = Buffer.from(JSON.stringify({ ...doc, annotations: { 'org.flotilla.test.write': tag } }))
  return { ...img, manifest, digest: `sha256:${createHash('sha256').update(manifest).digest('hex')}` }
}

t.test('three tags moved and read by 5 clients on random nodes under kill -9 and SIGSTOP stay linearizable registers', async (t) => {
  const c = await startTestCluster(t, { size: 3 })
  const images = Array.from({ length: IMAGES }, (_, i) => image({ layers: 1, seed: `jepsen-${i}-${Math.random()}` }))
  const byDigest = new Map(images.map((img) => [img.digest, img]))
  // Blobs and manifests once, each image under a tag of its own that the run never touches.
  for (const [i, img] of images.entries()) {
    const r = await pushHttp(c.nodes[i % c.nodes.length]!.url, c.credentials, REPO, img, `img-${i}`, 30_000)
    if (r.outcome !== 'ok') throw new Error(`push of image ${i} before the run: ${r.outcome} ${r.status ?? ''} ${r.error ?? ''}`)
  }

  const t0 = performance.now()
  // Milliseconds since the run began, to the microsecond (readable in a failure's excerpt).
  const now = (): number => Math.round((performance.now() - t0) * 1000) / 1000
  const history: KvOperation[] = []
  const writes: Outcomes = { ok: 0, unknown: 0, refused: 0, other: new Map(), refusals: new Map() }
  const reads: Outcomes = { ok: 0, unknown: 0, refused: 0, other: new Map(), refusals: new Map() }
  const readProblems: string[] = []
  const events: string[] = []
  let stopped = false
  let writeSeq = 0

  const clients = Array.from({ length: CLIENTS }, async (_, client) => {
    while (!stopped) {
      let failed = false
      // Any node, as a client that knows only the addresses would: a frozen one (the clients
      // must survive it), a killed one (refused), one restarting on its data dir (not ready yet).
      const node = pick(c.nodes)
      const key = pick(KEYS)
      if (Math.random() < 0.5) {
        // Every write puts a value of its own (the same blobs, a unique annotation), so that a
        // read can be matched to the one write it observed.
        const img = variant(pick(images), `${client}-${++writeSeq}`)
        byDigest.set(img.digest, img)
        const call = now()
        let status: number | undefined
        let error: string | undefined
        try {
          const res = await authFetch(`${node.url}/v2/${REPO}/manifests/${key}`, c.credentials, { method: 'PUT', headers: { 'content-type': img.mediaType }, body: img.manifest }, REQUEST_TIMEOUT_MS)
          await res.arrayBuffer()
          status = res.status
          if (res.status === 201 && res.headers.get('docker-content-digest') !== img.digest) readProblems.push(`PUT ${node.name} ${key}: 201 with digest ${res.headers.get('docker-content-digest')} for ${img.digest}`)
        } catch (err) {
          error = refused(err) ? 'refused' : (err as Error).name === 'TimeoutError' ? 'timeout' : 'network'
        }
        const ret = now()
        const input = { op: 'put' as const, key, value: img.digest }
        if (status === 201) {
          writes.ok++
          history.push({ clientId: `${client}@${node.name}`, input, output: { op: 'put' }, call, return: ret })
        } else if (error === 'refused') {
          writes.refused++
          failed = true
        } else if (status === undefined || status >= 500) {
          count(writes.other, status !== undefined ? String(status) : error!)
          // No answer, or the node gave up waiting for a commit: it may still happen, any time later.
          writes.unknown++
          failed = true
          history.push({ clientId: `${client}@${node.name}`, input, output: undefined, call, return: Infinity })
        } else {
          // A definite refusal (4xx): nothing was written. None is expected here.
          count(writes.refusals, String(status))
        }
      } else {
        const call = now()
        const r = await readTag(c, node, key, Math.random() < 0.7 ? 'GET' : 'HEAD', byDigest, readProblems)
        const ret = now()
        if ('value' in r) {
          reads.ok++
          history.push({ clientId: `${client}@${node.name}`, input: { op: 'get', key }, output: { op: 'get', value: r.value }, call, return: ret })
        } else if (r.error === 'refused') { reads.refused++; failed = true }
        else { reads.unknown++; failed = true; count(reads.other, r.error) }
      }
      if (failed) await sleep(100)
    }
  })

  // The nemesis: one fault at a time, every FAULT_EVERY_MS; the leader is the target of some.
  const plan: Array<{ fault: 'kill' | 'pause'; leader: boolean }> = [
    { fault: 'kill', leader: true },
    { fault: 'pause', leader: false },
    { fault: 'kill', leader: false },
    { fault: 'pause', leader: true },
    { fault: 'kill', leader: Math.random() < 0.5 },
  ]
  const nemesis = (async () => {
    await sleep(3000)
    for (const step of plan) {
      const roundStart = performance.now()
      let target: ClusterNode
      const leader = step.leader ? await c.leader(5000).catch(() => undefined) : undefined
      target = leader ?? pick(c.live())
      if (step.fault === 'kill') {
        events.push(`${now().toFixed(0)} kill -9 ${target.name}${leader !== undefined ? ' (leader)' : ''}`)
        await target.kill('SIGKILL')
        await sleep(3000)
        events.push(`${now().toFixed(0)} restart ${target.name}`)
        target = await c.restart(target)
        events.push(`${now().toFixed(0)} ${target.name} ready`)
      } else {
        events.push(`${now().toFixed(0)} SIGSTOP ${target.name}${leader !== undefined ? ' (leader)' : ''}`)
        target.pause()
        await sleep(5000)
        target.resume()
        events.push(`${now().toFixed(0)} SIGCONT ${target.name}`)
      }
      const left = FAULT_EVERY_MS - (performance.now() - roundStart)
      if (left > 0) await sleep(left)
    }
  })()
  t.teardown(() => { for (const n of c.nodes) if (n.paused) n.resume() })

  const started = performance.now()
  try {
    await nemesis
    const left = RUN_MS - (performance.now() - started)
    if (left > 0) await sleep(left)
  } finally {
    stopped = true
    await Promise.all(clients)
  }
  const runMs = performance.now() - started
  t.comment(`nemesis (ms since the run began):\n  ${events.join('\n  ')}`)
  t.comment(`${(runMs / 1000).toFixed(1)} s: writes ${writes.ok} ok, ${writes.unknown} unknown ${JSON.stringify([...writes.other])}, ${writes.refused} refused (node down)${writes.refusals.size > 0 ? `, 4xx ${JSON.stringify([...writes.refusals])}` : ''}; ` +
    `reads ${reads.ok} ok, ${reads.unknown} without an answer ${JSON.stringify([...reads.other])}, ${reads.refused} refused`)

  // Heal: every node up and caught up; then each node reads each tag once more, into the history.
  for (const n of c.nodes) if (n.paused) n.resume()
  for (const n of c.nodes.filter((x) => !x.alive())) await c.restart(n)
  await c.converged({ voters: 3, timeoutMs: 60_000 })
  const finals = new Map<string, Map<string, string | null | undefined>>()
  for (const key of KEYS) {
    const perNode = new Map<string, string | null | undefined>()
    for (const n of c.nodes) {
      const call = now()
      const r = await readTag(c, n, key, 'GET', byDigest, readProblems)
      const ret = now()
      perNode.set(n.name, 'value' in r ? r.value : undefined)
      if ('value' in r) history.push({ clientId: `final@${n.name}`, input: { op: 'get', key }, output: { op: 'get', value: r.value }, call, return: ret })
      else t.fail(`final read of ${key} on ${n.name}: ${r.error}`)
    }
    finals.set(key, perNode)
    const values = new Set(perNode.values())
    t.equal(values.size, 1, `every node reads the same final value of ${key}: ${JSON.stringify([...perNode])}`)
  }
  t.same(readProblems.slice(0, 10), [], 'every answer named one of the images written, with its manifest\'s bytes')
  t.same([...writes.refusals], [], 'no write was refused (4xx)')
  // 503 is how a node says it cannot serve now (starting, no quorum); 500 is a bug.
  t.equal((writes.other.get('500') ?? 0) + (reads.other.get('500') ?? 0), 0, 'no request failed with an internal error (500)')

  // Liveness: the cluster kept serving through the faults.
  t.ok(writes.ok >= 50, `${writes.ok} writes acknowledged (at least 50)`)
  t.ok(reads.ok >= 50, `${reads.ok} reads answered (at least 50)`)
  t.ok(writes.ok + reads.ok > 100, `${writes.ok + reads.ok} operations completed (more than 100)`)

  // Safety: the history is linearizable, one register per tag.
  const checkStarted = performance.now()
  const report = checkOperations(kvModel, history)
  t.comment(`checked ${history.length} operations in ${report.partitions} parts, ${report.steps} search steps, ${(performance.now() - checkStarted).toFixed(0)} ms: ${report.result}`)
  if (report.result !== 'ok') {
    const part = report.failedPartition ?? []
    const file = join(tmpdir(), `linearizable-tags-${process.pid}-${Date.now()}.txt`)
    await writeFile(file, `nemesis:\n${events.join('\n')}\n\nprefix linearized (${report.longestPrefix?.length ?? 0}):\n${describeHistory(report.longestPrefix ?? [])}\n\nwhole part:\n${describeHistory(part)}\n`)
    // The excerpt: the operations around the first one the search could not place.
    const placed = new Set(report.longestPrefix ?? [])
    const stuck = part.filter((o) => !placed.has(o) && o.return !== Infinity).sort((a, b) => a.return - b.return)[0]
    const around = stuck === undefined ? part.slice(0, 40) : part.filter((o) => o.return >= stuck.call - 1500 && o.call <= stuck.return + 200)
    const last = (report.longestPrefix ?? []).slice(-10)
    t.comment(`the history of key ${part[0]?.input.key} is ${report.result}; whole part in ${file}\n` +
      `last operations linearized:\n${describeHistory(last)}\n` +
      `first operation that could not be placed: ${stuck === undefined ? '-' : describeHistory([stuck])}\n` +
      `operations around it:\n${describeHistory(around.slice(0, 80))}\n` +
      `nemesis:\n  ${events.join('\n  ')}`)
  }
  t.equal(report.result, 'ok', 'the history of every tag is linearizable')

  // Durability: every image, pushed once before the run, is whole on every node.
  for (const n of c.nodes) {
    const problems: string[] = []
    for (const [i, img] of images.entries()) {
      problems.push(...await checkImage(n.url, c.credentials, REPO, img, `img-${i}`))
      problems.push(...await checkImage(n.url, c.credentials, REPO, img, img.digest))
    }
    t.same(problems.slice(0, 10), [], `${n.name} serves all ${images.length} images in full, by tag and by digest`)
  }
})
