/**
 * What CLI commands share to talk to a node's HTTP API: the node URL, credentials, and
 * errors turned into one clear line.
 */
export interface NodeOptions {
  node?: string
  user?: string
}

export function nodeUrl (opts: NodeOptions): string {
  return opts.node ?? process.env.FLOTILLA_NODE ?? 'http://127.0.0.1:5000'
}

export class CliError extends Error {
  static override name = 'CliError'
  constructor (message: string) { super(message); this.name = 'CliError' }
}

/** Call the node's API; returns the parsed JSON body, or throws a CliError naming the cause. */
export async function callApi (opts: NodeOptions, method: string, path: string, body?: unknown): Promise<unknown> {
  const base = nodeUrl(opts)
  const headers: Record<string, string> = {}
  const user = opts.user ?? process.env.FLOTILLA_USER
  if (user !== undefined && user !== '') headers.authorization = 'Basic ' + Buffer.from(user).toString('base64')
  if (body !== undefined) headers['content-type'] = 'application/json'
  let res: Response
  try {
    res = await fetch(new URL(path, base), { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(120_000) })
  } catch (err) {
    throw new CliError(`cannot reach the node at ${base}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}. Is it running? Pass --node URL or set FLOTILLA_NODE.`)
  }
  const text = await res.text()
  let doc: unknown
  try { doc = text === '' ? {} : JSON.parse(text) } catch { doc = { raw: text } }
  if (!res.ok) {
    const msg = (doc as { errors?: Array<{ message?: string }> }).errors?.[0]?.message ?? text.slice(0, 300)
    const hint = res.status === 401 ? ' Pass --user NAME:PASSWORD or set FLOTILLA_USER.' : ''
    throw new CliError(`${method} ${path} failed with ${res.status}: ${msg}.${hint}`)
  }
  return doc
}
