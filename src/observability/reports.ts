import type { Logger } from './logger.js'

type Level = 'info' | 'warn' | 'error'
type Report = { type: string; name?: string; [key: string]: unknown }

const label = (name: unknown): string => (name === 'realtime' ? 'Realtime' : String(name ?? 'dependency'))

/** A log line for each report a machine emits: [level, message]. Unlisted reports are not logged. */
const lines: Record<string, (r: Report) => [Level, string]> = {
  'connection.lost': (r) => ['warn', r.name === 'realtime' ? 'Realtime channel lost' : `${label(r.name)} connection lost`],
  'connection.established': (r) => ['info', r.name === 'realtime' ? 'Realtime channel joined' : `${label(r.name)} connection established`],
  'connection.failed': (r) => ['error', `${label(r.name)} connection given up on; it retries by itself after CONNECTION_FAILED_RETRY_MS, or now with POST /admin/retry?dependency=${String(r.name)}`],
  'breaker.opened': (r) => ['warn', r.name === 'realtime' ? 'Realtime circuit breaker opened: failing over to the WebSocket path' : `${label(r.name)} circuit breaker opened`],
  'breaker.halfOpened': (r) => ['info', `${label(r.name)} circuit breaker half-open: probing`],
  'breaker.closed': (r) => ['info', `${label(r.name)} circuit breaker closed`],
  'dlq.replayed': () => ['info', 'dead-letter entries replayed'],
  'dlq.parked': () => ['error', 'dead-letter entries parked as poison'],
  'rollout.changed': () => ['warn', 'rollout changed'],
  'rollout.evaluated': () => ['info', 'rollout gates evaluated'],
}

/** Logs what a machine emitted (src/ only logs and counts machine reports; machines decide). */
export function logReport(logger: Logger, machine: string, report: Report): void {
  const line = lines[report.type]
  if (!line) return
  const [level, msg] = line(report)
  const { type, ...fields } = report
  logger[level]({ machine, report: type, ...fields }, msg)
}
