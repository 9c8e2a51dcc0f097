/**
 * Progress for the CLI's long work, on stderr: a bar (cli-progress) when stderr is a terminal;
 * otherwise log lines, which a file or a pipe can keep.
 *
 *   join      applied index against the commit index the leader reports, while catching up
 *   promote   one request applied as one command: nothing to count, so a spinner and the time
 */
import { SingleBar } from 'cli-progress'
import type { Logger } from 'pino'

/** Where the Raft node is: undefined until it runs. */
export type CatchUpSource = () => { applied: number; commit: number } | undefined

interface TtyLike { isTTY?: boolean; write: (s: string) => boolean }

/**
 * Show a joining node catching up (applied against commit) until the returned function is
 * called. On a terminal a bar, redrawn every `everyMs`; elsewhere a log line every `logEveryMs`
 * while it lags, and one when it has caught up.
 */
export function watchCatchUp (source: CatchUpSource, opts: { log: Logger; stream?: TtyLike; everyMs?: number; logEveryMs?: number }): (done: boolean) => void {
  const stream = opts.stream ?? process.stderr
  const tty = stream.isTTY === true
  let bar: SingleBar | undefined
  let lastLog = 0
  let last: { applied: number; commit: number } | undefined
  const poll = (): void => {
    const st = source()
    if (st === undefined) return
    last = st
    const total = Math.max(st.commit, st.applied, 1)
    if (tty) {
      if (bar === undefined) {
        bar = new SingleBar({
          stream: stream as NodeJS.WritableStream,
          format: 'catching up with the cluster [{bar}] {percentage}% | applied {value} of {total} committed',
          barsize: 30,
          hideCursor: true,
        })
        bar.start(total, st.applied)
      } else {
        bar.setTotal(total)
        bar.update(st.applied)
      }
    } else if (st.applied < st.commit && Date.now() - lastLog >= (opts.logEveryMs ?? 2000)) {
      lastLog = Date.now()
      opts.log.info({ applied: st.applied, commit: st.commit }, 'catching up with the cluster')
    }
  }
  const timer = setInterval(poll, opts.everyMs ?? 200)
  return (done) => {
    clearInterval(timer)
    poll()
    bar?.stop()
    if (done && last !== undefined) opts.log.info({ applied: last.applied, commit: last.commit }, 'caught up with the cluster')
  }
}

const FRAMES = ['-', '\\', '|', '/']

/** Run `work` with a spinner and the time it takes on a terminal (nothing elsewhere); the line is cleared after. */
export async function spinner<T> (label: string, work: () => Promise<T>, stream: TtyLike = process.stderr): Promise<T> {
  if (stream.isTTY !== true) return await work()
  const bar = new SingleBar({ stream: stream as NodeJS.WritableStream, format: `{spin} ${label} … {duration_formatted}`, hideCursor: true, clearOnComplete: true })
  let i = 0
  bar.start(1, 0, { spin: FRAMES[0] })
  const timer = setInterval(() => bar.update({ spin: FRAMES[++i % FRAMES.length] }), 120)
  try {
    return await work()
  } finally {
    clearInterval(timer)
    bar.stop()
  }
}
