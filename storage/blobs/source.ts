/**
 * Turning an ingest source into chunks. Every store reads its input through `chunksOf`, so an
 * abort or a stalled sender is handled once, the same way.
 */
import { Readable } from 'node:stream'
import { FlotillaError } from '../errors.js'

export type Source = AsyncIterable<Uint8Array> | Readable

/**
 * Yield the chunks of `source`. When `signal` aborts, the wait for the next chunk ends at once with
 * the abort reason, so a `for await` blocked on a silent client throws instead of hanging; a
 * Readable source is destroyed, any other iterator is asked to return (without waiting for it:
 * a generator stuck in an await would never answer). Stopping early releases the source the same way.
 */
export async function * chunksOf (source: Source, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for await (const batch of batchesOf(source, signal)) yield * batch
}

/**
 * `chunksOf`, a batch at a time: every chunk that arrived while the consumer was busy, at
 * once. A hot loop (hash, copy, write) then pays one async step per batch instead of one per
 * 64 KiB chunk: two async generators per chunk cost 0.3–0.4 CPU s per GiB.
 */
export async function * batchesOf (source: Source, signal?: AbortSignal): AsyncGenerator<Uint8Array[]> {
  signal?.throwIfAborted()
  if (source instanceof Readable) { yield * readableBatches(source, signal); return }
  const it = source[Symbol.asyncIterator]() as AsyncIterator<unknown>
  let finished = false
  try {
    for (;;) {
      const r = signal === undefined ? await it.next() : await raceAbort(it.next(), signal)
      if (r.done === true) { finished = true; return }
      if (!(r.value instanceof Uint8Array)) throw new FlotillaError('BAD_REQUEST', 'source yielded a chunk that is not bytes')
      yield [r.value]
    }
  } finally {
    if (!finished) it.return?.().catch(() => {})
  }
}

/** Bytes a Readable may queue ahead of the consumer before it is paused. */
const QUEUE_HIGH = 1 << 20

/**
 * The chunks of a Readable as it delivers them, through 'data' events. Its own async iterator
 * calls read(), which concatenates (copies) whatever is queued whenever the consumer falls
 * behind, and racing every chunk against an AbortSignal.any() cost another 0.4 CPU s per GiB:
 * here one abort listener destroys the stream instead.
 */
async function * readableBatches (stream: Readable, signal?: AbortSignal): AsyncGenerator<Uint8Array[]> {
  let queue: Uint8Array[] = []
  let queued = 0
  let ended = false
  let failure: { err: unknown } | undefined
  let wake: (() => void) | undefined
  const notify = (): void => { const w = wake; wake = undefined; w?.() }
  const fail = (err: unknown): void => { failure ??= { err }; notify() }
  const onData = (chunk: unknown): void => {
    if (!(chunk instanceof Uint8Array)) { fail(new FlotillaError('BAD_REQUEST', 'source yielded a chunk that is not bytes')); return }
    queue.push(chunk)
    queued += chunk.length
    if (queued >= QUEUE_HIGH) stream.pause()
    notify()
  }
  const onEnd = (): void => { ended = true; notify() }
  const onError = (err: unknown): void => { fail(err) }
  const onClose = (): void => {
    if (!ended) fail(Object.assign(new Error('the stream closed before its end'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }))
  }
  const onAbort = (): void => { fail(abortReason(signal!)) }
  stream.on('data', onData)
  stream.once('end', onEnd)
  stream.on('error', onError)
  stream.once('close', onClose)
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    if (stream.readableEnded) ended = true
    else if (stream.destroyed) onClose()
    for (;;) {
      // An abort wins over queued bytes; a failed or closed stream still hands over what it delivered.
      if (failure !== undefined && (signal?.aborted === true || queue.length === 0)) throw failure.err
      if (queue.length > 0) {
        const batch = queue
        queue = []
        queued = 0
        if (stream.isPaused() && !ended) stream.resume()
        yield batch
        continue
      }
      if (ended) return
      await new Promise<void>((resolve) => { wake = resolve })
    }
  } finally {
    stream.off('data', onData)
    stream.off('end', onEnd)
    stream.off('close', onClose)
    signal?.removeEventListener('abort', onAbort)
    // A stream left early (consumer stopped, abort, error) is released; errors after that are moot.
    if (!ended) { stream.on('error', () => {}); stream.destroy() }
    stream.off('error', onError)
  }
}

function raceAbort<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { reject(abortReason(signal)) }
    if (signal.aborted) { onAbort(); return }
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
  })
}

function abortReason (signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError')
}

/** Throw SIZE_INVALID as soon as a stream delivers more than `limit` bytes: no point storing the rest. */
export function checkNotOver (limit: number | undefined, size: number): void {
  if (limit !== undefined && size > limit) {
    throw new FlotillaError('SIZE_INVALID', `received more than the ${limit} bytes announced`, { expectedSize: limit })
  }
}

/**
 * Lent chunks: memory a producer takes back for its next bytes once the consumer is done with
 * it. A consumer that writes a chunk and drops it calls `returnChunk` after the write (and the
 * hash) is done (writeHashed does); one that keeps chunks, or hands them on, just never
 * returns them, and they are collected as any other. A producer lends only to a consumer that
 * gets each chunk alone (never through a tee: one side would return bytes the other still
 * reads). Returning a chunk that was not lent does nothing.
 *
 * Why: the peer port's bulk reads decrypt into 1 MiB slabs (net/peer-https.ts PeerClient.get);
 * a fresh slab per MiB cost the reader page faults and garbage collection, about a tenth of
 * its CPU time per GiB (scripts/bench/transfer.ts).
 */
const lent = new WeakMap<Uint8Array, () => void>()

/** Lend `chunk`: `taken` runs once, when the consumer returns it. */
export function lendChunk<T extends Uint8Array> (chunk: T, taken: () => void): T {
  lent.set(chunk, taken)
  return chunk
}

/** The consumer is done with `chunk` (its bytes are written, hashed, copied): the producer may reuse its memory. */
export function returnChunk (chunk: Uint8Array): void {
  const taken = lent.get(chunk)
  if (taken === undefined) return
  lent.delete(chunk)
  taken()
}
