/**
 * The Grafana dashboard (scripts/grafana/flotilla.json) queries only metrics a node serves:
 * every flotilla_* name in its expressions is a metric family on a running node's /metrics
 * (histogram series by their family), and the dashboard is valid JSON with what Grafana needs.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ROOT, startFlotilla } from '../../scripts/lib/procs.js'

const dashboard = JSON.parse(await readFile(join(ROOT, 'scripts', 'grafana', 'flotilla.json'), 'utf8')) as { title: string; uid: string; panels: Array<{ title: string; targets: Array<{ expr: string }> }> }

t.test('the dashboard is well formed', async (t) => {
  t.equal(dashboard.uid, 'flotilla')
  t.ok(dashboard.panels.length >= 10, `${dashboard.panels.length} panels`)
  for (const p of dashboard.panels) t.ok(p.targets.length > 0 && p.targets.every((x) => x.expr.length > 0), `${p.title} has queries`)
})

t.test('every metric the dashboard queries exists on a node', async (t) => {
  const node = await startFlotilla({ env: { FLOTILLA_LOG_LEVEL: 'warn' } })
  t.teardown(async () => { await node.stop() })
  // A request or two so that every route-labelled family has been touched.
  await fetch(`${node.url}/v2/`)
  const text = await (await fetch(`${node.url}/metrics`)).text()
  const families = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!))
  const queried = new Set<string>()
  for (const p of dashboard.panels) for (const x of p.targets) for (const m of x.expr.matchAll(/\bflotilla_[a-z0-9_]+/g)) queried.add(m[0])
  t.ok(queried.size >= 25, `${queried.size} metrics queried`)
  for (const name of [...queried].sort()) {
    const family = name.replace(/_(bucket|sum|count)$/, '')
    t.ok(families.has(name) || families.has(family), `${name} is served`)
  }
})
