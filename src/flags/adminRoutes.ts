import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Redacted } from 'effect'
import { adminAllowed, sendJson } from '../http/server.js'
import type { Logger } from '../observability/logger.js'
import { FLAG_KEY_PATTERN, FlagValidationError } from './definition.js'
import { FlagTierUnavailableError, type FlagService } from './flags.js'

export interface FlagAdminDeps {
  flags: FlagService
  adminToken: Redacted.Redacted<string> | undefined
  logger: Logger
}

/** Largest PUT body. */
export const FLAG_BODY_LIMIT = 64 * 1024

const PREFIX = '/admin/flags'

/**
 * The flag management API (Authorization: Bearer ADMIN_TOKEN), as src/admin.ts: 404 when no
 * token is set, 401 for a missing or wrong one.
 *   GET    /admin/flags        every flag in force: { flags: [{ key, tier, definition }] }
 *   GET    /admin/flags/:key   { key, tier, definition } or 404
 *   PUT    /admin/flags/:key   body: a definition (JSON, ≤ 64 KiB) → database tier; 200 { key,
 *                              definition, effective: { tier } }; 400 { error: 'invalid_flag',
 *                              details: [{ path, message }] }
 *   DELETE /admin/flags/:key   removes the database-tier definition: 200 { deleted: true, effective }
 *                              or 404 when there was none
 * Handles only paths under /admin/flags, so list it before adminRoutes (which answers 404 for
 * every other /admin path). The audit actor is `admin@<remote address>`.
 */
export function flagAdminRoutes(deps: FlagAdminDeps) {
  const { flags, logger } = deps
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> => {
    if (url.pathname !== PREFIX && !url.pathname.startsWith(`${PREFIX}/`)) return false
    if (!adminAllowed(req, res, deps.adminToken)) return true
    if (url.pathname === PREFIX || url.pathname === `${PREFIX}/`) {
      if (req.method !== 'GET') return answer(res, 405, { error: 'method_not_allowed', message: 'GET the list; PUT or DELETE /admin/flags/:key' }, { allow: 'GET' })
      return answer(res, 200, { flags: flags.list() })
    }
    const key = keyOf(url.pathname.slice(PREFIX.length + 1))
    if (key === undefined) return answer(res, 400, { error: 'invalid_key', message: `a flag key is 1–128 characters matching ${FLAG_KEY_PATTERN.source}` })
    const actor = `admin@${req.socket.remoteAddress ?? 'unknown'}`
    try {
      switch (req.method) {
        case 'GET': {
          const found = flags.get(key)
          return found ? answer(res, 200, { key, ...found }) : notFound(res, key)
        }
        case 'PUT': {
          const body = await readJson(req, res)
          if (!body.ok) return answer(res, body.status, { error: body.error, message: body.message })
          const definition = await flags.put(key, body.value, actor)
          return answer(res, 200, { key, definition, effective: { tier: flags.get(key)?.tier } })
        }
        case 'DELETE': {
          const deleted = await flags.delete(key, actor)
          if (!deleted) return notFound(res, key, 'no database-tier definition to delete')
          return answer(res, 200, { key, deleted, effective: flags.get(key) ?? null })
        }
        default:
          return answer(res, 405, { error: 'method_not_allowed', message: 'GET, PUT or DELETE a flag' }, { allow: 'GET, PUT, DELETE' })
      }
    } catch (err) {
      if (err instanceof FlagValidationError) return answer(res, 400, { error: 'invalid_flag', message: err.message, details: err.details })
      if (err instanceof FlagTierUnavailableError) return answer(res, 503, { error: 'tier_unavailable', message: err.message })
      logger.error({ flag: key, method: req.method, err: (err as Error).message }, 'flag admin request failed')
      return answer(res, 503, { error: 'unavailable', message: 'the flag store could not be reached; try again' }, { 'retry-after': '1' })
    }
  }
}

function answer(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): true {
  sendJson(res, status, body, headers)
  return true
}

function notFound(res: ServerResponse, key: string, message = 'no such flag'): true {
  return answer(res, 404, { error: 'flag_not_found', message, key })
}

function keyOf(segment: string): string | undefined {
  let key: string
  try {
    key = decodeURIComponent(segment)
  } catch {
    return undefined
  }
  return FLAG_KEY_PATTERN.test(key) ? key : undefined
}

type JsonBody = { ok: true; value: unknown } | { ok: false; status: number; error: string; message: string }

/** The body as JSON; past the limit the rest is read and discarded, and the connection closed after the answer. */
function readJson(req: IncomingMessage, res: ServerResponse): Promise<JsonBody> {
  const tooLarge = (): JsonBody => {
    res.setHeader('connection', 'close')
    return { ok: false, status: 413, error: 'body_too_large', message: `a flag definition is at most ${FLAG_BODY_LIMIT} bytes` }
  }
  if (Number(req.headers['content-length'] ?? 0) > FLAG_BODY_LIMIT) {
    req.resume()
    return Promise.resolve(tooLarge())
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size <= FLAG_BODY_LIMIT) chunks.push(chunk)
      else chunks.length = 0
    })
    req.on('error', reject)
    req.on('end', () => {
      if (size > FLAG_BODY_LIMIT) return resolve(tooLarge())
      try {
        resolve({ ok: true, value: JSON.parse(Buffer.concat(chunks).toString('utf8')) })
      } catch (err) {
        resolve({ ok: false, status: 400, error: 'invalid_json', message: `the body is not JSON: ${(err as Error).message}` })
      }
    })
  })
}
