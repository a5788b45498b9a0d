import { assign, enqueueActions, fromCallback, fromPromise, setup } from 'xstate'
import { batchFlusherMachine, type BatchFlusherInput, type BatchFlusherOutput } from './batchFlusher.js'

/** A flusher the supervisor spawns once the relay runs; `id` is both its child id and systemId. */
export interface FlusherSpec { id: string; input: BatchFlusherInput }

export interface SupervisorInput { shutdownTimeoutMs: number; flushers: FlusherSpec[] }

/** Commands src/ sends (`actor.send(...)`). A second `shutdown` while shutting down is ignored. */
export type SupervisorCommand = { type: 'shutdown'; reason?: string }

/** What a flusher child reports when it has drained and completed. */
export type FlusherDoneEvent = { type: `xstate.done.actor.${string}`; actorId: string; output: BatchFlusherOutput }

export type SupervisorEvent = SupervisorCommand | FlusherDoneEvent

export type SupervisorOutput = { exitCode: 0 } | { exitCode: 1; error: string }

export interface SupervisorContext {
  shutdownTimeoutMs: number
  flushers: FlusherSpec[]
  /** Ids of flushers that have drained and completed. */
  drained: string[]
  /** The shutdown timed out before every flusher drained (acknowledged events stay in the WAL). */
  shutdownIncomplete: boolean
  /** Failures of stopIngest/closeTransports: shutdown goes on, but they stay visible. */
  shutdownErrors: string[]
  /** Why start-up failed. */
  error: string | null
}

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

export const supervisorMachine = setup({
  types: {
    input: {} as SupervisorInput,
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    output: {} as SupervisorOutput,
  },
  actors: {
    /** Opens the store, runs migrations, replays the WAL, starts the servers. */
    startRelay: fromPromise<void>(async () => {
      throw new Error('startRelay not provided')
    }),
    /** Stops accepting events (503) and waits for in-flight requests. */
    stopIngest: fromPromise<void>(async () => {
      throw new Error('stopIngest not provided')
    }),
    closeTransports: fromPromise<void>(async () => {
      throw new Error('closeTransports not provided')
    }),
    /** Publishes relay.health while running; returns its cleanup. */
    healthReporter: fromCallback(() => {}),
    batchFlusher: batchFlusherMachine,
  },
  actions: {
    spawnFlushers: enqueueActions(({ context, enqueue }) => {
      for (const { id, input } of context.flushers) enqueue.spawnChild('batchFlusher', { id, systemId: id, input })
    }),
    drainFlushers: enqueueActions(({ context, enqueue, system }) => {
      for (const { id } of context.flushers) {
        const flusher = system.get(id)
        if (flusher) enqueue.sendTo(flusher, { type: 'drain' })
      }
    }),
    markFlusherDrained: assign(({ context }, { id }: { id: string }) => ({
      drained: context.flushers.some((f) => f.id === id) && !context.drained.includes(id) ? [...context.drained, id] : context.drained,
    })),
    recordStartFailure: assign((_, { error }: { error: unknown }) => ({ error: messageOf(error) })),
    recordShutdownError: assign(({ context }, { error }: { error: unknown }) => ({ shutdownErrors: [...context.shutdownErrors, messageOf(error)] })),
    markShutdownIncomplete: assign({ shutdownIncomplete: true }),
  },
  guards: {
    allFlushersDrained: ({ context }) => context.flushers.every((f) => context.drained.includes(f.id)),
  },
  delays: {
    shutdownTimeout: ({ context }) => context.shutdownTimeoutMs,
  },
}).createMachine({
  id: 'supervisor',
  context: ({ input }) => ({
    shutdownTimeoutMs: input.shutdownTimeoutMs,
    flushers: input.flushers,
    drained: [],
    shutdownIncomplete: false,
    shutdownErrors: [],
    error: null,
  }),
  output: ({ context }) => (context.error === null ? { exitCode: 0 } : { exitCode: 1, error: context.error }),
  initial: 'starting',
  states: {
    starting: {
      invoke: {
        id: 'startRelay',
        src: 'startRelay',
        onDone: { target: 'running', actions: 'spawnFlushers' },
        onError: { target: 'failed', actions: { type: 'recordStartFailure', params: ({ event }) => ({ error: event.error }) } },
      },
      // Nothing was accepted yet: only the transports need closing.
      on: { shutdown: 'shuttingDown.closingTransports' },
    },
    running: {
      // Compound so later regions (store, realtime health) slot in beside `serving`.
      initial: 'serving',
      invoke: { id: 'healthReporter', src: 'healthReporter' },
      states: { serving: {} },
      on: { shutdown: 'shuttingDown' },
    },
    shuttingDown: {
      initial: 'stoppingIngest',
      on: { shutdown: {} },
      states: {
        stoppingIngest: {
          invoke: {
            id: 'stopIngest',
            src: 'stopIngest',
            onDone: 'drainingFlushers',
            onError: { target: 'drainingFlushers', actions: { type: 'recordShutdownError', params: ({ event }) => ({ error: event.error }) } },
          },
        },
        drainingFlushers: {
          entry: 'drainFlushers',
          always: { guard: 'allFlushersDrained', target: 'closingTransports' },
          on: { 'xstate.done.actor.*': { actions: { type: 'markFlusherDrained', params: ({ event }) => ({ id: event.actorId }) } } },
          // Acknowledged events are safe in the write-ahead log; the next start replays them.
          after: { shutdownTimeout: { target: 'closingTransports', actions: 'markShutdownIncomplete' } },
        },
        closingTransports: {
          invoke: {
            id: 'closeTransports',
            src: 'closeTransports',
            onDone: '#supervisor.stopped',
            onError: { target: '#supervisor.stopped', actions: { type: 'recordShutdownError', params: ({ event }) => ({ error: event.error }) } },
          },
        },
      },
    },
    stopped: { type: 'final' },
    failed: { type: 'final' },
  },
})
