import { assign, emit, fromCallback, fromPromise, setup } from 'xstate'
import type { EventObject } from 'xstate'

export interface BackoffSettings {
  baseMs: number
  capMs: number
}

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
  /** Jitter source in [0, 1); Math.random when absent. Tests pass a deterministic one. */
  random?: () => number
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

export type ConnectionEmitted =
  | { type: 'connection.established'; name: string; attempt: number }
  | ({ type: 'connection.lost'; name: string; attempt: number; retryInMs: number } & ConnectionFault)
  | ({ type: 'connection.failed'; name: string; attempts: number } & ConnectionFault)

interface ConnectionContext {
  name: string
  backoff: BackoffSettings
  maxAttempts: number | undefined
  probeIntervalMs: number
  disconnectTimeoutMs: number
  random: () => number
  attempt: number
  backoffMs: number
  lastFault: ConnectionFault | null
}

/** The backoff ceiling for `attempt`: min(cap, base · 2^attempt). */
export function backoffCeilingMs({ baseMs, capMs }: BackoffSettings, attempt: number): number {
  return Math.min(capMs, baseMs * 2 ** attempt)
}

/** Exponential backoff with full jitter: a whole number of ms in [0, min(cap, base · 2^attempt)]. */
export function fullJitterBackoffMs(backoff: BackoffSettings, attempt: number, random: () => number): number {
  const ceiling = backoffCeilingMs(backoff, attempt)
  return Math.min(ceiling, Math.max(0, Math.floor(random() * ceiling)))
}

/** Turns whatever a connect/disconnect actor rejected with into a fault; `code` is kept when the error carries one. */
export function toConnectionFault(error: unknown, fallbackCode: string): ConnectionFault {
  const code = typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'string' ? (error as { code: string }).code : fallbackCode
  const message = error instanceof Error ? error.message : String(error)
  return { code, message }
}

/**
 * One outbound connection (the Postgres store, a Realtime channel).
 *
 * Actors src/ provides:
 * - `connect` (fromPromise, input `{ name }`): opens the link; must honour its AbortSignal — a stop
 *   during `connecting` aborts it, and anything it opened after that must be closed by it.
 * - `disconnect` (fromPromise, input `{ name }`): closes a live link; bounded by `disconnectTimeout`.
 * - `probe` (fromCallback, input `{ name, probeIntervalMs }`): watches liveness while connected and
 *   sends back `connection.lost { code, message }` when the link drops. src may also send that event.
 *
 * Emits `connection.established` on every entry to connected, `connection.lost` on every entry to
 * reconnecting (a dropped link or a failed attempt; with the attempt and the planned `retryInMs`),
 * and `connection.failed` when it gives up. `attempt` counts consecutive failures: failed connects,
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
  },
  delays: {
    backoff: ({ context }) => context.backoffMs,
    stable: ({ context }) => context.probeIntervalMs,
    disconnectTimeout: ({ context }) => context.disconnectTimeoutMs,
  },
  guards: {
    isOutOfAttempts: ({ context }) => context.maxAttempts !== undefined && context.attempt + 1 >= context.maxAttempts,
  },
  actions: {
    recordFailure: assign(({ context }, fault: ConnectionFault) => ({ attempt: context.attempt + 1, lastFault: fault })),
    resetAttempts: assign({ attempt: 0 }),
    planBackoff: assign({ backoffMs: ({ context }) => fullJitterBackoffMs(context.backoff, context.attempt, context.random) }),
    emitEstablished: emit(({ context }) => ({ type: 'connection.established' as const, name: context.name, attempt: context.attempt })),
    emitLost: emit(({ context }) => ({
      type: 'connection.lost' as const,
      name: context.name,
      attempt: context.attempt,
      retryInMs: context.backoffMs,
      ...(context.lastFault ?? { code: 'unknown', message: '' }),
    })),
    emitFailed: emit(({ context }) => ({
      type: 'connection.failed' as const,
      name: context.name,
      attempts: context.attempt,
      ...(context.lastFault ?? { code: 'unknown', message: '' }),
    })),
  },
}).createMachine({
  id: 'connection',
  context: ({ input }) => ({
    name: input.name,
    backoff: input.backoff,
    maxAttempts: input.maxAttempts,
    probeIntervalMs: input.probeIntervalMs,
    disconnectTimeoutMs: input.disconnectTimeoutMs ?? 5_000,
    random: input.random ?? Math.random,
    attempt: 0,
    backoffMs: 0,
    lastFault: null,
  }),
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
            actions: [{ type: 'recordFailure', params: ({ event }) => toConnectionFault(event.error, 'connectFailed') }, 'emitFailed'],
          },
          { target: 'reconnecting', actions: { type: 'recordFailure', params: ({ event }) => toConnectionFault(event.error, 'connectFailed') } },
        ],
      },
      on: { stop: 'stopped' },
    },
    connected: {
      entry: 'emitEstablished',
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
            actions: [{ type: 'recordFailure', params: ({ event }) => ({ code: event.code, message: event.message }) }, 'emitFailed'],
          },
          { target: 'reconnecting', actions: { type: 'recordFailure', params: ({ event }) => ({ code: event.code, message: event.message }) } },
        ],
        stop: 'disconnecting',
      },
    },
    reconnecting: {
      entry: ['planBackoff', 'emitLost'],
      after: { backoff: 'connecting' },
      on: { stop: 'stopped' },
    },
    failed: {
      on: {
        retry: { target: 'connecting', actions: 'resetAttempts' },
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
