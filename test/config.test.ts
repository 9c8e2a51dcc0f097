/**
 * Configuration: defaults, then YAML, then environment, then flags; bad settings are named.
 */
import t from 'tap'
import { writeFile, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig, ConfigError } from '../src/config.js'

t.test('defaults: ./data and 127.0.0.1:5000', async (t) => {
  const c = await loadConfig({}, {})
  t.equal(c.data, './data')
  t.equal(c.listen, '127.0.0.1:5000')
  t.equal(c.limits.manifestMaxBytes, 4 * 1024 * 1024)
  t.equal(c.storage.delete, true)
})

t.test('precedence: file < environment < flags', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-cfg-'))
  const file = join(dir, 'f.yaml')
  await writeFile(file, 'data: /from/file\nlisten: 0.0.0.0:6000\nlog:\n  level: warn\nstorage:\n  delete: false\n')
  const c1 = await loadConfig({ config: file }, {})
  t.equal(c1.data, '/from/file')
  t.equal(c1.listen, '0.0.0.0:6000')
  t.equal(c1.log.level, 'warn')
  t.equal(c1.storage.delete, false)
  const c2 = await loadConfig({ config: file }, { FLOTILLA_DATA: '/from/env', FLOTILLA_DELETE_ENABLED: 'true' })
  t.equal(c2.data, '/from/env')
  t.equal(c2.storage.delete, true)
  const c3 = await loadConfig({ data: '/from/flag' }, { FLOTILLA_CONFIG: file, FLOTILLA_DATA: '/from/env' })
  t.equal(c3.data, '/from/flag')
  t.equal(c3.listen, '0.0.0.0:6000', 'FLOTILLA_CONFIG names the file')
})

t.test('bad settings are refused with the setting named', async (t) => {
  await t.rejects(loadConfig({ listen: 'nowhere' }, {}), { name: 'ConfigError', message: /listen: expected HOST:PORT/ })
  await t.rejects(loadConfig({}, { FLOTILLA_MANIFEST_MAX_BYTES: 'lots' }), ConfigError)
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-cfg-'))
  const bad = join(dir, 'bad.yaml')
  await writeFile(bad, 'listen: [1, 2\n')
  await t.rejects(loadConfig({ config: bad }, {}), { message: /not valid YAML/ })
  const typo = join(dir, 'typo.yaml')
  await writeFile(typo, 'lisen: 127.0.0.1:5000\n')
  await t.rejects(loadConfig({ config: typo }, {}), { message: /lisen/ }, 'an unknown key is an error, not ignored')
  await t.rejects(loadConfig({ config: join(dir, 'absent.yaml') }, {}), { message: /cannot read config file/ })
})
