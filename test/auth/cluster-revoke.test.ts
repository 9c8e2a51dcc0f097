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

// Issue 10: the offline token `docker login` keeps outlived a password change for 30 days.
t.test('a password change or a disable on one node ends that user\'s logins on every node; robot tokens stay', async (t) => {
  const c = await startTestCluster(t, { size: 3 })
  const [n1, n2, n3] = c.nodes as [typeof c.nodes[0], typeof c.nodes[0], typeof c.nodes[0]]
  const admin = basicAuth(c.credentials)
  const api = async (url: string, method: string, path: string, body?: unknown, auth = admin): Promise<Response> =>
    await fetch(`${url}${path}`, { method, headers: { authorization: auth, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
  const drain = async (r: Response): Promise<number> => { await r.arrayBuffer(); return r.status }
  t.equal(await drain(await api(n1.url, 'POST', '/api/v1/users', { name: 'dave', password: 'dave-password-1' })), 201)
  const dave = 'Basic ' + Buffer.from('dave:dave-password-1').toString('base64')

  /** What `docker login` does: an offline (refresh) token, then a JWT from it for each pull. */
  const login = async (url: string): Promise<string> => {
    const r = await fetch(`${url}/token?service=flotilla&offline_token=true&client_id=docker`, { headers: { authorization: dave } })
    return (await r.json() as { refresh_token: string }).refresh_token
  }
  const refresh = async (url: string, rt: string): Promise<{ status: number; token?: string }> => {
    const r = await fetch(`${url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: rt, service: 'flotilla', client_id: 'docker', scope: 'repository:dave/app:pull' }) })
    const body = await r.json() as { token?: string }
    return { status: r.status, ...(body.token !== undefined ? { token: body.token } : {}) }
  }
  const ping = async (url: string, bearer: string): Promise<number> => await drain(await fetch(`${url}/v2/`, { headers: { authorization: `Bearer ${bearer}` } }))

  const rt = await login(n1.url)
  t.match(rt, /^flt_/, 'logged in on node 1')
  const jwtBefore = (await refresh(n3.url, rt)).token!
  t.equal(await ping(n2.url, jwtBefore), 200, 'its JWT works on node 2')
  const passwordJwt = (await (await fetch(`${n2.url}/token?service=flotilla&scope=repository:dave/app:pull`, { headers: { authorization: dave } })).json() as { token: string }).token
  const robot = await (await api(n1.url, 'POST', '/api/v1/tokens', { name: 'ci', scopes: [{ repositories: ['**'], actions: ['read'] }] }, dave)).json() as { token: string }

  t.equal(await drain(await api(n2.url, 'PUT', '/api/v1/users/dave/password', { password: 'dave-password-2' })), 200, 'password changed on node 2')
  t.equal((await refresh(n3.url, rt)).status, 401, 'the offline token is refused on node 3')
  t.equal((await refresh(n1.url, rt)).status, 401, 'and on node 1')
  t.equal(await ping(n1.url, jwtBefore), 401, 'a JWT from it dies too')
  t.equal(await ping(n3.url, passwordJwt), 401, 'and a JWT from the old password')
  t.equal(await ping(n3.url, robot.token), 200, 'the robot token still works')

  const dave2 = 'Basic ' + Buffer.from('dave:dave-password-2').toString('base64')
  const rt2 = (await (await fetch(`${n3.url}/token?service=flotilla&offline_token=true&client_id=docker`, { headers: { authorization: dave2 } })).json() as { refresh_token: string }).refresh_token
  t.equal((await refresh(n1.url, rt2)).status, 200, 'a login with the new password works')
  t.equal(await drain(await api(n1.url, 'PATCH', '/api/v1/users/dave', { disabled: true })), 200, 'dave disabled on node 1')
  t.equal((await refresh(n2.url, rt2)).status, 401, 'his login is refused on node 2')
  t.equal(await drain(await api(n1.url, 'PATCH', '/api/v1/users/dave', { disabled: false })), 200, 're-enabled')
  t.equal((await refresh(n3.url, rt2)).status, 401, 'the login stays revoked after re-enabling')
  t.equal(await ping(n3.url, robot.token), 200, 'while the robot token works again')
})
