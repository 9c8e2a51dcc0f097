/**
 * Client tests need real binaries from Debian packages (.ci/run installs them). A developer
 * machine may lack some: skip there, but in CI a missing tool is a broken setup, so fail.
 */
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'

/** Absolute path of an executable on PATH (plus the sbin dirs, where dockerd and runc live), or undefined. */
export function findTool (name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin']
  for (const dir of dirs) {
    if (dir === '') continue
    const p = join(dir, name)
    try { accessSync(p, constants.X_OK); return p } catch {}
  }
  return undefined
}

/** The part of a tap Test that requireTool uses (keeps helpers free of tap's big types). */
export interface SkippableTest {
  fail (message: string): unknown
  plan (n: number, comment?: string): unknown
}

/**
 * True when every tool is installed. Otherwise the test is failed (CI=true) or skipped with
 * a message naming the missing tools, and the caller must return at once.
 */
export function requireTool (t: SkippableTest, ...names: string[]): boolean {
  const missing = names.filter((n) => findTool(n) === undefined)
  if (missing.length === 0) return true
  const msg = `missing tool(s): ${missing.join(', ')} (apt-get install them, see .ci/run)`
  if (process.env.CI === 'true') t.fail(msg)
  else t.plan(0, msg)
  return false
}

/** For gating a whole file before starting shared processes: the reason to skip, or undefined. */
export function missingTools (...names: string[]): string | undefined {
  const missing = names.filter((n) => findTool(n) === undefined)
  return missing.length === 0 ? undefined : `missing tool(s): ${missing.join(', ')}`
}
