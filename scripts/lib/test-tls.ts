/**
 * FLOTILLA_TEST_TLS=1: every node that scripts/lib/cluster.ts starts serves its API over HTTPS
 * (issue 16: "a 3-node TLS cluster passes the cluster tests that exist today").
 *
 * One CA and one node certificate per test process, made with the code behind `flotilla cert`
 * (src/tls/issue.ts), for 127.0.0.1, ::1 and localhost, in a temp dir removed at exit. Who
 * trusts the CA, and how:
 *
 *   nodes      FLOTILLA_TLS_CERTIFICATE/KEY to serve; FLOTILLA_CA_CERT for `flotilla join https://…`
 *   CLI runs   FLOTILLA_CA_CERT (runCli), as an operator would set it
 *   this process's fetch()   a global undici dispatcher trusting the system's CAs and ours
 *              (Node 20's fetch takes no CA option, and NODE_EXTRA_CA_CERTS is read only at start)
 *
 * Nothing here sets NODE_EXTRA_CA_CERTS: each client must trust the CA the way it documents.
 * undici (installed with tap) and the CA code are loaded only when the switch is on.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { rootCertificates } from 'node:tls'

export interface TestTls {
  /** ca.crt, and its PEM text. */
  caFile: string
  caPem: string
  /** The node certificate (and key) every node serves. */
  cert: string
  key: string
}

/** Whether the switch is on. */
export function tlsOn (): boolean {
  const v = process.env.FLOTILLA_TEST_TLS
  if (v !== undefined && v !== '' && v !== '0' && v !== '1') throw new Error(`FLOTILLA_TEST_TLS must be 1 (nodes serve HTTPS) or 0, not ${v}`)
  return v === '1'
}

/** http or https, as the switch says: for URLs a test builds from a host:port. */
export function scheme (): 'http' | 'https' {
  return tlsOn() ? 'https' : 'http'
}

let made: Promise<TestTls> | undefined

/** The process's test CA and node certificate (made on first use), with this process's fetch() trusting the CA. */
export async function testTls (): Promise<TestTls> {
  made ??= (async () => {
    const { createCA, issueCertificate, parseHosts } = await import('../../src/tls/issue.js')
    const { Agent, setGlobalDispatcher } = await import('undici')
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-test-tls-'))
    process.once('exit', () => { rmSync(dir, { recursive: true, force: true }) })
    const ca = await createCA({ name: `Flotilla test cluster CA ${process.pid}` })
    const node = await issueCertificate(ca, { kind: 'server', hosts: parseHosts('localhost,127.0.0.1,::1') })
    const tls: TestTls = { caFile: join(dir, 'ca.crt'), caPem: ca.certPem, cert: join(dir, 'node.crt'), key: join(dir, 'node.key') }
    writeFileSync(tls.caFile, ca.certPem)
    writeFileSync(tls.cert, node.certPem)
    writeFileSync(tls.key, node.keyPem, { mode: 0o600 })
    // Node's own fetch() uses the dispatcher registered under undici's global symbol: this one
    // verifies every certificate as usual, with our CA added to the system's.
    setGlobalDispatcher(new Agent({ connect: { ca: [...rootCertificates, ca.certPem] } }))
    return tls
  })()
  return await made
}

/** The environment a node needs under the switch (empty when it is off). */
export async function nodeTlsEnv (): Promise<Record<string, string>> {
  if (!tlsOn()) return {}
  const t = await testTls()
  return { FLOTILLA_TLS_CERTIFICATE: t.cert, FLOTILLA_TLS_KEY: t.key, FLOTILLA_CA_CERT: t.caFile }
}

/** The environment a CLI run needs under the switch (empty when it is off). */
export async function cliTlsEnv (): Promise<Record<string, string>> {
  if (!tlsOn()) return {}
  return { FLOTILLA_CA_CERT: (await testTls()).caFile }
}
