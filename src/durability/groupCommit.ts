import { Data } from 'effect'

/** A group write returned without settling one of its jobs: a bug in the writer, not a disk fault. */
export class CommitUnsettled extends Data.TaggedError('CommitUnsettled')<{ readonly message: string }> {}

/** One queued write, handed to the group writer, which settles it once it is durable (or refused). */
export interface CommitJob<I, V> {
  readonly input: I
  resolve(value: V): void
  reject(err: unknown): void
}

/**
 * Group commit over one serial queue. Work runs one task at a time in call order (exclusive);
 * submit() queues a write, and every write submitted while a group is being written goes out
 * together in the next group (one write, one fdatasync), so concurrent callers share fsyncs.
 */
export class GroupCommit<I, V> {
  private tail: Promise<unknown> = Promise.resolve()
  private queued: Array<CommitJob<I, V>> = []
  private scheduled = false
  private unsettled = 0

  constructor(private readonly writeGroup: (jobs: ReadonlyArray<CommitJob<I, V>>) => Promise<void>) {}

  /** Writes queued or being written, not yet settled. */
  get size(): number {
    return this.queued.length + this.unsettled
  }

  /** The newest write still waiting for a group. */
  get lastQueued(): I | undefined {
    return this.queued.at(-1)?.input
  }

  /** Resolves with what the group writer gives this input, once it is durable. */
  submit(input: I): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      this.queued.push({ input, resolve, reject })
      if (!this.scheduled) {
        this.scheduled = true
        void this.exclusive(() => this.writeNext())
      }
    })
  }

  /** Runs fn after everything queued before it (group writes and other exclusive tasks). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn)
    // The next task waits for this one to settle; its outcome belongs to run's caller.
    this.tail = Promise.allSettled([run])
    return run
  }

  /** Settles every job exactly once: by the writer, or here with the writer's error. */
  private async writeNext(): Promise<void> {
    this.scheduled = false
    const group = this.queued
    this.queued = []
    this.unsettled = group.length
    const jobs = group.map((job): CommitJob<I, V> => {
      let settled = false
      const settle = (fn: () => void) => {
        if (settled) return
        settled = true
        this.unsettled--
        fn()
      }
      return { input: job.input, resolve: (value) => settle(() => job.resolve(value)), reject: (err) => settle(() => job.reject(err)) }
    })
    try {
      await this.writeGroup(jobs)
      for (const job of jobs) job.reject(new CommitUnsettled({ message: 'the group write ended without settling this write' }))
    } catch (err) {
      for (const job of jobs) job.reject(err)
    }
  }
}
