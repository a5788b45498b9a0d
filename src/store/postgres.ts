import { inspect } from 'node:util'
import pg from 'pg'
import { migrate } from './migrate.js'
import { classifyError, createSqlStore, redactUrl, StoreError, type SqlRunner, type Store } from './store.js'

export interface PostgresStoreOptions {
  /** Connections in the pool (default 10). */
  poolSize?: number
  /** Server-side statement_timeout (default 10 s); the client gives up 2 s after it. */
  statementTimeoutMs?: number
  /** Time to establish a connection (default 5 s). */
  connectTimeoutMs?: number
  /** application_name seen in pg_stat_activity (default 'monitoring-relay'). */
  applicationName?: string
}

/**
 * A Store on PostgreSQL through a pg.Pool. Opening does not connect: the relay must start (and
 * keep acknowledging into its WAL) while the database is down; the first call reports the outage
 * as a StoreError. Error messages name the database by its redacted URL, never the password.
 */
export async function openPostgresStore(url: string, opts: PostgresStoreOptions = {}): Promise<Store> {
  const statementTimeoutMs = opts.statementTimeoutMs ?? 10_000
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.poolSize ?? 10,
    statement_timeout: statementTimeoutMs,
    query_timeout: statementTimeoutMs + 2_000,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
    application_name: opts.applicationName ?? 'monitoring-relay',
    idleTimeoutMillis: 30_000,
    keepAlive: true,
  })
  // An idle client that loses its connection emits 'error' on the pool, which has already
  // discarded it; without a listener that would crash the process. The next call through the
  // pool meets any lasting outage and reports it as a StoreError.
  pool.on('error', () => {})

  const describe = `postgres ${redactUrl(url)}`
  const secrets = passwordsOf(url)
  const fail = (what: string, err: unknown): StoreError => toStoreError(err, `${describe}: ${what}`, secrets)

  const runner = poolRunner(pool, fail)
  let closing: Promise<void> | undefined
  return createSqlStore({
    kind: 'postgres',
    runner,
    migrate: () => migrate(runner),
    close: () => (closing ??= pool.end()),
  })
}

type Fail = (what: string, err: unknown) => StoreError

function poolRunner(pool: pg.Pool, fail: Fail): SqlRunner {
  return {
    async exec(sql) {
      try {
        await pool.query(sql)
      } catch (err) {
        throw fail('exec failed', err)
      }
    },
    async query<R>(sql: string, params: readonly unknown[] = []) {
      try {
        const result = await pool.query(sql, [...params])
        return result.rows as R[]
      } catch (err) {
        throw fail('query failed', err)
      }
    },
    async transaction(fn) {
      let client: pg.PoolClient
      try {
        client = await pool.connect()
      } catch (err) {
        throw fail('connect failed', err)
      }
      let broken = false
      try {
        await clientRunner(client, fail).exec('begin')
        const result = await fn(clientRunner(client, fail))
        await clientRunner(client, fail).exec('commit')
        return result
      } catch (err) {
        try {
          await client.query('rollback')
        } catch {
          broken = true // the connection is unusable: destroy it rather than reuse it
        }
        throw err instanceof StoreError ? err : fail('transaction failed', err)
      } finally {
        client.release(broken)
      }
    },
  }
}

function clientRunner(client: pg.PoolClient, fail: Fail): SqlRunner {
  const self: SqlRunner = {
    async exec(sql) {
      try {
        await client.query(sql)
      } catch (err) {
        throw fail('exec failed', err)
      }
    },
    async query<R>(sql: string, params: readonly unknown[] = []) {
      try {
        return (await client.query(sql, [...params])).rows as R[]
      } catch (err) {
        throw fail('query failed', err)
      }
    },
    // Already inside a transaction: run in it.
    transaction: (fn) => fn(self),
  }
  return self
}

function toStoreError(err: unknown, context: string, secrets: readonly string[]): StoreError {
  if (err instanceof StoreError) return err
  // The server's ErrorResponse; anything else (ECONNREFUSED, a pool timeout) has no SQLSTATE.
  const sqlState = err instanceof pg.DatabaseError ? err.code : undefined
  const code = classifyError(err, sqlState)
  const detail = err instanceof Error ? err.message : String(err)
  const message = scrub(`${context} (${code}${sqlState ? ` ${sqlState}` : ''}): ${detail}`, secrets)
  return new StoreError({ code, message, cause: scrubCause(err, secrets), ...(sqlState ? { sqlState } : {}) })
}

/**
 * Strings that must not appear in errors: the password as written in the URL and decoded (also
 * a `password` query parameter), or the whole URL when it does not parse.
 */
function passwordsOf(url: string): string[] {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return [url]
  }
  const found = [u.password, u.searchParams.get('password') ?? ''].filter((p) => p !== '')
  return [...new Set(found.flatMap((p) => [p, safeDecode(p), encodeURIComponent(p)]))]
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

function scrub(text: string, secrets: readonly string[]): string {
  return secrets.reduce((t, s) => t.split(s).join('***'), text)
}

/** Keeps the original error as cause unless some field of it carries the password. */
function scrubCause(err: unknown, secrets: readonly string[]): unknown {
  if (secrets.length === 0) return err
  const seen = inspect(err, { depth: 4 })
  if (!secrets.some((s) => seen.includes(s))) return err
  const message = err instanceof Error ? err.message : String(err)
  return new Error(scrub(message, secrets))
}
