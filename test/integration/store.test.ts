import { readdirSync } from 'node:fs'
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { inspect } from 'node:util'
import { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openPostgresStore, openStore, StoreError, type Store } from '../../src/store/index.js'
import { createPgliteStore } from '../../src/store/pglite.js'
import type { StoredEvent } from '../../src/types.js'
import { describePg, freshDatabase } from '../helpers/pg.js'

const MIGRATION_FILES = readdirSync(new URL('../../supabase/migrations/', import.meta.url)).filter((f) => f.endsWith('.sql')).sort()
const VERSIONS = MIGRATION_FILES.map((f) => f.split('_')[0]!)

/** One database behind a Store, plus a side door for catalog queries. */
interface Harness {
  store: Store
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>
  /** Runs several statements in one transaction. */
  execInTransaction(sql: string): Promise<void>
  /** Another Store on the same database (Postgres only; PGlite has one connection). */
  openAnother?(): Promise<Store>
  /** A second connection that can hold locks while the store waits (Postgres only). */
  blocker?(): Promise<pg.Client>
  dispose(): Promise<void>
}

interface Backend {
  name: 'pglite' | 'postgres'
  describe: typeof describePg
  open(): Promise<Harness>
}

const backends: Backend[] = [
  {
    name: 'pglite',
    describe,
    async open() {
      const dir = await mkdtemp(path.join(tmpdir(), 'relay-store-'))
      const db = await PGlite.create(path.join(dir, 'pglite'))
      return {
        store: createPgliteStore(db),
        query: async <R,>(sql: string, params: unknown[] = []) => (await db.query<R>(sql, params)).rows,
        execInTransaction: (sql) => db.transaction(async (tx) => void (await tx.exec(sql))),
        async dispose() {
          if (!db.closed) await db.close()
          await rm(dir, { recursive: true, force: true })
        },
      }
    },
  },
  {
    name: 'postgres',
    describe: describePg,
    async open() {
      const db = await freshDatabase('store')
      const admin = new pg.Client(db.url)
      await admin.connect()
      const stores: Store[] = []
      const clients: pg.Client[] = [admin]
      const open = async () => {
        const s = await openPostgresStore(db.url, { statementTimeoutMs: 2_000 })
        stores.push(s)
        return s
      }
      return {
        store: await open(),
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
        openAnother: open,
        async blocker() {
          const c = new pg.Client(db.url)
          await c.connect()
          clients.push(c)
          return c
        },
        async dispose() {
          await Promise.all(stores.map((s) => s.close()))
          await Promise.all(clients.map((c) => c.end().catch(() => undefined)))
          await db.drop()
        },
      }
    },
  },
]

let nextSeq = 0
function event(overrides: Partial<StoredEvent> = {}): StoredEvent {
  const seq = ++nextSeq
  return {
    id: randomUUID(),
    seq,
    event_type: 'cpu.sample',
    timestamp: new Date(Date.UTC(2026, 0, 1) + seq).toISOString(),
    source: `host-${seq % 7}`,
    data: { cpu: seq / 10, tags: ['a', 'b'], nested: { ok: true, n: null } },
    metadata: { region: 'eu', seq },
    ...overrides,
  }
}

async function rejection(p: Promise<unknown>): Promise<StoreError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(StoreError)
  return err as StoreError
}

