import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { Writable } from 'node:stream'
import { PGlite } from '@electric-sql/pglite'
import { Redacted } from 'effect'
import { Redis } from 'ioredis'
import pg from 'pg'
import { pino } from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { flagAdminRoutes } from '../../src/flags/adminRoutes.js'
import { pgFlagStore, pgliteFlagStore } from '../../src/flags/database.js'
import type { FlagDefinition } from '../../src/flags/definition.js'
import { SEED_FLAGS } from '../../src/flags/env.js'
import { FlagService, FlagTierUnavailableError, type FlagServiceOptions } from '../../src/flags/flags.js'
import { sendJson } from '../../src/http/server.js'
import { createPgliteStore } from '../../src/store/pglite.js'
import { openPostgresStore } from '../../src/store/postgres.js'
import { startFaultProxy } from '../fixtures/faultProxy.js'
import { describePg, freshDatabase } from '../helpers/pg.js'
import { waitFor } from '../helpers/wait.js'

const REDIS_URL = 'redis://127.0.0.1:6379'
const MIGRATION = new URL('../../supabase/migrations/20261122000300_feature_flags.sql', import.meta.url)
/** The bound: a change anywhere is seen by every instance within 1 s. */
const PROPAGATION_BOUND_MS = 1_000

const redisUnavailable = await (async () => {
  const probe = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 1_000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  let cause: Error | undefined
  probe.on('error', (err: Error) => (cause ??= err))
  try {
    await probe.connect()
    await probe.ping()
    return undefined
  } catch (err) {
    return (cause ?? (err as Error)).message
  } finally {
    probe.disconnect()
  }
})()

/** `describe` for suites that need Redis: skipped with a warning when it is down, failing under CI=true. */
const describeRedis: typeof describe.skip = redisUnavailable === undefined ? describe : describe.skip
if (redisUnavailable !== undefined) {
  if (process.env.CI === 'true') {
    describe('Redis', () => {
      it('is reachable', () => {
        throw new Error(`Redis at ${REDIS_URL} is required under CI=true (${redisUnavailable})`)
      })
    })
  } else {
    console.warn(
      `Redis at ${REDIS_URL} is unreachable (${redisUnavailable}): skipping the Redis flag tests. ` +
        'Start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
    )
  }
}

const latencies: Record<string, number[]> = {}
afterAll(() => {
  const lines = Object.entries(latencies).map(([what, ms]) => `  ${what}: ${ms.map((m) => m.toFixed(1)).join(', ')} ms (max ${Math.max(...ms).toFixed(1)})`)
  if (lines.length) console.log(`flag propagation latency, from the start of the write to the other instance's change:\n${lines.join('\n')}`)
})

interface LogLine {
  level: number
  msg: string
  [field: string]: unknown
}

function captureLogger() {
  const lines: LogLine[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as LogLine)
      done()
    },
  })
  return { logger: pino({ level: 'debug' }, stream), lines }
}

const demo: FlagDefinition = { key: 'demo', type: 'string', defaultValue: 'builtin', enabled: true, rules: [] }
const stringFlag = (value: string, over: Record<string, unknown> = {}) => ({ type: 'string', defaultValue: value, ...over })

/** Resolves with the ms from `since` until `condition` holds on the instance (checked on each change); fails after the bound. */
function seen(service: FlagService, condition: () => boolean, what: string, since: number, boundMs = PROPAGATION_BOUND_MS): Promise<number> {
  return new Promise((resolve, reject) => {
    const done = () => {
      off()
      clearTimeout(timer)
      resolve(performance.now() - since)
    }
    const off = service.onChange(() => {
      if (condition()) done()
    })
    const timer = setTimeout(() => {
      off()
      reject(new Error(`${what}: not seen within ${boundMs} ms`))
    }, boundMs)
    if (condition()) done()
  })
}

async function migratedDatabase(name: string) {
  const db = await freshDatabase(name)
  const store = await openPostgresStore(db.url)
  try {
    await store.migrate()
  } finally {
    await store.close()
  }
  return db
}

