/** Removing a container engine's temp dir safely: unmount whatever it left mounted there first. */
import { readFile, rm } from 'node:fs/promises'
import { run } from './exec.js'

/** Mount points at or below `dir`, deepest first (so children unmount before parents). */
export async function mountsUnder (dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '')
  const points = info.split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(dir + '/')))
    // mountinfo escapes spaces etc. as \040; our temp dirs have none, but decode anyway.
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
  return [...new Set(points)].sort((a, b) => b.length - a.length)
}

/** Lazily unmount everything under `dir`, then delete it. Never throws: it runs in teardown. */
export async function removeTree (dir: string): Promise<void> {
  for (const p of await mountsUnder(dir)) await run('umount', ['-l', p]).catch(() => undefined)
  await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined)
}

/** True while a process with this pid exists (signal 0 only checks). */
export function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
}

/** Wait until `pid` is gone, up to timeoutMs; true if it went. */
export async function waitGone (pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!alive(pid)) return true
    await new Promise((r) => setTimeout(r, 100))
  }
  return !alive(pid)
}
