import { Data } from 'effect'
import type { AnyActorRef } from 'xstate'
import type { DeadLetterOutput, FlushBatchOutput } from '../../machines/batchFlusher.js'
import { tryAcquirePermission } from '../../machines/circuitBreaker.js'

/** The breaker refused the call: the dependency is known to be down. */
export class BreakerOpen extends Data.TaggedError('BreakerOpen')<{ readonly sink: string; readonly message: string }> {
  static of(sink: string): BreakerOpen {
    return new BreakerOpen({ sink, message: `${sink} circuit breaker is open` })
  }
}

/** A call that did not answer within its bound (a stalled network never errors by itself). */
export class CallTimeout extends Data.TaggedError('CallTimeout')<{ readonly sink: string; readonly ms: number; readonly message: string }> {
  static of(sink: string, ms: number): CallTimeout {
    return new CallTimeout({ sink, ms, message: `${sink} call timed out after ${ms} ms` })
  }
}

/** The sink keeps a batch it could not deliver (the Realtime backlog); the flusher retries it later. */
export class BatchHeld extends Data.TaggedError('BatchHeld')<{ readonly sink: string; readonly message: string }> {}

/** An event src/ sends a machine: a type and its data. */
export type MachineEvent = { type: string; [key: string]: unknown }

/** The actor system, as src/ sees it: actors by systemId. */
export interface MachineSystem {
  get(systemId: string): AnyActorRef | undefined
}

/** Sends to the actor registered as `systemId`, if there is one (before start-up and after shutdown there is none). */
export function tell(system: MachineSystem, systemId: string, event: MachineEvent): void {
  system.get(systemId)?.send(event)
}

/**
 * What a batch flusher drains into: the one interface behind every flusher (the store, Realtime).
 * `flush` writes the oldest `max` queued events (retrying by the one policy) and leaves the queue
 * as it was when it rejects; `deadLetter` gives that same batch up — the store moves it to the
 * durable DLQ; Realtime holds it (BatchHeld) unless the relay is draining.
 */
export interface Sink {
  readonly name: string
  flush(max: number, draining: boolean): Promise<FlushBatchOutput>
  deadLetter(max: number, error: string, draining: boolean): Promise<DeadLetterOutput>
}

/** What a connection machine drives for one dependency. */
export interface Link {
  connect(signal: AbortSignal): Promise<void>
  /** While connected: sends `connection.lost` when the link drops. Returns its cleanup. */
  probe(sendBack: (event: MachineEvent) => void, intervalMs: number): () => void
  /** For the machine's lifetime: `connection.lost` / `connection.restored` for links that heal by themselves. */
  watch(sendBack: (event: MachineEvent) => void): () => void
}

/** One call guarded by the breaker `breakerId`: refused while open, every outcome reported. `answered` says which errors still count as the dependency answering. */
export async function guarded<A>(
  system: MachineSystem,
  breakerId: string,
  sink: string,
  call: () => Promise<A>,
  answered: (err: unknown) => boolean = () => false,
): Promise<A> {
  const breaker = system.get(breakerId)
  if (breaker && !tryAcquirePermission(breaker as Parameters<typeof tryAcquirePermission>[0])) throw BreakerOpen.of(sink)
  const started = performance.now()
  try {
    const result = await call()
    breaker?.send({ type: 'call.succeeded', durationMs: performance.now() - started })
    return result
  } catch (err) {
    if (answered(err)) breaker?.send({ type: 'call.succeeded', durationMs: performance.now() - started })
    else breaker?.send({ type: 'call.failed', reason: err instanceof Error ? err.message : String(err) })
    throw err
  }
}

export function withTimeout<A>(promise: Promise<A>, ms: number, sink: string): Promise<A> {
  return new Promise<A>((resolve, reject) => {
    const timer = setTimeout(() => reject(CallTimeout.of(sink, ms)), ms)
    timer.unref()
    promise.then(
      (v) => {
        clearTimeout(timer)
        resolve(v)
      },
      (e) => {
        clearTimeout(timer)
        reject(e)
      },
    )
  })
}
