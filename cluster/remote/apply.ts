/**
 * The state machine's part for remote repositories: PutRemote, DeleteRemote and
 * RemoteTagChecked (cluster/metadata/commands.ts). Deterministic: everything is in the command.
 */
import { FlotillaError } from '../../storage/errors.js'
import type { TxLike } from '../access/apply.js'
import type { Command } from '../metadata/commands.js'
import { key } from '../metadata/keys.js'
import { listVirtuals, overlaps } from '../metadata/virtual.js'
import { checkRemote, prefixesOverlap, type RemoteRecord } from './model.js'

type RemoteCommand = Extract<Command, { type: 'PutRemote' | 'DeleteRemote' | 'RemoteTagChecked' }>

export async function applyRemote (tx: TxLike, c: RemoteCommand): Promise<{ ok: true; value?: unknown }> {
  switch (c.type) {
    case 'PutRemote': {
      checkRemote(c.remote)
      for (const k of await tx.keys(key.remotePrefix())) {
        const other = await tx.getJSON<RemoteRecord>(k)
        if (other === undefined || other.name === c.remote.name) continue
        if (prefixesOverlap(other.prefix, c.remote.prefix)) {
          throw new FlotillaError('ALREADY_EXISTS', `prefix ${c.remote.prefix} overlaps remote ${other.name}'s prefix ${other.prefix}: each repository name may belong to one remote only`)
        }
      }
      for (const v of await listVirtuals(tx)) {
        if (overlaps(v.prefix, c.remote.prefix)) throw new FlotillaError('ALREADY_EXISTS', `prefix ${c.remote.prefix} overlaps ${v.prefix} of virtual repository ${v.name}: a name belongs to one remote or virtual repository (choose another prefix)`)
        if (overlaps(v.defaultMember, c.remote.prefix)) throw new FlotillaError('ALREADY_EXISTS', `prefix ${c.remote.prefix} would make ${v.defaultMember}, where pushes through virtual repository ${v.name} go, a read-only cache: choose another prefix`)
      }
      tx.putJSON(key.remote(c.remote.name), c.remote)
      return { ok: true }
    }
    case 'DeleteRemote': {
      if (await tx.get(key.remote(c.name)) === undefined) throw new FlotillaError('NOT_FOUND', `no remote named ${c.name}: flotilla remote list shows them`)
      tx.del(key.remote(c.name))
      return { ok: true }
    }
    case 'RemoteTagChecked': {
      // Only while the tag still names what was checked: a newer fill wins.
      const t = await tx.getJSON<{ digest: string }>(key.tag(c.repo, c.tag))
      if (t !== undefined && t.digest === c.digest) tx.putJSON(key.remoteChecked(c.repo, c.tag), { digest: c.digest, at: c.at })
      return { ok: true }
    }
  }
}
