/**
 * A discard server in its own process: it reads and drops every request body and answers 201.
 * Timing an upload into it gives the client's own ceiling (how fast node:http can send).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'

const CODE = `
const http = require('node:http')
const srv = http.createServer((req, res) => {
  let n = 0
  req.on('data', (c) => { n += c.length })
  req.on('end', () => { res.writeHead(201, { 'content-length': 0, 'x-bytes': String(n) }); res.end() })
})
srv.listen(0, '127.0.0.1', () => { process.stdout.write(String(srv.address().port) + '\\n') })
process.on('SIGTERM', () => process.exit(0))
`

export interface Sink { url: string; proc: ChildProcess; stop (): Promise<void> }

export async function startSink (): Promise<Sink> {
  const proc = spawn(process.execPath, ['-e', CODE], { stdio: ['ignore', 'pipe', 'inherit'] })
  const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000)
  const [chunk] = await once(proc.stdout!, 'data') as [Buffer]
  clearTimeout(timer)
  const port = Number(chunk.toString().trim())
  return {
    url: `http://127.0.0.1:${port}`,
    proc,
    async stop () {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill('SIGTERM')
      await once(proc, 'exit')
    },
  }
}
