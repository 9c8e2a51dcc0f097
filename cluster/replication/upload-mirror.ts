/**
 * Upload mirroring as a relay chain: the copies of a blob travel while the client is still
 * sending it, and the node that took the push sends them once.
 *
 * The owner of an upload sends the client's bytes to the first node of the upload's chain
 * only, naming the rest of the chain; every node of the chain appends the bytes to its own
 * upload session while it tees them on to the next (mirror-receiver.ts). The chain is every
 * node that should hold the blob (placement, replicator.ts), so a push onto N nodes costs the
 * owner one copy of egress, not N-1, and the spread takes about one transfer plus a small
 * delay per hop instead of N-1 transfers through the owner's link.
 *
 *   client ──► owner ──► hop 1 ──► hop 2 ──► … ──► hop N-1      (each: local session mirror-<id>)
 *
 *   PUT    /internal/v1/mirrors/<id>/<offset>            a chunk; the first (offset 0) carries
 *          Flotilla-Mirror: hop=<k>;next=<peer>,…[;digest=<d>]   who comes after the receiver
 *   POST   /internal/v1/mirrors/<id>/commit/<digest>     commit here and pass it on; answers once
 *          Flotilla-Mirror: need=<n>;within=<ms>            n holders, this one first, are recorded
 *   DELETE /internal/v1/mirrors/<id>                     the upload was cancelled: here and on down
 *
 * The Flotilla-Mirror header is covered by the request's signature (net/peer-auth.ts).
 *
 * Quorum: when the client completes the upload, the owner commits, then asks the first hop to
 * commit with need = W-1. Each hop passes the commit on at once (the hops commit in parallel),
 * commits (verifying the digest) and records itself as a holder (AddHolder), and answers once
 * it and the `need - 1` next hops have: the owner links the blob after W-1 confirmations, so
 * the blob PUT's 201 already means "on W nodes" when the chain held. The rest of the chain
 * commits on its own.
 *
 * Pace: every hop is back-pressured by the next (a hop reads its input only as fast as its
 * disk and its successor take it), so the client goes at the pace of the slowest hop, as the
 * manifest would wait for the copies anyway. A hop that holds its predecessor back for a few
 * seconds, answers an error, misses a chunk, or breaks off is dropped by its predecessor: the
 * chain is cut there, the nodes after it let go of what they received, and they get the blob
 * later through ordinary replication (a manifest PUT still waits for W copies). The allowance
 * shrinks down the chain (STALL_MS less STALL_STEP_MS per hop), so that a stall deep in the
 * chain is cut next to where it happened rather than by every hop above it. A node that does
 * not answer before any byte flows (down, frozen, unknown) is skipped: the chain goes on with
 * the node after it. Peers that failed are skipped for 30 s. A resumed upload (after a
 * restart of the owner) is not mirrored.
 */
