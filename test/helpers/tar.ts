/**
 * A minimal ustar writer: enough for image layers (files, dirs, symlinks) and for the
 * docker-archive that `docker load` reads. Fixed owner and mtime, so the same entries
 * always give the same bytes and therefore the same layer digest.
 */

export type TarEntry =
  | { type: 'file', path: string, data: Buffer, mode?: number }
  | { type: 'dir', path: string, mode?: number }
  | { type: 'symlink', path: string, target: string }

const BLOCK = 512
// 2024-01-01T00:00:00Z: any fixed time works; zero upsets some extractors' "too old" checks.
const MTIME = 1704067200

function writeString (buf: Buffer, offset: number, len: number, s: string): void {
  const b = Buffer.from(s, 'utf8')
  if (b.length > len) throw new Error(`tar field too long (${b.length} > ${len}): ${s}`)
  b.copy(buf, offset)
}

/** Octal number, zero-padded to len-1 digits and NUL-terminated, as ustar wants. */
function writeOctal (buf: Buffer, offset: number, len: number, n: number): void {
  const s = n.toString(8)
  if (s.length > len - 1) throw new Error(`tar numeric field overflow: ${n}`)
  writeString(buf, offset, len, s.padStart(len - 1, '0') + '\0')
}

function header (entry: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(BLOCK)
  let name = entry.path.replace(/^\/+/, '')
  if (entry.type === 'dir' && !name.endsWith('/')) name += '/'
  let prefix = ''
  if (Buffer.byteLength(name) > 100) {
    // ustar splits long paths at a '/' into prefix (155) + name (100).
    let cut = name.indexOf('/')
    while (cut !== -1 && Buffer.byteLength(name.slice(cut + 1)) > 100) cut = name.indexOf('/', cut + 1)
    if (cut === -1 || cut === name.length - 1) throw new Error(`tar path too long: ${name}`)
    prefix = name.slice(0, cut)
    name = name.slice(cut + 1)
  }
  const defMode = entry.type === 'file' ? 0o644 : 0o755
  writeString(h, 0, 100, name)
  writeOctal(h, 100, 8, entry.type === 'symlink' ? 0o777 : (entry.mode ?? defMode))
  writeOctal(h, 108, 8, 0) // uid
  writeOctal(h, 116, 8, 0) // gid
  writeOctal(h, 124, 12, size)
  writeOctal(h, 136, 12, MTIME)
  h.fill(0x20, 148, 156) // checksum is computed with its own field as spaces
  h[156] = (entry.type === 'file' ? '0' : entry.type === 'dir' ? '5' : '2').charCodeAt(0)
  if (entry.type === 'symlink') writeString(h, 157, 100, entry.target)
  writeString(h, 257, 6, 'ustar\0')
  writeString(h, 263, 2, '00')
  writeString(h, 265, 32, 'root')
  writeString(h, 297, 32, 'root')
  writeString(h, 345, 155, prefix)
  let sum = 0
  for (const byte of h) sum += byte
  writeString(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ')
  return h
}

/** The whole archive in memory, ending with the two zero blocks. */
export function tar (entries: TarEntry[]): Buffer {
  const parts: Buffer[] = []
  for (const e of entries) {
    const data = e.type === 'file' ? e.data : Buffer.alloc(0)
    parts.push(header(e, data.length))
    if (data.length > 0) {
      parts.push(data)
      const pad = (BLOCK - (data.length % BLOCK)) % BLOCK
      if (pad > 0) parts.push(Buffer.alloc(pad))
    }
  }
  parts.push(Buffer.alloc(BLOCK * 2))
  return Buffer.concat(parts)
}
