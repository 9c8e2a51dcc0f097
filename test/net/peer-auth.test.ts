import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { signRequest, verifyRequest, MAX_SKEW_MS } from '../../net/peer-auth.js'

t.test('peer-authenticated HTTP: a signature verifies only for its peer, method, path and time', async (t) => {
  const key = await generateKeyPair('Ed25519')
  const other = await generateKeyPair('Ed25519')
  const peer = peerIdFromPrivateKey(key).toString()
  const otherPeer = peerIdFromPrivateKey(other).toString()
  const now = 1_700_000_000_000
  const h = await signRequest(key, peer, 'GET', '/internal/blobs/sha256:aa', now)
  t.equal(await verifyRequest(h, 'GET', '/internal/blobs/sha256:aa', now), peer)
  t.equal(await verifyRequest(h, 'PUT', '/internal/blobs/sha256:aa', now), undefined, 'another method')
  t.equal(await verifyRequest(h, 'GET', '/internal/blobs/sha256:bb', now), undefined, 'another path')
  t.equal(await verifyRequest(h, 'GET', '/internal/blobs/sha256:aa', now + MAX_SKEW_MS + 1), undefined, 'replayed too late')
  t.equal(await verifyRequest(h.replace(peer, otherPeer), 'GET', '/internal/blobs/sha256:aa', now), undefined, 'claimed by another peer')
  t.equal(await verifyRequest('Flotilla-Peer garbage', 'GET', '/', now), undefined)
  t.equal(await verifyRequest('Basic abc', 'GET', '/', now), undefined)
  t.equal(await verifyRequest(undefined, 'GET', '/', now), undefined)
})
