/**
 * Retention policies (cluster/retention/policy.ts) on their own: which tags and untagged
 * manifests each rule deletes, what it always keeps, and the policies it refuses.
 */
import t from 'tap'
import { checkPolicy, evaluate, semver, type RepoState, type RetentionPolicy } from '../../cluster/retention/policy.js'
import { PullRecorder } from '../../cluster/retention/pulls.js'
import { MemoryKV } from '../../storage/kv/memory-kv.js'
import { MetadataStateMachine } from '../../cluster/metadata/state-machine.js'
import { MetadataQueries } from '../../cluster/metadata/queries.js'
import type { Command } from '../../cluster/metadata/commands.js'
import pino from 'pino'

const DAY = 86_400_000
const NOW = 1_000 * DAY
const d = (c: string): string => 'sha256:' + c.repeat(64)

function repo (tags: Array<[string, string, number]>, manifests: RepoState['manifests'] = [], immutable = false): RepoState {
  const ms = new Map(manifests.map((m) => [m.digest, m]))
  for (const [, digest, at] of tags) if (!ms.has(digest)) ms.set(digest, { digest, at, children: 0 })
  return { repo: 'ci/app', tags: tags.map(([tag, digest, at]) => ({ tag, digest, at })), manifests: [...ms.values()], immutable }
}
const policy = (p: Partial<RetentionPolicy>): RetentionPolicy => ({ name: 'p', repositories: ['ci/**'], ...p })
const deleted = (v: ReturnType<typeof evaluate>): string[] => v.tags.map((x) => x.tag).sort()

t.test('keep the last N by push time: the rest go; excluded tags neither count nor go', async (t) => {
  const s = repo([['a', d('1'), NOW - 5 * DAY], ['b', d('2'), NOW - 4 * DAY], ['c', d('3'), NOW - 3 * DAY], ['release-1', d('4'), NOW - 9 * DAY], ['d', d('5'), NOW - DAY]])
  t.same(deleted(evaluate(policy({ keepLast: 2 }), s, NOW)), ['a', 'b', 'release-1'])
  t.same(deleted(evaluate(policy({ keepLast: 2, exclude: ['release-*'] }), s, NOW)), ['a', 'b'], 'release-1 excluded')
  t.same(deleted(evaluate(policy({ keepLast: 10 }), s, NOW)), [], 'fewer tags than N: nothing')
})

t.test('keep the last N by semantic version: 1.10 is newer than 1.9, a release newer than its rc; non-versions stay', async (t) => {
  const s = repo([['v1.9.0', d('1'), NOW - DAY], ['v1.10.0', d('2'), NOW - 5 * DAY], ['1.10.1-rc.1', d('3'), NOW], ['1.10.1', d('4'), NOW - 2 * DAY], ['latest', d('5'), NOW - 30 * DAY], ['v1.2', d('6'), NOW]])
  t.same(deleted(evaluate(policy({ keepLast: 2, by: 'semver' }), s, NOW)), ['v1.10.0', 'v1.2', 'v1.9.0'], 'kept: 1.10.1 and its release candidate, the two highest versions; latest is no version')
  t.same(semver('latest'), undefined)
  t.same(semver('v2'), { core: [2, 0, 0], pre: undefined })
})

t.test('older than D days, and not pulled within D days, with the N newest always kept', async (t) => {
  const s = repo([['old', d('1'), NOW - 40 * DAY], ['older', d('2'), NOW - 50 * DAY], ['new', d('3'), NOW - 2 * DAY]], [
    { digest: d('1'), at: NOW - 40 * DAY, children: 0, lastPulled: NOW - DAY },
    { digest: d('2'), at: NOW - 50 * DAY, children: 0 },
  ])
  t.same(deleted(evaluate(policy({ olderThanDays: 30 }), s, NOW)), ['old', 'older'])
  t.same(deleted(evaluate(policy({ olderThanDays: 30, keepLast: 2 }), s, NOW)), ['older'], 'old is among the 2 newest')
  t.same(deleted(evaluate(policy({ notPulledDays: 30 }), s, NOW)), ['older'], 'old was pulled yesterday; new was pushed 2 days ago')
  t.same(deleted(evaluate(policy({ olderThanDays: 30, notPulledDays: 30 }), s, NOW)), ['older'], 'both rules must hold')
  t.match(evaluate(policy({ olderThanDays: 30 }), s, NOW).tags[0]!.why, /pushed more than 30 days ago/)
})

