import type { StoredEvent } from '../types.js'

/**
 * Accepted events waiting for the store, oldest first. The batch flusher peeks a batch, writes
 * it, and only then drops it, so a failed write leaves the queue as it was.
 */
export class StoreQueue {
  private items: StoredEvent[] = []
  private start = 0

  get size(): number {
    return this.items.length - this.start
  }

  push(batch: readonly StoredEvent[]): void {
    for (const e of batch) this.items.push(e)
  }

  peek(max: number): StoredEvent[] {
    return this.items.slice(this.start, this.start + max)
  }

  drop(count: number): void {
    this.start = Math.min(this.items.length, this.start + count)
    if (this.start > 4096 && this.start * 2 > this.items.length) {
      this.items = this.items.slice(this.start)
      this.start = 0
    }
  }
}
