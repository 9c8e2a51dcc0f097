/**
 * Lent chunks (storage/blobs/source.ts): an upload store returns a lent chunk only once its
 * bytes are in the file (buffered writes) or copied out (O_DIRECT staging), so a producer that
 * scribbles over every returned chunk at once, as the peer port's reader does when it reads
 * into the slab again (net/peer-https.ts), never changes what was stored. Both write paths,
 * and an append that starts in the middle of a block (its head waits to be written).
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { FsUploadStore } from '../../storage/blobs/fs-upload-store.js'
import { FsBlobStore } from '../../storage/blobs/fs-blob-store.js'
import { lendChunk, returnChunk } from '../../storage/blobs/source.js'
import { DIRECT_CHUNK } from '../../storage/blobs/direct-io.js'
import { bytes, digestFor } from './helpers.js'

/** `data` as lent chunks of `size` bytes, each a copy the "producer" overwrites the moment it comes back. */
function lentSource (data: Buffer, size: number): { source: AsyncGenerator<Uint8Array>; returned: () => number; lentCount: number } {
  let returned = 0
  const pieces: Buffer[] = []
  for (let i = 0; i < data.length; i += size) pieces.push(Buffer.from(data.subarray(i, i + size)))
  async function * source (): AsyncGenerator<Uint8Array> {
    for (const p of pieces) {
      yield lendChunk(p, () => { returned++; p.fill(0xee) })
      // A turn of the event loop between chunks, as a socket gives: writes complete meanwhile.
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
  return { source: source(), returned: () => returned, lentCount: pieces.length }
}

for (const directIO of [false, true]) {
  t.test(`${directIO ? 'O_DIRECT' : 'buffered'} appends return each lent chunk only once its bytes are stored`, async (t) => {
    const root = t.testdir()
    const uploads = new FsUploadStore(root, { directIO })
    await uploads.open()
    const blobs = new FsBlobStore(root, { directIO })
    await blobs.open()
    // 3 odd-sized appends: the second and third start mid-block, so a head waits for the block's end.
    const sizes = [3 * DIRECT_CHUNK + 12_345, 777, 2 * DIRECT_CHUNK + 5]
    const all = bytes(sizes.reduce((a, b) => a + b, 0), 7)
    await uploads.create('lent-0001')
    let at = 0
    let returned = 0
    let lent = 0
    for (const [i, n] of sizes.entries()) {
      const src = lentSource(all.subarray(at, at + n), [65_537, 100, 1 << 20][i]!)
      await uploads.append('lent-0001', src.source, { offset: at })
      at += n
      returned += src.returned()
      lent += src.lentCount
    }
    // Most chunks come back (the rest were kept, e.g. in a head that waited): recycling happens at all.
    t.ok(returned > lent / 2, `${returned} of ${lent} lent chunks returned`)
    const info = await uploads.commit('lent-0001', digestFor(all), blobs)
    t.equal(info.size, all.length)
    // The digest was computed as the bytes came: the file itself must hold them too.
    t.ok((await readFile(blobs.pathOf(info.digest))).equals(all), 'the file holds the bytes as sent: nothing was overwritten before it was stored')
  })
}

t.test('returning a chunk that was not lent, or twice, does nothing', async (t) => {
  let calls = 0
  const c = lendChunk(Buffer.alloc(4), () => { calls++ })
  returnChunk(Buffer.alloc(4))
  returnChunk(c)
  returnChunk(c)
  t.equal(calls, 1)
})