for (const backend of backends) {
  backend.describe(`store on ${backend.name}`, () => {
    let h: Harness
    const inserted: StoredEvent[] = []

    beforeAll(async () => {
      h = await backend.open()
      nextSeq = 0
    })
    afterAll(async () => {
      await h?.dispose()
    })

    it("reports a query on the not yet created table as 'rejected' (42P01)", async () => {
      expect(await rejection(h.store.maxSeq())).toMatchObject({ code: 'rejected', sqlState: '42P01' })
    })

    it('applies the migration, then nothing on the second run', async () => {
      expect(await h.store.migrate()).toEqual(VERSIONS)
      expect(await h.store.migrate()).toEqual([])
      const recorded = await h.query<{ version: string; name: string }>(
        'select version, name from monitoring_relay.schema_migrations order by version',
      )
      expect(recorded).toEqual(MIGRATION_FILES.map((name) => ({ version: name.split('_')[0], name })))
    })

    it('creates the table, indexes, row level security, policies, publication and roles', async () => {
      const indexes = await h.query<{ indexname: string; indexdef: string }>(
        "select indexname, indexdef from pg_indexes where schemaname = 'public' and tablename = 'monitoring_events'",
      )
      const defs = indexes.map((i) => i.indexdef).join('\n')
      for (const column of ['"timestamp"', 'event_type', 'source', 'created_at', 'seq', 'id']) {
        expect(defs).toContain(`(${column})`)
      }
      const [rls] = await h.query<{ relrowsecurity: boolean }>(
        "select relrowsecurity from pg_class where oid = 'public.monitoring_events'::regclass",
      )
      expect(rls?.relrowsecurity).toBe(true)
      const policies = await h.query<{ policyname: string; cmd: string; roles: string | string[] }>(
        "select policyname, cmd, roles::text[] as roles from pg_policies where tablename = 'monitoring_events' order by policyname",
      )
      expect(policies.map((p) => [p.cmd, String(p.roles)])).toEqual([
        ['SELECT', 'authenticated'],
        ['INSERT', 'service_role'],
      ])
      const published = await h.query(
        "select 1 from pg_publication_tables where pubname = 'supabase_realtime' and tablename = 'monitoring_events'",
      )
      expect(published).toHaveLength(1)
      const roles = await h.query<{ rolname: string }>(
        "select rolname from pg_roles where rolname in ('anon', 'authenticated', 'service_role') order by rolname",
      )
      expect(roles.map((r) => r.rolname)).toEqual(['anon', 'authenticated', 'service_role'])
      const grants = await h.query<{ grantee: string; privilege_type: string }>(
        "select grantee, privilege_type from information_schema.role_table_grants where table_name = 'monitoring_events' and grantee in ('anon', 'authenticated', 'service_role') order by grantee, privilege_type",
      )
      expect(grants.map((g) => `${g.grantee}:${g.privilege_type}`)).toEqual([
        'authenticated:SELECT',
        'service_role:INSERT',
        'service_role:SELECT',
      ])
    })

    it('runs the migration SQL itself twice without error (idempotent outside the runner)', async () => {
      const { readFile } = await import('node:fs/promises')
      const { DEFAULT_MIGRATIONS_DIR } = await import('../../src/store/migrate.js')
      const text = await readFile(path.join(DEFAULT_MIGRATIONS_DIR, MIGRATION_FILES[0]!), 'utf8')
      await h.execInTransaction(text)
      const published = await h.query(
        "select 1 from pg_publication_tables where pubname = 'supabase_realtime' and tablename = 'monitoring_events'",
      )
      expect(published).toHaveLength(1)
    })

    it('reports maxSeq 0 and count 0 when empty', async () => {
      expect(await h.store.maxSeq()).toBe(0)
      expect(await h.store.count()).toBe(0)
    })

    it('inserts 5,000 events in batches and counts them', async () => {
      const all = Array.from({ length: 5_000 }, () => event())
      let total = 0
      for (let i = 0; i < all.length; i += 500) total += await h.store.insertEvents(all.slice(i, i + 500))
      inserted.push(...all)
      expect(total).toBe(5_000)
      expect(await h.store.count()).toBe(5_000)
      expect(await h.store.maxSeq()).toBe(5_000)
    })

    it('inserts the same ids again as nothing, and only the new ones of a mixed batch', async () => {
      expect(await h.store.insertEvents(inserted.slice(0, 1_000))).toBe(0)
      const fresh = [event(), event()]
      inserted.push(...fresh)
      expect(await h.store.insertEvents([...inserted.slice(10, 20), ...fresh])).toBe(2)
      expect(await h.store.insertEvents([])).toBe(0)
      expect(await h.store.count()).toBe(5_002)
    })

    it('pages through readSince in seq order and round-trips every field', async () => {
      const read: StoredEvent[] = []
      let after = 0
      for (;;) {
        const page = await h.store.readSince(after, 999)
        if (page.length === 0) break
        expect(page.length).toBeLessThanOrEqual(999)
        read.push(...page)
        after = page[page.length - 1]!.seq
      }
      expect(read.map((e) => e.seq)).toEqual(inserted.map((e) => e.seq))
      expect(read).toEqual(inserted)
      expect(await h.store.readSince(5_000, 10)).toEqual(inserted.slice(5_000))
      expect(await h.store.readSince(inserted.length + 100, 10)).toEqual([])
    })

    it('normalises timestamps to UTC milliseconds (sub-millisecond digits are dropped on read)', async () => {
      const e = event({ timestamp: '2026-03-01T12:00:00.123456+02:00' })
      await h.store.insertEvents([e])
      inserted.push(e)
      const [back] = await h.store.readSince(e.seq - 1, 1)
      expect(back?.timestamp).toBe('2026-03-01T10:00:00.123Z')
      expect(typeof back?.seq).toBe('number')
    })

    it("classifies data the database refuses as 'rejected' and keeps nothing of that batch", async () => {
      const before = await h.store.count()
      const seqTaken = await rejection(h.store.insertEvents([event(), { ...event(), seq: 1 }]))
      expect(seqTaken).toMatchObject({ code: 'rejected', sqlState: '23505' })
      const nul = await rejection(h.store.insertEvents([event({ data: { text: 'a\u0000b' } })]))
      expect(nul).toMatchObject({ code: 'rejected', sqlState: '22P05' })
      const badTime = await rejection(h.store.insertEvents([event({ timestamp: 'yesterday-ish' })]))
      expect(badTime).toMatchObject({ code: 'rejected', sqlState: '22007' })
      const badId = await rejection(h.store.insertEvents([event({ id: 'not-a-uuid' })]))
      expect(badId.code).toBe('rejected')
      const cyclic: Record<string, unknown> = {}
      cyclic.self = cyclic
      expect((await rejection(h.store.insertEvents([event({ data: cyclic })]))).code).toBe('rejected')
      expect(await h.store.count()).toBe(before)
    })

    it('after it is migrated, concurrent migrate() calls apply nothing', async () => {
      const another = h.openAnother ? await h.openAnother() : h.store
      const results = await Promise.all([h.store.migrate(), another.migrate(), h.store.migrate()])
      expect(results.flat()).toEqual([])
    })

    it('answers ping()', async () => {
      await expect(h.store.ping()).resolves.toBeUndefined()
    })

    if (backend.name === 'postgres') {
      it("reports a statement held up past statement_timeout as 'timeout'", async () => {
        const blocker = await h.blocker!()
        await blocker.query('begin')
        await blocker.query('lock table public.monitoring_events in access exclusive mode')
        try {
          const err = await rejection(h.store.insertEvents([event()]))
          expect(err).toMatchObject({ code: 'timeout', sqlState: '57014' })
        } finally {
          await blocker.query('rollback')
        }
      })
    }

    it("reports calls after close() as 'unavailable'", async () => {
      await h.store.close()
      await h.store.close() // twice is fine
      expect((await rejection(h.store.ping())).code).toBe('unavailable')
    })
  })
}

