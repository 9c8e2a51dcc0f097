/**
 * Closing a connection we are done with (net/close-connection.ts), over real libp2p on
 * 127.0.0.1. A node died of `void connection.close()` right after it removed a member: libp2p
 * gives the close 1 s, and rejects with the timeout's reason (DOMException TimeoutError) when
 * a stream still holds bytes the remote does not take; nothing caught it. Here a stream is
 * made to hold such bytes on purpose: the remote pauses it, so the window closes.
 */
import t from 'tap'
import type { Connection, Stream } from '@libp2p/interface'
import { testHosts } from '../helpers/hosts.js'
import { closeConnection } from '../../net/close-connection.js'

const STALL = '/flotilla/test/stall/1.0.0'

// Any unhandled rejection in this file is the bug coming back: collected, checked at the end.
const unhandled: unknown[] = []
const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
process.on('unhandledRejection', onUnhandled)

async function until (what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const makeHost = await testHosts(t, 'flotilla-close-')
const a = await makeHost('a')
const b = await makeHost('b')
// b pauses every stalled stream (no more window for a) and says so with one byte.
await b.handle(STALL, (stream: Stream) => {
  stream.pause()
  stream.send(Uint8Array.of(1))
}, { maxInboundStreams: 16 })

/** A fresh connection from a to b with a stream holding 1 MiB that b will not take. */
async function stalledConnection (): Promise<{ connection: Connection; stream: Stream }> {
  for (const c of a.getConnections(b.peerId)) c.abort(new Error('a fresh connection per test'))
  await until('the old connections to go', () => a.getConnections(b.peerId).length === 0)
  const stream = await a.dialProtocol(b.getMultiaddrs()[0]!, STALL)
  const ready = new Promise<void>((resolve) => stream.addEventListener('message', () => resolve(), { once: true }))
  await ready
  // More than yamux's initial 256 KiB window: the rest stays in a's write buffer.
  stream.send(new Uint8Array(1 << 20))
  await until('bytes that b does not take', () => stream.writeBufferLength > 0)
  const connection = a.getConnections(b.peerId).find((c) => c.streams.includes(stream))!
  return { connection, stream }
}

t.test('the premise: libp2p\'s own close of such a connection rejects with the timeout\'s reason', async (t) => {
  const { connection } = await stalledConnection()
  // Without a signal libp2p makes AbortSignal.timeout(1000); `void connection.close()` left this unobserved.
  await t.rejects(connection.close(), { name: 'TimeoutError' }, 'Connection.close() rejects after libp2p\'s 1 s')
  connection.abort(new Error('done'))
})

t.test('the premise: when the remote goes away meanwhile, it rejects with a stream\'s close event', async (t) => {
  const { connection } = await stalledConnection()
  const closing = connection.close({ signal: AbortSignal.timeout(10_000) }).then(() => 'resolved', (err: unknown) => err)
  for (const c of b.getConnections(a.peerId)) c.abort(new Error('the remote went away'))
  const reason = await closing
  t.type(reason, Event, `rejects with an Event, not an Error (${String((reason as Event).constructor?.name)})`)
  t.equal((reason as Event).type, 'close')
})

t.test('closeConnection aborts a connection that cannot close in time, and never rejects', async (t) => {
  const { connection, stream } = await stalledConnection()
  const outcome = await closeConnection(connection, 300)
  t.equal(outcome, 'aborted', 'the close did not finish in 300 ms: aborted')
  t.equal(connection.status, 'aborted', 'the connection is aborted')
  t.not(stream.status, 'open', 'with the stalled stream')
  await until('b to see the connection go', () => b.getConnections(a.peerId).length === 0)
  t.pass('b no longer holds it')
})

t.test('closeConnection started and left (void) while the remote goes away: nothing escapes', async (t) => {
  const { connection } = await stalledConnection()
  let outcome: string | undefined
  void closeConnection(connection, 5000).then((o) => { outcome = o })
  // The remote drops the connection while the close waits for the stalled stream.
  for (const c of b.getConnections(a.peerId)) c.abort(new Error('the remote went away'))
  await until('the close to settle', () => outcome !== undefined)
  t.equal(outcome, 'aborted', 'the close cut short by the remote is an abort')
  t.equal(connection.status, 'aborted', 'the connection is aborted')
})

t.test('closeConnection closes an idle connection gracefully', async (t) => {
  for (const c of a.getConnections(b.peerId)) c.abort(new Error('a fresh connection per test'))
  await until('the old connections to go', () => a.getConnections(b.peerId).length === 0)
  const connection = await a.dial(b.getMultiaddrs()[0]!)
  t.equal(await closeConnection(connection, 5000), 'closed', 'closed, not aborted')
  t.equal(connection.status, 'closed')
})

t.test('closeConnection turns a close that rejects with a non-Error (a stream\'s close event) into an abort', async (t) => {
  let aborted: unknown
  const fake = {
    close: async () => { throw new Event('close') },
    abort: (err: Error) => { aborted = err },
  }
  t.equal(await closeConnection(fake, 1000), 'aborted')
  t.type(aborted, Error, 'abort gets an Error')
  t.match((aborted as Error).message, /closing the connection failed: close/)
})

t.test('no unhandled rejection in this file', async (t) => {
  // A rejection is reported after the microtask queue drains: let one macrotask pass.
  await new Promise((resolve) => setTimeout(resolve, 50))
  process.off('unhandledRejection', onUnhandled)
  t.same(unhandled.map(String), [], 'none')
})
