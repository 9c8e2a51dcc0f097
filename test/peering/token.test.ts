/**
 * Peering tokens on their own (cluster/peering/token.ts): the issuing site checks the
 * signature, its own id and the expiry; the other site reads the claims without the secret.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { checkSiteToken, issueSiteToken, readSiteToken, SiteTokenError } from '../../cluster/peering/token.js'

const site = { clusterId: '0123456789abcdef', secret: randomBytes(32).toString('base64url') }
const other = { clusterId: 'fedcba9876543210', secret: randomBytes(32).toString('base64url') }
const members = [{ peerId: '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN', addrs: ['/ip4/127.0.0.1/tcp/23001'] }]

t.test('a fresh token: the issuer accepts it, anyone reads its site and members', async (t) => {
  const { token, expiresAt } = await issueSiteToken(site, members, 600)
  await t.resolves(checkSiteToken(site, token))
  const claims = readSiteToken(token)
  t.equal(claims.site, site.clusterId)
  t.same(claims.members, members)
  t.equal(new Date(claims.expiresAt).toISOString(), expiresAt)
})

t.test('an expired token is refused by its issuer, naming when it expired', async (t) => {
  const { token } = await issueSiteToken(site, members, 60, Date.now() - 3600_000)
  await t.rejects(checkSiteToken(site, token), { name: 'SiteTokenError', message: /the peering token expired at \d{4}-\d\d-\d\dT/ })
})

t.test('another site\'s token, an altered one and a join-style JWT are refused', async (t) => {
  const { token } = await issueSiteToken(other, members, 600)
  await t.rejects(checkSiteToken(site, token), { message: /not valid for this site/ })
  const mine = (await issueSiteToken(site, members, 600)).token
  const [h, p, s] = mine.split('.') as [string, string, string]
  const altered = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), site: other.clusterId })).toString('base64url')}.${s}`
  await t.rejects(checkSiteToken(site, altered), { message: /altered/ })
  await t.rejects(checkSiteToken(site, 'garbage'), { message: /malformed/ })
  t.throws(() => readSiteToken('garbage'), SiteTokenError)
  const noMembers = `${h}.${Buffer.from(JSON.stringify({ purpose: 'site', site: site.clusterId, members: [], exp: 9e9 })).toString('base64url')}.${s}`
  t.throws(() => readSiteToken(noMembers), { message: /names no valid members/ })
  const joinLike = `${h}.${Buffer.from(JSON.stringify({ purpose: 'join', exp: 9e9 })).toString('base64url')}.${s}`
  t.throws(() => readSiteToken(joinLike), { message: /not a peering token/ })
})
