import { assign, enqueueActions, fromPromise, setup } from 'xstate'

export interface DlqReplayerInput {
  name: string
  /** The sink whose dead letters this replayer drains, e.g. 'store'. */
  sink: string
  /** How often `waiting` re-checks whether it may replay (and the pause after a failed replay). */
  pollIntervalMs: number
  /** Entries already in the DLQ at start; 0 when absent. */
  depth?: number
  /** Whether the sink is known healthy at start; false (wait to be told) when absent. */
  sinkHealthy?: boolean
}

export interface ReplayBatchInput {
  sink: string
}

/** What one `replayBatch` call did: entries stored, entries parked as poison, entries left. */
export interface ReplayBatchOutput {
  replayed: number
  parked: number
  remaining: number
}

export type DlqReplayerEvent =
  | { type: 'sink.healthy' }
  | { type: 'sink.unhealthy' }
  | { type: 'dlq.changed'; depth: number }
  | { type: 'replay' }

export type DlqReplayerEmitted =
  | { type: 'dlq.replayed'; name: string; sink: string; replayed: number; remaining: number }
  | { type: 'dlq.parked'; name: string; sink: string; parked: number; remaining: number }

interface DlqReplayerContext {
  name: string
  sink: string
  pollIntervalMs: number
  depth: number
  sinkHealthy: boolean
  /** Totals since start. */
  replayed: number
  parked: number
  lastError: string | null
}

/**
 * Drains the dead-letter queue of one sink back into it once the sink is healthy.
 *
 * src forwards the sink's breaker (`breaker.closed` → `sink.healthy`, `breaker.opened` →
 * `sink.unhealthy`) and the DLQ's depth (`dlq.changed { depth }`), and provides `replayBatch`
 * (fromPromise, input `{ sink }`, output {@link ReplayBatchOutput}): replay the oldest entries
 * (idempotent by event id), park entries the sink rejects as invalid with their reason, and
 * reject only when the sink is unavailable. A `sink.unhealthy` during a call lets it settle.
 */
export const dlqReplayerMachine = setup({
  types: {
    context: {} as DlqReplayerContext,
    input: {} as DlqReplayerInput,
    events: {} as DlqReplayerEvent,
    emitted: {} as DlqReplayerEmitted,
  },
  actors: {
    replayBatch: fromPromise<ReplayBatchOutput, ReplayBatchInput>(async ({ input }) => {
      throw new Error(`dlqReplayer '${input.sink}': no replayBatch actor provided`)
    }),
  },
  delays: {
    poll: ({ context }) => context.pollIntervalMs,
  },
  guards: {
    isSinkHealthy: ({ context }) => context.sinkHealthy,
    hasEntries: ({ context }) => context.depth > 0,
    canReplay: ({ context }) => context.sinkHealthy && context.depth > 0,
    hasNewEntries: (_, params: { depth: number }) => params.depth > 0,
    hasNewEntriesAndSinkHealthy: ({ context }, params: { depth: number }) => params.depth > 0 && context.sinkHealthy,
    hasMore: (_, params: ReplayBatchOutput) => params.remaining > 0,
    hasMoreAndSinkHealthy: ({ context }, params: ReplayBatchOutput) => params.remaining > 0 && context.sinkHealthy,
  },
  actions: {
    markHealthy: assign({ sinkHealthy: true }),
    markUnhealthy: assign({ sinkHealthy: false }),
    recordDepth: assign((_, params: { depth: number }) => ({ depth: params.depth })),
    recordBatch: enqueueActions(({ context, enqueue }, params: ReplayBatchOutput) => {
      enqueue.assign({
        depth: params.remaining,
        replayed: context.replayed + params.replayed,
        parked: context.parked + params.parked,
        lastError: null,
      })
      const common = { name: context.name, sink: context.sink, remaining: params.remaining }
      if (params.replayed > 0) enqueue.emit({ type: 'dlq.replayed', ...common, replayed: params.replayed })
      if (params.parked > 0) enqueue.emit({ type: 'dlq.parked', ...common, parked: params.parked })
    }),
    recordError: assign((_, params: { error: unknown }) => ({
      lastError: params.error instanceof Error ? params.error.message : String(params.error),
    })),
  },
}).createMachine({
  id: 'dlqReplayer',
  context: ({ input }) => ({
    name: input.name,
    sink: input.sink,
    pollIntervalMs: input.pollIntervalMs,
    depth: input.depth ?? 0,
    sinkHealthy: input.sinkHealthy ?? false,
    replayed: 0,
    parked: 0,
    lastError: null,
  }),
  initial: 'waiting',
  states: {
    waiting: {
      after: {
        poll: [
          { guard: 'canReplay', target: 'replaying' },
          { guard: 'isSinkHealthy', target: 'idle' },
          { target: 'waiting', reenter: true },
        ],
      },
      on: {
        'sink.healthy': [
          { guard: 'hasEntries', target: 'replaying', actions: 'markHealthy' },
          { target: 'idle', actions: 'markHealthy' },
        ],
        'sink.unhealthy': { actions: 'markUnhealthy' },
        'dlq.changed': { actions: { type: 'recordDepth', params: ({ event }) => ({ depth: event.depth }) } },
        replay: { guard: 'isSinkHealthy', target: 'replaying' },
      },
    },
    replaying: {
      invoke: {
        id: 'replayBatch',
        src: 'replayBatch',
        input: ({ context }) => ({ sink: context.sink }),
        onDone: [
          {
            guard: { type: 'hasMoreAndSinkHealthy', params: ({ event }) => event.output },
            target: 'replaying',
            reenter: true,
            actions: { type: 'recordBatch', params: ({ event }) => event.output },
          },
          {
            guard: { type: 'hasMore', params: ({ event }) => event.output },
            target: 'waiting',
            actions: { type: 'recordBatch', params: ({ event }) => event.output },
          },
          { target: 'idle', actions: { type: 'recordBatch', params: ({ event }) => event.output } },
        ],
        onError: { target: 'waiting', actions: { type: 'recordError', params: ({ event }) => ({ error: event.error }) } },
      },
      on: {
        'sink.healthy': { actions: 'markHealthy' },
        'sink.unhealthy': { actions: 'markUnhealthy' },
        'dlq.changed': { actions: { type: 'recordDepth', params: ({ event }) => ({ depth: event.depth }) } },
      },
    },
    idle: {
      on: {
        'dlq.changed': [
          {
            guard: { type: 'hasNewEntriesAndSinkHealthy', params: ({ event }) => ({ depth: event.depth }) },
            target: 'replaying',
            actions: { type: 'recordDepth', params: ({ event }) => ({ depth: event.depth }) },
          },
          {
            guard: { type: 'hasNewEntries', params: ({ event }) => ({ depth: event.depth }) },
            target: 'waiting',
            actions: { type: 'recordDepth', params: ({ event }) => ({ depth: event.depth }) },
          },
          { actions: { type: 'recordDepth', params: ({ event }) => ({ depth: event.depth }) } },
        ],
        'sink.healthy': { actions: 'markHealthy' },
        'sink.unhealthy': { actions: 'markUnhealthy' },
        replay: [{ guard: 'isSinkHealthy', target: 'replaying' }, { target: 'waiting' }],
      },
    },
  },
})
