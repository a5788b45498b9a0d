import { randomUUID } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_MIGRATIONS_DIR, openPostgresStore, type Store } from '../../src/store/index.js'
import { createPgliteStore } from '../../src/store/pglite.js'
import type { StoredEvent } from '../../src/types.js'
import { describePg, freshDatabase } from '../helpers/pg.js'

const BROADCAST = '20261122000100_realtime_database_broadcast.sql'
const POLICIES = '20261122000200_realtime_private_channel_policies.sql'
const STUB = new URL('../fixtures/supabaseRealtimeSchema.sql', import.meta.url)

const migrationFiles = (await readdir(DEFAULT_MIGRATIONS_DIR)).filter((n) => n.endsWith('.sql')).sort()
const allVersions = migrationFiles.map((n) => n.split('_')[0]!)

let nextSeq = 0
function event(overrides: Partial<StoredEvent> = {}): StoredEvent {
  const seq = ++nextSeq
  return {
    id: randomUUID(),
    seq,
    event_type: 'cpu.sample',
    timestamp: new Date(Date.UTC(2026, 0, 1) + seq * 1_001).toISOString(),
    source: `host-${seq % 3}`,
    data: { cpu: seq / 10, tags: ['a'], nested: { ok: true, n: null } },
    metadata: { region: 'eu' },
    ...overrides,
  }
}

type Query = <R = Record<string, unknown>>(sql: string, params?: unknown[]) => Promise<R[]>

/** Every migration file, run again outside the runner, each in one transaction. */
async function rerunMigrationFiles(execInTransaction: (sql: string) => Promise<void>): Promise<void> {
  for (const name of migrationFiles) {
    await execInTransaction(await readFile(path.join(DEFAULT_MIGRATIONS_DIR, name), 'utf8'))
  }
}

async function realtimeObjects(query: Query) {
  const [row] = await query<{ fn: boolean; config: boolean; triggers: number; topicFn: boolean }>(`
    select to_regprocedure('public.monitoring_events_broadcast()') is not null as fn,
           to_regclass('monitoring_relay.realtime_delivery') is not null as config,
           to_regprocedure('monitoring_relay.realtime_topic()') is not null as "topicFn",
           (select count(*)::int from pg_trigger
             where tgrelid = 'public.monitoring_events'::regclass and not tgisinternal) as triggers`)
  return row!
}

interface PlainBackend {
  name: string
  describe: typeof describePg
  open(): Promise<{ store: Store; query: Query; execInTransaction(sql: string): Promise<void>; dispose(): Promise<void> }>
}

const plainBackends: PlainBackend[] = [
  {
    name: 'PGlite',
    describe,
    async open() {
      const db = await PGlite.create()
      return {
        store: createPgliteStore(db),
        query: async <R,>(sql: string, params: unknown[] = []) => (await db.query<R>(sql, params)).rows,
        execInTransaction: (sql) => db.transaction(async (tx) => void (await tx.exec(sql))),
        async dispose() {
          if (!db.closed) await db.close()
        },
      }
    },
  },
  {
    name: 'plain PostgreSQL',
    describe: describePg,
    async open() {
      const fresh = await freshDatabase('rt_plain')
      const admin = new pg.Client(fresh.url)
      await admin.connect()
      const store = await openPostgresStore(fresh.url)
      return {
        store,
        query: async <R,>(sql: string, params: unknown[] = []) => (await admin.query(sql, params)).rows as R[],
        async execInTransaction(sql) {
          await admin.query('begin')
          try {
            await admin.query(sql)
            await admin.query('commit')
          } catch (err) {
            await admin.query('rollback')
            throw err
          }
        },
        async dispose() {
          await store.close()
          await admin.end().catch(() => undefined)
          await fresh.drop()
        },
      }
    },
  },
]

