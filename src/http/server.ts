import { createHash, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { Redacted } from 'effect'
import { WebSocketServer } from 'ws'
import { bodyKindOf, LIMITS, parseEventsBody } from '../ingest/event.js'
import type { Hub } from '../ws/hub.js'
import { DurabilityError, IngestClosedError, OverloadedError, type Ingest } from '../ingest/ingest.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'

export interface HttpDeps {
  ingest: Ingest
  hub: Hub
  metrics: Metrics
  logger: Logger
  ingestToken: Redacted.Redacted<string> | undefined
  /** The supervisor's state, and whether it is serving (running, not shutting down). */
  readiness: () => { ready: boolean; state: unknown }
  /** Origins the dashboard page may connect to besides its own (the Supabase project). */
  connectOrigins?: string[]
  /** Extra routes (the admin API), tried before 404. Return true when handled. */
  routes?: Array<(req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> | boolean>
}

const PUBLIC_DIR = new URL('../../public/', import.meta.url)

/** Compares a presented secret with the expected one in constant time (hashes equalise lengths). */
export function secretMatches(presented: string | undefined, expected: Redacted.Redacted<string>): boolean {
  if (presented === undefined) return false
  const a = createHash('sha256').update(presented).digest()
  const b = createHash('sha256').update(Redacted.value(expected)).digest()
  return timingSafeEqual(a, b)
}

export function bearerOf(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization
  if (!header) return undefined
  const match = /^Bearer\s+(.+)$/i.exec(header)
  return match ? match[1]!.trim() : undefined
}

/**
 * The admin API's gate: 404 when ADMIN_TOKEN is unset (an unconfigured relay exposes nothing),
 * 401 for a missing or wrong token. Returns true when the request may go on.
 */
export function adminAllowed(req: IncomingMessage, res: ServerResponse, adminToken: Redacted.Redacted<string> | undefined): boolean {
  if (!adminToken) {
    sendJson(res, 404, { error: 'admin_disabled', message: 'set ADMIN_TOKEN to enable the admin API' })
    return false
  }
  if (!secretMatches(bearerOf(req), adminToken)) {
    sendJson(res, 401, { error: 'unauthorized', message: 'missing or wrong admin bearer token' }, { 'www-authenticate': 'Bearer' })
    return false
  }
  return true
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

export function createHttpHandlers(deps: HttpDeps) {
  const { metrics, logger } = deps
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, perMessageDeflate: false })

  const reject = (res: ServerResponse, status: number, error: string, message: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) => {
    metrics.eventsRejected.labels(error).inc()
    sendJson(res, status, { error, message, ...extra }, headers)
  }

  async function postEvents(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (deps.ingestToken && !secretMatches(bearerOf(req), deps.ingestToken)) {
      return reject(res, 401, 'unauthorized', 'missing or wrong bearer token', {}, { 'www-authenticate': 'Bearer' })
    }
    if (!deps.ingest.isAccepting || !deps.readiness().ready) {
      return reject(res, 503, 'unavailable', 'the relay is not accepting events (starting or shutting down)', {}, { 'retry-after': '1' })
    }
    const kind = bodyKindOf(req.headers['content-type'])
    if (!kind) {
      return reject(res, 415, 'unsupported_media_type', 'send application/json (an event or an array of events) or application/x-ndjson')
    }
    const declared = Number(req.headers['content-length'] ?? NaN)
    if (declared > LIMITS.maxRequestBytes) {
      res.setHeader('connection', 'close')
      return reject(res, 413, 'body_too_large', `request body over ${LIMITS.maxRequestBytes} bytes`)
    }
    const body = await readBody(req, LIMITS.maxRequestBytes)
    if (body === undefined) {
      res.setHeader('connection', 'close')
      return reject(res, 413, 'body_too_large', `request body over ${LIMITS.maxRequestBytes} bytes`)
    }
    const parsed = parseEventsBody(body, kind)
    if (!parsed.ok) {
      metrics.eventsRejected.labels(parsed.error).inc()
      return sendJson(res, parsed.status, { error: parsed.error, details: parsed.details })
    }
    try {
      const stored = await deps.ingest.accept(parsed.events)
      metrics.eventsAccepted.inc(stored.length)
      sendJson(res, 202, {
        accepted: stored.length,
        ids: stored.map((e) => e.id),
        first_seq: stored[0]!.seq,
        last_seq: stored[stored.length - 1]!.seq,
      })
    } catch (err) {
      if (err instanceof OverloadedError) {
        return reject(res, 429, 'overloaded', err.message, { queue: err.queue }, { 'retry-after': String(err.retryAfterSeconds) })
      }
      if (err instanceof IngestClosedError) return reject(res, 503, 'unavailable', err.message, {}, { 'retry-after': '1' })
      if (err instanceof DurabilityError) {
        logger.error({ err: err.message }, 'write-ahead log append failed; request not acknowledged')
        return reject(res, 503, 'not_durable', err.message, {}, { 'retry-after': '1' })
      }
      throw err
    }
  }

  async function request(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://relay.local')
    try {
      if (url.pathname === '/events') {
        if (req.method !== 'POST') return sendJson(res, 405, { error: 'method_not_allowed', message: 'POST events here' }, { allow: 'POST' })
        return await postEvents(req, res)
      }
      if (req.method === 'GET' && url.pathname === '/healthz') return sendJson(res, 200, { status: 'alive' })
      if (req.method === 'GET' && url.pathname === '/readyz') {
        const { ready, state } = deps.readiness()
        return sendJson(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not_ready', state })
      }
      if (req.method === 'GET' && url.pathname === '/metrics') {
        const text = await metrics.registry.metrics()
        res.writeHead(200, { 'content-type': metrics.registry.contentType })
        return void res.end(text)
      }
      for (const route of deps.routes ?? []) if (await route(req, res, url)) return
      if (req.method === 'GET' && (url.pathname === '/' || url.pathname === '/index.html')) return await serveStatic(res, 'index.html', deps.connectOrigins ?? [])
      if (req.method === 'GET' && url.pathname === '/vendor/supabase.js') return await serveVendor(res)
      sendJson(res, 404, { error: 'not_found', message: `no route for ${req.method} ${url.pathname}` })
    } catch (err) {
      logger.error({ err: (err as Error).message, stack: (err as Error).stack, path: url.pathname }, 'request failed')
      if (!res.headersSent) sendJson(res, 500, { error: 'internal', message: 'internal error' })
      else res.destroy()
    }
  }

  function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://relay.local')
    if (url.pathname !== '/ws') return void socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n')
    const sinceRaw = url.searchParams.get('since')
    let since: number | undefined
    if (sinceRaw !== null) {
      since = Number(sinceRaw)
      if (!/^\d{1,15}$/.test(sinceRaw) || !Number.isSafeInteger(since)) {
        return void socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\nsince must be a non-negative integer seq\n')
      }
    }
    const client = url.searchParams.get('client') ?? undefined
    if (client !== undefined && !/^[A-Za-z0-9_.:-]{1,128}$/.test(client)) {
      return void socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\nclient must be 1-128 characters of [A-Za-z0-9_.:-]\n')
    }
    if (!deps.readiness().ready) return void socket.end('HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\n\r\n')
    wss.handleUpgrade(req, socket, head, (ws) => deps.hub.attach(ws, since, client))
  }

  return { request, upgrade, wss }
}

/** The body, or undefined once it passes `limit` bytes (the rest is discarded). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let over = false
    req.on('data', (chunk: Buffer) => {
      if (over) return
      size += chunk.length
      if (size > limit) {
        over = true
        chunks.length = 0
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => resolve(over ? undefined : Buffer.concat(chunks, size)))
    req.on('error', reject)
  })
}

async function serveStatic(res: ServerResponse, file: string, connectOrigins: string[]): Promise<void> {
  const body = await readFile(new URL(file, PUBLIC_DIR))
  const extra = connectOrigins.flatMap((o) => [o, o.replace(/^http/, 'ws')]).join(' ')
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': body.length,
    'content-security-policy': `default-src 'self'; connect-src 'self' ${extra}; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'`,
    'x-content-type-options': 'nosniff',
    'cache-control': 'no-cache',
  })
  res.end(body)
}

let vendorPath: string | undefined
/** supabase-js's browser bundle, from the installed package: the page needs no CDN. */
async function serveVendor(res: ServerResponse): Promise<void> {
  vendorPath ??= join(dirname(createRequire(import.meta.url).resolve('@supabase/supabase-js')), 'umd', 'supabase.js')
  const body = await readFile(vendorPath)
  res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'content-length': body.length, 'cache-control': 'public, max-age=3600', 'x-content-type-options': 'nosniff' })
  res.end(body)
}
