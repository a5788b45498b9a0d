import { createWebSocketInspector } from '@statelyai/inspect'
import { loadConfig } from './config.js'
import { createLogger } from './logger.js'
import { Relay } from './relay.js'

const loaded = loadConfig(process.env)
if (!loaded.ok) {
  process.stderr.write(`monitoring-relay: invalid configuration:\n  ${loaded.errors.join('\n  ')}\n`)
  process.exit(1)
}
const { config } = loaded
const logger = createLogger(config.logLevel)
const inspector = config.inspectUrl ? createWebSocketInspector({ url: config.inspectUrl }) : undefined
const relay = new Relay({ config, logger, inspect: inspector ? (event) => inspector.inspect.next?.(event) : undefined })

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
