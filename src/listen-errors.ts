/**
 * A node that cannot listen says so in one line naming the address, the setting that chose it
 * and what to do, instead of the socket's errno or libp2p's transport-manager message.
 */

export interface ListenSetting {
  /** HOST:PORT as configured. */
  address: string
  /** What the port is for: `HTTP`, `cluster traffic`. */
  purpose: string
  /** The flag and the environment variable that set it: `--listen, FLOTILLA_LISTEN`. */
  setting: string
}

const WHY: Record<string, string> = {
  EADDRINUSE: 'the port is in use; pick another or stop the process holding it',
  EACCES: 'permission denied; ports below 1024 need privileges, pick a higher one',
  EADDRNOTAVAIL: 'the address is not one of this machine\'s; use one of its addresses, 127.0.0.1 or 0.0.0.0',
}

/** The message for a listen failure with errno `code`, or undefined for a code it does not know. */
export function listenFailureMessage (code: string | undefined, s: ListenSetting): string | undefined {
  const why = code === undefined ? undefined : WHY[code]
  return why === undefined ? undefined : `cannot listen on ${s.address} for ${s.purpose} (${s.setting}): ${why}`
}

/** A Node socket's listen error (server.on('error')) as an Error with that message; other errors unchanged. */
export function listenFailure (err: NodeJS.ErrnoException, s: ListenSetting): Error {
  const msg = listenFailureMessage(err.code, s)
  return msg === undefined ? err : new Error(msg, { cause: err })
}

/**
 * libp2p failing to listen on the --p2p address (its UnsupportedListenAddressesError lists each
 * address with its socket error); undefined when `err` is something else.
 */
export function p2pListenFailure (err: unknown, address: string): Error | undefined {
  const e = err as { name?: string; message?: string } | undefined
  if (e?.name !== 'UnsupportedListenAddressesError' && !/failed to be listened on/.test(e?.message ?? '')) return undefined
  const code = /\b(EADDRINUSE|EACCES|EADDRNOTAVAIL)\b/.exec(e?.message ?? '')?.[1]
  const s = { address, purpose: 'cluster traffic', setting: '--p2p, FLOTILLA_P2P' }
  const msg = listenFailureMessage(code, s) ?? `cannot listen on ${address} for ${s.purpose} (${s.setting}): ${/Error: ([^\n]*)/.exec(e?.message ?? '')?.[1] ?? 'the address was refused'}`
  return new Error(msg, { cause: err })
}
