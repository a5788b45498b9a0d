import type { StoredEvent } from './types.js'

/**
 * Fan-out of accepted events inside the relay. The seam for scale-out: a Redis-backed bus can
 * replace this one so every relay sees every relay's events, without touching ingest or the hub.
 * Batches arrive in seq order and are never modified by subscribers.
 */
export interface Bus {
  publish(batch: readonly StoredEvent[]): void
  subscribe(listener: BatchListener | BatchConsumer): () => void
}

export type BatchListener = (batch: readonly StoredEvent[]) => void

/** A part of the relay that takes every durable batch: the hub, each sink's outbox, the validator. */
export interface BatchConsumer {
  consume(batch: readonly StoredEvent[]): void
}

export class LocalBus implements Bus {
  private readonly listeners = new Set<BatchListener>()

  publish(batch: readonly StoredEvent[]): void {
    for (const listener of this.listeners) listener(batch)
  }

  subscribe(subscriber: BatchListener | BatchConsumer): () => void {
    const listener: BatchListener = typeof subscriber === 'function' ? subscriber : (batch) => subscriber.consume(batch)
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }
}