t.test('untagged manifests: old enough, not an index child, not the referrer of one that exists', async (t) => {
  const s = repo([['v1', d('1'), NOW - DAY], ['v0', d('9'), NOW - 30 * DAY]], [
    { digest: d('2'), at: NOW - 3 * DAY, children: 0 }, // untagged, old: goes
    { digest: d('3'), at: NOW - 3 * DAY, children: 1 }, // a child of an index: stays
    { digest: d('4'), at: NOW - 3 * DAY, children: 0, subject: d('1') }, // a signature of v1: stays
    { digest: d('5'), at: NOW - 3 * DAY, children: 0, subject: d('7') }, // its subject is gone: goes
    { digest: d('6'), at: NOW - 3_600_000, children: 0 }, // an hour old: stays (24 h)
  ])
  const v = evaluate(policy({ untagged: true }), s, NOW)
  t.same(v.manifests.map((m) => m.digest).sort(), [d('2'), d('5')].sort())
  const both = evaluate(policy({ untagged: true, olderThanDays: 10 }), s, NOW)
  t.same(deleted(both), ['v0'], 'v0 goes by age')
  t.ok(both.manifests.some((m) => m.digest === d('9')), 'and its manifest, untagged now, in the same run')
})

t.test('an immutable repository, and one the patterns do not match, are left alone', async (t) => {
  const s = repo([['a', d('1'), NOW - 90 * DAY]])
  t.same(deleted(evaluate(policy({ olderThanDays: 1 }), { ...s, immutable: true }, NOW)), [])
  t.same(deleted(evaluate(policy({ olderThanDays: 1, repositories: ['other/**'] }), s, NOW)), [])
})

t.test('malformed policies are refused with the field named', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ name: 'x', repositories: [] }, /repositories/],
    [{ name: 'x', repositories: ['ci/**'] }, /deletes nothing/],
    [{ name: 'x', repositories: ['ci/**'], keepLast: -1 }, /keepLast/],
    [{ name: 'x', repositories: ['ci/**'], keepLast: 1, by: 'size' }, /by must be/],
    [{ name: 'x', repositories: ['ci/**'], olderThanDays: 'ten' }, /olderThanDays/],
    [{ name: 'x y', repositories: ['ci/**'], untagged: true }, /name/],
    [{ name: 'x', repositories: ['ci/**'], untagged: true, color: 'red' }, /unknown field/],
  ]
  for (const [p, re] of bad) t.throws(() => checkPolicy(p as RetentionPolicy), { code: 'BAD_REQUEST', message: re }, JSON.stringify(p))
  t.doesNotThrow(() => checkPolicy(policy({ keepLast: 3, by: 'semver', exclude: ['release-*'] })))
})

t.test('pull times: batched per flush, a later time wins, at most one record per hour per manifest', async (t) => {
  const kv = new MemoryKV()
  await kv.open()
  const sm = new MetadataStateMachine(kv, { sync: false })
  const q = new MetadataQueries(kv)
  const submitted: Command[] = []
  const sink = { submit: async (c: Command) => { submitted.push(c); return await sm.apply({ at: 0, command: c }) }, barrier: async () => {} }
  await sm.apply({ command: { type: 'LinkBlob', repo: 'ci/app', digest: d('b'), size: 1, at: 1 } })
  await sm.apply({ command: { type: 'PutManifest', repo: 'ci/app', digest: d('1'), body: Buffer.from('{}').toString('base64'), mediaType: 'application/vnd.oci.image.manifest.v1+json', tags: ['v1'], blobs: [d('b')], manifests: [], at: 1 } })
  const rec = new PullRecorder(sink, pino({ level: 'silent' }))
  const at = Date.now()
  for (let i = 0; i < 100; i++) rec.record('ci/app', d('1'), at + i)
  rec.record('ci/app', d('2'), at) // no such manifest: not kept
  t.equal(await rec.flush(), 2, 'one flush, two distinct manifests')
  t.equal(submitted.length, 1, 'in one command')
  t.equal(await q.lastPulled('ci/app', d('1')), at + 99, 'the latest pull time')
  t.equal(await q.lastPulled('ci/app', d('2')), undefined, 'a manifest that does not exist gets no record')
  rec.record('ci/app', d('1'), at + 60_000)
  t.equal(await rec.flush(), 0, 'pulled again within the hour: nothing to record')
  rec.record('ci/app', d('1'), at + 3_700_000)
  t.equal(await rec.flush(), 1, 'an hour later: recorded again')
  await sm.apply({ command: { type: 'RecordPulls', pulls: [{ repo: 'ci/app', digest: d('1'), at: 10 }] } })
  t.equal(await q.lastPulled('ci/app', d('1')), at + 3_700_000, 'an older time never replaces a newer one')
})
