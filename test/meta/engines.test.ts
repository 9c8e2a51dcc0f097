/**
 * `npm install` on the oldest Node.js the project supports prints no engine warnings (issue 10,
 * item 14): every package in the lockfile accepts the `engines.node` floor of package.json.
 * p-retry@8 (a libp2p dependency) wanted Node 22; package.json overrides it to 7, whose API
 * libp2p's reconnect queue uses the same way (retries, factor, minTimeout, signal).
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
// semver comes with npm's own toolchain in node_modules (a tap dependency); no new dependency for one test.
const semver = require('semver') as { minVersion: (r: string) => { version: string } | null; satisfies: (v: string, r: string) => boolean }
const root = join(import.meta.dirname, '..', '..')

t.test('every locked package accepts the oldest supported Node.js', async (t) => {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { engines: { node: string } }
  const floor = semver.minVersion(pkg.engines.node)!.version
  t.equal(floor, '20.19.0')
  const lock = JSON.parse(await readFile(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { engines?: { node?: string } | string[]; version?: string; dev?: boolean; optional?: boolean }> }
  const refusing: string[] = []
  for (const [path, p] of Object.entries(lock.packages)) {
    const node = Array.isArray(p.engines) ? undefined : p.engines?.node
    if (path === '' || node === undefined) continue
    if (!semver.satisfies(floor, node)) refusing.push(`${path.replace(/^node_modules\//, '')}@${p.version ?? '?'} wants node ${node}`)
  }
  t.same(refusing, [], `no package refuses Node ${floor}`)
})
