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
  signal?.throwIfAborted()
  const it = source[Symbol.asyncIterator]() as AsyncIterator<unknown>
  let finished = false
  try {
    for (;;) {
      const r = signal === undefined ? await it.next() : await raceAbort(it.next(), signal)
      if (r.done === true) { finished = true; return }
      if (!(r.value instanceof Uint8Array)) throw new FlotillaError('BAD_REQUEST', 'source yielded a chunk that is not bytes')
      yield r.value
    }
  } finally {
    if (!finished) {
      if (source instanceof Readable) source.destroy()
      else it.return?.().catch(() => {})
    }
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
