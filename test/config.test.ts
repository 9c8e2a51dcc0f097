/**
 * Configuration: defaults, then YAML, then environment, then flags; bad settings are named.
 */
import t from 'tap'
import { writeFile, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig, ConfigError } from '../src/config.js'
import { clientAuthOf } from '../src/tls/config.js'

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

t.test('an invalid HOST:PORT for --listen or --p2p names the setting, its flag and variable, and the accepted form', async (t) => {
  for (const [flags, env, setting] of [
    [{ listen: '127.0.0.1:99999' }, {}, 'listen'],
    [{ p2p: '127.0.0.1:65536' }, {}, 'p2p'],
    [{}, { FLOTILLA_LISTEN: 'localhost' }, 'listen'],
    [{}, { FLOTILLA_P2P: ':7000' }, 'p2p'],
    [{ listen: '::1:5000' }, {}, 'listen'],
    [{ listen: '127.0.0.1:port' }, {}, 'listen'],
  ] as const) {
    const flag = `--${setting}`
    const variable = `FLOTILLA_${setting.toUpperCase()}`
    await t.rejects(loadConfig(flags, env), {
      name: 'ConfigError',
      message: new RegExp(`${setting}: expected HOST:PORT with a port from 0 to 65535, e\\.g\\. 127\\.0\\.0\\.1:5000, not ".*" \\(${flag}, ${variable}\\)`),
    }, `${JSON.stringify({ ...flags, ...env })} is refused`)
  }
  t.equal((await loadConfig({ listen: '127.0.0.1:65535', p2p: '[::1]:0' }, {})).listen, '127.0.0.1:65535', 'the ends of the range are fine')
})

t.test('tls: off by default; file, environment and flags set it; the client-certificate mode follows the CA', async (t) => {
  const off = await loadConfig({}, {})
  t.same(off.tls, { clientCertUser: 'cn' }, 'no certificate, no TLS')
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-cfg-'))
  const file = join(dir, 'tls.yaml')
  await writeFile(file, 'tls:\n  certificate: /file/node.crt\n  key: /file/node.key\n  clientCA: /file/ca.crt\n')
  const fromFile = await loadConfig({ config: file }, {})
  t.match(fromFile.tls, { certificate: '/file/node.crt', key: '/file/node.key', clientCA: '/file/ca.crt' })
  t.equal(clientAuthOf(fromFile.tls), 'require', 'a client CA alone means require, as in the CNCF registry')
  const fromEnv = await loadConfig({ config: file }, { FLOTILLA_TLS_CERTIFICATE: '/env/node.crt', FLOTILLA_TLS_CLIENT_AUTH: 'optional', FLOTILLA_TLS_CLIENT_CERT_USER: 'none' })
  t.match(fromEnv.tls, { certificate: '/env/node.crt', key: '/file/node.key', clientAuth: 'optional', clientCertUser: 'none' })
  const fromFlags = await loadConfig({ config: file, tlsCertificate: '/flag/node.crt', tlsKey: '/flag/node.key', tlsClientAuth: 'none' }, { FLOTILLA_TLS_CERTIFICATE: '/env/node.crt' })
  t.match(fromFlags.tls, { certificate: '/flag/node.crt', key: '/flag/node.key' })
  t.equal(clientAuthOf(fromFlags.tls), 'none', '--tls-client-auth none keeps the CA unused')
})

t.test('tls: settings that do not go together name the flags to set', async (t) => {
  await t.rejects(loadConfig({ tlsKey: '/k' }, {}), { name: 'ConfigError', message: /tls: tls\.certificate and tls\.key go together: set both \(--tls-certificate FILE --tls-key FILE\) or neither; only the key is set/ })
  await t.rejects(loadConfig({ tlsClientCa: '/ca' }, {}), { message: /tls\.clientCA needs TLS on/ })
  await t.rejects(loadConfig({ tlsCertificate: '/c', tlsKey: '/k', tlsClientAuth: 'optional' }, {}), { message: /tls\.clientAuth optional needs tls\.clientCA \(--tls-client-ca FILE\)/ })
  await t.rejects(loadConfig({}, { FLOTILLA_TLS_CLIENT_AUTH: 'sometimes' }), { message: /tls\.clientAuth: .*FLOTILLA_TLS_CLIENT_AUTH/ })
})

t.test('sites.advertise: HOST:PORT or a multiaddr, from the file, FLOTILLA_SITES_ADVERTISE or --sites-advertise', async (t) => {
  const { siteAdvertiseAddrs } = await import('../src/config.js')
  t.equal(siteAdvertiseAddrs(await loadConfig({}, {})), undefined, 'unset: the node\'s own p2p addresses')
  t.same(siteAdvertiseAddrs(await loadConfig({}, { FLOTILLA_SITES_ADVERTISE: '10.0.0.1:7000' })), ['/ip4/10.0.0.1/tcp/7000'])
  t.same(siteAdvertiseAddrs(await loadConfig({ sitesAdvertise: '/dns/site-a.example/tcp/7000' }, { FLOTILLA_SITES_ADVERTISE: '10.0.0.1:7000' })), ['/dns/site-a.example/tcp/7000'], 'the flag wins')
  await t.rejects(loadConfig({}, { FLOTILLA_SITES_ADVERTISE: 'http://10.0.0.1:7000' }), { name: 'ConfigError', message: /sites\.advertise: expected HOST:PORT or a multiaddr.*\(--sites-advertise, FLOTILLA_SITES_ADVERTISE\)/ })
  await t.rejects(loadConfig({}, { FLOTILLA_SITES_ADVERTISE: '/ip4/10.0.0.1/udp/7000' }), ConfigError)
})

t.test('peerListen (the peer port): unset by default, from FLOTILLA_PEER_LISTEN or --peer-listen, checked like --listen', async (t) => {
  t.equal((await loadConfig({}, {})).peerListen, undefined, 'unset: the node takes the listen host and a free port (src/peer-port.ts)')
  t.equal((await loadConfig({}, { FLOTILLA_PEER_LISTEN: '0.0.0.0:7443' })).peerListen, '0.0.0.0:7443', 'from the environment')
  t.equal((await loadConfig({ peerListen: '127.0.0.1:7444' }, { FLOTILLA_PEER_LISTEN: '0.0.0.0:7443' })).peerListen, '127.0.0.1:7444', 'the flag wins')
  await t.rejects(loadConfig({ peerListen: 'localhost' }, {}), {
    name: 'ConfigError',
    message: /peerListen: expected HOST:PORT .* \(--peer-listen, FLOTILLA_PEER_LISTEN\)/,
  }, 'a bad value names the setting, its flag and variable')
})
