/** Shared constants of the in-process peering tests (state machines of two sites, no processes). */
export const D1 = 'sha256:' + '1'.repeat(64)
export const MT = 'application/vnd.oci.image.manifest.v1+json'
export const PEER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
/** Site A's id sorts before B's: on a tie of clocks, B's change wins. */
export const SITE_A = '00112233aabbccdd'
export const SITE_B = 'ffeeddcc00112233'
/** A manifest digest made of one repeated digit. */
export const M = (n: number): string => 'sha256:' + String(n).repeat(64).slice(0, 64)
/** A manifest body (base64), distinct per n. */
export const body = (n: number): string => Buffer.from(`{"schemaVersion":2,"n":${n}}`).toString('base64')
