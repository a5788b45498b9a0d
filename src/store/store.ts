import { Data } from 'effect'
import type { StoredEvent } from '../types.js'

/** Durable storage of accepted events: PostgreSQL (pg) or embedded PGlite, same schema. */
export interface Store {
  readonly kind: 'postgres' | 'pglite'
  /** Applies pending migrations; returns versions applied. */
  migrate(): Promise<string[]>
  /**
   * Inserts idempotently by id (INSERT ... ON CONFLICT (id) DO NOTHING); returns rows actually
   * inserted. One round trip per batch (json_to_recordset over one JSON parameter).
   */
  insertEvents(events: readonly StoredEvent[]): Promise<number>
  /** Highest stored seq, 0 when empty. */
  maxSeq(): Promise<number>
  /**
   * Events with seq > afterSeq, ascending, at most limit. `timestamp` comes back as
   * Date#toISOString(): millisecond precision, UTC ('Z'); sub-millisecond digits are kept in the
   * database but truncated on read. data/metadata come back as objects (jsonb: key order and
   * duplicate keys are not preserved).
   */
  readSince(afterSeq: number, limit: number): Promise<StoredEvent[]>
  count(): Promise<number>
  /** Cheap liveness query (select 1). */
  ping(): Promise<void>
  /**
   * Tells the database whether it broadcasts stored events to Supabase Realtime itself
   * (REALTIME_DELIVERY=database) and on which channel. Upserts the one row of
   * monitoring_relay.realtime_delivery (migration 20261122000100): enabled = (mode === 'database'),
   * topic = channel, private = options.private (default false, like REALTIME_PRIVATE); the
   * private-channel policies (20261122000200) read the topic from there in either mode.
   * Returns 'enabled' or 'disabled' as stored, or 'unavailable' (nothing written) where the database
   * cannot broadcast: no realtime.send (plain PostgreSQL, PGlite) or no config table (migrations not
   * applied, or applied before the realtime schema existed). Failures throw StoreError as usual.
   */
  setRealtimeDelivery(
    mode: RealtimeDeliveryMode,
    channel: string,
    options?: { private?: boolean },
  ): Promise<RealtimeDeliveryState>
  /** One parameterised statement on the relay's own tables (rollout_state, consistency_reports…). */
  query<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]>
  close(): Promise<void>
}

/** REALTIME_DELIVERY: the relay broadcasts batches itself, or a trigger in the database does. */
export type RealtimeDeliveryMode = 'broadcast' | 'database'
/** What setRealtimeDelivery left in the database. */
export type RealtimeDeliveryState = 'enabled' | 'disabled' | 'unavailable'

export type StoreErrorCode = 'unavailable' | 'rejected' | 'timeout'

/**
 * Every failure of a Store call. `code` says what a caller may do with the batch:
 * - 'rejected': the database answered and refused the statement for what it contains; the same
 *   batch would be refused again, so it goes to the dead-letter queue instead of being retried.
 * - 'unavailable': the database could not be reached or could not serve (connection, shutdown,
 *   resources, serialization failure); retry the same batch later.
 * - 'timeout': the call ran out of time (statement_timeout, lock_timeout, connect timeout);
 *   retry like 'unavailable'.
 * See classifyError for the exact rule.
 */
export class StoreError extends Data.TaggedError('StoreError')<{
  readonly code: StoreErrorCode
  readonly message: string
  /** SQLSTATE when the database reported one. */
  readonly sqlState?: string
  readonly cause?: unknown
}> {}

/** The few SQL operations the migration runner and the stores need; both backends implement it. */
export interface SqlRunner {
  /** Runs one or more statements (simple protocol, no parameters). */
  exec(sql: string): Promise<void>
  /** Runs one statement with positional parameters ($1, $2, ...). */
  query<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]>
  /** Runs fn inside BEGIN ... COMMIT on one connection; rolls back when fn throws. */
  transaction<T>(fn: (tx: SqlRunner) => Promise<T>): Promise<T>
}

