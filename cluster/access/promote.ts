/**
 * Promotion: copy an image between repositories server-side, as metadata only. Blobs are
 * content-addressed and stored once per node, so "copying" one is linking it into the target
 * repository; no byte moves and nothing is re-uploaded.
 *
 * The copied set is the closure of the root manifest under "child of" (an index's manifests)
 * and "referrer of" (signatures, SBOMs, attestations whose subject is in the set).
 */
import { FlotillaError } from '../../storage/errors.js'
import { key } from '../metadata/keys.js'
import type { CommandResult, DescriptorRecord, ManifestRecord } from '../metadata/commands.js'
import type { AccessCommand } from './commands.js'
import type { TxLike } from './apply.js'
import { copyUserProperties } from '../metadata/properties.js'

type Promote = Extract<AccessCommand, { type: 'Promote' }>

export async function applyPromote (tx: TxLike, c: Promote): Promise<CommandResult> {
  if (c.from === c.to) throw new FlotillaError('BAD_REQUEST', 'promotion needs two different repositories')
  const manifests = new Map<string, ManifestRecord>()
  const referrers: Array<{ subject: string; desc: DescriptorRecord }> = []
  const queue = [c.digest]
  while (queue.length > 0) {
    const d = queue.shift()!
    if (manifests.has(d)) continue
    const rec = await tx.getJSON<ManifestRecord>(key.manifest(c.from, d))
    if (rec === undefined) {
      throw new FlotillaError('MANIFEST_UNKNOWN', d === c.digest ? `manifest ${d} is unknown in ${c.from}` : `manifest ${d}, part of ${c.digest}, is missing from ${c.from}`, { digest: d })
    }
    manifests.set(d, rec)
    queue.push(...rec.manifests)
    const prefix = key.referrerPrefix(c.from, d)
    for (const k of await tx.keys(prefix)) {
      const desc = await tx.getJSON<DescriptorRecord>(k)
      if (desc === undefined) continue
      referrers.push({ subject: d, desc })
      queue.push(desc.digest)
    }
  }

  if (await tx.get(key.repo(c.to)) === undefined) tx.putJSON(key.repo(c.to), { at: c.at })
  const blobs = new Set<string>()
  for (const rec of manifests.values()) for (const b of rec.blobs) blobs.add(b)
  for (const b of blobs) {
    const link = await tx.getJSON<{ size: number }>(key.link(c.from, b))
    if (link === undefined) throw new FlotillaError('BLOB_UNKNOWN', `blob ${b} is missing from ${c.from}`, { digest: b })
    if (await tx.get(key.link(c.to, b)) !== undefined) continue
    tx.putJSON(key.link(c.to, b), { size: link.size, at: c.at })
    const rec = await tx.getJSON<{ size: number; links: number }>(key.blob(b))
    tx.putJSON(key.blob(b), { size: link.size, links: (rec?.links ?? 0) + 1 })
  }
  for (const [d, rec] of manifests) {
    const body = await tx.get(key.body(c.from, d))
    if (body === undefined) throw new FlotillaError('MANIFEST_UNKNOWN', `manifest ${d} has no body in ${c.from}`)
    tx.putJSON(key.manifest(c.to, d), { ...rec, at: c.at })
    tx.put(key.body(c.to, d), body)
  }
  for (const { subject, desc } of referrers) tx.putJSON(key.referrer(c.to, subject, desc.digest), desc)
  // Read-only properties follow the manifest records; user properties only when asked.
  let properties = 0
  if (c.properties === true) for (const d of manifests.keys()) properties += await copyUserProperties(tx, c.from, c.to, d)
  for (const tag of c.tags) {
    const old = await tx.getJSON<{ digest: string }>(key.tag(c.to, tag))
    if (old !== undefined && old.digest !== c.digest) tx.del(key.tagsOf(c.to, old.digest, tag))
    tx.putJSON(key.tag(c.to, tag), { digest: c.digest, at: c.at })
    tx.putJSON(key.tagsOf(c.to, c.digest, tag), {})
  }

  if (c.move) {
    // Remove the whole copied set from the source: manifests, their tags and referrer entries.
    for (const [d, rec] of manifests) {
      tx.del(key.manifest(c.from, d))
      tx.del(key.body(c.from, d))
      const prefix = key.tagsOfPrefix(c.from, d)
      for (const k of await tx.keys(prefix)) {
        tx.del(k)
        tx.del(key.tag(c.from, k.slice(prefix.length)))
      }
      if (rec.subject !== undefined) tx.del(key.referrer(c.from, rec.subject, d))
    }
  }
  return { ok: true, value: { digest: c.digest, manifests: [...manifests.keys()], blobs: blobs.size, referrers: referrers.length, properties } }
}
