/**
 * A Flotilla node in the test's own process, on a temp dir and a kernel-chosen port,
 * for HTTP tests of one endpoint at a time. Client and crash tests use real processes
 * (scripts/lib/procs.ts) instead.
 *
 * Access control is on, as in production: the node's `admin` gets a known password, handed
 * back as `credentials`, and `fetch` sends it (Basic) on every request that names no
 * Authorization of its own. Tests of the OCI API that exercise the protocol rather than
 * access control may instead open the registry to anonymous callers explicitly:
 * `startInProcess({ auth: { anonymous: OPEN_ANONYMOUS } })`.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { pino } from 'pino'
import type { z } from 'zod'
import { ConfigSchema } from '../../src/config.js'
import { RegistryNode } from '../../src/node.js'

/** Anonymous callers may read, write and delete everything: for protocol tests only. */
export const OPEN_ANONYMOUS: Array<{ repositories: string[]; actions: Array<'read' | 'write' | 'delete'> }> = [{ repositories: ['**'], actions: ['read', 'write', 'delete'] }]

export interface Credentials { username: string; password: string }

export interface InProcessNode {
  url: string
  node: RegistryNode
  dataDir: string
  /** The admin's credentials. */
  credentials: Credentials
  /** `Basic …` for the admin. */
  authorization: string
  /** fetch that signs in as the admin unless the request sets Authorization itself. */
  fetch: (input: string, init?: RequestInit) => Promise<Response>
  stop (): Promise<void>
}

export function basic (c: Credentials): string {
  return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64')
}

/** A fetch that adds `authorization` to requests without one. */
export function authedFetch (authorization: string): (input: string, init?: RequestInit) => Promise<Response> {
  return async (input, init = {}) => {
    const headers = new Headers(init.headers)
    if (!headers.has('authorization')) headers.set('authorization', authorization)
    return await fetch(input, { ...init, headers })
  }
}

export async function startInProcess (overrides: Partial<z.input<typeof ConfigSchema>> = {}): Promise<InProcessNode> {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-http-'))
  const password = overrides.auth?.initialAdminPassword ?? `test-${randomBytes(12).toString('hex')}`
  const config = ConfigSchema.parse({
    data: join(dir, 'data'),
    listen: '127.0.0.1:0',
    log: { level: 'silent' },
    ...overrides,
    auth: { ...overrides.auth, initialAdminPassword: password },
  })
  const node = await RegistryNode.open(config, pino({ level: 'silent' }))
  await node.start()
  const url = `http://127.0.0.1:${node.address!.port}`
  const credentials = { username: 'admin', password }
  const authorization = basic(credentials)
  return {
    url,
    node,
    dataDir: config.data,
    credentials,
    authorization,
    fetch: authedFetch(authorization),
    async stop () {
      await node.stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}
