/**
 * Webhooks (issue 12, "Watches and webhooks") on a 3-node cluster of real processes, with a
 * receiver in this test process:
 *   - a push is delivered, signed (HMAC-SHA256 of the body with the hook's secret), after the
 *     receiver failed its first two attempts: retried with backoff, the same delivery id each
 *     time, and the delivery log says so;
 *   - a refused tag move on an immutable repository is an event too;
 *   - the leader killed (kill -9) while a delivery is in flight: the new leader sends it again,
 *     with the same id, and every later event is delivered;
 *   - the CLI makes a hook, shows the secret once, and lists deliveries.
 */
import t from 'tap'
import { createServer, type IncomingMessage } from 'node:http'
import { createHmac } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { authFetch, pushHttp, runCli, startTestCluster, waitFor } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'

const c = await startTestCluster(t, { size: 3 })
const creds = c.credentials
const user = `${creds.username}:${creds.password}`
const SECRET = 'webhook-secret-0123456789'

interface Got { id: string; event: string; signatureOk: boolean; body: Record<string, unknown> }
const got: Got[] = []
/** How many times to fail each delivery id before accepting it. */
const failFirst = new Map<string, number>()
/** Delivery types held open (never answered) the first time they come, and who is waiting. */
const holdType = new Set<string>()
const held: Array<{ id: string }> = []

