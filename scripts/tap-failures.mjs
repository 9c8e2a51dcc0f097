#!/usr/bin/env node
// After `tap`: repeat every failed assertion (with its test file and the subtest path) at the
// end of the output, where a CI log's tail shows it, and the slowest files. Exit status is
// tap's, passed in as the first argument.
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'

const status = Number(process.argv[2] ?? 0)
const root = '.tap/test-results'

async function files (dir) {
  let out = []
  let entries
  try { entries = await readdir(dir, { withFileTypes: true }) } catch { return out }
  for (const e of entries) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out = out.concat(await files(p))
    else if (e.name.endsWith('.tap')) out.push(p)
  }
  return out
}

const failures = []
const times = []
for (const f of await files(root)) {
  const lines = (await readFile(f, 'utf8')).split('\n')
  const name = f.slice(root.length + 1).replace(/\.tap$/, '')
  const stack = []
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]
    const sub = /^(\s*)# Subtest: (.*)$/.exec(l)
    if (sub) { const depth = sub[1].length / 4; stack.length = depth; stack[depth] = sub[2]; continue }
    const bad = /^(\s*)not ok \d+ - (.*)$/.exec(l)
    if (bad) {
      const depth = bad[1].length / 4
      // A failed subtest's own line repeats its children's failures: report the leaves only.
      const what = bad[2].replace(/ # time=[\d.]+ms$/, '')
      if (stack[depth] === what && /# time=/.test(bad[2])) continue
      const detail = []
      if (/^\s*---\s*$/.test(lines[i + 1] ?? '')) {
        for (let j = i + 2; j < lines.length && j < i + 40 && !/^\s*\.\.\.\s*$/.test(lines[j]); j++) detail.push(lines[j].trim())
      }
      failures.push({ file: name, path: stack.slice(0, depth).filter(Boolean).join(' > '), what, detail: detail.slice(0, 30) })
    }
    const t = /^# time=([\d.]+)ms/.exec(l)
    if (t) times.push({ file: name, ms: Number(t[1]) })
  }
}

times.sort((a, b) => b.ms - a.ms)
console.log('\n# slowest test files')
for (const t of times.slice(0, 10)) console.log(`#   ${(t.ms / 1000).toFixed(1).padStart(6)} s  ${t.file}`)
if (failures.length === 0) {
  console.log(status === 0 ? '# no failed assertions' : `# tap exited ${status}, but no failed assertion is recorded in ${root}`)
} else {
  console.log(`\n# ${failures.length} failed assertion(s):`)
  for (const f of failures) {
    console.log(`# not ok: ${f.file}${f.path ? ` > ${f.path}` : ''} > ${f.what}`)
    for (const d of f.detail) console.log(`#     ${d}`)
  }
}
process.exit(status)
