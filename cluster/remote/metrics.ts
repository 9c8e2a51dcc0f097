/**
 * Remote repositories' metrics (registered on the node's registry by src/http/app.ts).
 */
import { Counter, Gauge, type Metric } from 'prom-client'

export class RemoteMetrics {
  readonly requests = new Counter({ name: 'flotilla_remote_upstream_requests_total', help: 'Requests to remotes\' upstream registries, by remote, kind (manifest, blob, token, tags) and status', labelNames: ['remote', 'kind', 'status'] as const, registers: [] })
  readonly bytes = new Counter({ name: 'flotilla_remote_upstream_bytes_total', help: 'Blob bytes downloaded from remotes\' upstreams', labelNames: ['remote'] as const, registers: [] })
  readonly cache = new Counter({ name: 'flotilla_remote_cache_total', help: 'Pulls from remote repositories answered from the cache (hit) or the upstream (miss), by remote and kind', labelNames: ['remote', 'kind', 'result'] as const, registers: [] })
  readonly stale = new Counter({ name: 'flotilla_remote_stale_served_total', help: 'Cached tags served past their TTL because the upstream failed (stale-if-error), by remote', labelNames: ['remote'] as const, registers: [] })
  readonly fillErrors = new Counter({ name: 'flotilla_remote_fill_errors_total', help: 'Failed fills from an upstream (nothing cached), by remote and cause', labelNames: ['remote', 'cause'] as const, registers: [] })
  readonly peerStreams = new Counter({ name: 'flotilla_remote_peer_streams_total', help: 'Blob pulls of a remote served by streaming from the member filling it', labelNames: ['remote'] as const, registers: [] })

  /** Blob fills under way on this node (set by whoever runs them: src/http/remote.ts). */
  activeFills: () => number = () => 0
  readonly fills = new Gauge({ name: 'flotilla_remote_fills_active', help: 'Blobs this node is filling from an upstream now', registers: [], collect: () => { this.fills.set(this.activeFills()) } })

  all (): Metric[] { return [this.requests, this.bytes, this.cache, this.stale, this.fillErrors, this.peerStreams, this.fills] }
}