// SQLSTATEs that mean "ran out of time": statement_timeout / cancel, lock_timeout,
// idle_in_transaction_session_timeout, transaction_timeout (PG 17+).
const TIMEOUT_STATES = new Set(['57014', '55P03', '25P03', '25P04'])
// Classes where the server could not serve the request, whatever it contained:
// 08 connection exception, 28 invalid authorization, 3D invalid catalog (database gone),
// 40 transaction rollback (serialization failure, deadlock), 53 insufficient resources
// (disk full, out of memory, too many connections), 57 operator intervention (shutdown),
// 58 system error (I/O), XX internal error.
const UNAVAILABLE_CLASSES = new Set(['08', '28', '3D', '40', '53', '57', '58', 'XX'])
// A standby that cannot take writes (read_only_sql_transaction), e.g. during a failover.
const UNAVAILABLE_STATES = new Set(['25006'])

const TIMEOUT_MESSAGES = [/timeout exceeded when trying to connect/i, /connection timeout/i, /query read timeout/i, /timeout expired/i]

/**
 * Maps any error from a database call to a StoreError code, given the SQLSTATE its driver
 * reported (each backend reads it from its driver's DatabaseError).
 *
 * 1. SQLSTATE in TIMEOUT_STATES (57014, 55P03, 25P03, 25P04) → 'timeout'.
 * 2. SQLSTATE class 08, 28, 3D, 40, 53, 57, 58, XX, or 25006 → 'unavailable'.
 * 3. Any other SQLSTATE → 'rejected'. That covers the classes that describe the statement or its
 *    data — 21 cardinality, 22 data exception (bad timestamp, \u0000 in jsonb, out of range),
 *    23 integrity constraint (seq taken by another id, CHECK, NOT NULL), 42 syntax/access rule
 *    (undefined table or column, privilege), 44, 54 program limit (row too big), 0A, P0 (a
 *    trigger's RAISE). The database answered deterministically, so retrying the same batch
 *    would fail forever and stall the pipeline; a batch in the durable dead-letter queue is
 *    replayed once the store is healthy, so a schema problem wrongly called 'rejected' costs a
 *    replay, never data.
 * 4. No SQLSTATE: a client-side connect/read timeout → 'timeout'; everything else (ECONNREFUSED,
 *    ECONNRESET, "Connection terminated", a closed PGlite, ...) → 'unavailable'.
 */
export function classifyError(err: unknown, sqlState: string | undefined): StoreErrorCode {
  if (sqlState !== undefined) {
    if (TIMEOUT_STATES.has(sqlState)) return 'timeout'
    if (UNAVAILABLE_STATES.has(sqlState) || UNAVAILABLE_CLASSES.has(sqlState.slice(0, 2))) return 'unavailable'
    return 'rejected'
  }
  const message = err instanceof Error ? err.message : String(err)
  if (TIMEOUT_MESSAGES.some((re) => re.test(message))) return 'timeout'
  return 'unavailable'
}

/**
 * postgres://user:secret@host/db?password=x → postgres://user:***@host/db?password=***
 * (input that does not parse as a URL → '<invalid url>').
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    if (u.searchParams.has('password')) u.searchParams.set('password', '***')
    return u.toString()
  } catch {
    return '<invalid url>'
  }
}

const INSERT_SQL = `
with inserted as (
  insert into public.monitoring_events (id, seq, event_type, "timestamp", source, data, metadata)
  select r.id, r.seq, r.event_type, r."timestamp", r.source, coalesce(r.data, '{}'), coalesce(r.metadata, '{}')
  from json_to_recordset($1::json) as r(
    id uuid, seq bigint, event_type text, "timestamp" timestamptz, source text, data jsonb, metadata jsonb
  )
  on conflict (id) do nothing
  returning 1
)
select count(*)::int as inserted from inserted`

const READ_SINCE_SQL = `
select id, seq, event_type, "timestamp", source, data, metadata
from public.monitoring_events
where seq > $1
order by seq
limit $2`

// Both present only on Supabase after 20261122000100 ran (it is a no-op without the realtime schema).
const REALTIME_DELIVERY_AVAILABLE_SQL = `
select to_regclass('monitoring_relay.realtime_delivery') is not null
   and to_regprocedure('realtime.send(jsonb,text,text,boolean)') is not null as available`

const SET_REALTIME_DELIVERY_SQL = `
insert into monitoring_relay.realtime_delivery as d (id, enabled, topic, private, updated_at)
values (true, $1, $2, $3, now())
on conflict (id) do update
  set enabled = excluded.enabled, topic = excluded.topic, private = excluded.private, updated_at = excluded.updated_at
returning d.enabled`

interface EventRow {
  id: string
  seq: string | number | bigint
  event_type: string
  timestamp: Date | string
  source: string
  data: Record<string, unknown>
  metadata: Record<string, unknown>
}

/** What a backend supplies to get a Store: a runner whose failures are already StoreErrors. */
export interface SqlStoreBackend {
  kind: Store['kind']
  runner: SqlRunner
  migrate(): Promise<string[]>
  close(): Promise<void>
}

