import { pino, type DestinationStream, type Logger } from 'pino'
import type { LogLevel } from '../config.js'

export type { Logger }

/** JSON lines to stdout (or the given stream); secrets are redacted by path as a second line of defence. */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'monitoring-relay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ['*.databaseUrl', '*.ingestToken', '*.adminToken', '*.serviceRoleKey', '*.authorization', 'req.headers.authorization'],
        censor: '[redacted]',
      },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  )
}
