import { openPgliteStore } from './pglite.js'
import { openPostgresStore, type PostgresStoreOptions } from './postgres.js'
import type { Store } from './store.js'

export { migrate, DEFAULT_MIGRATIONS_DIR } from './migrate.js'
export { openPgliteStore } from './pglite.js'
export { openPostgresStore, type PostgresStoreOptions } from './postgres.js'
export { classifyError, redactUrl, StoreError, type SqlRunner, type Store, type StoreErrorCode } from './store.js'

export interface OpenStoreOptions {
  /** PostgreSQL URL; when absent the relay uses embedded PGlite under dataDir. */
  databaseUrl?: string
  dataDir: string
  postgres?: PostgresStoreOptions
}

/** PostgreSQL when a URL is given, else PGlite at `${dataDir}/pglite`. */
export function openStore(opts: OpenStoreOptions): Promise<Store> {
  return opts.databaseUrl ? openPostgresStore(opts.databaseUrl, opts.postgres) : openPgliteStore(opts.dataDir)
}
