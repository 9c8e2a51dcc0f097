/**
 * Join tokens refused in plain words (issue 10, item 12): checkJoinToken says why (expired at
 * an ISO time, another cluster or altered, malformed) instead of jose's JWT jargon, and
 * joinTokenExpiry lets a joiner tell an expired token before it asks.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { SignJWT } from 'jose'
import { checkJoinToken, issueJoinToken, joinTokenExpiry, JoinTokenError } from '../../cluster/join-token.js'

const cluster = { clusterId: 'c-' + randomBytes(4).toString('hex'), secret: randomBytes(32).toString('base64url') }
const other = { clusterId: 'c-' + randomBytes(4).toString('hex'), secret: randomBytes(32).toString('base64url') }

t.test('a fresh token is accepted and names its record', async (t) => {
  const { token } = await issueJoinToken(cluster, 600, Date.now(), 'rec-1')
  t.same(await checkJoinToken(cluster, token), { id: 'rec-1' })
})

t.test('an expired token is refused with the time it expired, in ISO 8601', async (t) => {
  const issuedAt = Date.now() - 7200_000
  const { token, expiresAt } = await issueJoinToken(cluster, 3600, issuedAt)
  const err = await checkJoinToken(cluster, token).then(() => undefined, (e: unknown) => e as Error)
  t.type(err, JoinTokenError)
  t.equal(err?.message, `it expired at ${expiresAt}`)
  t.notMatch(err?.message ?? '', /"exp"|claim|JWT/, 'no JWT jargon')
  t.equal(joinTokenExpiry(token), Date.parse(expiresAt), 'a joiner reads the expiry without the secret')
})

t.test('a token of another cluster, or altered, is not valid for this cluster', async (t) => {
  const { token } = await issueJoinToken(other, 600)
  await t.rejects(checkJoinToken(cluster, token), { name: 'JoinTokenError', message: 'it is not valid for this cluster (issued by another cluster, or altered)' })
  const mine = (await issueJoinToken(cluster, 600)).token
  const [h, p, s] = mine.split('.') as [string, string, string]
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>
  const altered = [h, Buffer.from(JSON.stringify({ ...payload, exp: Number(payload.exp) + 86400 })).toString('base64url'), s].join('.')
  await t.rejects(checkJoinToken(cluster, altered), { message: /not valid for this cluster/ }, 'a longer life written in by hand')
  // Signed with this cluster's secret but for another issuer (claims checked after the signature).
  const wrongIssuer = await new SignJWT({ purpose: 'join' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(other.clusterId).setAudience('flotilla-join').setExpirationTime('10m').sign(Buffer.from(cluster.secret, 'base64url'))
  await t.rejects(checkJoinToken(cluster, wrongIssuer), { message: /not valid for this cluster/ })
})

t.test('a malformed token says so', async (t) => {
  await t.rejects(checkJoinToken(cluster, 'not-a-token'), { name: 'JoinTokenError', message: /^it is malformed/ })
  t.equal(joinTokenExpiry('not-a-token'), 'malformed')
  const noExp = await new SignJWT({ purpose: 'join' }).setProtectedHeader({ alg: 'HS256' }).sign(Buffer.from(cluster.secret, 'base64url'))
  t.equal(joinTokenExpiry(noExp), undefined, 'a token without an expiry has none to tell')
})

t.test('a token for something else than joining is refused', async (t) => {
  const access = await new SignJWT({ purpose: 'pull' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(cluster.clusterId).setAudience('flotilla-join').setExpirationTime('10m').sign(Buffer.from(cluster.secret, 'base64url'))
  await t.rejects(checkJoinToken(cluster, access), { message: 'it is not a join token' })
})