import type { ClientRequest } from 'node:http'
import { PassThrough, type Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { PrivateKey } from '@libp2p/interface'
import { signRequest } from '../../net/peer-auth.js'
import type { PeerClient, PeerTarget } from '../../net/peer-https.js'
import { FlotillaError } from '../../storage/errors.js'
import { tee } from './tee.js'
import type { ReplicationMetrics } from './metrics.js'

/** Bytes the connection to the next hop may buffer before the sender is made to wait for it. */
const MIRROR_BUFFER_BYTES = 4 << 20
/** The owner drops a first hop that holds the client back this long … */
const STALL_MS = 3_000
/** … and each hop down the chain allows its successor this much less, down to STALL_FLOOR_MS. */
const STALL_STEP_MS = 250
const STALL_FLOOR_MS = 1_250
/** How long a next hop has to accept the first chunk (100 Continue) before it is skipped. */
const CONNECT_MS = 1_000
/** How long a peer that failed a mirror is left alone. */
const PEER_COOLDOWN_MS = 30_000
/** After a commit, how long a hop waits for its last chunk to reach the next hop. */
const COMMIT_GRACE_MS = 5_000
/** Time a hop keeps for itself out of the commit budget it passes on. */
const COMMIT_MARGIN_MS = 500
/** Mirror state of uploads nobody touched for this long is forgotten. */
const IDLE_MS = 3600_000
/**
 * Most peers a chain names. Each hop names the rest of the chain in a header (53 bytes a
 * peer), which the node's HTTP server accepts up to 64 KiB (src/node.ts). Nodes past the
 * chain's end get the blob through ordinary replication.
 */
export const MAX_CHAIN = 1000

/** The header naming the rest of an upload's chain (on its first chunk) or a commit's quorum. */
export const MIRROR_HEADER = 'flotilla-mirror'

/** What the first chunk tells a hop: its place in the chain, who comes after it, and the digest when known. */
export interface ChainSpec {
  /** This hop's distance from the owner (the first hop is 1). */
  hop: number
  /** The peers after this hop, in order. */
  next: string[]
  /** The blob's digest, when the client gave it up front (a monolithic upload). */
  digest?: string
}

/** What a commit asks of a hop: how many holders (itself first) to confirm, within how long. */
export interface CommitSpec {
  need: number
  withinMs: number
}

const PEER_ID_RE = /^[1-9A-HJ-NP-Za-km-z]{20,100}$/
const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/

/** `hop=<k>;next=<peer>,<peer>…[;digest=<d>]` */
export function formatChainSpec (spec: ChainSpec): string {
  return `hop=${spec.hop};next=${spec.next.join(',')}${spec.digest !== undefined ? `;digest=${spec.digest}` : ''}`
}

/** `need=<n>;within=<ms>` */
export function formatCommitSpec (spec: CommitSpec): string {
  return `need=${spec.need};within=${spec.withinMs}`
}

function fields (value: string, allowed: string[]): Map<string, string> {
  const out = new Map<string, string>()
  for (const part of value.split(';')) {
    const eq = part.indexOf('=')
    const key = eq < 0 ? part : part.slice(0, eq)
    if (eq < 0 || !allowed.includes(key) || out.has(key)) {
      throw new FlotillaError('BAD_REQUEST', `malformed Flotilla-Mirror header: expected ${allowed.map((k) => `${k}=…`).join(';')}, got ${JSON.stringify(value.slice(0, 80))}`)
    }
    out.set(key, part.slice(eq + 1))
  }
  return out
}

function count (raw: string | undefined, what: string, max: number): number {
  if (raw === undefined || !/^\d{1,9}$/.test(raw) || Number(raw) > max) throw new FlotillaError('BAD_REQUEST', `Flotilla-Mirror: ${what} must be a number from 0 to ${max}`)
  return Number(raw)
}

export function parseChainSpec (value: string): ChainSpec {
  const f = fields(value, ['hop', 'next', 'digest'])
  const hop = count(f.get('hop'), 'hop', MAX_CHAIN)
  const rawNext = f.get('next')
  if (rawNext === undefined) throw new FlotillaError('BAD_REQUEST', 'Flotilla-Mirror: next is missing')
  const next = rawNext === '' ? [] : rawNext.split(',')
  if (next.length > MAX_CHAIN || !next.every((p) => PEER_ID_RE.test(p))) throw new FlotillaError('BAD_REQUEST', `Flotilla-Mirror: next must be at most ${MAX_CHAIN} peer ids, comma-separated`)
  const digest = f.get('digest')
  if (digest !== undefined && !DIGEST_RE.test(digest)) throw new FlotillaError('BAD_REQUEST', 'Flotilla-Mirror: digest is not a digest')
  return { hop, next, ...(digest !== undefined ? { digest } : {}) }
}

export function parseCommitSpec (value: string): CommitSpec {
  const f = fields(value, ['need', 'within'])
  return { need: count(f.get('need'), 'need', MAX_CHAIN), withinMs: count(f.get('within'), 'within', 3600_000) }
}

/** The time a hop at distance `hop` from the owner allows its successor to hold it back. */
export function stallAllowance (hop: number): number {
  return Math.max(STALL_FLOOR_MS, STALL_MS - hop * STALL_STEP_MS)
}

export interface UploadMirrorOptions {
  peerId: string
  privateKey: PrivateKey
  /** Where to reach a peer (its peer port), or undefined when unknown or unreachable. */
  target: (peerId: string) => PeerTarget | undefined
  client: PeerClient
  /**
   * The chain of an upload this node owns (`key`: the digest when known, else the upload id):
   * candidates in order, this node excluded, of which the first `length` that answer make the
   * chain (every peer that should hold the blob, when the placement is known).
   */
  chain: (key: string) => { peers: string[]; length: number }
  /** Confirmations the owner waits for before it links a blob: the write quorum less its own copy. */
  quorum: () => number
  log: Logger
  /** Counts the bytes sent down chains (flotilla_replication_bytes_sent_total{route="mirrors"}). */
  metrics?: ReplicationMetrics
}

/** The next hop of one upload, as this node sees it. */
interface NextHop {
  /** The upload's id. */
  id: string
  peer: string
  target: PeerTarget
  /** Bytes the next hop has confirmed. */
  offset: number
  ok: boolean
  /** The chunk request in flight, if any: resolves when it ends either way. */
  pending: Promise<void>
  req: ClientRequest | undefined
}

interface Session {
  next: NextHop
  /** This node's distance from the owner (0: the owner). */
  hop: number
  /** The first chunk's request, accepted by the next hop and waiting for its bytes. */
  opened: ClientRequest | undefined
  touched: number
}

/**
 * The sending side of upload chains, on the owner (tee: the client's bytes to the first hop)
 * and on every hop (relay: the bytes received to the next hop).
 */
export class UploadMirror {
  private readonly sessions = new Map<string, Session>()
  private readonly cooldown = new Map<string, number>()

  constructor (private readonly opts: UploadMirrorOptions) {}

  /** Path of the peer-side session; the upload id travels in the path, which the signature covers. */
  static sessionId (id: string): string {
    return `mirror-${id}`
  }

  /** Whether an append to upload `id` would be mirrored at all (a lone node mirrors nothing). */
  wants (id: string): boolean {
    return this.sessions.has(id) || this.opts.quorum() > 0
  }

  /** Whether this node passes upload `id` on to a next hop. */
  has (id: string): boolean {
    return this.sessions.has(id)
  }

  /**
   * The owner: send the bytes of one append (starting at `start`) down the upload's chain.
   * Returns the stream the local store should consume; it applies the local store's and the
   * chain's back-pressure to `source`. `key` picks the chain of a new session (the digest when
   * the client gave it, which is then also `digest`).
   */
  async tee (id: string, start: number, source: Readable, opts: { key?: string; digest?: string } = {}): Promise<Readable> {
    let session = this.sessions.get(id)
    if (session === undefined) {
      if (start !== 0) return source
      const chain = this.opts.chain(opts.key ?? id)
      session = await this.open(id, 0, chain.peers, Math.min(chain.length, MAX_CHAIN), opts.digest)
      if (session === undefined) return source
    }
    return await this.forward(session, start, source)
  }

  /**
   * A hop: pass one chunk of an upload it mirrors on to the next hop (`spec`, from the first
   * chunk, names the rest of the chain). Returns the stream the local store should consume.
   */
  async relay (id: string, start: number, source: Readable, spec?: ChainSpec): Promise<Readable> {
    let session = this.sessions.get(id)
    if (session === undefined) {
      if (start !== 0 || spec === undefined) return source
      session = await this.open(id, spec.hop, spec.next, spec.next.length, spec.digest)
      if (session === undefined) return source
    }
    return await this.forward(session, start, source)
  }

  /**
   * The owner: commit the upload down its chain, after this node committed `digest` locally.
   * Resolves with the peers that now hold the blob durably and have recorded themselves as
   * holders: the chain's first W-1 unless it is short or was cut; never rejects.
   */
  async commit (id: string, digest: string): Promise<string[]> {
    const need = this.opts.quorum()
    const holders = await this.passCommit(id, digest, need)
    if (need > 0) this.opts.metrics?.chainCommits.inc({ outcome: holders.length >= need ? 'quorum' : 'short' })
    return holders
  }

  /**
   * A hop (or the owner): pass the commit on to the next hop, asking it for `need` holders
   * (itself first) within `withinMs` (by default what `need` hops may take). Resolves with the
   * holders it confirmed; never rejects.
   */
  async passCommit (id: string, digest: string, need: number, withinMs?: number): Promise<string[]> {
    const session = this.sessions.get(id)
    if (session === undefined) return []
    this.sessions.delete(id)
    return await this.commitDown(session, digest, need, withinMs)
  }

  private async commitDown (session: Session, digest: string, need: number, withinMs: number | undefined): Promise<string[]> {
    const id = session.next.id
    const m = session.next
    if (!m.ok) return []
    const within = withinMs ?? COMMIT_GRACE_MS + (Math.max(need, 1) + 1) * 1_000
    const deadline = Date.now() + within
    await withDeadline(m.pending, Math.min(deadline - COMMIT_MARGIN_MS, Date.now() + COMMIT_GRACE_MS))
    if (!m.ok || m.req !== undefined) { this.drop(m, 'its last chunk did not complete in time'); return [] }
    // The next hop keeps a margin of ours: its answer must be back before we give up on it.
    const spec = formatCommitSpec({ need: Math.max(need, 0), withinMs: Math.max(deadline - Date.now() - COMMIT_MARGIN_MS, 1_000) })
    try {
      const res = await this.call(m, 'POST', `/internal/v1/mirrors/${id}/commit/${digest}`, Math.max(deadline - Date.now(), 1_000), spec)
      if (res.status !== 201) { this.drop(m, `its commit answered ${res.status}: ${res.body.slice(0, 200)}`); return [] }
      const holders = (JSON.parse(res.body) as { holders?: unknown }).holders
      return Array.isArray(holders) ? holders.filter((p): p is string => typeof p === 'string') : [m.peer]
    } catch (err) {
      this.drop(m, `its commit failed: ${(err as Error).message}`)
      return []
    }
  }

  /** The upload was cancelled or failed for good: the next hops drop their bytes too. */
  abandon (id: string): void {
    const session = this.sessions.get(id)
    if (session === undefined) return
    this.sessions.delete(id)
    session.opened?.destroy()
    this.release(session.next, undefined)
  }

  /** Forget sessions idle for an hour (their uploads expired or were abandoned by clients). */
  sweep (now = Date.now()): void {
    for (const [id, s] of this.sessions) if (now - s.touched > IDLE_MS) this.abandon(id)
    for (const [peer, until] of this.cooldown) if (until < now) this.cooldown.delete(peer)
  }

  /**
   * Start a session: of the first `length` peers of `chain` that are usable, the first that
   * accepts the first chunk becomes the next hop and is told the rest. Undefined when none does.
   */
  private async open (id: string, hop: number, chain: string[], length: number, digest: string | undefined): Promise<Session | undefined> {
    const now = Date.now()
    const candidates = chain.filter((p) => p !== this.opts.peerId && (this.cooldown.get(p) ?? 0) <= now && this.opts.target(p) !== undefined)
    for (let i = 0; i < candidates.length && length > 0; i++) {
      const peer = candidates[i]!
      const target = this.opts.target(peer)
      if (target === undefined) continue
      const m: NextHop = { id, peer, target, offset: 0, ok: true, pending: Promise.resolve(), req: undefined }
      // A peer skipped above leaves its place to the next candidate: the chain keeps its length when it can.
      const spec = formatChainSpec({ hop: hop + 1, next: candidates.slice(i + 1, i + length), ...(digest !== undefined ? { digest } : {}) })
      try {
        const opened = await this.chunkRequest(m, 0, spec)
        const session: Session = { next: m, hop, opened, touched: Date.now() }
        this.sessions.set(id, session)
        return session
      } catch (err) {
        m.ok = false
        m.req?.destroy()
        this.cooldown.set(peer, Date.now() + PEER_COOLDOWN_MS)
        this.opts.log.info({ peer, upload: id, why: (err as Error).message }, 'upload mirror dropped; the chain skips it, replication will copy the blob later')
      }
    }
    return undefined
  }

  private async forward (session: Session, start: number, source: Readable): Promise<Readable> {
    session.touched = Date.now()
    const m = session.next
    const stallMs = stallAllowance(session.hop)
    let req = session.opened
    session.opened = undefined
    if (req === undefined || start !== 0) {
      req?.destroy()
      // The previous chunk's answer may still be on its way (our sender got its own already).
      await withDeadline(m.pending, Date.now() + stallMs)
      if (!m.ok) return source
      if (m.req !== undefined) { this.drop(m, `its previous chunk took over ${stallMs} ms`); return source }
      if (m.offset !== start) { this.drop(m, `it holds ${m.offset} bytes, the chunk starts at ${start}`); return source }
      try {
        req = await this.chunkRequest(m, start, undefined)
      } catch (err) {
        this.drop(m, (err as Error).message)
        return source
      }
    }
    if (!m.ok) return source
    // Our own input breaking off (the client hung up, our predecessor died) is not the next
    // hop's fault: it is let go without being skipped for a while. Heard before tee() hears it.
    const inputBroke = (): void => { if (!source.readableEnded) this.release(m, undefined) }
    // It may have broken already, while we waited for the next hop to accept the chunk: then
    // no 'close' comes, and tee() would destroy the next hop's request with our input's error.
    if (source.destroyed && !source.readableEnded) { inputBroke(); return source }
    source.once('error', inputBroke)
    source.once('close', inputBroke)
    const local = new PassThrough({ highWaterMark: 1 << 20 })
    tee(source, local, [{
      stream: req,
      highWater: MIRROR_BUFFER_BYTES,
      onStall: (why: string) => this.drop(m, why),
      onWrite: (n: number) => this.opts.metrics?.sent('mirrors', n),
    }], stallMs)
    return local
  }

  /**
   * A chunk request to the next hop. The first chunk names the rest of the chain and waits for
   * the next hop to accept it (100 Continue) before any byte is sent: a next hop that is down
   * or frozen is then skipped rather than cutting the chain.
   */
  private async chunkRequest (m: NextHop, start: number, spec: string | undefined): Promise<ClientRequest> {
    const path = `/internal/v1/mirrors/${m.id}/${start}`
    const authorization = await signRequest(this.opts.privateKey, this.opts.peerId, 'PUT', path, Date.now(), spec)
    const headers: Record<string, string> = { authorization, 'content-type': 'application/octet-stream' }
    if (spec !== undefined) { headers[MIRROR_HEADER] = spec; headers.expect = '100-continue' }
    const req = this.opts.client.request(m.target, { path, method: 'PUT', headers })
    let accepted = spec === undefined
    m.req = req
    m.pending = new Promise<void>((resolve) => {
      req.on('response', (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (s: string) => { if (body.length < 1000) body += s })
        res.on('end', () => {
          const size = Number(res.headers['flotilla-upload-size'])
          if (res.statusCode === 204 && Number.isSafeInteger(size)) m.offset = size
          else if (accepted) this.drop(m, `it answered ${res.statusCode ?? 0} to a chunk: ${body.slice(0, 200)}`)
          if (m.req === req) m.req = undefined
          resolve()
        })
        res.on('error', () => { if (accepted) this.drop(m, 'its answer broke off'); resolve() })
      })
      req.on('error', (err) => {
        if (accepted && m.ok) this.drop(m, err.message)
        if (m.req === req) m.req = undefined
        resolve()
      })
    })
    if (spec === undefined) return req
    req.flushHeaders()
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { req.destroy(); reject(new Error(`it did not accept the upload within ${CONNECT_MS} ms`)) }, CONNECT_MS)
      const settle = (err?: Error): void => { clearTimeout(timer); if (err === undefined) resolve(); else reject(err) }
      req.once('continue', () => settle())
      req.once('response', (res) => settle(new Error(`it answered ${res.statusCode ?? 0} instead of accepting the upload`)))
      req.once('error', (err) => settle(err))
    })
    accepted = true
    return req
  }

  /** The next hop failed this upload (`why`): let it go, and leave it alone for a while. */
  private drop (m: NextHop, why: string): void {
    this.release(m, why)
  }

  /**
   * Stop sending to the next hop and tell it to let go of its bytes (and to tell its own next
   * hop; it would otherwise keep them until its next sweep). `blame`: why it failed, when it
   * did; it is then skipped for PEER_COOLDOWN_MS.
   */
  private release (m: NextHop, blame: string | undefined): void {
    if (!m.ok) return
    m.ok = false
    m.req?.destroy()
    void this.call(m, 'DELETE', `/internal/v1/mirrors/${m.id}`, 10_000).catch(() => {})
    if (blame === undefined) return
    this.cooldown.set(m.peer, Date.now() + PEER_COOLDOWN_MS)
    this.opts.log.info({ peer: m.peer, upload: m.id, why: blame }, 'upload mirror dropped; the chain is cut there, replication will copy the blob later')
  }

  private async call (m: NextHop, method: string, path: string, timeoutMs: number, spec?: string): Promise<{ status: number; body: string }> {
    const authorization = await signRequest(this.opts.privateKey, this.opts.peerId, method, path, Date.now(), spec)
    const headers: Record<string, string | number> = { authorization, 'content-length': 0 }
    if (spec !== undefined) headers[MIRROR_HEADER] = spec
    return await new Promise((resolve, reject) => {
      const req = this.opts.client.request(m.target, { path, method, headers, timeout: timeoutMs }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (s: string) => { if (body.length < 64_000) body += s })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        res.on('error', reject)
      })
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
      req.on('error', reject)
      req.end()
    })
  }
}

async function withDeadline (p: Promise<void>, deadline: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p, new Promise<void>((resolve) => { timer = setTimeout(resolve, Math.max(0, deadline - Date.now())) })])
  clearTimeout(timer)
}
