/**
 * Storage quotas with a real client (issue 12, "Quotas and disk space"): skopeo pushes into a
 * namespace with a quota; a push that would pass it is refused with DENIED naming the quota,
 * and skopeo shows that message; the same layers in a second repository of the namespace cost
 * nothing more; `flotilla quota list` shows the usage.
 */
import t from 'tap'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { removeTree } from '../helpers/cleanup.js'
import { busyboxImage, writeOciLayout, type BuiltImage } from '../helpers/images.js'
import { containersEnv } from '../helpers/podman.js'
import { startTarget } from '../helpers/registry.js'
import { missingTools, requireTool } from '../helpers/tools.js'
import { runCli } from '../helpers/cluster.js'

const reg = await startTarget(t)
const ctr = await containersEnv(t, [reg.host])
if (missingTools('skopeo') === undefined) await ctr.login('skopeo', reg.host, reg.credentials)
const work = await mkdtemp(join(tmpdir(), 'fl-quota-'))
t.teardown(async () => { await removeTree(work) })
const user = `${reg.credentials.username}:${reg.credentials.password}`
let n = 0

async function copy (image: BuiltImage, repo: string): Promise<{ code: number | null; stderr: string }> {
  const layout = join(work, `l${n++}`)
  await writeOciLayout(layout, image, 'v1')
  return await ctr.skopeo(['copy', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${reg.host}/${repo}:v1`])
}

async function usage (): Promise<number> {
  const r = await runCli(['quota', 'list', '--json', '--node', `http://${reg.host}`, '--user', user])
  return (JSON.parse(r.stdout) as { quotas: Array<{ usedBytes: number }> }).quotas[0]!.usedBytes
}

t.test('a namespace quota: pushes within it work, the one that would pass it is DENIED by name', { skip: process.env.FLOTILLA_TEST_TARGET === 'reference' ? 'quotas are Flotilla\'s' : false }, async (t) => {
  if (!requireTool(t, 'skopeo')) return
  const set = await runCli(['quota', 'set', 'team-a', '--repos', 'team-a/**', '--max', '3MiB', '--node', `http://${reg.host}`, '--user', user])
  t.equal(set.code, 0, `quota set: ${set.stderr}`)
  t.match(set.stdout, /quota team-a set: team-a\/\*\* may use 3\.0 MiB/)
  const small = busyboxImage({ randomLayerSizes: [1 << 20] })
  const ok = await copy(small, 'team-a/app')
  t.equal(ok.code, 0, `a 1 MiB image fits: ${ok.stderr}`)
  const after = await usage()
  t.ok(after > 1 << 20 && after < 3 << 20, `usage ${after} bytes`)
  const again = await copy(small, 'team-a/other')
  t.equal(again.code, 0, `the same image in another repository of the namespace: ${again.stderr}`)
  t.equal(await usage(), after, 'costs nothing more: each blob counts once')
  const big = busyboxImage({ randomLayerSizes: [3 << 20] })
  const refused = await copy(big, 'team-a/big')
  t.not(refused.code, 0, 'a push past the quota fails')
  t.match(refused.stderr, /denied.*quota team-a/is, `skopeo shows the quota's name: ${refused.stderr.slice(-400)}`)
  t.equal(await usage(), after, 'and nothing of it counts')
  const elsewhere = await copy(big, 'team-b/big')
  t.equal(elsewhere.code, 0, `outside the namespace the same push works: ${elsewhere.stderr}`)
  const list = await runCli(['quota', 'list', '--node', `http://${reg.host}`, '--user', user])
  t.match(list.stdout, /team-a\s+team-a\/\*\*\s+\d+\.\d MiB\s+3\.0 MiB\s+\d+%/, `a table for people:\n${list.stdout}`)
})
