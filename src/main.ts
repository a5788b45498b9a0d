import { createWebSocketInspector } from '@statelyai/inspect'
import { loadConfig } from './config.js'
import { createLogger } from './observability/logger.js'
import { Relay } from './relay.js'
import { resolveSeedFlags } from './flags/seed.js'

const first = loadConfig(process.env)
if (!first.ok) {
  process.stderr.write(`monitoring-relay: invalid configuration:\n  ${first.errors.join('\n  ')}\n`)
  process.exit(1)
}
const logger = createLogger(first.config.logLevel)
// Seed flags overridden in Redis or the feature_flags table win over env.
const env = { ...process.env, ...(await resolveSeedFlags(process.env, logger).catch(() => ({}))) }
const loaded = loadConfig(env)
if (!loaded.ok) {
  process.stderr.write(`monitoring-relay: invalid configuration (after flag overrides):\n  ${loaded.errors.join('\n  ')}\n`)
  process.exit(1)
}
const { config } = loaded
const inspector = config.inspectUrl ? createWebSocketInspector({ url: config.inspectUrl }) : undefined
const relay = new Relay({ config, logger, env, inspect: inspector ? (event) => inspector.inspect.next?.(event) : undefined })

let signals = 0
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    signals++
    logger.info({ signal }, signals === 1 ? 'shutting down' : 'shutdown already in progress')
    relay.actor.send({ type: 'shutdown' })
  })
}

relay.start().catch((err: Error) => logger.fatal({ err: err.message }, 'start-up failed'))
const exitCode = await relay.done()
inspector?.stop()
logger.flush()
process.exitCode = exitCode
// Give pino's async destination a moment to drain, then leave even if a handle lingers.
setTimeout(() => process.exit(exitCode), 200).unref()
