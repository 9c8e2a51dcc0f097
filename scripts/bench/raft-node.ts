/**
 * One Raft voter in its own process, for scripts/bench/raft.ts --procs: a RaftDriver on
 * LevelLogStorage (fsync) over the real transport (libp2p: TCP + noise + yamux, one framed
 * stream per peer). Speaks JSON lines: stdin takes {cmd:'run', concurrency, seconds, valueBytes};
 * stdout reports {ready, leader} and {result}.
 *
 *   args: --dir DIR --index I --keys K1,K2,K3 (hex protobuf private keys) --ports P1,P2,P3
 */
import { parseArgs } from 'node:util'
import { createInterface } from 'node:readline'
import { performance } from 'node:perf_hooks'
import { randomBytes } from 'node:crypto'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { createHost } from '../../net/host.js'
import { FrameTransport } from '../../net/frame-transport.js'
import { LevelLogStorage } from '../../storage/raftlog/level-log-storage.js'
import { RaftDriver } from '../../cluster/raft/driver.js'
import { percentile } from './lib/stats.js'

const { values: a } = parseArgs({ options: { dir: { type: 'string' }, index: { type: 'string' }, keys: { type: 'string' }, ports: { type: 'string' } } })
const keys = a.keys!.split(',').map((k) => privateKeyFromProtobuf(Buffer.from(k, 'hex')))
const ids = keys.map((k) => peerIdFromPrivateKey(k).toString())
const ports = a.ports!.split(',').map(Number)
const me = Number(a.index)
const out = (o: unknown): void => { process.stdout.write(JSON.stringify(o) + '\n') }

const host = await createHost({ privateKey: keys[me]!, listen: [`/ip4/127.0.0.1/tcp/${ports[me]!}`], admit: (p) => ids.includes(p) })
const transport = new FrameTransport({ host, protocol: '/flotilla/raft/1.0.0', accept: (p) => ids.includes(p) })
await transport.start()
for (const [i, id] of ids.entries()) if (i !== me) await transport.setAddresses(id, [`/ip4/127.0.0.1/tcp/${ports[i]!}`])
const storage = new LevelLogStorage(`${a.dir!}/raft`)
await storage.open()
const driver = new RaftDriver({ id: ids[me]!, storage, transport, apply: async (e) => e.index, bootstrap: ids, tickMs: 50 })
await driver.start()
const timer = setInterval(() => { out({ ready: true, leader: driver.leader, isLeader: driver.isLeader }) }, 200)

for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { cmd: string; concurrency: number; seconds: number; valueBytes: number }
  if (cmd.cmd === 'stop') break
  clearInterval(timer)
  const value = randomBytes(cmd.valueBytes)
  const lat: number[] = []
  const end = performance.now() + cmd.seconds * 1000
  const start = performance.now()
  await Promise.all(Array.from({ length: cmd.concurrency }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now()
      await driver.propose(value)
      lat.push(performance.now() - t0)
    }
  }))
  const elapsed = (performance.now() - start) / 1000
  out({ result: { concurrency: cmd.concurrency, ops: lat.length, perSec: lat.length / elapsed, p50: percentile(lat, 50), p99: percentile(lat, 99) } })
}
await driver.stop()
await transport.stop()
await host.stop()
await storage.close()
process.exit(0)
