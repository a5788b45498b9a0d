import type { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import { jitteredBackoffMs } from '../../machines/backoff.js'

/**
 * What the flag service needs from a database: parameterised queries and LISTEN. Adapters:
 * {@link pgFlagStore} (a connection string: its own small pool and one dedicated LISTEN
 * connection) and {@link pgliteFlagStore} (an open PGlite instance). FlagService.open takes
 * ownership: FlagService#close closes it.
 */
export interface FlagStore {
  readonly kind: 'postgres' | 'pglite'
  query<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]>
  /**
   * Calls onNotify with each NOTIFY payload on `channel`. Resolves once the first attempt to
   * listen is over, whether it worked or not (a failed attempt is retried in the background); the
   * result stops listening.
   */
  listen(channel: string, onNotify: (payload: string) => void, events?: ListenEvents): Promise<() => Promise<void>>
  close(): Promise<void>
}

export interface ListenEvents {
  /** The listening connection is back after a loss: notifications may have been missed, reload. */
  onReconnect?: () => void
  /** The listening connection failed or was lost (it is retried with backoff). */
  onError?: (err: Error) => void
}

/** The channel the feature_flags trigger notifies, with the flag's key as payload. */
export const FLAGS_CHANNEL = 'feature_flags'

export interface PgFlagStoreOptions {
  /** Pool connections for reads and writes (default 2; flags are read in full rarely). */
  poolSize?: number
  /** Server-side statement_timeout (default 5 s); the client gives up 2 s after it. */
  statementTimeoutMs?: number
  connectTimeoutMs?: number
  /** Reconnect backoff of the LISTEN connection: base and cap (defaults 250 ms, 10 s), with jitter. */
  reconnectBaseMs?: number
  reconnectCapMs?: number
  applicationName?: string
}

/** A FlagStore on PostgreSQL. Opening does not connect; the first query or listen does. */
export function pgFlagStore(connectionString: string, opts: PgFlagStoreOptions = {}): FlagStore {
  const statementTimeoutMs = opts.statementTimeoutMs ?? 5_000
  const connection = {
    connectionString,
    statement_timeout: statementTimeoutMs,
    query_timeout: statementTimeoutMs + 2_000,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
    application_name: opts.applicationName ?? 'monitoring-relay-flags',
    keepAlive: true,
  }
  const pool = new pg.Pool({ ...connection, max: opts.poolSize ?? 2, idleTimeoutMillis: 30_000 })
  pool.on('error', () => {}) // an idle client lost: the pool drops it, the next query reconnects
  const listeners = new Set<() => Promise<void>>()
  let closing: Promise<void> | undefined

  return {
    kind: 'postgres',
    async query<R>(sql: string, params: readonly unknown[] = []) {
      return (await pool.query(sql, [...params])).rows as R[]
    },
    async listen(channel, onNotify, events = {}) {
      const stop = await listenWithReconnect({
        connect: () => new pg.Client(connection),
        channel,
        onNotify,
        onReconnect: events.onReconnect,
        onError: events.onError,
        baseMs: opts.reconnectBaseMs ?? 250,
        capMs: opts.reconnectCapMs ?? 10_000,
      })
      listeners.add(stop)
      return async () => {
        listeners.delete(stop)
        await stop()
      }
    },
    close: () =>
      (closing ??= (async () => {
        await Promise.all([...listeners].map((stop) => stop()))
        await pool.end()
      })()),
  }
}

interface ListenOptions {
  connect: () => pg.Client
  channel: string
  onNotify: (payload: string) => void
  onReconnect: (() => void) | undefined
  onError: ((err: Error) => void) | undefined
  baseMs: number
  capMs: number
}

/** One dedicated connection that LISTENs, replaced after any loss with exponential backoff. */
async function listenWithReconnect(o: ListenOptions): Promise<() => Promise<void>> {
  let current: pg.Client | undefined
  let timer: NodeJS.Timeout | undefined
  let failures = 0
  let stopped = false
  let first = true

  const attempt = async (): Promise<void> => {
    const isFirst = first
    first = false
    const client = o.connect()
    let lastError: Error | undefined
    client.on('error', (err: Error) => (lastError = err))
    client.on('notification', (msg) => {
      if (msg.channel === o.channel) o.onNotify(msg.payload ?? '')
    })
    try {
      await client.connect()
      await client.query(`listen ${quoteIdent(o.channel)}`)
    } catch (err) {
      await discard(client)
      o.onError?.(err as Error)
      return schedule()
    }
    if (stopped) return void (await discard(client))
    current = client
    failures = 0
    client.once('end', () => {
      if (current !== client) return
      current = undefined
      o.onError?.(lastError ?? new Error('LISTEN connection ended'))
      schedule()
    })
    if (!isFirst) o.onReconnect?.()
  }

  function schedule(): void {
    if (stopped || timer) return
    // Equal jitter: never sooner than half the ceiling, so a flapping server is not hammered.
    const delay = jitteredBackoffMs({ baseMs: o.baseMs, capMs: o.capMs }, failures++, Math.random, 0.5)
    timer = setTimeout(() => {
      timer = undefined
      void attempt()
    }, delay)
    timer.unref()
  }

  await attempt()
  return async () => {
    stopped = true
    if (timer) clearTimeout(timer)
    const client = current
    current = undefined
    if (client) await discard(client)
  }
}

/**
 * Ends a LISTEN client that is being dropped, without reporting a failure to end it: the client is
 * already broken (its error went to onError) or is being stopped, and pg frees its socket either way.
 */
function discard(client: pg.Client): Promise<void> {
  return client.end().catch(() => undefined)
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

/**
 * A FlagStore on a PGlite instance the caller opened (and keeps: close() only stops listening).
 * PGlite is one in-process connection, so LISTEN is never lost and onReconnect never called.
 */
export function pgliteFlagStore(db: PGlite): FlagStore {
  const listeners = new Set<() => Promise<void>>()
  return {
    kind: 'pglite',
    async query<R>(sql: string, params: readonly unknown[] = []) {
      return (await db.query<R>(sql, [...params])).rows
    },
    async listen(channel, onNotify) {
      const unlisten = await db.listen(channel, onNotify)
      const stop = async () => {
        if (!listeners.delete(stop)) return
        if (!db.closed) await unlisten()
      }
      listeners.add(stop)
      return stop
    },
    async close() {
      await Promise.all([...listeners].map((stop) => stop()))
    },
  }
}

/** A row of public.feature_flags. */
export interface FlagRow {
  key: string
  definition: unknown
  updated_at: Date | string
  updated_by: string
}

const SELECT = 'select key, definition, updated_at, updated_by from public.feature_flags'

/** The database tier's SQL (table and trigger: supabase/migrations/20261122000300_feature_flags.sql). */
export const flagRows = {
  all: (store: FlagStore) => store.query<FlagRow>(SELECT),
  one: async (store: FlagStore, key: string) => (await store.query<FlagRow>(`${SELECT} where key = $1`, [key]))[0],
  /** The definition travels as text and is cast, so pg and PGlite encode it alike. */
  upsert: (store: FlagStore, key: string, definition: unknown, actor: string) =>
    store.query(
      `insert into public.feature_flags (key, definition, updated_at, updated_by)
       values ($1, $2::text::jsonb, now(), $3)
       on conflict (key) do update set definition = excluded.definition, updated_at = excluded.updated_at, updated_by = excluded.updated_by`,
      [key, JSON.stringify(definition), actor],
    ),
  remove: async (store: FlagStore, key: string) => (await store.query('delete from public.feature_flags where key = $1 returning key', [key])).length > 0,
}