/** Number of runners started at once on a brand-new database. */
const RUNNERS = 4

/**
 * What the migrations leave in a database, as catalog rows: tables and columns, constraints,
 * indexes, row level security, policies, triggers, functions, grants and the publication. Two
 * databases with the same fingerprint hold the same schema.
 */
async function schemaFingerprint(query: Harness['query']): Promise<Record<string, unknown[]>> {
  const schemas = "('public', 'monitoring_relay')"
  return {
    columns: await query(
      `select table_schema, table_name, column_name, data_type, is_nullable, column_default from information_schema.columns
       where table_schema in ${schemas} order by 1, 2, 3`,
    ),
    constraints: await query(
      `select conrelid::regclass::text as rel, conname, pg_get_constraintdef(c.oid) as def from pg_constraint c
       join pg_namespace n on n.oid = c.connamespace where n.nspname in ${schemas} order by 1, 2`,
    ),
    indexes: await query(`select schemaname, tablename, indexname, indexdef from pg_indexes where schemaname in ${schemas} order by 1, 2, 3`),
    rowSecurity: await query(
      `select n.nspname, c.relname, c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname in ${schemas} and c.relkind = 'r' order by 1, 2`,
    ),
    policies: await query(
      `select schemaname, tablename, policyname, cmd, roles::text[] as roles, qual, with_check from pg_policies order by 1, 2, 3`,
    ),
    triggers: await query(`select tgrelid::regclass::text as rel, tgname from pg_trigger where not tgisinternal order by 1, 2`),
    functions: await query(
      `select n.nspname, p.proname, pg_get_function_identity_arguments(p.oid) as args from pg_proc p
       join pg_namespace n on n.oid = p.pronamespace where n.nspname in ${schemas} order by 1, 2, 3`,
    ),
    grants: await query(
      `select table_schema, table_name, grantee, privilege_type from information_schema.role_table_grants
       where table_schema in ${schemas} and grantee in ('anon', 'authenticated', 'service_role') order by 1, 2, 3, 4`,
    ),
    publication: await query(`select pubname, schemaname, tablename from pg_publication_tables order by 1, 2, 3`),
  }
}

