/**
 * Password hashing: argon2id (the `argon2` package loads its prebuilt binary; nothing is
 * compiled at install). Parameters follow OWASP's minimum for argon2id (19 MiB, t=2, p=1):
 * a verification costs a few tens of milliseconds, which is why successful Basic-auth checks
 * are cached briefly (src/auth/service.ts).
 */
import argon2 from 'argon2'

const OPTIONS = { type: argon2.argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const

export const MIN_PASSWORD_LENGTH = 8

export async function hashPassword (password: string): Promise<string> {
  return await argon2.hash(password, OPTIONS)
}

export async function verifyPassword (hash: string, password: string): Promise<boolean> {
  try {
    return await argon2.verify(hash, password)
  } catch {
    return false
  }
}
