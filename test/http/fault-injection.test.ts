/**
 * The test-only fault-injection hook (src/http/debug.ts, net/faults.ts): absent unless
 * FLOTILLA_FAULT_INJECTION=1 (404 like any unknown route), admin only when present, and never
 * set from the config file. test/cluster/partition.test.ts drives it on a real cluster.
 */
import t from 'tap'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startInProcess, basic } from '../helpers/inproc.js'
import { loadConfig } from '../../src/config.js'

const PEER = '12D3KooWJzZRcgWDMmfPeHDYKmoWR8Md4UzfM1rX9enpHDP38HAR'
const json = { 'content-type': 'application/json' }

t.test('off by default: the route answers 404 like any unknown admin route', async (t) => {
  const n = await startInProcess()
  t.teardown(async () => await n.stop())
  t.equal(n.node.faults, undefined)
  for (const method of ['GET', 'PUT', 'DELETE']) {
    const res = await n.fetch(`${n.url}/api/v1/debug/partition`, { method, headers: json, ...(method === 'PUT' ? { body: JSON.stringify({ peers: [PEER] }) } : {}) })
    const unknown = await n.fetch(`${n.url}/api/v1/no-such-route`, { method })
    t.equal(res.status, 404, `${method} answers 404`)
    const body = await res.json() as { errors: Array<{ code: string; message: string }> }
    const other = await unknown.json() as { errors: Array<{ code: string; message: string }> }
    t.equal(body.errors[0]!.code, other.errors[0]!.code, 'with the error of any unknown route')
    t.equal(body.errors[0]!.message, other.errors[0]!.message.replace('/api/v1/no-such-route', '/api/v1/debug/partition'))
  }
})

t.test('FLOTILLA_FAULT_INJECTION=1: admin only; PUT cuts, DELETE heals', async (t) => {
  const n = await startInProcess({ faultInjection: true })
  t.teardown(async () => await n.stop())
  const url = `${n.url}/api/v1/debug/partition`
  const put = (peers: unknown, auth?: string): Promise<Response> => fetch(url, { method: 'PUT', headers: { ...json, ...(auth !== undefined ? { authorization: auth } : {}) }, body: JSON.stringify({ peers }) })

  const anon = await put([PEER])
  t.equal(anon.status, 401, 'anonymous: 401')
  t.match(anon.headers.get('www-authenticate') ?? '', /^Bearer realm=/, 'with the challenge')
  t.equal((await n.fetch(`${n.url}/api/v1/users`, { method: 'POST', headers: json, body: JSON.stringify({ name: 'alice', password: 'alice-password' }) })).status, 201)
  t.equal((await put([PEER], basic({ username: 'alice', password: 'alice-password' }))).status, 403, 'a user without the admin flag: 403')
  t.same(n.node.faults!.list(), [], 'refused requests cut nothing')

  const ok = await put([PEER], n.authorization)
  t.equal(ok.status, 200)
  t.same(await ok.json(), { peers: [PEER] }, 'the admin cuts this node off from a peer')
  t.ok(n.node.faults!.blocks(PEER))
  t.notOk(n.node.cluster.admits(PEER), 'the gater and the node-to-node HTTP check refuse it')
  t.equal(n.node.cluster.httpOf(PEER), undefined, 'no HTTP request goes out to it')
  t.same(await (await n.fetch(url)).json(), { peers: [PEER] }, 'GET lists the cut')

  t.equal((await put([n.node.nodeId], n.authorization)).status, 400, 'not from itself')
  t.equal((await put('everyone', n.authorization)).status, 400, 'peers must be a list')
  t.equal((await n.fetch(url, { method: 'PUT', headers: json, body: '{' })).status, 400, 'bad JSON')
  t.equal((await n.fetch(url, { method: 'PATCH', headers: json, body: '{}' })).status, 405)
  t.same(n.node.faults!.list(), [PEER], 'bad requests change nothing')

  const healed = await n.fetch(url, { method: 'DELETE' })
  t.equal(healed.status, 200)
  t.same(await healed.json(), { peers: [] }, 'DELETE heals')
  t.notOk(n.node.faults!.blocks(PEER))
})

t.test('config: only from the environment', async (t) => {
  t.equal((await loadConfig({}, {})).faultInjection, false, 'off by default')
  t.equal((await loadConfig({}, { FLOTILLA_FAULT_INJECTION: '1' })).faultInjection, true)
  await t.rejects(loadConfig({}, { FLOTILLA_FAULT_INJECTION: 'yes' }), { name: 'ConfigError', message: /faultInjection/ })
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-cfg-'))
  const file = join(dir, 'f.yaml')
  await writeFile(file, 'faultInjection: true\n')
  await t.rejects(loadConfig({ config: file }, {}), { name: 'ConfigError', message: /FLOTILLA_FAULT_INJECTION/ }, 'the config file cannot turn it on')
})
