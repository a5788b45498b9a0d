import type { Logger } from './observability/logger.js'

/**
 * The services the relay opened, closed in reverse order. A service that fails to close is logged
 * and the rest still close: one failure skips nothing. Closing twice closes nothing twice.
 */
export class Lifecycle {
  private readonly closers: Array<{ name: string; close: () => Promise<void> | void }> = []

  constructor(private readonly logger: Logger) {}

  /** Registers `service` (just opened) to be closed by `close`; returns it. */
  use<S>(name: string, service: S, close: (service: S) => Promise<void> | void): S {
    this.closers.push({ name, close: () => close(service) })
    return service
  }

  /** Closes everything opened so far, newest first; resolves with the names that failed. */
  async closeAll(): Promise<string[]> {
    const failed: string[] = []
    for (let next = this.closers.pop(); next; next = this.closers.pop()) {
      try {
        await next.close()
      } catch (err) {
        failed.push(next.name)
        this.logger.warn({ service: next.name, err: err instanceof Error ? err.message : String(err) }, 'service failed to close')
      }
    }
    return failed
  }
}
