import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SqlRunner } from './store.js'

/** supabase/migrations of this repository, found from this file rather than the cwd. */
export const DEFAULT_MIGRATIONS_DIR = fileURLToPath(new URL('../../supabase/migrations/', import.meta.url))

// Key of the transaction-scoped advisory lock that serialises migration runners on one database
// ('monr'). PGlite implements pg_advisory_xact_lock too (trivially: it has one connection).
const LOCK_KEY = '1836019314'

const BOOKKEEPING = `
create schema if not exists monitoring_relay;
create table if not exists monitoring_relay.schema_migrations (
  version text primary key,
  name text not null,
  applied_at timestamptz not null default now()
);`

interface Migration {
  version: string
  name: string
}

/**
 * Applies the *.sql files of `dir` in filename order, each in its own transaction, and records
 * each as (version = the filename's digits before the first '_', name = the filename) in
 * monitoring_relay.schema_migrations. Already recorded versions are skipped. Concurrent runners
 * on one database queue on an advisory lock and re-check, so each file runs once.
 * Returns the versions applied by this call.
 */
export async function migrate(sql: SqlRunner, dir: string = DEFAULT_MIGRATIONS_DIR): Promise<string[]> {
  const migrations = await listMigrations(dir)
  const recorded = await recordedVersions(sql)
  const applied: string[] = []
  for (const m of migrations) {
    if (recorded.has(m.version)) continue
    const text = await readFile(path.join(dir, m.name), 'utf8')
    const ran = await sql.transaction(async (tx) => {
      await tx.query('select pg_advisory_xact_lock($1::bigint)', [LOCK_KEY])
      await tx.exec(BOOKKEEPING)
      const done = await tx.query('select 1 from monitoring_relay.schema_migrations where version = $1', [m.version])
      if (done.length > 0) return false
      await tx.exec(text)
      await tx.query('insert into monitoring_relay.schema_migrations (version, name) values ($1, $2)', [m.version, m.name])
      return true
    })
    if (ran) applied.push(m.version)
  }
  return applied
}

async function listMigrations(dir: string): Promise<Migration[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.sql')).sort()
  const seen = new Map<string, string>()
  return names.map((name) => {
    const version = /^(\d+)_/.exec(name)?.[1]
    if (version === undefined) throw new Error(`migration ${name}: expected <digits>_<name>.sql`)
    const other = seen.get(version)
    if (other !== undefined) throw new Error(`migrations ${other} and ${name} share version ${version}`)
    seen.set(version, name)
    return { version, name }
  })
}

/** Versions already recorded; reads without locking so a fully migrated database costs two queries. */
async function recordedVersions(sql: SqlRunner): Promise<Set<string>> {
  const [table] = await sql.query<{ exists: boolean }>(
    "select to_regclass('monitoring_relay.schema_migrations') is not null as exists",
  )
  if (table?.exists !== true) return new Set()
  const rows = await sql.query<{ version: string }>('select version from monitoring_relay.schema_migrations')
  return new Set(rows.map((r) => r.version))
}
