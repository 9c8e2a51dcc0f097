/**
 * What CLI commands share to talk to a node's HTTP API: the node URL, credentials, and
 * errors turned into one clear line.
 */
import { StringDecoder } from 'node:string_decoder'
import { clientTls, explainTlsFailure, httpsFetch, type ClientTls, type TlsOptions } from './tls.js'

export interface NodeOptions extends TlsOptions {
  node?: string
  user?: string
}

/** The node's URL: --node, FLOTILLA_NODE or the default; `HOST:PORT` alone means http://HOST:PORT. */
export function nodeUrl (opts: NodeOptions): string {
  const given = (opts.node ?? process.env.FLOTILLA_NODE ?? 'http://127.0.0.1:5000').trim()
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(given) ? given : `http://${given}`
  let parsed: URL
  try { parsed = new URL(url) } catch { throw new CliError(`--node ${given} is not a node's URL: give http://HOST:PORT (or HOST:PORT), or set FLOTILLA_NODE`) }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new CliError(`--node ${given}: a node is reached over http:// or https://`)
  return url.replace(/\/+$/, '')
}

export class CliError extends Error {
  static override name = 'CliError'
  constructor (message: string) { super(message); this.name = 'CliError' }
}

/** Passwords asked for on the terminal, by user name: asked once per command. */
const prompted = new Map<string, string>()

/**
 * NAME:PASSWORD from --user or FLOTILLA_USER (undefined when neither is set). NAME alone asks for
 * the password without echo when stdin is a terminal; elsewhere it is an error saying what to pass.
 */
export async function credentials (opts: NodeOptions): Promise<string | undefined> {
  const user = opts.user ?? process.env.FLOTILLA_USER
  if (user === undefined || user === '') return undefined
  if (user.includes(':')) return user
  const known = prompted.get(user)
  if (known !== undefined) return `${user}:${known}`
  if (process.stdin.isTTY !== true) {
    throw new CliError(`no password for the user ${user}, and no terminal to ask for it on: pass --user ${user}:PASSWORD or set FLOTILLA_USER=${user}:PASSWORD`)
  }
  const password = await askHidden(`password for ${user} at ${nodeUrl(opts)}: `)
  prompted.set(user, password)
  return `${user}:${password}`
}

/** Ask on the terminal without echoing what is typed (raw mode; backspace works, Ctrl-C cancels). */
async function askHidden (question: string): Promise<string> {
  const stdin = process.stdin
  const decoder = new StringDecoder('utf8')
  process.stderr.write(question)
  stdin.setRawMode(true)
  stdin.resume()
  return await new Promise((resolve, reject) => {
    let answer = ''
    const finish = (): void => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write('\n')
    }
    const onData = (chunk: Buffer): void => {
      for (const ch of decoder.write(chunk)) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') { finish(); resolve(answer); return }
        if (ch === '\u0003') { finish(); reject(new CliError('cancelled')); return }
        if (ch === '\u007f' || ch === '\b') answer = answer.slice(0, -1)
        else answer += ch
      }
    }
    stdin.on('data', onData)
  })
}

/** How long a command waits for a node that refuses connections or answers 503 (still starting). */
export const START_WAIT_MS = 30_000

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** A refused connection: nothing listens there (yet). */
function refused (err: unknown): boolean {
  const cause = (err as { cause?: { code?: string; errors?: Array<{ code?: string }> } }).cause
  return cause?.code === 'ECONNREFUSED' || (cause?.errors?.some((e) => e.code === 'ECONNREFUSED') ?? false)
}

/**
 * fetch() a node, waiting up to START_WAIT_MS through refused connections and 503 answers (a
 * node still starting), as its Retry-After asks (at most 2 s apart), and saying so once on
 * stderr. Then the last answer, or the last error, is the caller's. `wait: false` tries once.
 */
