/**
 * FLOTILLA_CPU_PROFILE=DIR: profile a node's main thread from start to a clean shutdown and
 * write DIR/flotilla-<pid>.cpuprofile (open it in Chrome DevTools). Node refuses --cpu-prof in
 * NODE_OPTIONS, and nodes started by scripts cannot take node flags, hence the variable.
 */
import { Session } from 'node:inspector/promises'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

export async function startCpuProfile (dir: string | undefined): Promise<(() => Promise<void>) | undefined> {
  if (dir === undefined || dir === '') return undefined
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.start')
  return async () => {
    const { profile } = await session.post('Profiler.stop')
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, `flotilla-${process.pid}.cpuprofile`), JSON.stringify(profile))
    session.disconnect()
  }
}