for (const backend of plainBackends) {
  backend.describe(`realtime migrations on ${backend.name} (no realtime schema)`, () => {
    let h: Awaited<ReturnType<PlainBackend['open']>>
    beforeAll(async () => {
      h = await backend.open()
    })
    afterAll(async () => {
      await h?.dispose()
    })

    it('applies every migration, then nothing; the files run again without error', async () => {
      expect(migrationFiles).toContain(BROADCAST)
      expect(migrationFiles).toContain(POLICIES)
      expect(await h.store.migrate()).toEqual(allVersions)
      expect(await h.store.migrate()).toEqual([])
      await rerunMigrationFiles(h.execInTransaction)
      await rerunMigrationFiles(h.execInTransaction)
    })

    it('installs nothing of the database broadcast', async () => {
      expect(await realtimeObjects(h.query)).toEqual({ fn: false, config: false, topicFn: false, triggers: 0 })
      const [ns] = await h.query<{ n: number }>("select count(*)::int as n from pg_namespace where nspname = 'realtime'")
      expect(ns?.n).toBe(0)
    })

    it("answers setRealtimeDelivery with 'unavailable' in both modes, and inserts still work", async () => {
      expect(await h.store.setRealtimeDelivery('database', 'monitoring')).toBe('unavailable')
      expect(await h.store.setRealtimeDelivery('broadcast', 'monitoring')).toBe('unavailable')
      expect(await h.store.insertEvents([event(), event()])).toBe(2)
    })
  })
}

interface MessageRow {
  id: string
  topic: string
  extension: string
  event: string
  private: boolean
  payload: { first_seq: number; last_seq: number; events: StoredEvent[]; id: string }
}

