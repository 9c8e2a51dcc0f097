#!/usr/bin/env node
// Entry point: polyfills first, then the TypeScript CLI through tsx's loader (no build step needed).
// FLOTILLA_DIST=DIR runs a compiled build instead (`tsc --outDir DIR`, relative to the project
// root): the test suite builds once and saves each of its thousands of process starts the
// on-the-fly transpiling (about half a CPU second each).
import '../scripts/polyfill.mjs'
import { resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const dist = process.env.FLOTILLA_DIST
if (dist !== undefined && dist !== '') {
  const root = fileURLToPath(new URL('..', import.meta.url))
  await import(pathToFileURL(resolve(root, dist, 'src', 'cli.js')).href)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import('../src/cli.ts')
}
