/**
 * Properties of images in the `flotilla` CLI (the admin API's /properties, src/http/properties.ts):
 *
 *   flotilla prop ls  REPO:TAG|REPO@DIGEST
 *   flotilla prop set REPO:TAG|REPO@DIGEST KEY=VALUE… [--replace]
 *   flotilla prop rm  REPO:TAG|REPO@DIGEST KEY[=VALUE]…
 *
 * A property belongs to the manifest, so every tag of it shows it. A key may have several
 * values (`set img env=dev env=test`); --replace drops a key's other values first. `rm KEY`
 * removes all of a key's values. Read-only properties (RO in the table) are the image's own
 * annotations and config labels: they go only with the image. Setting and removing need the
 * `annotate` permission on the repository (`write` implies it).
 */
import type { Command } from 'commander'
import { api, withConn } from './admin.js'
import { CliError } from './client.js'
import { printJson, table } from './format.js'

interface Conn { node?: string; user?: string; json?: boolean }
interface Doc { repo: string; digest: string; tags?: string[]; properties: Array<{ key: string; values: string[]; readOnly: boolean }>; added?: number; removed?: number }

function render (doc: Doc): string {
  if (doc.properties.length === 0) return `${doc.repo}@${doc.digest} has no properties\n`
  const rows = doc.properties.flatMap((p) => p.values.map((v, i) => [i === 0 ? p.key : '', v, p.readOnly ? 'yes' : '']))
  return table(['KEY', 'VALUE', 'READ-ONLY'], rows)
}

function pairs (args: string[], needValue: boolean): Array<{ key: string; value?: string }> {
  return args.map((a) => {
    const i = a.indexOf('=')
    if (i <= 0) {
      if (needValue || i === 0) throw new CliError(`${JSON.stringify(a)} is not KEY=VALUE: give each property as key=value (the first = splits)`)
      return { key: a }
    }
    return { key: a.slice(0, i), value: a.slice(i + 1) }
  })
}

export function propCommands (program: Command): void {
  const prop = program.command('prop').description('properties of images: key=value labels on a manifest, searchable (annotate permission to change)')
  withConn(prop.command('ls <image>').description('list the properties of REPO:TAG or REPO@DIGEST')).action(async (image: string, o: Conn) => {
    const doc = await api(o, 'GET', `/properties?image=${encodeURIComponent(image)}`) as Doc
    if (o.json === true) printJson(doc); else process.stdout.write(render(doc))
  })
  withConn(prop.command('set <image> <property...>').description('add KEY=VALUE properties to REPO:TAG or REPO@DIGEST'))
    .option('--replace', 'replace the other values of the keys given, rather than add to them')
    .action(async (image: string, props: string[], o: Conn & { replace?: boolean }) => {
      const doc = await api(o, 'PUT', '/properties', { image, properties: pairs(props, true), ...(o.replace === true ? { replace: true } : {}) }) as Doc
      if (o.json === true) printJson(doc); else process.stdout.write(`${doc.added ?? 0} propert${doc.added === 1 ? 'y' : 'ies'} set on ${doc.repo}@${doc.digest}\n${render(doc)}`)
    })
  withConn(prop.command('rm <image> <property...>').description('remove KEY (all its values) or KEY=VALUE from REPO:TAG or REPO@DIGEST')).action(async (image: string, props: string[], o: Conn) => {
    const q = pairs(props, false).map((p) => `&property=${encodeURIComponent(p.value === undefined ? p.key : `${p.key}=${p.value}`)}`).join('')
    const doc = await api(o, 'DELETE', `/properties?image=${encodeURIComponent(image)}${q}`) as Doc
    if (o.json === true) printJson(doc); else process.stdout.write(`${doc.removed ?? 0} propert${doc.removed === 1 ? 'y' : 'ies'} removed from ${doc.repo}@${doc.digest}\n${render(doc)}`)
  })
}
