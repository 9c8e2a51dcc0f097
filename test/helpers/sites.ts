/**
 * Cross-site peering tests' helpers (test/peering/): sites are clusters of real processes
 * (test/helpers/cluster.ts); tokens and peerings go through the real CLI, status through the API.
 */
import type { SiteStatusDoc } from '../../cluster/peering/sites.js'
import { authFetch, runCli, waitFor, type ClusterNode, type TestCluster } from './cluster.js'

export type { SiteStatusDoc }

const user = (c: TestCluster): string => `${c.credentials.username}:${c.credentials.password}`

/** `flotilla site token` at `node`: the token is the last line of stdout. */
export async function siteToken (c: TestCluster, node: ClusterNode = c.live()[0]!, ttl?: string): Promise<string> {
  const res = await runCli(['site', 'token', '--node', node.url, '--user', user(c), ...(ttl !== undefined ? ['--ttl', ttl] : [])])
  if (res.code !== 0) throw new Error(`flotilla site token failed (${res.code}): ${res.stderr}`)
  return res.stdout.trimEnd().split('\n').at(-1)!
}

/** `flotilla site peer ADDRESS --token T --name NAME [extra…]` at site `b`; never throws on failure. */
export async function sitePeer (b: TestCluster, address: string, token: string, name: string, extra: string[] = [], node: ClusterNode = b.live()[0]!): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return await runCli(['site', 'peer', address, '--token', token, '--name', name, '--node', node.url, '--user', user(b), ...extra])
}

/** GET /api/v1/sites/NAME at `node`. */
export async function siteStatus (c: TestCluster, name: string, node: ClusterNode = c.live()[0]!): Promise<SiteStatusDoc> {
  const res = await authFetch(`${node.url}/api/v1/sites/${name}`, c.credentials)
  const text = await res.text()
  if (res.status !== 200) throw new Error(`GET /api/v1/sites/${name} answered ${res.status}: ${text.slice(0, 300)}`)
  return JSON.parse(text) as SiteStatusDoc
}

/** GET /api/v1/sites at `node`. */
export async function siteList (c: TestCluster, node: ClusterNode = c.live()[0]!): Promise<{ site: string; head: number; peerings: SiteStatusDoc[] }> {
  const res = await authFetch(`${node.url}/api/v1/sites`, c.credentials)
  const text = await res.text()
  if (res.status !== 200) throw new Error(`GET /api/v1/sites answered ${res.status}: ${text.slice(0, 300)}`)
  return JSON.parse(text) as { site: string; head: number; peerings: SiteStatusDoc[] }
}

/**
 * Wait until the receiving site `b`'s cursor for `name` reaches the sending site `a`'s feed
 * head as it is now (every change acknowledged at `a` so far applied or passed over at `b`).
 */
export async function caughtUp (b: TestCluster, name: string, a: TestCluster, timeoutMs = 60_000, node?: ClusterNode): Promise<SiteStatusDoc> {
  const head = (await siteList(a, a.live()[0]!)).head
  return await waitFor(`site ${name} to reach the other site's feed head ${head}`, async () => {
    const s = await siteStatus(b, name, node ?? b.live()[0]!)
    return s.cursor !== null && s.cursor.seq >= head ? s : undefined
  }, timeoutMs, 200)
}

/** A manifest's status (and digest) at a node, by tag or digest. */
export async function manifestAt (c: TestCluster, node: ClusterNode, repo: string, ref: string, accept = 'application/vnd.oci.image.manifest.v1+json'): Promise<{ status: number; digest: string | null }> {
  const res = await authFetch(`${node.url}/v2/${repo}/manifests/${ref}`, c.credentials, { headers: { accept } })
  await res.arrayBuffer()
  return { status: res.status, digest: res.headers.get('docker-content-digest') }
}