const receiver = createServer((req: IncomingMessage, res) => {
  const chunks: Buffer[] = []
  req.on('data', (b: Buffer) => chunks.push(b))
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8')
    const id = String(req.headers['flotilla-delivery'])
    const event = String(req.headers['flotilla-event'])
    const expected = 'sha256=' + createHmac('sha256', SECRET).update(raw).digest('hex')
    got.push({ id, event, signatureOk: req.headers['flotilla-signature'] === expected, body: JSON.parse(raw) as Record<string, unknown> })
    if (holdType.has(event) && !held.some((h) => h.id === id)) { held.push({ id }); return } // never answered: the sender dies meanwhile
    const left = failFirst.get(id) ?? 0
    if (left > 0) { failFirst.set(id, left - 1); res.writeHead(500).end('not now'); return }
    res.writeHead(204).end()
  })
})
await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
t.teardown(() => { receiver.closeAllConnections(); receiver.close() })
const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`

async function putHook (name: string, events: string[], repositories = ['hooks/**']): Promise<void> {
  const leader = await c.leader()
  const res = await authFetch(`${leader.url}/api/v1/hooks/${name}`, creds, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url, secret: SECRET, events, repositories }) })
  if (res.status !== 200) throw new Error(`PUT hook answered ${res.status}: ${await res.text()}`)
}

const delivered = (pred: (g: Got) => boolean): Got[] => got.filter(pred)

t.test('a push is delivered, signed, after two failed attempts, with the same id each time', async (t) => {
  await putHook('ci', ['push', 'delete', 'immutable'])
  // The first event this cluster queues is evt-1: make the receiver fail it twice.
  failFirst.set('evt-1', 2)
  const img = image({ layers: 1, seed: `hook-${Date.now()}` })
  t.match(await pushHttp(c.nodes[1]!.url, creds, 'hooks/app', img, 'v1'), { outcome: 'ok' })
  const pushes = await waitFor('the push event, accepted on the third attempt', async () => { const p = delivered((g) => g.event === 'push'); return p.length >= 3 ? p : undefined }, 60_000, 100)
  t.same(pushes.map((p) => p.id), ['evt-1', 'evt-1', 'evt-1'], 'three attempts, one delivery id')
  t.ok(pushes.every((p) => p.signatureOk), 'each signed with the hook\'s secret')
  t.match(pushes[0]!.body, { id: 'evt-1', type: 'push', repo: 'hooks/app', digest: img.digest, tags: ['v1'], actor: 'admin' })
  const leader = await c.leader()
  const log = await waitFor('the delivery log to say delivered', async () => {
    const doc = await (await authFetch(`${leader.url}/api/v1/hooks/ci/deliveries`, creds)).json() as { queued: unknown[]; log: Array<{ id: string; outcome: string; attempts: number }> }
    return doc.log.find((l) => l.id === 'evt-1')
  }, 30_000, 200)
  t.match(log, { outcome: 'delivered', attempts: 3 }, 'the log: delivered on attempt 3')
  const metrics = await (await fetch(`${leader.url}/metrics`)).text()
  t.match(metrics, /flotilla_webhook_attempts_total\{outcome="failed"\} [1-9]/, 'failed attempts are counted')
})

t.test('a refused tag move on an immutable repository is an immutable event', async (t) => {
  const leader = await c.leader()
  t.equal((await authFetch(`${leader.url}/api/v1/immutable`, creds, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ pattern: 'hooks/frozen' }) })).status, 200)
  t.match(await pushHttp(leader.url, creds, 'hooks/frozen', image({ layers: 1, seed: `f1-${Date.now()}` }), 'v1'), { outcome: 'ok' })
  const moved = await pushHttp(leader.url, creds, 'hooks/frozen', image({ layers: 1, seed: `f2-${Date.now()}` }), 'v1')
  t.match(moved, { outcome: 'failed', status: 409 }, 'the move is refused')
  const ev = await waitFor('the immutable event', async () => delivered((g) => g.event === 'immutable')[0], 30_000, 100)
  t.match(ev.body, { type: 'immutable', repo: 'hooks/frozen', actor: 'admin', message: /immutable/ })
})

t.test('the leader killed while a delivery is in flight: the new leader sends it again, same id', async (t) => {
  const leader = await c.leader()
  holdType.add('delete')
  const img = image({ layers: 1, seed: `hook-del-${Date.now()}` })
  t.match(await pushHttp(leader.url, creds, 'hooks/app', img, 'v2'), { outcome: 'ok' })
  const del = await authFetch(`${leader.url}/v2/hooks/app/manifests/v2`, creds, { method: 'DELETE' })
  t.equal(del.status, 202)
  await waitFor('the delete delivery to be in flight (held by the receiver)', async () => held.length > 0 ? true : undefined, 30_000, 50)
  const id = held[0]!.id
  await leader.kill('SIGKILL')
  const next = await c.leader(30_000)
  t.not(next, leader, `a new leader: ${next.name}`)
  const again = await waitFor('the same delivery from the new leader', async () => { const d = delivered((g) => g.id === id); return d.length >= 2 ? d : undefined }, 60_000, 100)
  t.equal(again.length, 2, `sent twice (the first never answered): ${id}`)
  t.match(again[1]!.body, { type: 'delete', repo: 'hooks/app', tag: 'v2' })
  // Later events keep flowing from the new leader.
  const more = image({ layers: 1, seed: `hook-after-${Date.now()}` })
  t.match(await pushHttp(next.url, creds, 'hooks/app', more, 'v3'), { outcome: 'ok' })
  await waitFor('the push after the failover', async () => delivered((g) => g.event === 'push' && (g.body as { digest?: string }).digest === more.digest)[0], 60_000, 100)
  const ids = new Set(got.map((g) => g.id))
  t.ok([...ids].every((x) => /^evt-\d+$/.test(x)), 'every delivery has a unique event id')
  await c.restart(leader)
})

t.test('the CLI: a hook with a made-up secret shown once, its list and its deliveries', async (t) => {
  const leader = await c.leader()
  const set = await runCli(['hook', 'set', 'cli', '--url', url, '--events', 'push,gc', '--repos', 'hooks/**', '--node', leader.url, '--user', user])
  t.equal(set.code, 0, set.stderr)
  t.match(set.stdout, /webhook cli set: push, gc in hooks\/\*\* to http:\/\/127\.0\.0\.1:\d+\/hook\nsigning secret \(shown once; verify Flotilla-Signature with it\):\n[A-Za-z0-9_-]{32}\n/)
  const list = await runCli(['hook', 'list', '--json', '--node', leader.url, '--user', user])
  const hooks = (JSON.parse(list.stdout) as { hooks: Array<{ name: string; secret: string }> }).hooks
  t.same(hooks.map((h) => [h.name, h.secret]), [['ci', '********'], ['cli', '********']], 'secrets are never shown again')
  const deliveries = await runCli(['hook', 'deliveries', 'ci', '--node', leader.url, '--user', user])
  t.match(deliveries.stdout, /DELIVERY\s+EVENT\s+REPO\s+STATE/)
  t.match(deliveries.stdout, /evt-1\s+push\s+hooks\/app\s+delivered\s+3/)
  const bad = await runCli(['hook', 'set', 'x', '--url', 'ftp://nope', '--events', 'push', '--node', leader.url, '--user', user])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /url must be http:\/\/ or https:\/\//)
})
