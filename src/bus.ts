import type { StoredEvent } from './types.js'

/**
 * Fan-out of accepted events inside the relay. The seam for scale-out: a Redis-backed bus can
 * replace this one so every relay sees every relay's events, without touching ingest or the hub.
 * Batches arrive in seq order and are never modified by subscribers.
 */
export interface Bus {
  publish(batch: readonly StoredEvent[]): void
  subscribe(listener: (batch: readonly StoredEvent[]) => void): () => void
}

export class LocalBus implements Bus {
  private readonly listeners = new Set<(batch: readonly StoredEvent[]) => void>()

  publish(batch: readonly StoredEvent[]): void {
    for (const listener of this.listeners) listener(batch)
  }

  subscribe(listener: (batch: readonly StoredEvent[]) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }
}
