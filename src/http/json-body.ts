/**
 * A JSON request body checked against a zod schema: BAD_REQUEST naming each field that is
 * wrong, or saying the body is not JSON. An empty body reads as {}.
 */
import type { Context } from 'koa'
import type { z } from 'zod'
import { FlotillaError } from '../../storage/errors.js'
import { readLimited } from './manifests.js'

export async function jsonBody<T> (ctx: Context, schema: z.ZodType<T>, maxBytes: number): Promise<T> {
  const raw = await readLimited(ctx.req, maxBytes)
  let doc: unknown
  try {
    doc = raw.length === 0 ? {} : JSON.parse(raw.toString('utf8'))
  } catch {
    throw new FlotillaError('BAD_REQUEST', 'the request body is not valid JSON')
  }
  const r = schema.safeParse(doc)
  if (!r.success) throw new FlotillaError('BAD_REQUEST', `invalid request: ${r.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`)
  return r.data
}