async function deleteRedisKeys(prefix: string): Promise<number> {
  const redis = new Redis(REDIS_URL)
  try {
    let deleted = 0
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
      if (keys.length) deleted += await redis.del(...keys)
      cursor = next
    } while (cursor !== '0')
    return deleted
  } finally {
    await redis.quit()
  }
}

/** Resources a test opened, released in reverse order at its end. */
function scope() {
  const cleanups: Array<() => Promise<unknown>> = []
  return {
    defer(fn: () => Promise<unknown>) {
      cleanups.push(fn)
    },
    async close() {
      for (const fn of cleanups.reverse()) await fn().catch((err: Error) => console.warn(`cleanup failed: ${err.message}`))
    },
  }
}

const newPrefix = () => `test:flags:${randomBytes(6).toString('hex')}:`

describe('seed flags from env (no database, no Redis)', () => {
  it('serve their env values as the env tier and their built-in defaults otherwise; writes need a tier', async () => {
    const { logger, lines } = captureLogger()
    const flags = await FlagService.open({
      env: { MONITORING_USE_ADAPTER: 'true', MONITORING_ADAPTER_TYPE: 'dual', MONITORING_DUAL_MODE: 'sometimes' },
      defaults: SEED_FLAGS,
      logger,
    })
    try {
      expect(flags.evaluate('MONITORING_USE_ADAPTER')).toEqual({ value: true, reason: 'STATIC', tier: 'env' })
      expect(flags.evaluate('MONITORING_ADAPTER_TYPE')).toEqual({ value: 'dual', reason: 'STATIC', tier: 'env' })
      expect(flags.evaluate('MONITORING_DUAL_MODE')).toEqual({ value: false, reason: 'STATIC', tier: 'default' })
      expect(lines.some((l) => l.key === 'MONITORING_DUAL_MODE' && l.level === 40)).toBe(true)
      expect(flags.list().map((f) => [f.key, f.tier])).toEqual([
        ['MONITORING_ADAPTER_TYPE', 'env'],
        ['MONITORING_DUAL_MODE', 'default'],
        ['MONITORING_USE_ADAPTER', 'env'],
      ])
      expect(flags.evaluate('nope')).toEqual({ value: null, reason: 'ERROR', tier: 'default', errorCode: 'FLAG_NOT_FOUND' })
      await expect(flags.put('x', stringFlag('v'), 'test')).rejects.toBeInstanceOf(FlagTierUnavailableError)
      await expect(flags.override('x', stringFlag('v'), 'test')).rejects.toBeInstanceOf(FlagTierUnavailableError)
    } finally {
      await flags.close()
    }
  })
})

