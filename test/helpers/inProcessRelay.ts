import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/observability/logger.js'
import { Relay } from '../../src/relay.js'

export interface InProcessRelay {
  relay: Relay
  url: string
  dataDir: string
  logs: Array<Record<string, unknown>>
  stop(): Promise<number>
}

/** A relay in this process (faster than a child process) on a free port, PGlite in a temp dir unless DATABASE_URL is given. */
export async function startInProcessRelay(env: Record<string, string> = {}): Promise<InProcessRelay> {
  const dataDir = env.DATA_DIR ?? (await mkdtemp(join(tmpdir(), 'relay-inproc-')))
  const loaded = loadConfig({ PORT: '0', DATA_DIR: dataDir, HEALTH_INTERVAL_MS: '0', LOG_LEVEL: 'info', ...env })
  if (!loaded.ok) throw new Error(loaded.errors.join('\n'))
  const logs: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line.trim()) logs.push(JSON.parse(line))
      cb()
    },
  })
  const relay = new Relay({ config: loaded.config, logger: createLogger(loaded.config.logLevel, sink) })
  await relay.start()
  return {
    relay,
    url: `http://127.0.0.1:${relay.port}`,
    dataDir,
    logs,
    async stop() {
      const code = await relay.shutdown()
      if (!env.DATA_DIR) await rm(dataDir, { recursive: true, force: true })
      return code
    },
  }
}