export async function fetchNode (base: string, url: string | URL, init: RequestInit, opts: { wait?: boolean; tls?: ClientTls; timeoutMs?: number } = {}): Promise<{ res: Response; waited: boolean }> {
  const deadline = Date.now() + (opts.wait === false ? 0 : START_WAIT_MS)
  let waited = false
  for (;;) {
    let res: Response | undefined
    try {
      // https:// goes through node:https, which takes our CA and client certificate (src/cli/tls.ts).
      // A long operation (timeoutMs: gc, retention) goes through node:http(s) too: fetch() gives up
      // on an answer after 300 s whatever its signal says.
      res = new URL(url).protocol === 'https:' || opts.timeoutMs !== undefined
        ? await httpsFetch(url, init, opts.tls ?? {}, opts.timeoutMs)
        : await fetch(url, { ...init, signal: AbortSignal.timeout(120_000) })
    } catch (err) {
      if (!refused(err) || Date.now() >= deadline) throw Object.assign(err as Error, { waited })
    }
    if (res !== undefined && (res.status !== 503 || Date.now() >= deadline)) return { res, waited }
    let pause = 500
    if (res !== undefined) {
      const after = Number(res.headers.get('retry-after'))
      if (Number.isFinite(after) && after > 0) pause = Math.min(after * 1000, 2000)
      await res.arrayBuffer().catch(() => {})
    }
    if (!waited) process.stderr.write(`waiting for the node at ${base} to start…\n`)
    waited = true
    await sleep(Math.max(0, Math.min(pause, deadline - Date.now())))
  }
}

/** The registry's `{"errors": [{code, message}]}` as one line: `403 DENIED: message`, with a hint for 401. */
function failure (res: Response, text: string, doc: unknown): CliError {
  const e = (doc as { errors?: Array<{ code?: string; message?: string }> } | undefined)?.errors?.[0]
  const msg = (e?.message ?? text.slice(0, 300).replace(/\s+/g, ' ')) || res.statusText
  const retry = res.headers.get('retry-after')
  const hint = res.status === 401 ? `${/[.!?]$/.test(msg) ? '' : '.'} Pass --user NAME:PASSWORD or set FLOTILLA_USER.` : retry !== null ? ` (retry after ${retry} s)` : ''
  return new CliError(`${res.status} ${e?.code ?? res.statusText}: ${msg}${hint}`)
}

/**
 * Call the node's API (PATH includes /api/v1); answers the parsed JSON body ({} when empty), or
 * throws a CliError naming the cause. `wait: false`: no waiting for a node that is starting.
 */
export async function callApi (opts: NodeOptions, method: string, path: string, body?: unknown, how: { wait?: boolean; timeoutMs?: number } = {}): Promise<unknown> {
  const base = nodeUrl(opts)
  const tls = clientTls(opts)
  const headers: Record<string, string> = {}
  const user = await credentials(opts)
  if (user !== undefined) headers.authorization = 'Basic ' + Buffer.from(user).toString('base64')
  if (body !== undefined) headers['content-type'] = 'application/json'
  let res: Response
  try {
    ({ res } = await fetchNode(base, base + path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) }, { ...how, tls }))
  } catch (err) {
    const e = err as Error & { waited?: boolean }
    // undici's "fetch failed" says nothing: its cause does (an AggregateError's only by its code).
    const cause = e.cause as (Error & { code?: string }) | undefined
    const tlsWhy = explainTlsFailure(base, cause)
    if (tlsWhy !== undefined) throw new CliError(`cannot reach the node at ${base}: ${tlsWhy}`)
    // Plain HTTP to a node that serves HTTPS: it hangs up on what is not a TLS handshake.
    if (base.startsWith('http:') && (cause?.code === 'UND_ERR_SOCKET' || cause?.code === 'ECONNRESET')) {
      throw new CliError(`cannot reach the node at ${base}: it closed the connection (${cause.message}). If the node serves HTTPS (--tls-certificate), use --node https://${new URL(base).host}`)
    }
    const why = (cause?.message ?? '') !== '' ? cause!.message : cause?.code ?? e.message
    throw new CliError(`cannot reach the node at ${base}: ${why}${e.waited === true ? ` (waited ${START_WAIT_MS / 1000} s for it to start)` : ''}. Is it running? Pass --node URL or set FLOTILLA_NODE.`)
  }
  const text = await res.text()
  let doc: unknown
  try { doc = text === '' ? {} : JSON.parse(text) } catch { doc = { raw: text } }
  if (!res.ok) throw failure(res, text, doc)
  return doc
}
