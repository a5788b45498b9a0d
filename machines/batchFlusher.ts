import { assign, enqueueActions, fromPromise, setup, stateIn } from 'xstate'
import { backoffCeilingMs } from './backoff.js'

export type ProfileName = 'low' | 'medium' | 'high'
export interface Profile { batchSize: number; flushIntervalMs: number }
export interface RateThresholds { mediumAbove: number; highAbove: number; windowMs: number }
export interface RetryPolicy { baseMs: number; maxMs: number }

export interface BatchFlusherInput {
  name: string
  profiles: Record<ProfileName, Profile>
  rate: RateThresholds
  retry: RetryPolicy
  /**
   * Largest batch when the backlog is at least twice the profile's batch (a burst before the rate
   * window caught up, a recovery): profiles size batches for latency at a steady rate, a backlog
   * wants few round trips. Default: the profile's batch size (no catching up).
   */
  backlogBatchSize?: number
}

/** Seed profiles: bigger batches and shorter intervals as the measured rate rises. */
export const defaultFlusherProfiles: Record<ProfileName, Profile> = {
  low: { batchSize: 10, flushIntervalMs: 2_000 },
  medium: { batchSize: 50, flushIntervalMs: 500 },
  high: { batchSize: 100, flushIntervalMs: 100 },
}

/**
 * Events/s. Each threshold is where the smaller profile stops being timer-driven: at 10/s a
 * low batch (10) fills in a second, at 100/s a medium batch (50) fills in half a second, so
 * above them flushes are size-triggered and a bigger batch saves round trips.
 */
export const defaultRateThresholds: RateThresholds = { mediumAbove: 10, highAbove: 100, windowMs: 1_000 }

export const defaultRetryPolicy: RetryPolicy = { baseMs: 100, maxMs: 5_000 }

/**
 * `flushBatch` takes up to `max` events off flusher `name`'s queue (in src/) and writes them,
 * retrying by src's policy; `draining` asks for a short, single-attempt policy. A rejection
 * gives the batch up to `deadLetter`, which moves the same oldest `max` events to the DLQ.
 */
export interface FlushBatchInput { name: string; max: number; draining: boolean }
export interface FlushBatchOutput { flushed: number; durationMs?: number }
/** `draining`: the relay is shutting down, so a sink that would hold the batch for later gives it up now. */
export interface DeadLetterInput { name: string; max: number; error: string; draining: boolean }
export interface DeadLetterOutput { moved: number }

/**
 * `events.added` / `events.discarded`: src/ queued or dropped (over its bound) that many events, so
 * the count here and the queue it drains stay one figure. `sink.recovered`: the sink's dependency
 * is usable again (its breaker half-opened or closed), so a batch waiting to be retried goes now.
 */
export type BatchFlusherEvent =
  | { type: 'events.added'; count: number }
  | { type: 'events.discarded'; count: number }
  | { type: 'sink.recovered' }
  | { type: 'drain' }

export type BatchFlusherEmitted =
  | { type: 'batch.flushed'; name: string; count: number; durationMs?: number }
  | { type: 'batch.failed'; name: string; error: string; attempt: number }
  | { type: 'batch.deadLettered'; name: string; count: number; error: string }
  | { type: 'profile.changed'; name: string; from: ProfileName; to: ProfileName; rate: number }

export interface BatchFlusherOutput { name: string; flushedTotal: number }

export interface BatchFlusherContext extends BatchFlusherInput {
  batchSize: number
  flushIntervalMs: number
  /** Events queued in src/ and not yet written. */
  pending: number
  /** The `max` of the batch last handed to flushBatch: a failed batch is dead-lettered as that unit. */
  batchMax: number
  addedInWindow: number
  /** Events/s measured over the last rate window. */
  lastRate: number
  attempt: number
  lastError: string | null
  drainRequested: boolean
  flushedTotal: number
}

/** The profile's batch, or up to backlogBatchSize of a backlog at least twice that. */
export function batchMaxFor(c: Pick<BatchFlusherContext, 'pending' | 'batchSize' | 'backlogBatchSize'>): number {
  const backlog = c.backlogBatchSize ?? c.batchSize
  return c.pending >= c.batchSize * 2 ? Math.max(c.batchSize, Math.min(c.pending, backlog)) : c.batchSize
}

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))
const flushInput = (c: BatchFlusherContext, draining: boolean): FlushBatchInput => ({ name: c.name, max: c.batchMax, draining })
const deadLetterInput = (c: BatchFlusherContext, draining: boolean): DeadLetterInput => ({ name: c.name, max: c.batchMax, error: c.lastError ?? '', draining })

const rateOf = (c: BatchFlusherContext): number => c.addedInWindow / (c.rate.windowMs / 1000)

