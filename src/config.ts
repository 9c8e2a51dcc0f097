/**
 * Configuration, from lowest to highest precedence: built-in defaults, a YAML file
 * (--config FILE or FLOTILLA_CONFIG), FLOTILLA_* environment variables, command-line flags.
 *
 *   data: ./data                 FLOTILLA_DATA            --data DIR
 *   listen: 127.0.0.1:5000       FLOTILLA_LISTEN          --listen HOST:PORT
 *   log:
 *     level: info                FLOTILLA_LOG_LEVEL       --log-level LEVEL
 *   storage:
 *     delete: true               FLOTILLA_DELETE_ENABLED
 *   limits:
 *     manifestMaxBytes: 4194304  FLOTILLA_MANIFEST_MAX_BYTES
 *   uploads:
 *     expireAfterHours: 24       FLOTILLA_UPLOAD_EXPIRE_HOURS
 */
import { readFile } from 'node:fs/promises'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected HOST:PORT, e.g. 127.0.0.1:5000')

export const ConfigSchema = z.object({
  data: z.string().min(1).default('./data'),
  listen: hostPort.default('127.0.0.1:5000'),
  log: z.object({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  }).strict().default({ level: 'info' }),
  storage: z.object({
    delete: z.boolean().default(true),
  }).strict().default({ delete: true }),
  limits: z.object({
    manifestMaxBytes: z.number().int().positive().max(64 * 1024 * 1024).default(4 * 1024 * 1024),
  }).strict().default({ manifestMaxBytes: 4 * 1024 * 1024 }),
  uploads: z.object({
    expireAfterHours: z.number().positive().default(24),
  }).strict().default({ expireAfterHours: 24 }),
}).strict()

export type Config = z.infer<typeof ConfigSchema>

export class ConfigError extends Error {
  static override name = 'ConfigError'
  constructor (message: string) { super(message); this.name = 'ConfigError' }
}

type Partial = Record<string, unknown>

function set (obj: Partial, path: string[], value: unknown): void {
  let cur = obj
  for (const p of path.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {}
    cur = cur[p] as Partial
  }
  cur[path[path.length - 1]!] = value
}

function merge (base: Partial, over: Partial): Partial {
  const out: Partial = { ...base }
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue
    const b = out[k]
    out[k] = typeof v === 'object' && v !== null && !Array.isArray(v) && typeof b === 'object' && b !== null ? merge(b as Partial, v as Partial) : v
  }
  return out
}

const ENV: Array<[string, string[], (s: string) => unknown]> = [
  ['FLOTILLA_DATA', ['data'], (s) => s],
  ['FLOTILLA_LISTEN', ['listen'], (s) => s],
  ['FLOTILLA_LOG_LEVEL', ['log', 'level'], (s) => s],
  ['FLOTILLA_DELETE_ENABLED', ['storage', 'delete'], (s) => s === 'true' || s === '1' ? true : s === 'false' || s === '0' ? false : s],
  ['FLOTILLA_MANIFEST_MAX_BYTES', ['limits', 'manifestMaxBytes'], (s) => Number(s)],
  ['FLOTILLA_UPLOAD_EXPIRE_HOURS', ['uploads', 'expireAfterHours'], (s) => Number(s)],
]

export interface FlagValues {
  config?: string
  data?: string
  listen?: string
  logLevel?: string
}

/** Build the effective configuration. Throws ConfigError naming the bad setting and its source. */
export async function loadConfig (flags: FlagValues, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  let fromFile: Partial = {}
  const file = flags.config ?? env.FLOTILLA_CONFIG
  if (file !== undefined && file !== '') {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}. Check the path given to --config or FLOTILLA_CONFIG.`)
    }
    try {
      fromFile = (parseYaml(text) ?? {}) as Partial
    } catch (err) {
      throw new ConfigError(`config file ${file} is not valid YAML: ${(err as Error).message}`)
    }
    if (typeof fromFile !== 'object' || Array.isArray(fromFile)) throw new ConfigError(`config file ${file} must hold a YAML mapping`)
  }
  const fromEnv: Partial = {}
  for (const [name, path, conv] of ENV) {
    const v = env[name]
    if (v !== undefined && v !== '') set(fromEnv, path, conv(v))
  }
  const fromFlags: Partial = {}
  if (flags.data !== undefined) fromFlags.data = flags.data
  if (flags.listen !== undefined) fromFlags.listen = flags.listen
  if (flags.logLevel !== undefined) set(fromFlags, ['log', 'level'], flags.logLevel)
  const merged = merge(merge(fromFile, fromEnv), fromFlags)
  const result = ConfigSchema.safeParse(merged)
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')
    throw new ConfigError(`invalid configuration: ${problems}. See the Configuration section of README.md.`)
  }
  return result.data
}

export function splitHostPort (hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':')
  const host = hp.slice(0, i).replace(/^\[|\]$/g, '')
  return { host, port: Number(hp.slice(i + 1)) }
}
