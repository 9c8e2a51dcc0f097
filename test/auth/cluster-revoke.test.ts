/**
 * Once the cluster exists: access state is replicated metadata, so a token revoked on node 1
 * is refused on node 3 at once, and a user created on node 2 signs in on node 3.
 */
import t from 'tap'
import { startTestCluster, basicAuth } from '../helpers/cluster.js'

t.test('a token revoked on node 1 is refused on node 3 at once', async (t) => {
  const c = await startTestCluster(t, { size: 3 })
  const [n1, n2, n3] = c.nodes as [typeof c.nodes[0], typeof c.nodes[0], typeof c.nodes[0]]
  const admin = basicAuth(c.credentials)
  const api = async (url: string, method: string, path: string, body?: unknown, auth = admin): Promise<Response> =>
    await fetch(`${url}${path}`, { method, headers: { authorization: auth, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
  const created = await api(n2.url, 'POST', '/api/v1/users', { name: 'carol', password: 'carol-password' })
  t.equal(created.status, 201)
  await created.arrayBuffer()
  const carol = 'Basic ' + Buffer.from('carol:carol-password').toString('base64')
  const me = await api(n3.url, 'GET', '/api/v1/me', undefined, carol)
  t.equal(me.status, 200, 'a user created on node 2 signs in on node 3')
  await me.arrayBuffer()
  const tokRes = await api(n1.url, 'POST', '/api/v1/tokens', { name: 'ci', scopes: [{ repositories: ['**'], actions: ['read'] }] })
  const tok = await tokRes.json() as { id: string; token: string }
  const use = async (url: string): Promise<number> => { const r = await fetch(`${url}/v2/`, { headers: { authorization: `Bearer ${tok.token}` } }); await r.arrayBuffer(); return r.status }
  t.equal(await use(n3.url), 200, 'the token works on node 3')
  const jwtRes = await fetch(`${n3.url}/token?service=flotilla&scope=repository:x/y:pull`, { headers: { authorization: 'Basic ' + Buffer.from(`ci:${tok.token}`).toString('base64') } })
  const jwt = (await jwtRes.json() as { token: string }).token
  const revoke = await api(n1.url, 'DELETE', `/api/v1/tokens/${tok.id}`)
  t.equal(revoke.status, 200)
  await revoke.arrayBuffer()
  t.equal(await use(n3.url), 401, 'refused on node 3 right after the revocation answered')
  t.equal(await use(n2.url), 401, 'and on node 2')
  const viaJwt = await fetch(`${n2.url}/v2/`, { headers: { authorization: `Bearer ${jwt}` } })
  t.equal(viaJwt.status, 401, 'a JWT issued by node 3 from that token dies too')
  await viaJwt.arrayBuffer()
})