type Switch = { from: ProfileName; to: ProfileName }

// After each rate window: pick the profile by rate; re-enter so the window timer restarts.
const adaptFrom = (from: ProfileName) =>
  [
    { guard: 'isHighRate', target: 'high', reenter: true, actions: { type: 'applyRate', params: { from, to: 'high' } } },
    { guard: 'isMediumRate', target: 'medium', reenter: true, actions: { type: 'applyRate', params: { from, to: 'medium' } } },
    { target: 'low', reenter: true, actions: { type: 'applyRate', params: { from, to: 'low' } } },
  ] as const

export const batchFlusherMachine = setup({
  types: {
    input: {} as BatchFlusherInput,
    context: {} as BatchFlusherContext,
    events: {} as BatchFlusherEvent,
    emitted: {} as BatchFlusherEmitted,
    output: {} as BatchFlusherOutput,
  },
  actors: {
    flushBatch: fromPromise<FlushBatchOutput, FlushBatchInput>(async () => {
      throw new Error('flushBatch not provided')
    }),
    deadLetter: fromPromise<DeadLetterOutput, DeadLetterInput>(async () => {
      throw new Error('deadLetter not provided')
    }),
  },
  actions: {
    addPending: assign(({ context }, { count }: { count: number }) => ({ pending: context.pending + count })),
    removePending: assign(({ context }, { count }: { count: number }) => ({ pending: Math.max(0, context.pending - count) })),
    countForRate: assign(({ context }, { count }: { count: number }) => ({ addedInWindow: context.addedInWindow + count })),
    markDrainRequested: assign({ drainRequested: true }),
    startBatch: assign({ batchMax: ({ context }) => batchMaxFor(context) }),
    recordFlush: enqueueActions(({ context, enqueue }, { flushed, durationMs }: FlushBatchOutput) => {
      enqueue.assign({ pending: Math.max(0, context.pending - flushed), flushedTotal: context.flushedTotal + flushed, attempt: 0, lastError: null })
      enqueue.emit({ type: 'batch.flushed', name: context.name, count: flushed, ...(durationMs === undefined ? {} : { durationMs }) })
    }),
    recordFailure: enqueueActions(({ context, enqueue }, { error }: { error: unknown }) => {
      // Context stays serialisable: keep the message, not the Error.
      const message = messageOf(error)
      enqueue.assign({ attempt: context.attempt + 1, lastError: message })
      enqueue.emit({ type: 'batch.failed', name: context.name, error: message, attempt: context.attempt + 1 })
    }),
    // The batch is given up on, so the next one starts afresh; lastError stays until a flush succeeds.
    recordDeadLetter: enqueueActions(({ context, enqueue }, { moved }: DeadLetterOutput) => {
      enqueue.assign({ pending: Math.max(0, context.pending - moved), attempt: 0 })
      enqueue.emit({ type: 'batch.deadLettered', name: context.name, count: moved, error: context.lastError ?? '' })
    }),
    recordDeadLetterFailure: assign((_, { error }: { error: unknown }) => ({ lastError: messageOf(error) })),
    applyRate: enqueueActions(({ context, enqueue }, { from, to }: Switch) => {
      const rate = rateOf(context)
      const { batchSize, flushIntervalMs } = context.profiles[to]
      enqueue.assign({ addedInWindow: 0, lastRate: rate, batchSize, flushIntervalMs })
      if (from !== to) enqueue.emit({ type: 'profile.changed', name: context.name, from, to, rate })
    }),
  },
  guards: {
    isEmpty: ({ context }) => context.pending === 0,
    isBatchFull: ({ context }) => context.pending >= context.batchSize,
    isDrainRequested: ({ context }) => context.drainRequested,
    isHighRate: ({ context }) => rateOf(context) > context.rate.highAbove,
    isMediumRate: ({ context }) => rateOf(context) > context.rate.mediumAbove,
    isDeliveryDrained: stateIn({ delivery: 'drained' }),
  },
  delays: {
    flushInterval: ({ context }) => context.flushIntervalMs,
    // attempt counts failures from 1: the first retry waits baseMs.
    retryDelay: ({ context }) => backoffCeilingMs({ baseMs: context.retry.baseMs, capMs: context.retry.maxMs }, Math.max(0, context.attempt - 1)),
    rateWindow: ({ context }) => context.rate.windowMs,
  },
}).createMachine({
  id: 'batchFlusher',
  type: 'parallel',
  context: ({ input }) => ({
    ...input,
    batchSize: input.profiles.low.batchSize,
    flushIntervalMs: input.profiles.low.flushIntervalMs,
    pending: 0,
    batchMax: input.profiles.low.batchSize,
    addedInWindow: 0,
    lastRate: 0,
    attempt: 0,
    lastError: null,
    drainRequested: false,
    flushedTotal: 0,
  }),
  output: ({ context }) => ({ name: context.name, flushedTotal: context.flushedTotal }),
  states: {
    delivery: {
      initial: 'idle',
      on: {
        'events.added': { actions: { type: 'addPending', params: ({ event }) => ({ count: event.count }) } },
        'events.discarded': { actions: { type: 'removePending', params: ({ event }) => ({ count: event.count }) } },
      },
      states: {
        idle: {
          on: {
            'events.added': { target: 'collecting', actions: { type: 'addPending', params: ({ event }) => ({ count: event.count }) } },
            drain: 'draining',
          },
        },
        collecting: {
          // Routes every arrival (from idle or after a flush): nothing left, a full batch, or wait.
          always: [
            { guard: 'isEmpty', target: 'idle' },
            { guard: 'isBatchFull', target: 'flushing' },
          ],
          after: { flushInterval: 'flushing' },
          on: { drain: 'draining' },
        },
        flushing: {
          entry: 'startBatch',
          invoke: {
            id: 'flushBatch',
            src: 'flushBatch',
            input: ({ context }) => flushInput(context, false),
            onDone: [
              { guard: 'isDrainRequested', target: 'draining', actions: { type: 'recordFlush', params: ({ event }) => event.output } },
              { target: 'collecting', actions: { type: 'recordFlush', params: ({ event }) => event.output } },
            ],
            // src already retried it: the batch goes to the dead-letter queue.
            onError: [
              { guard: 'isDrainRequested', target: 'draining.deadLettering', actions: { type: 'recordFailure', params: ({ event }) => ({ error: event.error }) } },
              { target: 'deadLettering', actions: { type: 'recordFailure', params: ({ event }) => ({ error: event.error }) } },
            ],
          },
          // Never abandon an in-flight write: drain once it settles.
          on: { drain: { actions: 'markDrainRequested' } },
        },
        deadLettering: {
          invoke: {
            id: 'deadLetter',
            src: 'deadLetter',
            input: ({ context }) => deadLetterInput(context, false),
            onDone: [
              { guard: 'isDrainRequested', target: 'draining', actions: { type: 'recordDeadLetter', params: ({ event }) => event.output } },
              { target: 'collecting', actions: { type: 'recordDeadLetter', params: ({ event }) => event.output } },
            ],
            // The DLQ could not take it either (full, disk error): keep the batch and retry it later.
            onError: [
              { guard: 'isDrainRequested', target: 'draining.retrying', actions: { type: 'recordDeadLetterFailure', params: ({ event }) => ({ error: event.error }) } },
              { target: 'retrying', actions: { type: 'recordDeadLetterFailure', params: ({ event }) => ({ error: event.error }) } },
            ],
          },
          on: { drain: { actions: 'markDrainRequested' } },
        },
        retrying: {
          after: { retryDelay: 'flushing' },
          on: { drain: 'draining', 'sink.recovered': 'flushing' },
        },
        draining: {
          initial: 'flushing',
          always: { guard: 'isEmpty', target: 'drained' },
          states: {
            flushing: {
              entry: 'startBatch',
              invoke: {
                id: 'flushBatch',
                src: 'flushBatch',
                input: ({ context }) => flushInput(context, true),
                onDone: { target: 'flushing', reenter: true, actions: { type: 'recordFlush', params: ({ event }) => event.output } },
                onError: { target: 'deadLettering', actions: { type: 'recordFailure', params: ({ event }) => ({ error: event.error }) } },
              },
            },
            deadLettering: {
              invoke: {
                id: 'deadLetter',
                src: 'deadLetter',
                input: ({ context }) => deadLetterInput(context, true),
                onDone: { target: 'flushing', actions: { type: 'recordDeadLetter', params: ({ event }) => event.output } },
                onError: { target: 'retrying', actions: { type: 'recordDeadLetterFailure', params: ({ event }) => ({ error: event.error }) } },
              },
            },
            // Only when the DLQ fails too: nothing is dropped, so keep trying until the supervisor's timeout.
            retrying: { after: { retryDelay: 'flushing' }, on: { 'sink.recovered': 'flushing' } },
          },
        },
        drained: { type: 'final' },
      },
    },
    profile: {
      initial: 'low',
      on: { 'events.added': { actions: { type: 'countForRate', params: ({ event }) => ({ count: event.count }) } } },
      // Stopping the rate timer lets the whole machine complete once delivery has drained.
      always: { guard: 'isDeliveryDrained', target: '.stopped' },
      states: {
        low: { after: { rateWindow: adaptFrom('low') } },
        medium: { after: { rateWindow: adaptFrom('medium') } },
        high: { after: { rateWindow: adaptFrom('high') } },
        stopped: { type: 'final' },
      },
    },
  },
})