describePg('flag service on Postgres', () => {
  describeRedis('with Redis', () => {
    it('resolves redis > database > env > default, and removing a tier falls back to the next', async () => {
      const s = scope()
      const prefix = newPrefix()
      try {
        const db = await migratedDatabase('flags_tiers')
        s.defer(() => db.drop())
        s.defer(() => deleteRedisKeys(prefix))
        const { logger, lines } = captureLogger()
        const flags = await FlagService.open({
          store: pgFlagStore(db.url),
          redisUrl: REDIS_URL,
          redisPrefix: prefix,
          env: { MONITORING_DUAL_MODE: 'true', demo: 'from-env' },
          defaults: [...SEED_FLAGS, demo],
          logger,
        })
        s.defer(() => flags.close())

        expect(flags.get('demo')?.tier).toBe('env')
        expect(flags.evaluate('MONITORING_DUAL_MODE')).toMatchObject({ value: true, tier: 'env' })
        expect(flags.evaluate('MONITORING_USE_ADAPTER')).toMatchObject({ value: false, tier: 'default' })

        await flags.put('demo', stringFlag('from-db'), 'tester')
        expect(flags.evaluate('demo')).toMatchObject({ value: 'from-db', tier: 'database' })
        await flags.override('demo', stringFlag('from-redis'), 'tester')
        expect(flags.evaluate('demo')).toMatchObject({ value: 'from-redis', tier: 'redis' })
        // a put under an override changes the database tier, not what is served
        await flags.put('demo', stringFlag('from-db-2'), 'tester')
        expect(flags.evaluate('demo')).toMatchObject({ value: 'from-redis', tier: 'redis' })

        await flags.override('demo', null, 'tester')
        expect(flags.evaluate('demo')).toMatchObject({ value: 'from-db-2', tier: 'database' })
        expect(await flags.delete('demo', 'tester')).toBe(true)
        expect(flags.evaluate('demo')).toMatchObject({ value: 'from-env', tier: 'env' })
        expect(await flags.delete('demo', 'tester')).toBe(false)

        // a flag known only to the database and Redis tiers
        await flags.override('only-redis', { type: 'boolean', defaultValue: true }, 'tester')
        expect(flags.evaluate('only-redis')).toMatchObject({ value: true, tier: 'redis' })
        await flags.override('only-redis', null, 'tester')
        expect(flags.get('only-redis')).toBeUndefined()

        // the tiers really are in Redis and Postgres: a fresh instance resolves the same
        await flags.put('MONITORING_DUAL_MODE', { type: 'boolean', defaultValue: false }, 'tester')
        await flags.override('demo', stringFlag('from-redis-again'), 'tester')
        const fresh = await FlagService.open({ store: pgFlagStore(db.url), redisUrl: REDIS_URL, redisPrefix: prefix, env: {}, defaults: [...SEED_FLAGS, demo], logger })
        s.defer(() => fresh.close())
        expect(fresh.evaluate('MONITORING_DUAL_MODE')).toMatchObject({ value: false, tier: 'database' })
        expect(fresh.evaluate('demo')).toMatchObject({ value: 'from-redis-again', tier: 'redis' })

        const audit = lines.filter((l) => l.audit === true)
        expect(audit.map((l) => [l.action, l.flag, l.tier, l.actor])).toContainEqual(['put', 'demo', 'database', 'tester'])
        expect(audit.map((l) => [l.action, l.flag, l.tier])).toContainEqual(['override.remove', 'demo', 'redis'])
        expect(audit.map((l) => [l.action, l.flag])).toContainEqual(['delete', 'demo'])
        for (const l of audit) expect(typeof l.at).toBe('string')
      } finally {
        await s.close()
      }
    })

    it('a change on one instance is seen by another sharing Redis and Postgres within 1 s', async () => {
      const s = scope()
      const prefix = newPrefix()
      try {
        const db = await migratedDatabase('flags_two')
        s.defer(() => db.drop())
        s.defer(() => deleteRedisKeys(prefix))
        const { logger } = captureLogger()
        const open = () => FlagService.open({ store: pgFlagStore(db.url), redisUrl: REDIS_URL, redisPrefix: prefix, env: {}, defaults: [demo], logger })
        const a = await open()
        s.defer(() => a.close())
        const b = await open()
        s.defer(() => b.close())
        const record = (ms: number) => (latencies['redis + postgres'] ??= []).push(ms)

        for (let i = 1; i <= 3; i++) {
          const t0 = performance.now()
          await a.put('demo', stringFlag(`v${i}`), 'a')
          record(await seen(b, () => b.evaluate('demo').value === `v${i}`, `put v${i} on b`, t0))
        }
        let t0 = performance.now()
        await a.override('demo', stringFlag('pinned'), 'a')
        record(await seen(b, () => b.get('demo')?.tier === 'redis' && b.evaluate('demo').value === 'pinned', 'override on b', t0))
        t0 = performance.now()
        await b.override('demo', null, 'b')
        record(await seen(a, () => a.get('demo')?.tier === 'database', 'override removed on a', t0))
        t0 = performance.now()
        await b.delete('demo', 'b')
        record(await seen(a, () => a.get('demo')?.tier === 'default', 'delete on a', t0))
      } finally {
        await s.close()
      }
    })

    it('Redis pub/sub alone carries overrides between instances (no database tier)', async () => {
      const s = scope()
      const prefix = newPrefix()
      try {
        s.defer(() => deleteRedisKeys(prefix))
        const { logger } = captureLogger()
        const open = () => FlagService.open({ redisUrl: REDIS_URL, redisPrefix: prefix, env: {}, defaults: [demo], logger })
        const a = await open()
        s.defer(() => a.close())
        const b = await open()
        s.defer(() => b.close())
        const t0 = performance.now()
        await a.override('demo', stringFlag('via-pubsub', { rules: [{ userIds: ['u1'], value: 'u1-only' }] }), 'a')
        ;(latencies['redis only'] ??= []).push(await seen(b, () => b.evaluate('demo', { userId: 'u1' }).value === 'u1-only', 'override on b', t0))
        expect(b.evaluate('demo')).toMatchObject({ value: 'via-pubsub', reason: 'DEFAULT', tier: 'redis' })
      } finally {
        await s.close()
      }
    })

    it('an invalid definition written straight into Redis is logged and ignored (the flag falls back)', async () => {
      const s = scope()
      const prefix = newPrefix()
      try {
        s.defer(() => deleteRedisKeys(prefix))
        const { logger, lines } = captureLogger()
        const flags = await FlagService.open({ redisUrl: REDIS_URL, redisPrefix: prefix, env: {}, defaults: [demo], logger })
        s.defer(() => flags.close())
        const redis = new Redis(REDIS_URL)
        s.defer(() => redis.quit())
        await redis.set(`${prefix}flag:demo`, JSON.stringify({ type: 'string', defaultValue: 42 }))
        await redis.publish(`${prefix}flags:changed`, 'demo')
        await waitFor(() => lines.some((l) => l.msg === 'stored flag definition is invalid; ignored'), 'the invalid definition to be logged', 2_000)
        expect(flags.evaluate('demo')).toMatchObject({ value: 'builtin', tier: 'default' })
        expect(lines.find((l) => l.msg === 'stored flag definition is invalid; ignored')).toMatchObject({
          tier: 'redis',
          flag: 'demo',
          details: [{ path: 'defaultValue', message: "Expected a string (the flag's type), got 42" }],
        })
      } finally {
        await s.close()
      }
    })

    it('reloads what changed while its Redis connections were cut, once they are back', async () => {
      const s = scope()
      const prefix = newPrefix()
      try {
        s.defer(() => deleteRedisKeys(prefix))
        const proxy = await startFaultProxy({ host: '127.0.0.1', port: 6379 })
        s.defer(() => proxy.close())
        const { logger } = captureLogger()
        const direct = await FlagService.open({ redisUrl: REDIS_URL, redisPrefix: prefix, env: {}, defaults: [demo], logger })
        s.defer(() => direct.close())
        const behind = await FlagService.open({ redisUrl: `redis://127.0.0.1:${proxy.port}`, redisPrefix: prefix, env: {}, defaults: [demo], logger })
        s.defer(() => behind.close())
        // Connected directly, it shows when a change has been delivered to every subscriber.
        const witness = await FlagService.open({ redisUrl: REDIS_URL, redisPrefix: prefix, env: {}, defaults: [demo], logger })
        s.defer(() => witness.close())

        proxy.setMode('cut')
        await direct.override('demo', stringFlag('while-cut'), 'direct') // published while `behind` cannot hear it
        await waitFor(() => witness.evaluate('demo').value === 'while-cut', 'the override to reach a connected instance', 5_000)
        // A later change, delivered too: the first one's window has passed for every subscriber.
        await direct.override('demo', stringFlag('while-cut-2'), 'direct')
        await waitFor(() => witness.evaluate('demo').value === 'while-cut-2', 'the second override to reach a connected instance', 5_000)
        expect(behind.evaluate('demo')).toMatchObject({ value: 'builtin', tier: 'default' })
        proxy.setMode('pass')
        await waitFor(() => behind.evaluate('demo').value === 'while-cut-2', 'the override to arrive after the reconnect', 10_000)
        expect(behind.get('demo')?.tier).toBe('redis')
      } finally {
        await s.close()
      }
    })

    it('starts while Redis is unreachable (lower tiers serve) and loads the overrides once it is back', async () => {
      const s = scope()
      const prefix = newPrefix()
      try {
        s.defer(() => deleteRedisKeys(prefix))
        const { logger: quiet } = captureLogger()
        const writer = await FlagService.open({ redisUrl: REDIS_URL, redisPrefix: prefix, env: {}, defaults: [demo], logger: quiet })
        s.defer(() => writer.close())
        await writer.override('demo', stringFlag('override'), 'writer')

        const proxy = await startFaultProxy({ host: '127.0.0.1', port: 6379 })
        s.defer(() => proxy.close())
        proxy.setMode('cut')
        const { logger, lines } = captureLogger()
        const t0 = performance.now()
        const late = await FlagService.open({ redisUrl: `redis://127.0.0.1:${proxy.port}`, redisPrefix: prefix, env: { demo: 'env' }, defaults: [demo], logger })
        s.defer(() => late.close())
        expect(performance.now() - t0).toBeLessThan(5_000)
        expect(late.evaluate('demo')).toMatchObject({ value: 'env', tier: 'env' })
        expect(lines.some((l) => l.msg === 'redis unreachable at start; serving the other tiers until it is back')).toBe(true)
        proxy.setMode('pass')
        await waitFor(() => late.get('demo')?.tier === 'redis', 'the override to load after Redis came back', 10_000)
        expect(late.evaluate('demo').value).toBe('override')
      } finally {
        await s.close()
      }
    })
  })

  describe('without Redis (LISTEN/NOTIFY only)', () => {
    it('a change on one instance is seen by another within 1 s, including a row edited by hand in SQL', async () => {
      const s = scope()
      try {
        const db = await migratedDatabase('flags_notify')
        s.defer(() => db.drop())
        const { logger, lines } = captureLogger()
        const open = () => FlagService.open({ store: pgFlagStore(db.url), env: {}, defaults: [demo], logger })
        const a = await open()
        s.defer(() => a.close())
        const b = await open()
        s.defer(() => b.close())
        const record = (ms: number) => (latencies['postgres LISTEN/NOTIFY'] ??= []).push(ms)

        for (let i = 1; i <= 3; i++) {
          const t0 = performance.now()
          await a.put('demo', stringFlag(`v${i}`, { rules: [{ percentage: 100, value: `v${i}-rolled` }] }), 'a')
          record(await seen(b, () => b.evaluate('demo', { targetingKey: 'c1' }).value === `v${i}-rolled`, `put v${i} on b`, t0))
        }

        const sql = new pg.Client({ connectionString: db.url })
        await sql.connect()
        s.defer(() => sql.end())
        const t0 = performance.now()
        await sql.query(
          `update public.feature_flags set definition = jsonb_set(definition, '{enabled}', 'false'), updated_by = 'studio', updated_at = now() where key = 'demo'`,
        )
        record(await seen(a, () => a.evaluate('demo', { targetingKey: 'c1' }).reason === 'DISABLED', 'hand edit on a', t0))
        await seen(b, () => b.evaluate('demo', { targetingKey: 'c1' }).reason === 'DISABLED', 'hand edit on b', t0)
        expect(lines.some((l) => l.msg === 'flag definition loaded' && l.updatedBy === 'studio')).toBe(true)

        const t1 = performance.now()
        await b.delete('demo', 'b')
        record(await seen(a, () => a.get('demo')?.tier === 'default', 'delete on a', t1))
      } finally {
        await s.close()
      }
    })

    it('reloads what changed while its LISTEN connection was cut, once it is back', async () => {
      const s = scope()
      try {
        const db = await migratedDatabase('flags_relisten')
        s.defer(() => db.drop())
        const proxy = await startFaultProxy({ host: '127.0.0.1', port: 5432 })
        s.defer(() => proxy.close())
        const { logger } = captureLogger()
        const writer = await FlagService.open({ store: pgFlagStore(db.url), env: {}, defaults: [demo], logger })
        s.defer(() => writer.close())
        const behind = await FlagService.open({
          store: pgFlagStore(proxy.url(db.url), { reconnectBaseMs: 50, reconnectCapMs: 200 }),
          env: {},
          defaults: [demo],
          logger,
          retryMs: 100,
        })
        s.defer(() => behind.close())
        // Listening directly, it shows when a change has been notified to every listener.
        const witness = await FlagService.open({ store: pgFlagStore(db.url), env: {}, defaults: [demo], logger })
        s.defer(() => witness.close())

        proxy.setMode('cut')
        await writer.put('demo', stringFlag('while-cut'), 'writer')
        await waitFor(() => witness.evaluate('demo').value === 'while-cut', 'the change to reach a connected instance', 5_000)
        // A later change, delivered too: the first one's window has passed for every listener.
        await writer.put('demo', stringFlag('while-cut-2'), 'writer')
        await waitFor(() => witness.evaluate('demo').value === 'while-cut-2', 'the second change to reach a connected instance', 5_000)
        expect(behind.evaluate('demo')).toMatchObject({ value: 'builtin', tier: 'default' })
        proxy.setMode('pass')
        await waitFor(() => behind.evaluate('demo').value === 'while-cut-2', 'the change to arrive after the reconnect', 10_000)
        expect(behind.get('demo')?.tier).toBe('database')
      } finally {
        await s.close()
      }
    })

    it('starts while the database is unreachable (env and defaults serve) and loads it when it is back', async () => {
      const s = scope()
      try {
        const db = await migratedDatabase('flags_late')
        s.defer(() => db.drop())
        const seed = await FlagService.open({ store: pgFlagStore(db.url), env: {}, defaults: [demo], logger: captureLogger().logger })
        await seed.put('demo', stringFlag('stored'), 'seed')
        await seed.close()

        const proxy = await startFaultProxy({ host: '127.0.0.1', port: 5432 })
        s.defer(() => proxy.close())
        proxy.setMode('cut')
        const { logger, lines } = captureLogger()
        const flags = await FlagService.open({
          store: pgFlagStore(proxy.url(db.url), { reconnectBaseMs: 50, reconnectCapMs: 200, connectTimeoutMs: 1_000 }),
          env: {},
          defaults: [demo],
          logger,
          retryMs: 100,
        })
        s.defer(() => flags.close())
        expect(flags.evaluate('demo')).toMatchObject({ value: 'builtin', tier: 'default' })
        expect(lines.some((l) => l.msg === 'flag tier unavailable; serving the other tiers and retrying')).toBe(true)
        proxy.setMode('pass')
        await waitFor(() => flags.get('demo')?.tier === 'database', 'the database tier to load', 10_000)
        expect(flags.evaluate('demo').value).toBe('stored')
      } finally {
        await s.close()
      }
    })
  })

  it('the migration is idempotent on PostgreSQL 15 (it runs twice)', async () => {
    const db = await migratedDatabase('flags_migration')
    const client = new pg.Client({ connectionString: db.url })
    try {
      await client.connect()
      const text = await readFile(MIGRATION, 'utf8')
      await client.query(text)
      await client.query(text)
      const { rows } = await client.query(`select count(*)::int as n from pg_trigger where tgname = 'feature_flags_notify'`)
      expect(rows[0].n).toBe(1)
    } finally {
      await client.end()
      await db.drop()
    }
  })

  describe('admin routes', () => {
    const TOKEN = 'flag-admin-secret'

    async function serve(flags: FlagService, adminToken: string | undefined, logger: pino.Logger) {
      const route = flagAdminRoutes({ flags, adminToken: adminToken === undefined ? undefined : Redacted.make(adminToken), logger })
      const server = createServer((req: IncomingMessage, res: ServerResponse) => {
        const url = new URL(req.url ?? '/', 'http://relay.local')
        void route(req, res, url).then((handled) => {
          if (!handled) sendJson(res, 404, { error: 'not_found' })
        })
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
      return {
        call: (method: string, path: string, body?: unknown, token: string | undefined = TOKEN) =>
          fetch(`${base}${path}`, {
            method,
            headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
            body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
          }),
        close: () => new Promise<void>((resolve) => server.close(() => resolve())),
      }
    }

    it('GET/PUT/DELETE /admin/flags end to end: 200, 400 with details, 401, 404, 413', async () => {
      const s = scope()
      try {
        const db = await migratedDatabase('flags_admin')
        s.defer(() => db.drop())
        const { logger, lines } = captureLogger()
        const flags = await FlagService.open({ store: pgFlagStore(db.url), env: { MONITORING_DUAL_MODE: 'true' }, defaults: SEED_FLAGS, logger })
        s.defer(() => flags.close())
        const api = await serve(flags, TOKEN, logger)
        s.defer(() => api.close())
        const disabled = await serve(flags, undefined, logger)
        s.defer(() => disabled.close())

        expect((await disabled.call('GET', '/admin/flags')).status).toBe(404)
        expect((await api.call('GET', '/admin/flags', undefined, null as unknown as undefined)).status).toBe(401)
        const wrong = await api.call('GET', '/admin/flags', undefined, 'flag-admin-secret-nope')
        expect(wrong.status).toBe(401)
        expect(wrong.headers.get('www-authenticate')).toBe('Bearer')
        expect((await api.call('GET', '/admin/other')).status).toBe(404) // not ours: falls through

        const list = await api.call('GET', '/admin/flags')
        expect(list.status).toBe(200)
        expect(((await list.json()) as { flags: Array<{ key: string; tier: string }> }).flags.map((f) => [f.key, f.tier])).toEqual([
          ['MONITORING_ADAPTER_TYPE', 'default'],
          ['MONITORING_DUAL_MODE', 'env'],
          ['MONITORING_USE_ADAPTER', 'default'],
        ])

        const put = await api.call('PUT', '/admin/flags/realtime-rollout', { type: 'boolean', defaultValue: false, rules: [{ percentage: 25, value: true }] })
        expect(put.status).toBe(200)
        expect(await put.json()).toMatchObject({ key: 'realtime-rollout', definition: { enabled: true, rules: [{ percentage: 25, value: true }] }, effective: { tier: 'database' } })
        const got = await api.call('GET', '/admin/flags/realtime-rollout')
        expect(got.status).toBe(200)
        expect(await got.json()).toMatchObject({ key: 'realtime-rollout', tier: 'database', definition: { type: 'boolean' } })

        const bad = await api.call('PUT', '/admin/flags/realtime-rollout', { type: 'boolean', defaultValue: false, rules: [{ percentage: 250, value: true }, { userIds: [], value: 'yes' }] })
        expect(bad.status).toBe(400)
        expect(await bad.json()).toMatchObject({
          error: 'invalid_flag',
          details: [
            { path: 'rules.0.percentage', message: 'Expected a value between 0 and 100, got 250' },
          ],
        })
        const badType = await api.call('PUT', '/admin/flags/realtime-rollout', { type: 'boolean', defaultValue: false, rules: [{ userIds: ['u'], value: 'yes' }] })
        expect(await badType.json()).toMatchObject({ error: 'invalid_flag', details: [{ path: 'rules.0.value', message: `Expected a boolean (the flag's type), got "yes"` }] })
        const mismatch = await api.call('PUT', '/admin/flags/realtime-rollout', { key: 'other', type: 'boolean', defaultValue: false })
        expect(await mismatch.json()).toMatchObject({ error: 'invalid_flag', details: [{ path: 'key' }] })
        const notJson = await api.call('PUT', '/admin/flags/realtime-rollout', '{"type":')
        expect(notJson.status).toBe(400)
        expect(await notJson.json()).toMatchObject({ error: 'invalid_json' })
        const huge = await api.call('PUT', '/admin/flags/realtime-rollout', { type: 'string', defaultValue: 'x'.repeat(70 * 1024) })
        expect(huge.status).toBe(413)
        expect(flags.get('realtime-rollout')?.definition.rules).toEqual([{ percentage: 25, value: true }]) // nothing bad was kept

        expect((await api.call('GET', '/admin/flags/unknown')).status).toBe(404)
        expect((await api.call('GET', '/admin/flags/bad%20key')).status).toBe(400)
        expect((await api.call('POST', '/admin/flags/realtime-rollout', {})).status).toBe(405)

        const del = await api.call('DELETE', '/admin/flags/realtime-rollout')
        expect(del.status).toBe(200)
        expect(await del.json()).toMatchObject({ key: 'realtime-rollout', deleted: true, effective: null })
        expect((await api.call('DELETE', '/admin/flags/realtime-rollout')).status).toBe(404)
        // deleting the database tier of a seed flag falls back to env
        await api.call('PUT', '/admin/flags/MONITORING_DUAL_MODE', { type: 'boolean', defaultValue: false })
        expect(flags.evaluate('MONITORING_DUAL_MODE')).toMatchObject({ value: false, tier: 'database' })
        expect(await (await api.call('DELETE', '/admin/flags/MONITORING_DUAL_MODE')).json()).toMatchObject({ effective: { tier: 'env' } })

        const audit = lines.filter((l) => l.audit === true)
        expect(audit.map((l) => [l.action, l.flag, l.actor])).toEqual([
          ['put', 'realtime-rollout', 'admin@127.0.0.1'],
          ['delete', 'realtime-rollout', 'admin@127.0.0.1'],
          ['put', 'MONITORING_DUAL_MODE', 'admin@127.0.0.1'],
          ['delete', 'MONITORING_DUAL_MODE', 'admin@127.0.0.1'],
        ])
        expect(JSON.stringify(lines)).not.toContain(TOKEN)
      } finally {
        await s.close()
      }
    })
  })
})

describe('flag service on PGlite', () => {
  it('keeps the database tier in PGlite and sees a row edited in SQL through its listen API', async () => {
    const db = await PGlite.create()
    const store = createPgliteStore(db)
    const s = scope()
    s.defer(() => store.close()) // closes db
    try {
      await store.migrate()
      const text = await readFile(MIGRATION, 'utf8')
      await db.exec(text) // idempotent: a second run changes nothing
      const { logger, lines } = captureLogger()
      const options: FlagServiceOptions = { store: pgliteFlagStore(db), env: { MONITORING_USE_ADAPTER: 'true' }, defaults: [...SEED_FLAGS, demo], logger }
      const flags = await FlagService.open(options)
      s.defer(() => flags.close())

      expect(flags.evaluate('MONITORING_USE_ADAPTER')).toMatchObject({ value: true, tier: 'env' })
      await flags.put('MONITORING_USE_ADAPTER', { type: 'boolean', defaultValue: false }, 'tester')
      expect(flags.evaluate('MONITORING_USE_ADAPTER')).toMatchObject({ value: false, tier: 'database' })
      const [row] = (await db.query<{ definition: unknown; updated_by: string }>(`select definition, updated_by from public.feature_flags where key = 'MONITORING_USE_ADAPTER'`)).rows
      expect(row).toEqual({ definition: { key: 'MONITORING_USE_ADAPTER', type: 'boolean', defaultValue: false, enabled: true, rules: [] }, updated_by: 'tester' })

      const t0 = performance.now()
      await db.query(`insert into public.feature_flags (key, definition, updated_by) values ('demo', $1::text::jsonb, 'sql')`, [JSON.stringify(stringFlag('from-sql'))])
      ;(latencies['pglite listen (same instance)'] ??= []).push(await seen(flags, () => flags.evaluate('demo').value === 'from-sql', 'sql insert', t0))
      expect(flags.get('demo')?.tier).toBe('database')
      expect(lines.some((l) => l.msg === 'flag definition loaded' && l.updatedBy === 'sql')).toBe(true)

      expect(await flags.delete('demo', 'tester')).toBe(true)
      expect(flags.evaluate('demo')).toMatchObject({ value: 'builtin', tier: 'default' })
      await expect(flags.override('demo', null, 'tester')).rejects.toBeInstanceOf(FlagTierUnavailableError)
    } finally {
      await s.close()
    }
    expect(db.closed).toBe(true)
  })
})
