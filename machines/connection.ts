import { assign, enqueueActions, fromCallback, fromPromise, setup } from 'xstate'
import type { EventObject } from 'xstate'
import { backoffCeilingMs, jitteredBackoffMs, type BackoffSettings } from './backoff.js'

export { backoffCeilingMs, type BackoffSettings }

export interface ConnectionInput {
  /** The dependency this connection reaches, e.g. 'store' or 'realtime'; carried by every emitted event. */
  name: string
  backoff: BackoffSettings
  /** Consecutive failures (failed connects, losses before the link proved stable) before `failed`; unlimited when absent. */
  maxAttempts?: number
  /** Liveness probe period; a link that stays up this long counts as stable and resets the attempt count. */
  probeIntervalMs: number
  /** Upper bound on `disconnecting` (default 5 s), so a stop never hangs on a dead peer. */
  disconnectTimeoutMs?: number
  /** In `failed`, a new attempt after this long (default 60 s), besides the `retry` command. */
  failedRetryMs?: number
  /** Jitter source in [0, 1); Math.random when absent. Tests pass a deterministic one. */
  random?: () => number
  /** systemId of the machine told of every report (the dependency that owns this connection); none when absent. */
  reportTo?: string
}

/** Why the link is down: a stable code and a human-readable message. */
export interface ConnectionFault {
  code: string
  message: string
}

export interface ProbeInput {
  name: string
  probeIntervalMs: number
}

export type ConnectionEvent =
  | { type: 'connect' }
  | { type: 'retry' }
  | { type: 'stop' }
  | ({ type: 'connection.lost' } & ConnectionFault)
  /** From `watch`: the link came back by itself (e.g. supabase-js rejoined), so do not wait out the backoff. */
  | { type: 'connection.restored' }

export type ConnectionEmitted =
  | { type: 'connection.established'; name: string; attempt: number }
  | ({ type: 'connection.lost'; name: string; attempt: number; retryInMs: number } & ConnectionFault)
  | ({ type: 'connection.failed'; name: string; attempts: number } & ConnectionFault)

interface ConnectionContext {
  name: string
  reportTo: string | undefined
  failedRetryMs: number
  backoff: BackoffSettings
  maxAttempts: number | undefined
  probeIntervalMs: number
  disconnectTimeoutMs: number
  random: () => number
  attempt: number
  backoffMs: number
  lastFault: ConnectionFault | null
}

/** Exponential backoff with full jitter (backoff.ts): a whole number of ms in [0, min(cap, base · factor^attempt)]. */
export function fullJitterBackoffMs(backoff: BackoffSettings, attempt: number, random: () => number): number {
  return Math.min(backoffCeilingMs(backoff, attempt), Math.max(0, Math.floor(jitteredBackoffMs(backoff, attempt, random))))
}

/**
 * An error that names its failure with a stable string `code`: the relay's tagged errors that carry
 * one as data (StoreError, RealtimeError, the DLQ errors) and Node's system errors (ECONNREFUSED…).
 */
export interface CodedError extends Error {
  readonly code: string
}

export function isCodedError(error: unknown): error is CodedError {
  return error instanceof Error && 'code' in error && typeof error.code === 'string'
}

/** Turns whatever a connect/disconnect actor rejected with into a fault; a {@link CodedError} keeps its `code`. */
export function toConnectionFault(error: unknown, fallbackCode: string): ConnectionFault {
  const code = isCodedError(error) ? error.code : fallbackCode
  const message = error instanceof Error ? error.message : String(error)
  return { code, message }
}

const faultOf = (c: ConnectionContext): ConnectionFault => c.lastFault ?? { code: 'unknown', message: '' }
const establishedReport = {
  type: 'report',
  params: ({ context: c }: { context: ConnectionContext }) => ({ type: 'connection.established', name: c.name, attempt: c.attempt }) as const,
} as const
const lostReport = {
  type: 'report',
  params: ({ context: c }: { context: ConnectionContext }) => ({ type: 'connection.lost', name: c.name, attempt: c.attempt, retryInMs: c.backoffMs, ...faultOf(c) }) as const,
} as const
const failedReport = {
  type: 'report',
  params: ({ context: c }: { context: ConnectionContext }) => ({ type: 'connection.failed', name: c.name, attempts: c.attempt, ...faultOf(c) }) as const,
} as const

/**
 * One outbound connection (the Postgres store, a Realtime channel).
 *
 * Actors src/ provides:
 * - `connect` (fromPromise, input `{ name }`): opens the link; must honour its AbortSignal — a stop
 *   during `connecting` aborts it, and anything it opened after that must be closed by it.
 * - `disconnect` (fromPromise, input `{ name }`): closes a live link; bounded by `disconnectTimeout`.
 * - `probe` (fromCallback, input `{ name, probeIntervalMs }`): watches liveness while connected and
 *   sends back `connection.lost { code, message }` when the link drops. src may also send that event.
 * - `watch` (fromCallback, input `{ name }`): lives as long as the machine; sends `connection.lost`
 *   and `connection.restored` for a link that comes back by itself (supabase-js rejoins its channel),
 *   so a restored link ends the backoff (or `failed`) at once instead of after the timer.
 *
 * Emits `connection.established` on every entry to connected, `connection.lost` on every entry to
 * reconnecting (a dropped link or a failed attempt; with the attempt and the planned `retryInMs`),
 * and `connection.failed` when it gives up; each is also sent to `reportTo`. `failed` has two ways
 * out: the `retry` command and, after `failedRetryMs`, a new attempt by itself. `attempt` counts consecutive failures: failed connects,
 * and losses of a link that had not yet stayed up for one probe interval (so a flapping link backs
 * off instead of reconnecting at the base delay forever).
 */
