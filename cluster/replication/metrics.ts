/**
 * What blob replication costs, in Prometheus metrics (served at /metrics with the rest).
 *
 *   flotilla_replication_bytes_sent_total{route}   blob bytes this node sent to other nodes over
 *                                                   node-to-node HTTP: `mirrors` (an upload relayed
 *                                                   down its chain, upload-mirror.ts), `blobs` (a
 *                                                   copy or a fetch-through served to a peer)
 *   flotilla_upload_chain_commits_total{outcome}   uploads this node owned, committed down their
 *                                                   chain: `quorum` (W-1 hops confirmed before the
 *                                                   blob's 201), `short` (the chain was cut or too
 *                                                   short: the manifest PUT waits for replication)
 *
 * The benchmark (scripts/bench/cluster.ts) reads the origin's counter before and after a push:
 * its egress in copies of the blob.
 */
import { Counter } from 'prom-client'

export type ReplicationRoute = 'mirrors' | 'blobs'

export class ReplicationMetrics {
  readonly bytesSent = new Counter({
    name: 'flotilla_replication_bytes_sent_total',
    help: 'Blob bytes sent to other nodes over node-to-node HTTP, by route: mirrors (upload chains), blobs (copies and fetch-through served)',
    labelNames: ['route'] as const,
    registers: [],
  })

  readonly chainCommits = new Counter({
    name: 'flotilla_upload_chain_commits_total',
    help: 'Uploads this node owned, committed down their chain: quorum (W-1 hops confirmed before the blob\'s 201), short (the chain was cut or too short; the manifest PUT waits for replication)',
    labelNames: ['outcome'] as const,
    registers: [],
  })

  constructor () {
    // Every series from the start, so that a reader's first sample is 0 rather than absent.
    this.bytesSent.inc({ route: 'mirrors' }, 0)
    this.bytesSent.inc({ route: 'blobs' }, 0)
    this.chainCommits.inc({ outcome: 'quorum' }, 0)
    this.chainCommits.inc({ outcome: 'short' }, 0)
  }

  sent (route: ReplicationRoute, bytes: number): void {
    if (bytes > 0) this.bytesSent.inc({ route }, bytes)
  }

  /** Every metric here, to register with the node's registry. */
  all (): Counter[] {
    return [this.bytesSent, this.chainCommits]
  }
}
