/**
 * Disaster recovery, issue 17: online backup, verify and restore, through the real CLI against
 * a real node (one node: the scenario needs no more; restore makes a cluster that a second node
 * joins).
 *
 * - a backup taken while 4 clients push; restored into a fresh data dir, the new node (new
 *   identity, new cluster id) serves every manifest acknowledged before the backup started,
 *   every blob matching its digest; a node joins the restored cluster and serves them too
 * - a second backup into the same DIR after more pushes copies only the new blobs
 * - a flipped byte in a blob and a truncated snapshot: refused by verify and by restore, which
 *   name the failed check; a non-empty data dir is refused
 * - the backup's blobs are held against GC while it runs; only administrators may take one;
 *   the backup metrics
 */
import t from 'tap'
import { appendFile, chmod, mkdir, readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { authFetch, checkImage, pushHttp, pushWorkload, runCli, startNode, startTestCluster, waitFor, type ClusterNode } from '../helpers/cluster.js'
import { image } from '../helpers/oci.js'
import { restoreBackup, RestoreRefused } from '../../cluster/backup/restore.js'
import { manifestAt, sitePeer, siteToken } from '../helpers/sites.js'
import { verifyBackup } from '../../cluster/backup/archive.js'

interface BackupDoc { dir: string; index: number; blobs: { total: number; copied: number; alreadyThere: number; bytesCopied: number } }
interface Manifest { index: number; blobs: Array<{ digest: string; size: number }>; snapshot: { file: string }; membership: { voters: string[] } }

t.test('backup while 4 clients push, verify, restore, incremental, corruption', async (t) => {
  const c = await startTestCluster(t, { size: 1 })
  const n1 = c.nodes[0]!
  const creds = c.credentials
  const user = `${creds.username}:${creds.password}`
  const dir = join(c.base, 'backup')

  // Some images before the pushers start, then 4 clients pushing while the backup runs.
  const before: Array<{ repo: string; tag: string; img: ReturnType<typeof image> }> = []
  for (let i = 0; i < 4; i++) {
    const img = image({ layers: 2, seed: `pre-${i}` })
    const r = await pushHttp(n1.url, creds, 'pre/app', img, `v${i}`)
    t.equal(r.outcome, 'ok', `pre-push ${i}`)
    before.push({ repo: 'pre/app', tag: `v${i}`, img })
  }
  const load = pushWorkload({ clients: 4, creds, targets: () => [{ url: n1.url, name: 'n1' }], repoPrefix: 'load', timeoutMs: 15_000, pauseMs: 150 })
  await waitFor('pushes under way', async () => load.records.filter((r) => r.result.outcome === 'ok').length >= 8 ? true : undefined, 60_000)
  const backupStart = Date.now()
  const first = await runCli(['backup', '--node', n1.url, '--user', user, '--out', dir, '--json'], { timeoutMs: 120_000 })
  const pushedDuring = load.records.filter((r) => r.start > backupStart && r.result.outcome === 'ok').length
  await load.stop()
  t.equal(first.code, 0, `backup exits 0: ${first.stderr}`)
  const doc1 = JSON.parse(first.stdout) as BackupDoc
  t.ok(doc1.index > 0, 'the backup records its applied index')
  t.equal(doc1.blobs.copied, doc1.blobs.total, 'a first backup copies every blob')
  t.ok(pushedDuring > 0, `pushes went on during the backup (${pushedDuring} acknowledged after it started)`)
  const acked = [...before, ...load.records.filter((r) => r.result.outcome === 'ok' && r.end < backupStart)]
  t.ok(acked.length >= 12, `${acked.length} manifests acknowledged before the backup started`)
  const m1 = JSON.parse(await readFile(join(dir, 'backup.json'), 'utf8')) as Manifest
  t.same(m1.membership.voters, [n1.peerId], 'the backup records the membership')

  let restored: ClusterNode | undefined
  t.test('restore into a fresh data dir: a new cluster serves every acknowledged manifest', async (t) => {
    const data = join(c.base, 'restored', 'data')
    // backup verify and restore (which verifies too) side by side: each CLI start costs seconds.
    const [v, r] = await Promise.all([runCli(['backup', 'verify', dir, '--json']), runCli(['restore', dir, '--data', data, '--json'], { timeoutMs: 120_000 })])
    t.equal(v.code, 0, v.stderr)
    const rep = JSON.parse(v.stdout) as { ok: boolean; blobsChecked: number }
    t.ok(rep.ok, 'backup verify passes a sound backup')
    t.equal(rep.blobsChecked, m1.blobs.length, 'every blob checked')
    t.equal(r.code, 0, r.stderr)
    const res = JSON.parse(r.stdout) as { peerId: string; clusterId: string; index: number }
    t.not(res.peerId, n1.peerId, 'a new node identity')
    restored = await startNode({ name: 'restored', base: c.base, adminPassword: creds.password, dataDir: data })
    c.nodes.push(restored)
    const st = await c.status(restored)
    t.same(st.members.map((m) => m.peerId), [restored.peerId], 'a single-node cluster of the new identity')
    const problems: string[] = []
    for (const a of acked) problems.push(...await checkImage(restored.url, creds, a.repo, a.img, a.tag))
    t.same(problems, [], `all ${acked.length} manifests acknowledged before the backup started are pullable, every blob matching its digest`)
    // Nothing in the backup lacks a blob: every blob it lists is on the restored node's disk.
    const missing = []
    for (const b of m1.blobs) if (await stat(join(data, 'blobs', 'sha256', b.digest.slice(7, 9), b.digest.slice(7))).catch(() => undefined) === undefined) missing.push(b.digest)
    t.same(missing, [], 'every blob of the snapshot is on the restored node')
    // The old cluster's join tokens and members are not trusted: the old node's identity is removed.
    const keyRes = await authFetch(`${restored.url}/api/v1/cluster`, creds)
    t.equal(keyRes.status, 200)
    await keyRes.arrayBuffer()

    // Others join it as usual: the joiner is sent the restored state as a Raft snapshot.
    const token = await c.token({ via: restored })
    const joiner = await startNode({ name: 'joiner', base: c.base, adminPassword: creds.password, join: { url: restored.url, token }, readyTimeoutMs: 90_000 })
    c.nodes.push(joiner)
    await c.converged({ among: [restored, joiner], voters: 2, timeoutMs: 60_000 })
    const some = acked.slice(0, 3)
    const jp: string[] = []
    for (const a of some) jp.push(...await checkImage(joiner.url, creds, a.repo, a.img, a.tag))
    t.same(jp, [], 'the joined node serves the restored images')
  })

  // Issue 17: "A cluster restored from a backup is then peered with another site." To its peers
  // it is a new site, whose history (the old feed, tags' versions) is its own.
  t.test('the restored cluster peers with another site: what it restored and what it takes next reach that site', async (t) => {
    if (restored === undefined) { t.fail('no restored node'); return }
    const other = await startTestCluster(t, { size: 1 })
    const peered = await sitePeer(other, restored.url, await siteToken(c, restored), 'restored')
    t.equal(peered.code, 0, `site peer with the restored cluster: ${peered.stderr}`)
    const next = image({ layers: 1, seed: 'after-restore' })
    t.equal((await pushHttp(restored.url, creds, 'post/restored', next, 'v1')).outcome, 'ok', 'a push at the restored cluster')
    await waitFor('the restored cluster\'s images at the other site', async () => (await manifestAt(other, other.nodes[0]!, 'post/restored', 'v1')).status === 200 ? true : undefined, 90_000, 250)
    const problems: string[] = []
    for (const a of acked.slice(0, 3)) problems.push(...await checkImage(other.nodes[0]!.url, other.credentials, a.repo, a.img, a.tag))
    problems.push(...await checkImage(other.nodes[0]!.url, other.credentials, 'post/restored', next, 'v1'))
    t.same(problems, [], 'images restored from the backup, tags included, and one pushed after, at the other site')
  })

  t.test('an incremental backup copies only the new blobs', async (t) => {
    for (let i = 0; i < 3; i++) t.equal((await pushHttp(n1.url, creds, 'post/app', image({ layers: 2, seed: `post-${i}` }), `v${i}`)).outcome, 'ok')
    const second = await runCli(['backup', '--node', n1.url, '--user', user, '--out', dir, '--json'], { timeoutMs: 120_000 })
    t.equal(second.code, 0, second.stderr)
    const doc2 = JSON.parse(second.stdout) as BackupDoc
    const m2 = JSON.parse(await readFile(join(dir, 'backup.json'), 'utf8')) as Manifest
    const old = new Set(m1.blobs.map((b) => b.digest))
    const fresh = m2.blobs.filter((b) => !old.has(b.digest))
    t.ok(doc2.index > doc1.index, 'a later index')
    t.ok(fresh.length >= 9, `${fresh.length} new blobs (pushed during the first backup, and 3 images after it)`)
    t.equal(doc2.blobs.copied, fresh.length, 'only the new blobs were copied')
    t.equal(doc2.blobs.alreadyThere, m2.blobs.length - fresh.length, 'the others were already there')
    t.same((await readdir(dir)).filter((f) => f.startsWith('snapshot-')), [m2.snapshot.file], 'one snapshot: the one backup.json names')
  })

  t.test('a corrupted backup is refused by verify and by restore, naming the failed check', async (t) => {
    const m = JSON.parse(await readFile(join(dir, 'backup.json'), 'utf8')) as Manifest
    const victim = m.blobs[0]!
    const path = join(dir, 'blobs', 'sha256', victim.digest.slice(7, 9), victim.digest.slice(7))
    const good = await readFile(path)
    const bad = Buffer.from(good)
    bad[Math.floor(bad.length / 2)]! ^= 0x01
    await chmod(path, 0o644)
    await writeFile(path, bad)
    // Through the CLI as an operator runs it: the table names the blob and the check.
    const target = join(c.base, 'refused1')
    const [v, r] = await Promise.all([runCli(['backup', 'verify', dir]), runCli(['restore', dir, '--data', target])])
    t.equal(v.code, 1, 'verify fails')
    t.match(v.stdout, new RegExp(`blob-digest\\s+${victim.digest}\\s+.*hashes to sha256:`), 'verify names the blob and the check')
    t.match(v.stderr, /failed verification: 1 problem \(first: blob-digest/)
    t.equal(r.code, 1)
    t.match(r.stderr, /restore refused: .*fails verification.*blob-digest/, 'restore names the failed check')
    t.equal(await stat(target).then(() => true, () => false), false, 'nothing restored')
    await writeFile(path, good)

    const snap = join(dir, m.snapshot.file)
    const snapBytes = await readFile(snap)
    await chmod(snap, 0o600)
    await truncate(snap, Math.floor(snapBytes.length / 2))
    // The restore's own checks run in this process meanwhile (each CLI start costs seconds): the same function the CLI calls.
    const [v2, refused] = await Promise.all([runCli(['backup', 'verify', dir, '--json']), restoreBackup(dir, join(c.base, 'refused2')).then(() => undefined, (err: unknown) => err)])
    t.equal(v2.code, 1)
    const rep2 = JSON.parse(v2.stdout) as { ok: boolean; problems: Array<{ check: string }> }
    t.equal(rep2.ok, false)
    t.same(rep2.problems.map((p) => p.check), ['snapshot-size', 'snapshot-checksum'], 'a truncated snapshot fails its size and checksum')
    t.ok(refused instanceof RestoreRefused)
    t.match((refused as Error).message, /fails verification .*snapshot-size/)
    await writeFile(snap, snapBytes)
    t.equal((await verifyBackup(dir)).ok, true, 'sound again once repaired')

    // A data dir that already holds data is refused, sound backup or not.
    const used = join(c.base, 'used')
    await mkdir(used, { recursive: true })
    await appendFile(join(used, 'something'), 'x')
    const r3 = await restoreBackup(dir, used).then(() => undefined, (err: unknown) => err)
    t.match((r3 as Error).message, /is not empty/)
  })

  t.test('the backup holds its blobs against GC; admins only; metrics', async (t) => {
    const img = image({ layers: 1, seed: 'gc-held' })
    t.equal((await pushHttp(n1.url, creds, 'gc/app', img, 'v1')).outcome, 'ok')
    const begin = await authFetch(`${n1.url}/api/v1/backups`, creds, { method: 'POST' })
    t.equal(begin.status, 201)
    const info = await begin.json() as { id: string; blobs: Array<{ digest: string }> }
    const layer = img.layers[0]!.digest
    t.ok(info.blobs.some((b) => b.digest === layer), 'the snapshot knows the layer')
    const del = await authFetch(`${n1.url}/v2/gc/app/manifests/${img.digest}`, creds, { method: 'DELETE' })
    t.equal(del.status, 202)
    const gc = await authFetch(`${n1.url}/api/v1/gc`, creds, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ graceSeconds: 0 }) }, 60_000)
    const report = await gc.json() as { kept: number; keptDigests: string[]; blobs: Array<{ digest: string }> }
    t.ok(report.keptDigests.includes(layer), 'GC kept the layer the backup holds')
    const blob = await authFetch(`${n1.url}/api/v1/backups/${info.id}/blobs/${layer}`, creds)
    t.equal(blob.status, 200, 'the backup can still fetch it')
    await blob.arrayBuffer()
    const end = await authFetch(`${n1.url}/api/v1/backups/${info.id}?outcome=failed`, creds, { method: 'DELETE' })
    t.equal(end.status, 200)
    await end.arrayBuffer()
    const gc2 = await authFetch(`${n1.url}/api/v1/gc`, creds, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ graceSeconds: 0 }) }, 60_000)
    const report2 = await gc2.json() as { blobs: Array<{ digest: string }> }
    t.ok(report2.blobs.some((b) => b.digest === layer), 'released, the layer is collected')

    // A non-admin user may not take a backup.
    const mk = await authFetch(`${n1.url}/api/v1/users`, creds, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'bob', password: 'bob-password-1234' }) })
    t.equal(mk.status, 201)
    const denied = await authFetch(`${n1.url}/api/v1/backups`, { username: 'bob', password: 'bob-password-1234' }, { method: 'POST' })
    t.equal(denied.status, 403)
    t.match(await denied.text(), /DENIED/)
    const metrics = await (await fetch(`${n1.url}/metrics`)).text()
    const last = /^flotilla_backup_last_success_timestamp_seconds (\S+)$/m.exec(metrics)
    t.ok(last !== null && Number(last[1]) > backupStart / 1000, 'last success recorded')
    t.match(metrics, /flotilla_backup_bytes_total\{kind="blob"\} [1-9]/)
    t.match(metrics, /flotilla_backup_duration_seconds_count\{outcome="ok"\} 2/)
    t.match(metrics, /flotilla_backup_duration_seconds_count\{outcome="failed"\} 1/)
  })
})
