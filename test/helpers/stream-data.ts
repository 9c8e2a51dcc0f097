/**
 * Large deterministic test data without holding it in memory: an AES-CTR keystream,
 * which any test can regenerate byte for byte from its seed.
 */
import { createCipheriv, createHash } from 'node:crypto'

const CHUNK = 1 << 20

/** Bytes [start, end) of the stream named by `seed`, in chunks of at most 1 MiB. */
export async function * streamData (seed: string, start: number, end: number): AsyncGenerator<Buffer> {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16)
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16))
  const zeros = Buffer.alloc(CHUNK)
  let pos = 0
  while (pos < end) {
    const n = Math.min(CHUNK, end - pos)
    const chunk = cipher.update(zeros.subarray(0, n))
    const from = Math.max(start - pos, 0)
    if (from < n) yield from === 0 ? chunk : chunk.subarray(from)
    pos += n
  }
}

export async function digestOfStream (seed: string, size: number): Promise<string> {
  const h = createHash('sha256')
  for await (const c of streamData(seed, 0, size)) h.update(c)
  return 'sha256:' + h.digest('hex')
}
