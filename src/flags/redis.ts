import { Redis, type RedisOptions } from 'ioredis'
import { backoffCeilingMs, type BackoffSettings } from '../../machines/backoff.js'
import type { Logger } from '../observability/logger.js'
import { redactUrl } from '../store/store.js'

/** Default prefix of the Redis keys and channel: keys `${prefix}flag:<key>`, channel `${prefix}flags:changed`. */
export const DEFAULT_REDIS_PREFIX = 'monitoring-relay:'

const RECONNECT: BackoffSettings = { baseMs: 100, capMs: 5_000 }

const OPTIONS: RedisOptions = {
  connectTimeout: 2_000,
  commandTimeout: 2_000,
  // A command while disconnected waits for one reconnect, then fails: callers fall back and retry.
  maxRetriesPerRequest: 1,
  // `times` counts reconnect attempts from 1, so the first waits 200 ms; no jitter.
  retryStrategy: (times) => backoffCeilingMs(RECONNECT, times),
}

/**
 * The Redis override tier: one JSON definition per key under `${prefix}flag:`, and a pub/sub
 * channel carrying the key of every flag that changed (in any tier) so every relay reloads it.
 * Two connections: commands, and a subscriber (a subscribed connection can do nothing else).
 */
export class RedisFlagSource {
  readonly channel: string
  private readonly client: Redis
  private subscriber: Redis | undefined
  private closing: Promise<void> | undefined

  constructor(
    url: string,
    readonly prefix: string,
    private readonly logger: Logger,
  ) {
    this.channel = `${prefix}flags:changed`
    this.client = new Redis(url, OPTIONS)
    watchHealth(this.client, logger, { redis: redactUrl(url), redisPrefix: prefix, connection: 'commands' })
  }

  keyOf(flagKey: string): string {
    return `${this.prefix}flag:${flagKey}`
  }

  /** Every override: flag key → stored text (JSON, validated by the caller). */
  async loadAll(): Promise<Map<string, string>> {
    const keys = new Set<string>()
    const match = `${escapeGlob(this.prefix)}flag:*`
    let cursor = '0'
    do {
      const [next, batch] = await this.client.scan(cursor, 'MATCH', match, 'COUNT', 500)
      for (const k of batch) keys.add(k)
      cursor = next
    } while (cursor !== '0')
    const names = [...keys]
    const found = new Map<string, string>()
    if (names.length === 0) return found
    const values = await this.client.mget(names)
    names.forEach((name, i) => {
      const value = values[i]
      if (value != null) found.set(name.slice(this.prefix.length + 'flag:'.length), value)
    })
    return found
  }

  async load(flagKey: string): Promise<string | undefined> {
    return (await this.client.get(this.keyOf(flagKey))) ?? undefined
  }

  /** Writes (or with null deletes) the override, then announces the change. */
  async write(flagKey: string, definition: unknown | null): Promise<boolean> {
    const changed =
      definition === null ? (await this.client.del(this.keyOf(flagKey))) > 0 : (await this.client.set(this.keyOf(flagKey), JSON.stringify(definition))) === 'OK'
    await this.publish(flagKey)
    return changed
  }

  async publish(flagKey: string): Promise<void> {
    await this.client.publish(this.channel, flagKey)
  }

  /**
   * Subscribes on a second connection. Resolves true once subscribed, or false after `timeoutMs`
   * (the subscriber keeps trying). Every later subscription — after a reconnect, or the first one
   * when it came too late — calls onResync: messages published meanwhile are lost (pub/sub keeps
   * nothing), so the caller reloads everything.
   */
  subscribe(onKey: (flagKey: string) => void, onResync: () => void, timeoutMs = 2_000): Promise<boolean> {
    const sub = this.client.duplicate({ autoResubscribe: false, maxRetriesPerRequest: null, commandTimeout: undefined })
    this.subscriber = sub
    watchHealth(sub, this.logger, { redisPrefix: this.prefix, connection: 'subscriber' })
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) onKey(message)
    })
    let settled = false
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        settled = true
        resolve(false)
      }, timeoutMs)
      timer.unref()
      sub.on('ready', () => {
        sub.subscribe(this.channel).then(
          () => {
            if (settled) return onResync()
            settled = true
            clearTimeout(timer)
            resolve(true)
          },
          (err: Error) => this.logger.warn({ err: err.message, channel: this.channel }, 'redis subscribe failed; retrying on reconnect'),
        )
      })
    })
  }

  close(): Promise<void> {
    return (this.closing ??= Promise.all([quit(this.client), this.subscriber && quit(this.subscriber)]).then(() => undefined))
  }
}

async function quit(client: Redis): Promise<void> {
  try {
    await client.quit()
  } catch {
    client.disconnect() // not connected: nothing to say goodbye to
  }
}

/** Logs the first error of an outage and the recovery, not every retry. */
function watchHealth(client: Redis, logger: Logger, fields: Record<string, string>): void {
  let healthy = true
  client.on('error', (err: Error) => {
    if (!healthy) return
    healthy = false
    logger.warn({ ...fields, err: err.message }, 'redis unavailable; flags keep their last values')
  })
  client.on('ready', () => {
    if (healthy) return
    healthy = true
    logger.info(fields, 'redis reconnected')
  })
}

/** SCAN MATCH treats * ? [ ] \ as glob syntax; a prefix is literal. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&')
}
