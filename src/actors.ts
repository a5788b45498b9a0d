import { fromCallback, fromPromise, type EventObject } from 'xstate'
import { batchFlusherMachine, defaultRetryPolicy, type DeadLetterInput, type DeadLetterOutput, type FlushBatchInput, type FlushBatchOutput } from '../machines/batchFlusher.js'
import { connectionMachine, type ProbeInput } from '../machines/connection.js'
import { dependencyMachine } from '../machines/dependency.js'
import { dlqReplayerMachine } from '../machines/dlqReplayer.js'
import { rolloutControllerMachine, type ApplyPercentInput, type ApplyPercentOutput, type HealthReport, type ObtainReportInput, type RolloutInput } from '../machines/rolloutController.js'
import { supervisorMachine, type SupervisorInput } from '../machines/supervisor.js'
import { realtimeOn, rolloutOn, type RelayConfig } from './config.js'
import { ids } from './ids.js'
import type { Runtime } from './runtime.js'
import { REALTIME_SINK } from './realtime/sink.js'
import { STORE_BACKLOG_BATCH, STORE_SINK } from './store/sink.js'

/** Bound on moving what is left in memory into the DLQ at shutdown. */
const DLQ_FLUSH_TIMEOUT_MS = 5000

/** What the supervisor's actors call: the runtime once start-up opened it, and start-up itself. */
export interface ActorServices {
  open(): Promise<void>
  runtime(): Runtime
  close(): Promise<void>
  health(): () => void
}

/**
 * The supervisor with every named actor of every machine provided by one call into a service.
 * Lookups by dependency name (`sinks[name]`, `links[name]`) replace switches on it.
 */
export function relaySupervisor(s: ActorServices) {
  const rt = () => s.runtime()
  const connection = connectionMachine.provide({
    actors: {
      connect: fromPromise<unknown, { name: string }>(({ input, signal }) => rt().links[input.name]!.connect(signal)),
      // The pool reconnects by itself; the Realtime channel is left when the transport closes.
      disconnect: fromPromise<void, { name: string }>(async () => undefined),
      probe: fromCallback<EventObject, ProbeInput>(({ sendBack, input }) => rt().links[input.name]!.probe(sendBack, input.probeIntervalMs)),
      watch: fromCallback<EventObject, { name: string }>(({ sendBack, input }) => rt().links[input.name]!.watch(sendBack)),
    },
  })
  return supervisorMachine.provide({
    actions: {
      // Start-up may have found events waiting for the store (the WAL, with the store down) and a DLQ to replay.
      reportBacklog: () => {
        rt().storeOutbox.announceBacklog()
        rt().release.dlqChanged()
      },
    },
    actors: {
      startRelay: fromPromise(() => s.open()),
      stopIngest: fromPromise(() => rt().ingest.stop()),
      deadLetterLeftovers: fromPromise(async () => {
        await rt().storeSink.deadLetterAll('relay shut down before the store took these events')
        rt().realtime?.sink.discardAll()
      }),
      announceFailover: fromPromise<void, { reason: string }>(({ input }) =>
        rt().realtime!.transport.sendControl({ action: 'failover', transport: 'websocket', path: '/ws', since: rt().realtime!.sink.lastAckedSeq, reason: input.reason }),
      ),
      announceRecovery: fromPromise<void, Record<string, never>>(() => rt().realtime!.transport.sendControl({ action: 'recovered', transport: 'realtime' })),
      closeServices: fromPromise(() => s.close()),
      healthReporter: fromCallback(() => s.health()),
      batchFlusher: batchFlusherMachine.provide({
        actors: {
          flushBatch: fromPromise<FlushBatchOutput, FlushBatchInput>(({ input }) => rt().sinks[input.name]!.flush(input.max, input.draining)),
          deadLetter: fromPromise<DeadLetterOutput, DeadLetterInput>(({ input }) => rt().sinks[input.name]!.deadLetter(input.max, input.error, input.draining)),
        },
      }),
      dependency: dependencyMachine.provide({
        actors: { connection, dlqReplayer: dlqReplayerMachine.provide({ actors: { replayBatch: fromPromise(() => rt().storeSink.replayOldest()) } }) },
      }),
      rolloutController: rolloutControllerMachine.provide({
        actors: {
          applyPercent: fromPromise<ApplyPercentOutput, ApplyPercentInput>(async ({ input }) => {
            rt().migration!.applyPercent(input.percent, input.reason)
            return { at: Date.now() }
          }),
          obtainReport: fromPromise<HealthReport | null, ObtainReportInput>(async () => rt().migration!.healthReport()),
        },
      }),
    },
  })
}

/** The supervisor's input: which dependencies, flushers and controllers this configuration has. */
export function supervisorInput(config: RelayConfig, rolloutInput: RolloutInput): SupervisorInput {
  const realtime = realtimeOn(config)
  const connection = (name: string) => ({
    name,
    backoff: { baseMs: config.connection.backoffBaseMs, capMs: config.connection.backoffCapMs },
    maxAttempts: config.connection.maxAttempts,
    failedRetryMs: config.connection.failedRetryMs,
    probeIntervalMs: config.store.probeIntervalMs,
  })
  return {
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    dlqFlushTimeoutMs: DLQ_FLUSH_TIMEOUT_MS,
    realtime,
    flushers: [
      { id: ids.storeFlusher, input: { name: STORE_SINK, profiles: config.batch.profiles, rate: config.batch.rate, retry: defaultRetryPolicy, backlogBatchSize: STORE_BACKLOG_BATCH } },
      ...(realtime ? [{ id: ids.realtimeFlusher, input: { name: REALTIME_SINK, profiles: realtimeProfiles(config.realtime.flushIntervalMs), rate: config.batch.rate, retry: defaultRetryPolicy } }] : []),
    ],
    children: [
      {
        id: ids.storeDependency,
        src: 'dependency',
        input: {
          dependency: 'store',
          id: ids.storeDependency,
          reportTo: ids.supervisor,
          connection: { id: ids.storeConnection, input: connection(STORE_SINK) },
          breaker: { id: ids.storeBreaker, input: { name: STORE_SINK, ...config.breaker } },
          replayer: { id: ids.storeReplayer, input: { name: ids.storeReplayer, sink: STORE_SINK, pollIntervalMs: config.dlq.pollIntervalMs, sinkHealthy: true } },
          flushers: [ids.storeFlusher],
        },
      },
      ...(realtime
        ? [
            {
              id: ids.realtimeDependency,
              src: 'dependency' as const,
              input: {
                dependency: 'realtime' as const,
                id: ids.realtimeDependency,
                reportTo: ids.supervisor,
                connection: { id: ids.realtimeConnection, input: connection(REALTIME_SINK) },
                breaker: { id: ids.realtimeBreaker, input: { name: REALTIME_SINK, ...config.breaker } },
                flushers: [ids.realtimeFlusher],
              },
            },
          ]
        : []),
      // Its restore record is filled in during start-up, before the supervisor spawns it.
      ...(rolloutOn(config) ? [{ id: ids.rollout, src: 'rolloutController' as const, input: rolloutInput }] : []),
    ],
  }
}

/**
 * Realtime batches are bounded by bytes (the transport cuts them to the payload limit) and by the
 * message rate, not by the store's round trips: a short interval keeps latency low at any rate,
 * and at high rates each message still carries many events.
 */
function realtimeProfiles(intervalMs: number) {
  return {
    low: { batchSize: 100, flushIntervalMs: intervalMs },
    medium: { batchSize: 250, flushIntervalMs: intervalMs },
    high: { batchSize: 1000, flushIntervalMs: intervalMs },
  }
}
