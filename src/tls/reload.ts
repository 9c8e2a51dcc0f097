/**
 * Reload the certificate when its files change, without a restart: ACME clients (certbot,
 * lego, cert-manager) rotate them in place, by rename, or by swapping a symlink.
 *
 * Two ways to notice, because neither is enough alone: fs.watch on each file's directory
 * (fast; sees writes and renames into place) and a stat poll (sees everything fs.watch misses:
 * a symlink swapped further up, network filesystems, an editor's rename dance). A change is
 * acted on after a short quiet period, so a writer that replaces the certificate and then the
 * key is usually seen once. The new files are loaded and checked (src/tls/pair.ts); a broken or
 * mismatched pair is logged and counted, and the old one keeps serving until the files change again.
 */
import { watch, type FSWatcher } from 'node:fs'
import { stat } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import type { Logger } from 'pino'
import { loadKeyPair, type KeyPair, type TlsFiles } from './pair.js'

export interface ReloaderOptions {
  files: TlsFiles
  log: Logger
  /** Install the new pair (server.setSecureContext). */
  apply: (pair: KeyPair) => void
  /** Called with the outcome of each attempt (metrics). */
  onResult?: (result: 'success' | 'failure', pair?: KeyPair) => void
  /** Stat poll interval. */
  pollMs?: number
  /** Quiet period after a change before loading. */
  settleMs?: number
}

/** What identifies a file's content cheaply: stat follows symlinks, so a swapped link changes it. */
async function signature (file: string): Promise<string> {
  try {
    const s = await stat(file, { bigint: true })
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code ?? ''}`
  }
}

export class CertificateReloader {
  private readonly watchers: FSWatcher[] = []
  private poller: NodeJS.Timeout | undefined
  private timer: NodeJS.Timeout | undefined
  /** The files' signatures at the last attempt (or at start): a change from this is a reload. */
  private seen = ''
  private running: Promise<void> | undefined
  private again = false
  private stopped = false

  constructor (private readonly opts: ReloaderOptions) {}

  private paths (): string[] {
    const { certificate, key, clientCA } = this.opts.files
    return clientCA !== undefined ? [certificate, key, clientCA] : [certificate, key]
  }

  private async signatures (): Promise<string> {
    return (await Promise.all(this.paths().map(signature))).join('|')
  }

  async start (): Promise<void> {
    this.seen = await this.signatures()
    const dirs = new Map<string, Set<string>>()
    for (const p of this.paths()) {
      const names = dirs.get(dirname(p)) ?? new Set<string>()
      names.add(basename(p))
      dirs.set(dirname(p), names)
    }
    for (const [dir, names] of dirs) {
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => {
          // Kubernetes-style updates swap `..data`, not the file name: any change in the dir counts.
          if (name === null || names.has(name.toString()) || name.toString().startsWith('..')) this.schedule()
        })
        w.on('error', (err) => { this.opts.log.debug({ err, dir }, 'tls: watching the certificate directory stopped; the stat poll goes on') })
        this.watchers.push(w)
      } catch (err) {
        this.opts.log.debug({ err, dir }, 'tls: cannot watch the certificate directory; relying on the stat poll')
      }
    }
    this.poller = setInterval(() => { this.poll().catch(() => {}) }, this.opts.pollMs ?? 2000)
    this.poller.unref()
  }

  private async poll (): Promise<void> {
    if (this.stopped || this.timer !== undefined || this.running !== undefined) return
    if (await this.signatures() !== this.seen) this.schedule()
  }

  private schedule (): void {
    if (this.stopped) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.reloadNow().catch(() => {})
    }, this.opts.settleMs ?? 250)
    this.timer.unref()
  }

  /** Load the files now and install them if they are good (also what the file events lead to). */
  async reloadNow (): Promise<void> {
    if (this.running !== undefined) { this.again = true; return await this.running }
    this.running = this.attempt().finally(() => { this.running = undefined })
    await this.running
    if (this.again && !this.stopped) { this.again = false; this.schedule() }
  }

  private async attempt (): Promise<void> {
    const before = await this.signatures()
    // A spurious event (the directory's other files, an access): nothing of ours changed.
    if (before === this.seen) return
    let pair: KeyPair
    try {
      pair = await loadKeyPair(this.opts.files)
    } catch (err) {
      this.seen = before
      this.opts.log.warn({ err: (err as Error).message }, 'tls: the changed certificate files are not usable; still serving the previous certificate')
      this.opts.onResult?.('failure')
      return
    }
    try {
      this.opts.apply(pair)
    } catch (err) {
      this.seen = before
      this.opts.log.warn({ err: (err as Error).message }, 'tls: installing the new certificate failed; still serving the previous certificate')
      this.opts.onResult?.('failure')
      return
    }
    this.seen = before
    this.opts.log.info({ subject: pair.leaf.subject.replace(/\n/g, ', '), serial: pair.leaf.serialNumber, notAfter: pair.notAfter.toISOString() }, 'tls: certificate reloaded')
    this.opts.onResult?.('success', pair)
  }

  stop (): void {
    this.stopped = true
    for (const w of this.watchers) w.close()
    this.watchers.length = 0
    if (this.poller !== undefined) clearInterval(this.poller)
    if (this.timer !== undefined) clearTimeout(this.timer)
  }
}