/** A brand-new, never migrated database with `runners` Stores on it. */
interface FreshDatabase {
  runners: Store[]
  query: Harness['query']
  /**
   * Holds the migration runners back until all of them are waiting on the database at once
   * (Postgres only: PGlite runs one call at a time). Resolves with a `release()`.
   */
  gate?(): Promise<{ waiting(): Promise<number>; release(): Promise<void> }>
  dispose(): Promise<void>
}

const freshBackends: Array<{ name: Backend['name']; describe: typeof describePg; open(runners: number): Promise<FreshDatabase> }> = [
  {
    name: 'pglite',
    describe,
    async open(runners) {
      const dir = await mkdtemp(path.join(tmpdir(), 'relay-store-fresh-'))
      const db = await PGlite.create(path.join(dir, 'pglite'))
      return {
        // Separate Stores sharing the one embedded database, as the relay's store and flag tier do.
        runners: Array.from({ length: runners }, () => createPgliteStore(db)),
        query: async <R,>(sql: string, params: unknown[] = []) => (await db.query<R>(sql, params)).rows,
        async dispose() {
          if (!db.closed) await db.close()
          await rm(dir, { recursive: true, force: true })
        },
      }
    },
  },
  {
    name: 'postgres',
    describe: describePg,
    async open(runners) {
      const db = await freshDatabase('store_fresh')
      const tag = `migrate-${randomUUID().slice(0, 8)}`
      const admin = new pg.Client(db.url)
      await admin.connect()
      const clients: pg.Client[] = [admin]
      const stores = await Promise.all(
        Array.from({ length: runners }, (_, i) => openPostgresStore(db.url, { applicationName: `${tag}-${i}`, poolSize: 2 })),
      )
      return {
        runners: stores,
        query: async <R,>(sql: string, params: unknown[] = []) => (await admin.query(sql, params)).rows as R[],
        async gate() {
          // Another session creates the runners' bookkeeping schema and does not commit: every runner
          // must create that schema first, so each one ends up waiting on a lock (on that schema, or on
          // the runner ahead of it) until the gate rolls back.
          const holder = new pg.Client(db.url)
          await holder.connect()
          clients.push(holder)
          await holder.query('begin')
          await holder.query('create schema monitoring_relay')
          return {
            waiting: async () => {
              const { rows } = await admin.query<{ n: number }>(
                "select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name like $1 and wait_event_type = 'Lock'",
                [`${tag}-%`],
              )
              return rows[0]!.n
            },
            release: async () => void (await holder.query('rollback')),
          }
        },
        async dispose() {
          await Promise.all(stores.map((s) => s.close()))
          await Promise.all(clients.map((c) => c.end().catch(() => undefined)))
          await db.drop()
        },
      }
    },
  },
]

