import { readFileSync } from 'node:fs'
import { Redacted } from 'effect'
import { describe, expect, it } from 'vitest'
import { FLAGS, isLoopback, loadConfig } from '../../src/config.js'

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const r = loadConfig({})
    if (!r.ok) throw new Error(r.errors.join())
    expect(r.config).toMatchObject({ port: 8787, host: '127.0.0.1', dataDir: './data', databaseUrl: undefined, ingestToken: undefined, logLevel: 'info', shutdownTimeoutMs: 10_000, healthIntervalMs: 10_000 })
    expect(r.config.batch.profiles).toEqual({
      high: { batchSize: 100, flushIntervalMs: 100 },
      medium: { batchSize: 50, flushIntervalMs: 500 },
      low: { batchSize: 10, flushIntervalMs: 2000 },
    })
  })

  it('reports every bad value together, each with its variable and what was expected', () => {
    const r = loadConfig({ PORT: 'abc', LOG_LEVEL: 'loud', BATCH_HIGH_SIZE: '0', DATABASE_URL: 'mysql://x', SHUTDOWN_TIMEOUT_MS: '1.5', INSPECT_URL: 'http://x' })
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.errors).toHaveLength(6)
    expect(r.errors).toEqual(
      expect.arrayContaining([
        'PORT: expected an integer from 0 to 65535, got "abc"',
        expect.stringMatching(/^LOG_LEVEL: expected .*"info".*got "loud"$/),
        'BATCH_HIGH_SIZE: expected an integer from 1 to 10000, got "0"',
        expect.stringMatching(/^DATABASE_URL: expected a postgres:\/\//),
        expect.stringMatching(/^SHUTDOWN_TIMEOUT_MS: expected an integer/),
        expect.stringMatching(/^INSPECT_URL: /),
      ]),
    )
  })

  it('requires INGEST_TOKEN when HOST is not loopback', () => {
    const r = loadConfig({ HOST: '0.0.0.0' })
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.errors[0]).toMatch(/^INGEST_TOKEN: required when HOST \(0\.0\.0\.0\)/)
    const withToken = loadConfig({ HOST: '0.0.0.0', INGEST_TOKEN: 't' })
    expect(withToken.ok).toBe(true)
    expect(isLoopback('127.0.0.2')).toBe(true)
    expect(isLoopback('::1')).toBe(true)
    expect(isLoopback('10.0.0.1')).toBe(false)
  })

  it('keeps secrets redacted', () => {
    const r = loadConfig({ DATABASE_URL: 'postgres://u:pw@h/db', INGEST_TOKEN: 'tok' })
    if (!r.ok) throw new Error(r.errors.join())
    expect(String(r.config.databaseUrl)).not.toContain('pw')
    expect(JSON.stringify(r.config)).not.toContain('tok')
    expect(Redacted.value(r.config.ingestToken!)).toBe('tok')
  })

  it('README documents every flag with its default', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
    for (const flag of FLAGS) expect(readme, flag.name).toMatch(new RegExp(`\\|\\s*\`${flag.name}\`\\s*\\|[^\\n]*${escape(flag.default)}`))
  })
})

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