/** The Store operations, written once over a SqlRunner; postgres.ts and pglite.ts supply the runner. */
export function createSqlStore(backend: SqlStoreBackend): Store {
  const { runner } = backend
  return {
    kind: backend.kind,
    migrate: () => backend.migrate(),
    async insertEvents(events) {
      if (events.length === 0) return 0
      const [row] = await runner.query<{ inserted: number }>(INSERT_SQL, [encodeBatch(events)])
      return row?.inserted ?? 0
    },
    async maxSeq() {
      const [row] = await runner.query<{ max: string | number | bigint }>(
        'select coalesce(max(seq), 0) as max from public.monitoring_events',
      )
      return toSafeInteger(row?.max ?? 0, 'max(seq)')
    },
    async readSince(afterSeq, limit) {
      const rows = await runner.query<EventRow>(READ_SINCE_SQL, [afterSeq, limit])
      return rows.map(toStoredEvent)
    },
    async count() {
      const [row] = await runner.query<{ n: string | number | bigint }>('select count(*) as n from public.monitoring_events')
      return toSafeInteger(row?.n ?? 0, 'count')
    },
    async ping() {
      await runner.query('select 1')
    },
    async setRealtimeDelivery(mode, channel, options = {}) {
      if (mode !== 'broadcast' && mode !== 'database') throw new TypeError(`realtime delivery mode ${String(mode)}`)
      if (channel === '') throw new TypeError('realtime channel must not be empty')
      const [check] = await runner.query<{ available: boolean }>(REALTIME_DELIVERY_AVAILABLE_SQL)
      if (check?.available !== true) return 'unavailable'
      const [row] = await runner.query<{ enabled: boolean }>(SET_REALTIME_DELIVERY_SQL, [
        mode === 'database',
        channel,
        options.private ?? false,
      ])
      return row?.enabled === true ? 'enabled' : 'disabled'
    },
    query: (sql, params) => runner.query(sql, params),
    close: () => backend.close(),
  }
}

/** One JSON parameter for json_to_recordset; an event JSON cannot express is the data's fault. */
function encodeBatch(events: readonly StoredEvent[]): string {
  try {
    return JSON.stringify(
      events.map((e) => ({
        id: e.id,
        seq: e.seq,
        event_type: e.event_type,
        timestamp: e.timestamp,
        source: e.source,
        data: e.data,
        metadata: e.metadata,
      })),
    )
  } catch (cause) {
    throw new StoreError({ code: 'rejected', message: `batch cannot be encoded as JSON: ${(cause as Error).message}`, cause })
  }
}

function toStoredEvent(r: EventRow): StoredEvent {
  return {
    id: r.id,
    seq: toSafeInteger(r.seq, 'seq'),
    event_type: r.event_type,
    timestamp: (r.timestamp instanceof Date ? r.timestamp : new Date(r.timestamp)).toISOString(),
    source: r.source,
    data: r.data,
    metadata: r.metadata,
  }
}

// pg returns bigint as a string, PGlite as a BigInt.
function toSafeInteger(value: string | number | bigint, what: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n)) throw new RangeError(`${what} ${String(value)} is not a safe integer`)
  return n
}

/** The store answered and refused the data: retrying the same rows cannot help. */
export function isRejected(err: unknown): err is StoreError {
  return err instanceof StoreError && err.code === 'rejected'
}