for (const backend of freshBackends) {
  backend.describe(`concurrent migrate() on a brand-new ${backend.name} database`, () => {
    let reference: Record<string, unknown[]>

    beforeAll(async () => {
      // The oracle: the same migrations applied by one runner alone, on another new database.
      const alone = await backend.open(1)
      try {
        expect(await alone.runners[0]!.migrate()).toEqual(VERSIONS)
        reference = await schemaFingerprint(alone.query)
      } finally {
        await alone.dispose()
      }
    })

    it(`${RUNNERS} runners at once: all succeed, each migration runs and is recorded exactly once, the schema is complete`, async () => {
      const fresh = await backend.open(RUNNERS)
      try {
        const before = await fresh.query<{ exists: boolean }>("select to_regclass('public.monitoring_events') is not null as exists")
        expect(before).toEqual([{ exists: false }])
        const gate = fresh.gate ? await fresh.gate() : undefined
        const started = fresh.runners.map((s) =>
          s.migrate().then(
            (applied) => ({ ok: true as const, applied }),
            (err: unknown) => ({ ok: false as const, err: String(err) }),
          ),
        )
        if (gate) {
          // Every runner is in flight against the new database at the same moment.
          await waitFor(async () => (await gate.waiting()) === RUNNERS, 10_000).catch(async (err: Error) => {
            throw new Error(`${err.message}: ${await gate.waiting()} of ${RUNNERS} runners waiting`)
          })
          await gate.release()
        }
        const outcomes = await Promise.all(started)
        expect(outcomes.filter((o) => !o.ok)).toEqual([])
        const applied = outcomes.flatMap((o) => (o.ok ? o.applied : []))
        // Whichever runner applied a migration, no migration was applied by two.
        expect([...applied].sort()).toEqual(VERSIONS)

        const recorded = await fresh.query<{ version: string; name: string; n: number }>(
          'select version, min(name) as name, count(*)::int as n from monitoring_relay.schema_migrations group by version order by version',
        )
        expect(recorded).toEqual(MIGRATION_FILES.map((name) => ({ version: name.split('_')[0], name, n: 1 })))

        const fingerprint = await schemaFingerprint(fresh.query)
        const tables = new Set(fingerprint.columns!.map((c) => `${(c as { table_schema: string }).table_schema}.${(c as { table_name: string }).table_name}`))
        for (const table of ['public.monitoring_events', 'public.feature_flags', 'public.consistency_reports', 'monitoring_relay.rollout_state', 'monitoring_relay.schema_migrations']) {
          expect(tables).toContain(table)
        }
        expect(fingerprint).toEqual(reference)
        // The schema works: an event goes in and comes back.
        const e = event()
        expect(await fresh.runners[0]!.insertEvents([e])).toBe(1)
        expect(await fresh.runners.at(-1)!.readSince(e.seq - 1, 1)).toEqual([e])
        // And nothing is left to apply, for any runner.
        expect((await Promise.all(fresh.runners.map((s) => s.migrate()))).flat()).toEqual([])
      } finally {
        await fresh.dispose()
      }
    })
  })
}

