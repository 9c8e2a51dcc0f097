/**
 * Real libp2p hosts on 127.0.0.1 for tests of one net/ module: each with a fresh identity in a
 * temp dir, admitting everyone; stopped and the dir removed at teardown.
 */
import { join } from 'node:path'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { createHost, type Host } from '../../net/host.js'
import { loadOrCreateIdentity } from '../../net/identity.js'
import type { Lifecycle } from './registry.js'

/** A maker of hosts tied to `t`: `await make('a')`. */
export async function testHosts (t: Lifecycle, prefix = 'flotilla-hosts-'): Promise<(name: string) => Promise<Host>> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  const hosts: Host[] = []
  t.teardown(async () => {
    await Promise.all(hosts.map(async (h) => await h.stop()))
    await rm(dir, { recursive: true, force: true })
  })
  return async (name) => {
    const id = await loadOrCreateIdentity(join(dir, `${name}.key`))
    const host = await createHost({ privateKey: id.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], admit: () => true })
    hosts.push(host)
    return host
  }
}
