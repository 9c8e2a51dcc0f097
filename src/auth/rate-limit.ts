/**
 * Failed-login limiter: at most `perUser` failures per user name and `perAddress` per client
 * address within a sliding window. Past either, further attempts are refused with
 * TOOMANYREQUESTS (429) and Retry-After until the oldest failure leaves the window, even with
 * the right password. Kept in memory on each node: it slows guessing, it is not a ledger.
 */
import { FlotillaError } from '../../storage/errors.js'

export interface RateLimitOptions {
  perUser: number
  perAddress: number
  windowMs: number
}

export class LoginLimiter {
  private readonly byUser = new Map<string, number[]>()
  private readonly byAddress = new Map<string, number[]>()

  constructor (private readonly opts: RateLimitOptions, private readonly now: () => number) {}

  private recent (map: Map<string, number[]>, k: string): number[] {
    const cutoff = this.now() - this.opts.windowMs
    const list = (map.get(k) ?? []).filter((t) => t > cutoff)
    if (list.length === 0) map.delete(k); else map.set(k, list)
    return list
  }

  /** Seconds until another attempt is allowed, or 0. */
  retryAfter (user: string | undefined, address: string): number {
    let wait = 0
    const check = (list: number[], max: number): void => {
      if (list.length >= max) wait = Math.max(wait, Math.ceil((list[list.length - max]! + this.opts.windowMs - this.now()) / 1000))
    }
    if (user !== undefined) check(this.recent(this.byUser, user), this.opts.perUser)
    check(this.recent(this.byAddress, address), this.opts.perAddress)
    return Math.max(wait, wait > 0 ? 1 : 0)
  }

  /** Throw TOOMANYREQUESTS when this user or address has failed too often. */
  check (user: string | undefined, address: string, setHeader: (name: string, value: string) => void): void {
    const wait = this.retryAfter(user, address)
    if (wait > 0) {
      setHeader('Retry-After', String(wait))
      throw new FlotillaError('TOOMANYREQUESTS', `too many failed logins${user !== undefined ? ` for ${user}` : ''} from ${address}: retry in ${wait} s`, { retryAfter: wait })
    }
  }

  fail (user: string | undefined, address: string): void {
    const t = this.now()
    if (user !== undefined) this.byUser.set(user, [...this.recent(this.byUser, user), t])
    this.byAddress.set(address, [...this.recent(this.byAddress, address), t])
    // Bound memory under a spray of names.
    if (this.byUser.size > 100_000) this.byUser.clear()
    if (this.byAddress.size > 100_000) this.byAddress.clear()
  }

  succeed (user: string): void {
    this.byUser.delete(user)
  }
}