describe('PGlite persistence', () => {
  it('keeps events across close and reopen of ${dataDir}/pglite (openStore without a URL)', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'relay-pglite-'))
    try {
      const first = await openStore({ dataDir: path.join(dir, 'data') })
      expect(first.kind).toBe('pglite')
      expect(await first.migrate()).toEqual(VERSIONS)
      await first.insertEvents([event(), event()])
      await first.close()
      const second = await openStore({ dataDir: path.join(dir, 'data') })
      expect(await second.migrate()).toEqual([])
      expect(await second.count()).toBe(2)
      await second.close()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

const SECRET = 's3cr3t-Pa55word'

describe('Postgres store without a server', () => {
  it("reports an unreachable server as 'unavailable' quickly, without the password", async () => {
    const store = await openStore({ databaseUrl: `postgres://relay:${SECRET}@127.0.0.1:1/relay`, dataDir: '/nonexistent' })
    expect(store.kind).toBe('postgres')
    const started = performance.now()
    const err = await rejection(store.ping())
    expect(performance.now() - started).toBeLessThan(2_000)
    expect(err.code).toBe('unavailable')
    expect(err.message).toContain('postgres://relay:***@127.0.0.1:1/relay')
    expect(err.message).not.toContain(SECRET)
    expect(inspect(err, { depth: 6 })).not.toContain(SECRET)
    const insert = await rejection(store.insertEvents([event()]))
    expect(insert.code).toBe('unavailable')
    await store.close()
  })

  it.each([
    [`postgres://relay@127.0.0.1:1/relay?password=${SECRET}`, 'postgres://relay@127.0.0.1:1/relay?password=***'],
    [`postgres://relay:${encodeURIComponent(SECRET + '/@')}@127.0.0.1:1/relay`, 'postgres://relay:***@127.0.0.1:1/relay'],
    [`postgres://relay:${SECRET}@[not-a-host/relay`, '<invalid url>'],
  ])('keeps the password of %s out of errors', async (url, shown) => {
    const store = await openPostgresStore(url, { connectTimeoutMs: 1_000 })
    const err = await rejection(store.ping())
    expect(err.message).toContain(shown)
    expect(inspect(err, { depth: 6 })).not.toContain(SECRET)
    await store.close()
  })
})

describePg('Postgres: the shared cluster', () => {
  it("reports a missing database as 'unavailable' (3D000), without the password", async () => {
    const store = await openPostgresStore(`postgres://postgres:${SECRET}@127.0.0.1:5432/relay_missing_${Date.now()}`)
    const err = await rejection(store.migrate())
    expect(err).toMatchObject({ code: 'unavailable', sqlState: '3D000' })
    expect(inspect(err, { depth: 6 })).not.toContain(SECRET)
    await store.close()
  })

  it('migrates fresh databases concurrently on one cluster (roles are cluster-wide)', async () => {
    const dbs = await Promise.all([1, 2, 3].map(() => freshDatabase('roles')))
    try {
      const stores = await Promise.all(dbs.flatMap((db) => [openPostgresStore(db.url), openPostgresStore(db.url)]))
      const applied = await Promise.all(stores.map((s) => s.migrate()))
      // Each database applied the migration exactly once, whichever of its two stores won.
      for (let i = 0; i < dbs.length; i++) expect([...applied[2 * i]!, ...applied[2 * i + 1]!].sort()).toEqual(VERSIONS)
      await Promise.all(stores.map((s) => s.close()))
    } finally {
      await Promise.all(dbs.map((db) => db.drop()))
    }
  })

  it("tolerates another session creating the same role at the same moment (the migration's DO block)", async () => {
    const { readFile } = await import('node:fs/promises')
    const { DEFAULT_MIGRATIONS_DIR } = await import('../../src/store/migrate.js')
    const text = await readFile(path.join(DEFAULT_MIGRATIONS_DIR, MIGRATION_FILES[0]!), 'utf8')
    const block = text.split(/^\$\$;$/m).find((part) => part.includes('create role'))
    expect(block).toBeDefined()
    // The same block, on role names no other test or database uses.
    const tag = `relay_race_${randomUUID().slice(0, 8)}`
    const names = [`${tag}_a`, `${tag}_b`]
    const sql = `${block!.slice(block!.indexOf('do $$'))}$$;`.replace(
      "array['anon', 'authenticated', 'service_role']",
      `array['${names[0]}', '${names[1]}']`,
    )
    expect(sql).toContain(names[0])
    const dbs = await Promise.all([freshDatabase('race'), freshDatabase('race')])
    const [a, b] = [new pg.Client(dbs[0].url), new pg.Client(dbs[1].url)]
    try {
      await Promise.all([a.connect(), b.connect()])
      const [{ pid }] = (await b.query<{ pid: number }>('select pg_backend_pid() as pid')).rows as [{ pid: number }]
      await a.query('begin')
      await a.query(sql) // creates the roles, not yet committed
      const second = b.query(sql) // sees no role yet, creates, waits on a's uncommitted row
      const settled = second.then(
        () => 'ok',
        (e: Error) => e.message,
      )
      await waitFor(async () => {
        const rows = await a.query("select 1 from pg_stat_activity where pid = $1 and wait_event_type = 'Lock'", [pid])
        return rows.rowCount === 1
      }, 10_000)
      await a.query('commit')
      expect(await settled).toBe('ok')
    } finally {
      await Promise.all([a.end(), b.end()].map((p) => p.catch(() => undefined)))
      await Promise.all(dbs.map((db) => db.drop()))
      await withAdminQuery(names.map((n) => `drop role if exists "${n}"`).join('; '))
    }
  })
})

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

async function withAdminQuery(sql: string): Promise<void> {
  const c = new pg.Client('postgres://postgres@127.0.0.1:5432/postgres')
  await c.connect()
  try {
    await c.query(sql)
  } finally {
    await c.end()
  }
}