describePg('realtime migrations on PostgreSQL with the Supabase realtime schema (stub)', () => {
  let fresh: Awaited<ReturnType<typeof freshDatabase>>
  let admin: pg.Client
  let store: Store
  const clients: pg.Client[] = []

  const query: Query = async <R,>(sql: string, params: unknown[] = []) => (await admin.query(sql, params)).rows as R[]
  const messages = () =>
    query<MessageRow>('select id, topic, extension, event, private, payload from realtime.messages order by inserted_at, (payload->>\'first_seq\')::bigint')
  const clearMessages = () => query('delete from realtime.messages')

  /** Runs fn on its own connection inside a transaction that is always rolled back. */
  async function asRole<T>(role: string, topic: string | null, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = new pg.Client(fresh.url)
    await c.connect()
    clients.push(c)
    await c.query('begin')
    try {
      if (topic !== null) await c.query("select set_config('realtime.topic', $1, true)", [topic])
      await c.query(`set local role ${role}`)
      return await fn(c)
    } finally {
      await c.query('rollback').catch(() => undefined)
      await c.end().catch(() => undefined)
    }
  }

  beforeAll(async () => {
    fresh = await freshDatabase('rt_supabase')
    admin = new pg.Client(fresh.url)
    await admin.connect()
    await admin.query(await readFile(STUB, 'utf8'))
    store = await openPostgresStore(fresh.url)
  })
  afterAll(async () => {
    await store?.close()
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)))
    await admin?.end().catch(() => undefined)
    await fresh?.drop()
  })

  it('applies every migration, then nothing; the files run again without error or duplicates', async () => {
    expect(await store.migrate()).toEqual(allVersions)
    expect(await store.migrate()).toEqual([])
    const execInTransaction = async (sql: string) => {
      await admin.query('begin')
      try {
        await admin.query(sql)
        await admin.query('commit')
      } catch (err) {
        await admin.query('rollback')
        throw err
      }
    }
    await rerunMigrationFiles(execInTransaction)
    await rerunMigrationFiles(execInTransaction)
    expect(await realtimeObjects(query)).toEqual({ fn: true, config: true, topicFn: true, triggers: 1 })
    const [policies] = await query<{ n: number }>(
      "select count(*)::int as n from pg_policies where schemaname = 'realtime' and tablename = 'messages'",
    )
    expect(policies?.n).toBe(2)
  })

  it('creates an AFTER INSERT FOR EACH ROW trigger calling a SECURITY DEFINER function with a pinned search_path', async () => {
    const [trigger] = await query<{ tgname: string; tgtype: number; tgenabled: string; fn: string }>(`
      select tgname, tgtype, tgenabled, tgfoid::regprocedure::text as fn
      from pg_trigger where tgrelid = 'public.monitoring_events'::regclass and not tgisinternal`)
    // tgtype bits: 1 ROW, 2 BEFORE, 4 INSERT, 8 DELETE, 16 UPDATE, 32 TRUNCATE, 64 INSTEAD.
    expect(trigger).toEqual({ tgname: 'monitoring_events_broadcast', tgtype: 1 | 4, tgenabled: 'O', fn: 'monitoring_events_broadcast()' })
    const [fn] = await query<{ prosecdef: boolean; proconfig: string[]; anon: boolean; authenticated: boolean }>(`
      select prosecdef, proconfig,
             has_function_privilege('anon', oid, 'execute') as anon,
             has_function_privilege('authenticated', oid, 'execute') as authenticated
      from pg_proc where oid = 'public.monitoring_events_broadcast()'::regprocedure`)
    expect(fn).toEqual({ prosecdef: true, proconfig: ['search_path=""'], anon: false, authenticated: false })
  })

  it('creates the config table seeded disabled, closed to the API roles', async () => {
    const rows = await query('select id, enabled, topic, private from monitoring_relay.realtime_delivery')
    expect(rows).toEqual([{ id: true, enabled: false, topic: 'monitoring', private: false }])
    const [grants] = await query<{ anon: boolean; authenticated: boolean }>(`
      select has_table_privilege('anon', 'monitoring_relay.realtime_delivery', 'select') as anon,
             has_table_privilege('authenticated', 'monitoring_relay.realtime_delivery', 'select') as authenticated`)
    expect(grants).toEqual({ anon: false, authenticated: false })
    // The config's one-row rule.
    await expect(query('insert into monitoring_relay.realtime_delivery (id) values (false)')).rejects.toMatchObject({ code: '23514' })
  })

  it('creates the select policy for authenticated and the insert policy for service_role on realtime.messages', async () => {
    const policies = await query<{ policyname: string; cmd: string; roles: string[]; qual: string | null; with_check: string | null }>(`
      select policyname, cmd, roles::text[] as roles, qual, with_check from pg_policies
      where schemaname = 'realtime' and tablename = 'messages' order by policyname`)
    expect(policies.map((p) => [p.policyname, p.cmd, p.roles])).toEqual([
      ['monitoring_relay_authenticated_receive', 'SELECT', ['authenticated']],
      ['monitoring_relay_service_role_send', 'INSERT', ['service_role']],
    ])
    for (const p of policies) {
      const expr = p.cmd === 'SELECT' ? p.qual : p.with_check
      expect(expr).toContain('realtime.topic()')
      expect(expr).toContain('monitoring_relay.realtime_topic()')
      expect(expr).toContain("'broadcast'")
    }
    const [rls] = await query<{ relrowsecurity: boolean }>("select relrowsecurity from pg_class where oid = 'realtime.messages'::regclass")
    expect(rls?.relrowsecurity).toBe(true)
  })

  it('broadcasts nothing while the config row is disabled (as seeded) or in broadcast mode', async () => {
    expect(await store.insertEvents([event()])).toBe(1)
    expect(await store.setRealtimeDelivery('broadcast', 'monitoring')).toBe('disabled')
    expect(await store.insertEvents([event(), event()])).toBe(2)
    expect(await messages()).toEqual([])
  })

  it("in database mode sends one message per stored event: topic, event 'monitoring_events', the relay's batch shape", async () => {
    expect(await store.setRealtimeDelivery('database', 'monitoring')).toBe('enabled')
    const batch = [event(), event({ timestamp: '2026-03-01T12:00:00.123456+02:00' }), event({ data: {}, metadata: { k: [1, 'x'] } })]
    expect(await store.insertEvents(batch)).toBe(3)
    const rows = await messages()
    expect(rows).toHaveLength(3)
    const stored = await store.readSince(batch[0]!.seq - 1, 10)
    expect(stored).toHaveLength(3)
    rows.forEach((row, i) => {
      const e = stored[i]!
      expect(row).toMatchObject({ topic: 'monitoring', extension: 'broadcast', event: 'monitoring_events', private: false })
      // realtime.send adds the message's id to a payload that has none.
      expect(row.payload).toEqual({ first_seq: e.seq, last_seq: e.seq, events: [e], id: row.id })
    })
    expect(rows[1]!.payload.events[0]!.timestamp).toBe('2026-03-01T10:00:00.123Z')
  })

  it('sends nothing for rows that ON CONFLICT (id) DO NOTHING skips; a mixed batch sends only its new rows', async () => {
    await clearMessages()
    const first = [event(), event()]
    expect(await store.insertEvents(first)).toBe(2)
    expect(await messages()).toHaveLength(2)
    expect(await store.insertEvents(first)).toBe(0)
    expect(await messages()).toHaveLength(2)
    const fresh1 = event()
    expect(await store.insertEvents([...first, fresh1])).toBe(1)
    const rows = await messages()
    expect(rows).toHaveLength(3)
    expect(rows.map((r) => r.payload.first_seq)).toEqual([first[0]!.seq, first[1]!.seq, fresh1.seq])
  })

  it('follows a new channel and the private flag without a migration, and stops when switched back to broadcast', async () => {
    await clearMessages()
    expect(await store.setRealtimeDelivery('database', 'ops-dashboards', { private: true })).toBe('enabled')
    await store.insertEvents([event()])
    expect(await messages()).toMatchObject([{ topic: 'ops-dashboards', private: true }])
    expect(await store.setRealtimeDelivery('broadcast', 'ops-dashboards')).toBe('disabled')
    await store.insertEvents([event()])
    expect(await messages()).toHaveLength(1)
    expect(await query('select enabled, topic, private from monitoring_relay.realtime_delivery')).toEqual([
      { enabled: false, topic: 'ops-dashboards', private: false },
    ])
  })

  it('broadcasts events inserted by service_role too (the trigger runs as its definer)', async () => {
    await clearMessages()
    expect(await store.setRealtimeDelivery('database', 'monitoring')).toBe('enabled')
    const e = event()
    const seen = await asRole('service_role', null, async (c) => {
      await c.query(
        `insert into public.monitoring_events (id, seq, event_type, "timestamp", source, data, metadata)
         values ($1, $2, $3, $4, $5, $6, $7)`,
        [e.id, e.seq, e.event_type, e.timestamp, e.source, e.data, e.metadata],
      )
      await c.query('reset role') // service_role itself may not read realtime.messages
      return (await c.query("select 1 from realtime.messages where payload->>'first_seq' = $1", [String(e.seq)])).rowCount
    })
    expect(seen).toBe(1) // then rolled back
  })

  describe('row level security on realtime.messages', () => {
    beforeAll(async () => {
      await clearMessages()
      expect(await store.setRealtimeDelivery('database', 'monitoring', { private: true })).toBe('enabled')
      await store.insertEvents([event(), event()])
      expect(await messages()).toHaveLength(2)
    })

    it("lets authenticated receive on the relay's topic", async () => {
      const rows = await asRole('authenticated', 'monitoring', async (c) => (await c.query('select topic, event from realtime.messages')).rows)
      expect(rows).toEqual([
        { topic: 'monitoring', event: 'monitoring_events' },
        { topic: 'monitoring', event: 'monitoring_events' },
      ])
    })

    it('shows authenticated nothing on another topic, or with no topic set', async () => {
      expect(await asRole('authenticated', 'other-topic', async (c) => (await c.query('select 1 from realtime.messages')).rowCount)).toBe(0)
      expect(await asRole('authenticated', null, async (c) => (await c.query('select 1 from realtime.messages')).rowCount)).toBe(0)
    })

    it('shows anon nothing, even on the topic', async () => {
      expect(await asRole('anon', 'monitoring', async (c) => (await c.query('select 1 from realtime.messages')).rowCount)).toBe(0)
    })

    it('follows the configured channel: after a switch, the new topic is readable and the old one is not', async () => {
      expect(await store.setRealtimeDelivery('database', 'ops-dashboards', { private: true })).toBe('enabled')
      try {
        expect(await asRole('authenticated', 'ops-dashboards', async (c) => (await c.query('select 1 from realtime.messages')).rowCount)).toBe(2)
        expect(await asRole('authenticated', 'monitoring', async (c) => (await c.query('select 1 from realtime.messages')).rowCount)).toBe(0)
      } finally {
        expect(await store.setRealtimeDelivery('database', 'monitoring', { private: true })).toBe('enabled')
      }
    })

    it('refuses an insert (send) by authenticated, and realtime.send as authenticated stores nothing', async () => {
      const err = await asRole('authenticated', 'monitoring', (c) =>
        c
          .query("insert into realtime.messages (topic, extension, event, payload) values ('monitoring', 'broadcast', 'monitoring_events', '{}')")
          .then(
            () => undefined,
            (e: { code?: string; message?: string }) => e,
          ),
      )
      expect(err).toMatchObject({ code: '42501' })
      expect(err?.message).toContain('row-level security')
      const after = await asRole('authenticated', 'monitoring', async (c) => {
        await c.query("select realtime.send('{\"x\":1}'::jsonb, 'monitoring_events', 'monitoring', true)")
        return (await c.query("select 1 from realtime.messages where payload->>'x' = '1'")).rowCount
      })
      expect(after).toBe(0)
    })

    it("lets service_role send on the relay's topic only", async () => {
      const ok = await asRole('service_role', 'monitoring', async (c) => {
        await c.query("insert into realtime.messages (topic, extension, event, payload) values ('monitoring', 'broadcast', 'monitoring_events', '{}')")
        return true
      })
      expect(ok).toBe(true)
      const refused = await asRole('service_role', 'other-topic', (c) =>
        c.query("insert into realtime.messages (topic, extension, event, payload) values ('other-topic', 'broadcast', 'x', '{}')").then(
          () => undefined,
          (e: { code?: string }) => e,
        ),
      )
      expect(refused).toMatchObject({ code: '42501' })
    })
  })

  it('the stub behaves like Supabase: broadcast_changes sends { record, old_record, operation, table, schema } privately', async () => {
    await clearMessages()
    await query(`
      create table public.rt_probe (id int primary key, note text);
      create function public.rt_probe_changes() returns trigger language plpgsql as $$
      begin
        perform realtime.broadcast_changes('probe:' || new.id, tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
        return null;
      end $$;
      create trigger rt_probe_changes after insert on public.rt_probe for each row execute function public.rt_probe_changes();
      insert into public.rt_probe values (7, 'hello');`)
    const rows = await query<MessageRow & { payload: Record<string, unknown> }>(
      'select id, topic, extension, event, private, payload from realtime.messages',
    )
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ topic: 'probe:7', event: 'INSERT', extension: 'broadcast', private: true })
    expect(rows[0]!.payload).toEqual({
      id: rows[0]!.id,
      old_record: null,
      record: { id: 7, note: 'hello' },
      operation: 'INSERT',
      table: 'rt_probe',
      schema: 'public',
    })
  })

  it('setRealtimeDelivery reports a missing config table as unavailable', async () => {
    await query('alter table monitoring_relay.realtime_delivery rename to realtime_delivery_away')
    try {
      expect(await store.setRealtimeDelivery('database', 'monitoring')).toBe('unavailable')
    } finally {
      await query('alter table monitoring_relay.realtime_delivery_away rename to realtime_delivery')
    }
  })
})
