import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { describe, it } from 'vitest'

const HOST = '127.0.0.1'
const PORT = 5432
const ADMIN_URL = `postgres://postgres@${HOST}:${PORT}/postgres`

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>, connectTimeoutMs = 5_000): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: connectTimeoutMs })
  client.on('error', () => {}) // a dropped admin connection surfaces through the awaited call
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end().catch(() => undefined)
  }
}

const unavailableReason = await withAdmin((c) => c.query('select 1'), 1_000).then(
  () => undefined,
  (err: unknown) => (err instanceof Error ? err.message : String(err)),
)

/** True when PostgreSQL answered on 127.0.0.1:5432 when this module loaded. */
export const pgAvailable: boolean = unavailableReason === undefined

/**
 * `describe` for suites that need the local PostgreSQL. When it is down: under CI=true a test
 * that fails with the reason is registered in the importing file; otherwise the suites are
 * skipped with one warning.
 */
export const describePg: typeof describe.skip = pgAvailable ? describe : describe.skip

if (!pgAvailable) {
  if (process.env.CI === 'true') {
    describe('PostgreSQL', () => {
      it('is reachable', () => {
        throw new Error(`PostgreSQL at ${HOST}:${PORT} is required under CI=true (${unavailableReason})`)
      })
    })
  } else {
    console.warn(
      `PostgreSQL at ${HOST}:${PORT} is unreachable (${unavailableReason}): skipping the Postgres tests. ` +
        'Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start',
    )
  }
}

/** Creates relay_<prefix>_<random> (owner postgres); drop() removes it, kicking out any session. */
export async function freshDatabase(prefix: string): Promise<{ url: string; drop(): Promise<void> }> {
  const clean = prefix.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 30)
  const name = `relay_${clean}_${randomBytes(6).toString('hex')}`
  await withAdmin((c) => c.query(`create database "${name}"`))
  let dropped: Promise<void> | undefined
  return {
    url: `postgres://postgres@${HOST}:${PORT}/${name}`,
    drop: () => (dropped ??= withAdmin(async (c) => void (await c.query(`drop database if exists "${name}" with (force)`)))),
  }
}
