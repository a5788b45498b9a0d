import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { messages, PGlite, type Transaction } from '@electric-sql/pglite'
import { migrate } from './migrate.js'
import { classifyError, createSqlStore, StoreError, type SqlRunner, type Store } from './store.js'

/**
 * A Store on embedded PGlite persisted at `${dataDir}/pglite`. PGlite has one connection and
 * queues every query and transaction on its own mutex, so callers may overlap calls freely.
 */
export async function openPgliteStore(dataDir: string): Promise<Store> {
  return createPgliteStore(await openPglite(dataDir), path.join(dataDir, 'pglite'))
}

/** The embedded database itself, for callers that share it (the flag service's database tier). */
export async function openPglite(dataDir: string): Promise<PGlite> {
  const dir = path.join(dataDir, 'pglite')
  await mkdir(dir, { recursive: true })
  try {
    return await PGlite.create(dir)
  } catch (err) {
    throw toStoreError(err, `pglite ${dir}: open failed`)
  }
}

/** A Store over a PGlite instance the caller opened (close() closes it). */
export function createPgliteStore(db: PGlite, label = db.dataDir ?? 'memory'): Store {
  const runner = dbRunner(db, `pglite ${label}`)
  let closing: Promise<void> | undefined
  return createSqlStore({
    kind: 'pglite',
    runner,
    migrate: () => migrate(runner),
    close: () => (closing ??= db.closed ? Promise.resolve() : db.close()),
  })
}

interface Queryable {
  query<R>(sql: string, params?: unknown[]): Promise<{ rows: R[] }>
  exec(sql: string): Promise<unknown>
}

function dbRunner(db: PGlite, label: string): SqlRunner {
  const base = runnerOn(db, label)
  return {
    ...base,
    async transaction(fn) {
      try {
        return await db.transaction((tx: Transaction) => fn(runnerOn(tx, label)))
      } catch (err) {
        throw toStoreError(err, `${label}: transaction failed`)
      }
    },
  }
}

function runnerOn(target: Queryable, label: string): SqlRunner {
  const self: SqlRunner = {
    async exec(sql) {
      try {
        await target.exec(sql)
      } catch (err) {
        throw toStoreError(err, `${label}: exec failed`)
      }
    },
    async query<R>(sql: string, params: readonly unknown[] = []) {
      try {
        return (await target.query<R>(sql, [...params])).rows
      } catch (err) {
        throw toStoreError(err, `${label}: query failed`)
      }
    },
    // Inside a transaction already (or the database itself for a nested call): run in place.
    transaction: (fn) => fn(self),
  }
  return self
}

function toStoreError(err: unknown, context: string): StoreError {
  if (err instanceof StoreError) return err
  // PGlite's DatabaseError carries the SQLSTATE; anything else (a closed instance) has none.
  const sqlState = err instanceof messages.DatabaseError ? err.code : undefined
  const code = classifyError(err, sqlState)
  const detail = err instanceof Error ? err.message : String(err)
  return new StoreError({ code, message: `${context} (${code}${sqlState ? ` ${sqlState}` : ''}): ${detail}`, cause: err, ...(sqlState ? { sqlState } : {}) })
}
