/**
 * Samples a process's memory from /proc/PID/status (VmRSS, VmHWM) at a fixed interval.
 * The process's own figures are kept apart from its children's (tsx runs an esbuild service
 * process beside Flotilla), and the peak of the sum is kept too.
 */
import { readFileSync, readdirSync } from 'node:fs'

export interface MemSample { rssKiB: number; hwmKiB: number }

function readStatus (pid: number): MemSample | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8')
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(text)
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(text)
    return { rssKiB: Number(rss?.[1] ?? 0), hwmKiB: Number(hwm?.[1] ?? 0) }
  } catch { return undefined }
}

/** Direct and indirect children, through /proc/PID/task/TID/children (bounded depth). */
function descendants (pid: number, depth = 0): number[] {
  if (depth > 4) return []
  const out: number[] = []
  let tasks: string[] = []
  try { tasks = readdirSync(`/proc/${pid}/task`) } catch { return out }
  for (const tid of tasks.slice(0, 256)) {
    let kids = ''
    try { kids = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8') } catch { continue }
    for (const k of kids.trim().split(/\s+/).filter(Boolean)) {
      const child = Number(k)
      out.push(child, ...descendants(child, depth + 1))
    }
  }
  return out
}

/** The process's own VmRSS/VmHWM, plus the summed VmRSS of its descendants. */
export function readMem (pid: number): MemSample & { children: number; childrenRssKiB: number } {
  const own = readStatus(pid) ?? { rssKiB: 0, hwmKiB: 0 }
  const kids = descendants(pid)
  let childrenRssKiB = 0
  for (const k of kids) childrenRssKiB += readStatus(k)?.rssKiB ?? 0
  return { rssKiB: own.rssKiB, hwmKiB: own.hwmKiB, children: kids.length, childrenRssKiB }
}

export class RssSampler {
  private timer: NodeJS.Timeout | undefined
  peakRssKiB = 0
  peakTreeKiB = 0
  startRssKiB = 0
  lastHwmKiB = 0
  samples = 0
  maxChildren = 0
  constructor (readonly pid: number, readonly intervalMs = 50) {}

  start (): this {
    const first = readMem(this.pid)
    this.startRssKiB = first.rssKiB
    this.record(first)
    this.timer = setInterval(() => this.record(readMem(this.pid)), this.intervalMs)
    return this
  }

  private record (m: MemSample & { children: number; childrenRssKiB: number }): void {
    this.samples++
    if (m.rssKiB > this.peakRssKiB) this.peakRssKiB = m.rssKiB
    if (m.rssKiB + m.childrenRssKiB > this.peakTreeKiB) this.peakTreeKiB = m.rssKiB + m.childrenRssKiB
    if (m.hwmKiB > 0) this.lastHwmKiB = m.hwmKiB
    if (m.children > this.maxChildren) this.maxChildren = m.children
  }

  stop (): { peakRssMiB: number; peakTreeMiB: number; startRssMiB: number; hwmMiB: number; samples: number; children: number } {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    this.record(readMem(this.pid))
    return {
      peakRssMiB: this.peakRssKiB / 1024,
      peakTreeMiB: this.peakTreeKiB / 1024,
      startRssMiB: this.startRssKiB / 1024,
      hwmMiB: this.lastHwmKiB / 1024,
      samples: this.samples,
      children: this.maxChildren,
    }
  }
}

/** User and system CPU time of a process (all its threads; not its children), in seconds. */
export function readCpu (pid: number): { user: number; sys: number } {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    // fields[0] is state (field 3); utime is field 14, stime field 15, in clock ticks (USER_HZ = 100).
    return { user: Number(fields[11]) / 100, sys: Number(fields[12]) / 100 }
  } catch { return { user: Number.NaN, sys: Number.NaN } }
}

/** utime + stime, in seconds. */
export function readCpuSeconds (pid: number): number {
  const { user, sys } = readCpu(pid)
  return user + sys
}
