/**
 * One stream of blob bytes to several places at once: to the reader that asked for it (the
 * local store during an upload, the client during a fetch-through) and to copies (mirror
 * peers, the local store). Everything goes at the pace of the slowest (a manifest waits for
 * the quorum of copies anyway), except that a copy which holds the others back for `stallMs`
 * is dropped: it is destroyed and told why, and the rest go on without it. A copy may also
 * opt out of setting the pace: it is then dropped as soon as it falls `highWater` behind.
 *
 * `main` ending early (destroyed, or closed before it was read to the end) voids the whole
 * transfer: the source and every copy are destroyed. The source failing or closing before
 * its end (even before tee() was called) destroys `main` and every copy with an error.
 */
import type { Readable, Writable } from 'node:stream'

export interface TeeCopy {
  stream: Writable
  /**
   * Buffered bytes beyond which this copy makes the source wait (or, for a copy that does
   * not set the pace, beyond which it is dropped).
   */
  highWater: number
  /** Whether the others wait for this copy (default true); one that does not is dropped once it falls behind. */
  pace?: boolean
  /** The copy was dropped for stalling or falling behind (its stream is destroyed already). */
  onStall: (why: string) => void
  /** Told of every chunk written to this copy (to count the bytes sent). */
  onWrite?: (bytes: number) => void
}

export function tee (source: Readable, main: Writable & { readableEnded?: boolean }, copies: TeeCopy[], stallMs: number): void {
  const live = new Set(copies)
  let ended = false
  let stalledSince: number | undefined
  let stallTimer: NodeJS.Timeout | undefined
  const full = (c: TeeCopy): boolean => c.pace !== false && !c.stream.destroyed && c.stream.writableLength > c.highWater
  const maybeResume = (): void => {
    if (ended || main.writableNeedDrain) return
    for (const c of live) if (full(c)) return
    stalledSince = undefined
    clearTimeout(stallTimer)
    source.resume()
  }
  const checkStall = (): void => {
    if (stalledSince === undefined) return
    for (const c of live) {
      if (!full(c)) continue
      live.delete(c)
      c.stream.destroy()
      c.onStall(`it held the transfer back for ${stallMs} ms`)
    }
    maybeResume()
  }
  source.on('data', (chunk: Buffer) => {
    const mainFull = !main.write(chunk)
    let copyFull = false
    for (const c of live) {
      if (c.stream.destroyed) { live.delete(c); continue }
      c.stream.write(chunk)
      c.onWrite?.(chunk.length)
      if (c.pace === false && c.stream.writableLength > c.highWater) {
        live.delete(c)
        c.stream.destroy()
        c.onStall(`it fell ${c.highWater} bytes behind`)
      } else if (full(c)) copyFull = true
    }
    if (mainFull || copyFull) {
      source.pause()
      if (copyFull && stalledSince === undefined) {
        stalledSince = Date.now()
        stallTimer = setTimeout(checkStall, stallMs)
      }
    }
  })
  main.on('drain', maybeResume)
  for (const c of copies) {
    c.stream.on('drain', maybeResume)
    // A copy that fails or is destroyed stops counting.
    c.stream.on('close', () => { live.delete(c); maybeResume() })
    c.stream.on('error', () => {})
  }
  source.once('end', () => {
    ended = true
    clearTimeout(stallTimer)
    main.end()
    for (const c of live) c.stream.end()
  })
  const fail = (err: Error): void => {
    clearTimeout(stallTimer)
    // The reader may not listen yet (or any more): an 'error' nobody hears would crash the
    // process. It still learns of the failure: a destroyed stream reads as closed early.
    if (main.listenerCount('error') === 0) main.once('error', () => {})
    main.destroy(err)
    for (const c of copies) c.stream.destroy(err)
  }
  source.once('error', fail)
  // A client that hangs up may close its request without an error; and it may have hung up
  // already, before we were called (the caller awaits its mirrors first). Either way the
  // reader must hear of it: an ingest left waiting forever never closes its file handles.
  const premature = (): Error => Object.assign(new Error('the source closed before its end'), { code: 'ERR_STREAM_PREMATURE_CLOSE' })
  source.once('close', () => { if (!ended && !source.readableEnded) fail(premature()) })
  if (source.destroyed && !source.readableEnded) queueMicrotask(() => { fail(source.errored ?? premature()) })
  main.once('close', () => {
    clearTimeout(stallTimer)
    if (ended && main.writableFinished && main.readableEnded !== false) return
    if (!ended) source.destroy()
    for (const c of copies) c.stream.destroy(new Error('the transfer was abandoned'))
  })
}
