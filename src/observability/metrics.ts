import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** One registry per relay, so several relays in one process (tests) never share counters. */
export function createMetrics() {
  const registry = new Registry()
  /** Gauges that mirror state kept elsewhere (the DLQ) are refreshed on every scrape. */
  const hooks: { beforeCollect: () => void } = { beforeCollect: () => {} }
  collectDefaultMetrics({ register: registry, prefix: 'relay_process_' })
  const m = {
    registry,
    eventsAccepted: new Counter({ name: 'relay_events_accepted_total', help: 'Events acknowledged (durable) by ingest.', registers: [registry] }),
    eventsRejected: new Counter({
      name: 'relay_events_rejected_total',
      help: 'Ingest requests rejected, by reason.',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    eventsDelivered: new Counter({
      name: 'relay_events_delivered_total',
      help: 'Events handed to a transport, per transport (one per event per client for websocket).',
      labelNames: ['transport'] as const,
      registers: [registry],
    }),
    eventsStored: new Counter({ name: 'relay_events_stored_total', help: 'Events committed to the store.', registers: [registry] }),
    wsClients: new Gauge({ name: 'relay_ws_clients', help: 'Dashboard WebSocket clients connected.', registers: [registry] }),
    wsClientsDropped: new Counter({
      name: 'relay_ws_clients_dropped_total',
      help: 'Dashboard clients closed by the relay, by reason (slow = send queue over bound).',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'relay_queue_depth',
      help: 'Events waiting, per queue (store = accepted but not yet committed).',
      labelNames: ['queue'] as const,
      registers: [registry],
    }),
    flushDuration: new Histogram({
      name: 'relay_flush_duration_seconds',
      help: 'Duration of one batch write, per sink.',
      labelNames: ['sink', 'outcome'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    walFsyncs: new Gauge({ name: 'relay_wal_fsyncs', help: 'fsyncs of the write-ahead log since start (appends share them: group commit).', registers: [registry] }),
    walAppends: new Gauge({ name: 'relay_wal_appended_events', help: 'Events appended to the write-ahead log since start.', registers: [registry] }),
    eventsDeadLettered: new Counter({
      name: 'relay_events_dead_lettered_total',
      help: 'Events moved to the dead-letter queue, per sink.',
      labelNames: ['sink'] as const,
      registers: [registry],
    }),
    eventsDropped: new Counter({
      name: 'relay_events_dropped_total',
      help: 'Events a delivery path gave up on, per sink and reason (Realtime only: the store and /ws?since= still have them).',
      labelNames: ['sink', 'reason'] as const,
      registers: [registry],
    }),
    eventsReplayed: new Counter({
      name: 'relay_events_replayed_total',
      help: 'Events replayed from the dead-letter queue into their sink.',
      labelNames: ['sink'] as const,
      registers: [registry],
    }),
    hooks,
    dlqDepth: new Gauge({
      name: 'relay_dlq_depth',
      help: 'Live (replayable) dead-letter entries.',
      registers: [registry],
      collect: () => hooks.beforeCollect(),
    }),
    dlqEvents: new Gauge({ name: 'relay_dlq_events', help: 'Events in live dead-letter entries.', registers: [registry] }),
    dlqParked: new Gauge({ name: 'relay_dlq_parked', help: 'Parked (poison) dead-letter entries.', registers: [registry] }),
    dlqOldestAge: new Gauge({ name: 'relay_dlq_oldest_age_seconds', help: 'Age of the oldest live dead-letter entry (0 when empty).', registers: [registry] }),
    dlqBytes: new Gauge({ name: 'relay_dlq_bytes', help: 'Bytes of the dead-letter queue on disk.', registers: [registry] }),
    dependencyHealthy: new Gauge({
      name: 'relay_dependency_healthy',
      help: 'Whether a dependency is healthy (1) or degraded (0), as the supervisor sees it.',
      labelNames: ['dependency'] as const,
      registers: [registry],
    }),
    rolloutPercent: new Gauge({ name: 'relay_rollout_percent', help: 'Percent of dashboards assigned to Supabase Realtime.', registers: [registry] }),
    consistencyPct: new Gauge({
      name: 'relay_consistency_percent',
      help: 'Dual mode: matched / sent per path, over the sliding window and since start.',
      labelNames: ['path', 'scope'] as const,
      registers: [registry],
    }),
    machineState: new Gauge({
      name: 'relay_machine_state',
      help: 'Current state of each machine in the actor system (1 = active).',
      labelNames: ['machine', 'state'] as const,
      registers: [registry],
    }),
  }
  return m
}

export type Metrics = ReturnType<typeof createMetrics>
