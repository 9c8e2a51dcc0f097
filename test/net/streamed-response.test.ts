/**
 * net/streamed-response.ts over real libp2p on 127.0.0.1: a streamed answer keeps its
 * back-pressure for its whole length. libp2p 3.3's stream.onDrain() answers every call after
 * the first drain at once, so a sender that waited on it ran ahead of a slow reader without
 * bound (9.5 MiB stuck in a write buffer was seen); it now waits for each 'drain' event.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { testHosts } from '../helpers/hosts.js'
import { requestStreamed, serveStreamed } from '../../net/streamed-response.js'

const PROTOCOL = '/flotilla/test/streamed/1.0.0'
const PART = 256 * 1024
const PARTS = 512 // 128 MiB in all

const makeHost = await testHosts(t, 'flotilla-streamed-')
const server = await makeHost('server')
const client = await makeHost('client')

/** Bytes the handler has handed to the stream so far. */
let produced = 0
const part = (i: number): Uint8Array => new Uint8Array(PART).fill(i & 0xff)
await serveStreamed(server, PROTOCOL, async function * () {
  yield new TextEncoder().encode(JSON.stringify({ length: PART * PARTS }))
  for (let i = 0; i < PARTS; i++) {
    produced += PART
    yield part(i)
  }
}, { maxRequestBytes: 1024, idleTimeoutMs: 20_000 })

t.test('a slow reader holds the sender back for the whole answer, not just until the first drain', async (t) => {
  const answer = await requestStreamed(client, server.getMultiaddrs()[0]!, PROTOCOL, new TextEncoder().encode('{}'), { idleTimeoutMs: 20_000, maxHeaderBytes: 1024 })
  const { length } = JSON.parse(new TextDecoder().decode(answer.header)) as { length: number }
  t.equal(length, PART * PARTS)
  let consumed = 0
  let worstLead = 0
  const hash = createHash('sha256')
  const want = createHash('sha256')
  for (let i = 0; i < PARTS; i++) want.update(part(i))
  for await (const chunk of answer.body(length)) {
    consumed += chunk.byteLength
    hash.update(chunk)
    // Read slowly, and pause a while now and then: the sender must wait each time.
    if (consumed % (16 * 1024 * 1024) < chunk.byteLength) {
      await new Promise((resolve) => setTimeout(resolve, 300))
      worstLead = Math.max(worstLead, produced - consumed)
    }
  }
  t.equal(consumed, length, 'every byte arrived')
  t.equal(hash.digest('hex'), want.digest('hex'), 'in order')
  // What may be in flight: the reader's queue (4 MiB high-water mark), yamux's window (16 MiB,
  // held in libp2p's read buffer while the stream is paused), the sockets' kernel buffers and
  // the sender's write buffer: about 32 MiB. A sender that ignores back-pressure is over 100
  // MiB ahead by the first pause.
  t.ok(worstLead < 48 * 1024 * 1024, `the sender was never more than ${(worstLead / 2 ** 20).toFixed(1)} MiB ahead of the reader (limit 48 MiB)`)
})
