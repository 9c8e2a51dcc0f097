#!/usr/bin/env node
// Entry point: polyfills first, then the TypeScript CLI through tsx's loader (no build step needed).
import '../scripts/polyfill.mjs'
import { register } from 'tsx/esm/api'
register()
await import('../src/cli.ts')
