/**
 * A Flotilla node in the test's own process, on a temp dir and a kernel-chosen port,
 * for HTTP tests of one endpoint at a time. Client and crash tests use real processes
 * (scripts/lib/procs.ts) instead.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { ConfigSchema, type Config } from '../../src/config.js'
import { RegistryNode } from '../../src/node.js'

export interface InProcessNode {
  url: string
  node: RegistryNode
  dataDir: string
  stop (): Promise<void>
}

export async function startInProcess (overrides: Partial<Config> = {}): Promise<InProcessNode> {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-http-'))
  const config = ConfigSchema.parse({ data: join(dir, 'data'), listen: '127.0.0.1:0', log: { level: 'silent' }, ...overrides })
  const node = await RegistryNode.open(config, pino({ level: 'silent' }))
  await node.start()
  const url = `http://127.0.0.1:${node.address!.port}`
  return {
    url,
    node,
    dataDir: config.data,
    async stop () {
      await node.stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}
