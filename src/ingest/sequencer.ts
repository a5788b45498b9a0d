/**
 * Hands out seq numbers: strictly increasing, contiguous, starting after the highest seq the
 * relay has ever made durable. The seam for scale-out: several relays sharing one database
 * would swap this for a Postgres sequence or a Redis counter.
 */
export interface Sequencer {
  /** Reserves `count` consecutive seqs and returns the first. */
  next(count: number): number
  /** The last seq handed out (0 before any). */
  readonly last: number
}

export class LocalSequencer implements Sequencer {
  private current: number

  constructor(lastDurableSeq: number) {
    this.current = lastDurableSeq
  }

  next(count: number): number {
    const first = this.current + 1
    this.current += count
    return first
  }

  get last(): number {
    return this.current
  }
}
