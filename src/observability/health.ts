import type { Runtime } from '../runtime.js'
import type { Logger } from './logger.js'
import type { Metrics } from './metrics.js'

export interface HealthReporterOptions {
  intervalMs: number
  runtime: Runtime
  metrics: Metrics
  logger: Logger
  machineStates: () => Record<string, unknown>
  /** In-process publish: the same path as POST /events. */
  publish: (items: readonly unknown[]) => Promise<unknown>
}

/** Publishes a relay.health event every interval (0: never); returns its cleanup. The supervisor invokes it while running. */
export function reportHealth(o: HealthReporterOptions): () => void {
  if (o.intervalMs <= 0) return () => {}
  let lastAccepted = 0
  let lastAt = Date.now()
  const timer = setInterval(() => {
    void (async () => {
      const accepted = (await o.metrics.eventsAccepted.get()).values[0]?.value ?? 0
      const now = Date.now()
      const rate = ((accepted - lastAccepted) * 1000) / Math.max(1, now - lastAt)
      lastAccepted = accepted
      lastAt = now
      const { runtime: rt } = o
      const dlq = rt.dlq.stats()
      await o.publish([
        {
          event_type: 'relay.health',
          source: 'relay',
          data: {
            accepted_per_second: Math.round(rate * 100) / 100,
            queues: { store: rt.storeOutbox.size, realtime: rt.realtime?.outbox.size ?? 0, wal_pending: rt.wal.stats().pendingAppends },
            dlq: { depth: dlq.depth, events: dlq.events, parked: dlq.parked, bytes: dlq.bytes, oldest_at: dlq.oldestAt ?? null },
            ws: rt.hub.stats(),
            machines: o.machineStates(),
            released_seq: rt.release.releasedSeq,
          },
        },
      ])
    })().catch((err: Error) => o.logger.warn({ err: err.message }, 'health event not published'))
  }, o.intervalMs)
  timer.unref()
  return () => clearInterval(timer)
}

/** Gauges read at scrape time from the runtime and the supervisor's dependency regions. */
export function collectGauges(metrics: Metrics, rt: Runtime | undefined, healthy: (dependency: 'store' | 'realtime') => boolean | undefined): void {
  for (const dependency of ['store', 'realtime'] as const) {
    const h = healthy(dependency)
    if (h !== undefined) metrics.dependencyHealthy.labels(dependency).set(h ? 1 : 0)
  }
  if (!rt) return
  const wal = rt.wal.stats()
  metrics.walFsyncs.set(wal.fsyncs)
  metrics.walAppends.set(wal.appendedEvents)
  const stats = rt.dlq.stats()
  metrics.dlqDepth.set(stats.depth)
  metrics.dlqEvents.set(stats.events)
  metrics.dlqParked.set(stats.parked)
  metrics.dlqBytes.set(stats.bytes)
  metrics.dlqOldestAge.set(stats.oldestAt ? Math.max(0, (Date.now() - Date.parse(stats.oldestAt)) / 1000) : 0)
  rt.migration?.collectGauges()
}