export const connectionMachine = setup({
  types: {
    context: {} as ConnectionContext,
    input: {} as ConnectionInput,
    events: {} as ConnectionEvent,
    emitted: {} as ConnectionEmitted,
  },
  actors: {
    connect: fromPromise<unknown, { name: string }>(async ({ input }) => {
      throw new Error(`connection '${input.name}': no connect actor provided`)
    }),
    disconnect: fromPromise<void, { name: string }>(async () => {}),
    probe: fromCallback<EventObject, ProbeInput>(() => () => {}),
    watch: fromCallback<EventObject, { name: string }>(() => () => {}),
  },
  delays: {
    backoff: ({ context }) => context.backoffMs,
    stable: ({ context }) => context.probeIntervalMs,
    disconnectTimeout: ({ context }) => context.disconnectTimeoutMs,
    failedRetry: ({ context }) => context.failedRetryMs,
  },
  guards: {
    isOutOfAttempts: ({ context }) => context.maxAttempts !== undefined && context.attempt + 1 >= context.maxAttempts,
  },
  actions: {
    recordFailure: assign(({ context }, fault: ConnectionFault) => ({ attempt: context.attempt + 1, lastFault: fault })),
    resetAttempts: assign({ attempt: 0 }),
    planBackoff: assign({ backoffMs: ({ context }) => fullJitterBackoffMs(context.backoff, context.attempt, context.random) }),
    // Each report is emitted for observers (logs, metrics) and sent to the owner, which reacts.
    report: enqueueActions(({ context, enqueue, system }, event: ConnectionEmitted) => {
      enqueue.emit(event)
      const owner = context.reportTo === undefined ? undefined : system.get(context.reportTo)
      if (owner) enqueue.sendTo(owner, event)
    }),
  },
}).createMachine({
  id: 'connection',
  context: ({ input }) => ({
    name: input.name,
    reportTo: input.reportTo,
    failedRetryMs: input.failedRetryMs ?? 60_000,
    backoff: input.backoff,
    maxAttempts: input.maxAttempts,
    probeIntervalMs: input.probeIntervalMs,
    disconnectTimeoutMs: input.disconnectTimeoutMs ?? 5_000,
    random: input.random ?? Math.random,
    attempt: 0,
    backoffMs: 0,
    lastFault: null,
  }),
  // Lives as long as the machine: a link that can say it is back (a channel that rejoins by itself) says so here.
  invoke: { id: 'watch', src: 'watch', input: ({ context }) => ({ name: context.name }) },
  initial: 'idle',
  states: {
    idle: {
      on: { connect: 'connecting', stop: 'stopped' },
    },
    connecting: {
      invoke: {
        id: 'connect',
        src: 'connect',
        input: ({ context }) => ({ name: context.name }),
        onDone: 'connected',
        onError: [
          {
            guard: 'isOutOfAttempts',
            target: 'failed',
            actions: [{ type: 'recordFailure', params: ({ event }) => toConnectionFault(event.error, 'connectFailed') }, failedReport],
          },
          { target: 'reconnecting', actions: { type: 'recordFailure', params: ({ event }) => toConnectionFault(event.error, 'connectFailed') } },
        ],
      },
      on: { stop: 'stopped' },
    },
    connected: {
      entry: establishedReport,
      invoke: {
        id: 'probe',
        src: 'probe',
        input: ({ context }) => ({ name: context.name, probeIntervalMs: context.probeIntervalMs }),
      },
      after: { stable: { actions: 'resetAttempts' } },
      on: {
        'connection.lost': [
          {
            guard: 'isOutOfAttempts',
            target: 'failed',
            actions: [{ type: 'recordFailure', params: ({ event }) => ({ code: event.code, message: event.message }) }, failedReport],
          },
          { target: 'reconnecting', actions: { type: 'recordFailure', params: ({ event }) => ({ code: event.code, message: event.message }) } },
        ],
        stop: 'disconnecting',
      },
    },
    reconnecting: {
      entry: ['planBackoff', lostReport],
      after: { backoff: 'connecting' },
      on: { stop: 'stopped', 'connection.restored': 'connecting', retry: 'connecting' },
    },
    // Given up, but not for good: a retry command (admin) or, slowly, by itself.
    failed: {
      after: { failedRetry: { target: 'connecting', actions: 'resetAttempts' } },
      on: {
        retry: { target: 'connecting', actions: 'resetAttempts' },
        'connection.restored': { target: 'connecting', actions: 'resetAttempts' },
        stop: 'stopped',
      },
    },
    disconnecting: {
      invoke: {
        id: 'disconnect',
        src: 'disconnect',
        input: ({ context }) => ({ name: context.name }),
        onDone: 'stopped',
        onError: 'stopped',
      },
      after: { disconnectTimeout: 'stopped' },
    },
    stopped: { type: 'final' },
  },
})
