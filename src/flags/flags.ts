import { Data } from 'effect'
import type { Logger } from '../observability/logger.js'
import { flagRows, FLAGS_CHANNEL, type FlagRow, type FlagStore } from './database.js'
import { decodeFlagDefinition, FLAG_KEY_PATTERN, FlagValidationError, parseFlagDefinition, type FlagDefinition } from './definition.js'
import { envTier } from './env.js'
import { DEFAULT_REDIS_PREFIX, RedisFlagSource } from './redis.js'
import { compileFlag, type CompiledFlag, type EvaluationContext, type EvaluationResult, type FlagTier } from './rules.js'

/** Highest precedence first. */
export const FLAG_TIERS: readonly FlagTier[] = ['redis', 'database', 'env', 'default']

/** A write to a tier the service was opened without (no store, or no REDIS_URL). */
export class FlagTierUnavailableError extends Data.TaggedError('FlagTierUnavailableError')<{ readonly message: string; readonly tier: 'redis' | 'database' }> {
  static of(tier: 'redis' | 'database'): FlagTierUnavailableError {
    return new FlagTierUnavailableError({ tier, message: tier === 'redis' ? 'the Redis override tier is not configured (set REDIS_URL)' : 'the database tier is not configured (no store)' })
  }
}

export interface FlagServiceOptions {
  /** The database tier: pgFlagStore(url) or pgliteFlagStore(db). Owned by the service from now on. */
  store?: FlagStore
  /** The Redis override tier and the pub/sub that spreads changes; optional. */
  redisUrl?: string
  /** Prefix of the Redis keys and channel (default 'monitoring-relay:'). */
  redisPrefix?: string
  /** The env tier's values, by flag key (process.env). Only keys of `defaults` are read. */
  env: Record<string, string | undefined>
  /** The built-in flags: their definitions are the default tier and their types type the env tier. */
  defaults: readonly FlagDefinition[]
  logger: Logger
  /** Full reload of the remote tiers, a safety net under the notifications (default 60 s; 0: never). */
  resyncIntervalMs?: number
  /** Delay before a tier that failed to load is loaded again (default 2 s). */
  retryMs?: number
}

interface Resolved {
  readonly definition: FlagDefinition
  readonly tier: FlagTier
  readonly evaluate: CompiledFlag
  readonly signature: string
}

type RemoteTier = 'redis' | 'database'

/**
 * Feature flags resolved per flag: Redis override > database (public.feature_flags) > env >
 * built-in default. Evaluation is synchronous, from memory; a change in any tier reaches every
 * instance through Redis pub/sub (`${prefix}flags:changed`) and Postgres LISTEN/NOTIFY
 * (`feature_flags`), whichever are configured, plus a periodic full reload.
 */
export class FlagService {
  private readonly tiers: Record<FlagTier, Map<string, FlagDefinition>> = {
    redis: new Map(),
    database: new Map(),
    env: new Map(),
    default: new Map(),
  }
  private readonly resolved = new Map<string, Resolved>()
  private readonly listeners = new Set<(key: string) => void>()
  private readonly refreshing = new Map<string, Promise<void>>()
  private readonly stale = new Set<string>()
  /** Per key, the number of the last change notice (a notification or a write of ours). */
  private readonly noticed = new Map<string, number>()
  private notices = 0
  private readonly retryTimers = new Map<RemoteTier, NodeJS.Timeout>()
  /** Tiers whose last load failed: their outage was logged once, their recovery will be. */
  private readonly failing = new Set<RemoteTier>()
  private resyncTimer: NodeJS.Timeout | undefined
  private unlisten: (() => Promise<void>) | undefined
  private closing: Promise<void> | undefined

  private constructor(
    private readonly store: FlagStore | undefined,
    private readonly redis: RedisFlagSource | undefined,
    private readonly logger: Logger,
    private readonly retryMs: number,
  ) {}

  static async open(opts: FlagServiceOptions): Promise<FlagService> {
    const logger = opts.logger.child({ component: 'flags' })
    // A built-in definition that does not validate is a bug: fail before connecting anywhere.
    const defaults = opts.defaults.map((def) => decodeFlagDefinition(def))
    const redis = opts.redisUrl ? new RedisFlagSource(opts.redisUrl, opts.redisPrefix ?? DEFAULT_REDIS_PREFIX, logger) : undefined
    const service = new FlagService(opts.store, redis, logger, opts.retryMs ?? 2_000)
    for (const def of defaults) service.tiers.default.set(def.key, def)
    const env = envTier(defaults, opts.env)
    for (const p of env.problems) logger.warn(p, 'env value of a flag does not parse; env tier skipped for it')
    for (const def of env.definitions) service.tiers.env.set(def.key, def)
    try {
      await service.connect()
    } catch (err) {
      await service.close()
      throw err
    }
    const every = opts.resyncIntervalMs ?? 60_000
    if (every > 0 && (redis || opts.store)) {
      service.resyncTimer = setInterval(() => {
        if (redis) void service.reloadTier('redis')
        if (opts.store) void service.reloadTier('database')
      }, every)
      service.resyncTimer.unref()
    }
    logger.info(
      { tiers: FLAG_TIERS.filter((t) => (t === 'redis' ? redis : t === 'database' ? opts.store : true)), flags: service.resolved.size },
      'flag service open',
    )
    return service
  }

  /**
   * Per remote tier, subscribe first, then load: a change between the two is reloaded rather
   * than missed. The two tiers start in parallel, so an unreachable one delays open() once.
   */
  private async connect(): Promise<void> {
    const { redis, store, logger } = this
    const startRedis = async (source: RedisFlagSource) => {
      const subscribed = await source.subscribe((key) => this.refresh(key), () => this.reloadTier('redis'))
      if (subscribed) await this.reloadTier('redis')
      else logger.warn({ redisPrefix: source.prefix }, 'redis unreachable at start; serving the other tiers until it is back')
    }
    const startDatabase = async (db: FlagStore) => {
      let listening = true
      this.unlisten = await db.listen(FLAGS_CHANNEL, (key) => this.refresh(key), {
        onReconnect: () => {
          if (!listening) logger.info({ channel: FLAGS_CHANNEL }, 'LISTEN connection back; reloading the database tier')
          listening = true
          void this.reloadTier('database')
        },
        onError: (err) => {
          if (listening) logger.warn({ channel: FLAGS_CHANNEL, err: err.message }, 'LISTEN connection lost; reconnecting (changes arrive late until then)')
          listening = false
        },
      })
      await this.reloadTier('database')
    }
    await Promise.all([redis && startRedis(redis), store && startDatabase(store)])
    for (const key of this.allKeys()) this.recompute(key)
  }

  /** Synchronous, from memory. An unknown key gives value null, reason ERROR, errorCode FLAG_NOT_FOUND. */
  evaluate(key: string, ctx: EvaluationContext = {}): EvaluationResult {
    const r = this.resolved.get(key)
    if (!r) return { value: null, reason: 'ERROR', tier: 'default', errorCode: 'FLAG_NOT_FOUND' }
    return r.evaluate(ctx, r.tier)
  }

  /** The definition in force and its tier. */
  get(key: string): { definition: FlagDefinition; tier: FlagTier } | undefined {
    const r = this.resolved.get(key)
    return r && { definition: r.definition, tier: r.tier }
  }

  list(): Array<{ key: string; tier: FlagTier; definition: FlagDefinition }> {
    return [...this.resolved.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([key, r]) => ({ key, tier: r.tier, definition: r.definition }))
  }

  /**
   * Validates (FlagValidationError with every problem and its path) and writes the database tier;
   * the table's trigger notifies every instance, and so does Redis when configured.
   */
  async put(key: string, definition: unknown, actor: string): Promise<FlagDefinition> {
    const store = this.requireStore()
    const def = decodeFlagDefinition(definition, key)
    const previous = this.tiers.database.get(key)
    await flagRows.upsert(store, key, def, actor)
    this.notice(key)
    this.audit('put', 'database', key, actor, { definition: def, previous })
    this.apply('database', key, def)
    await this.announce(key)
    return def
  }

  /** Sets (or with null removes) the Redis override, which wins over every other tier. */
  async override(key: string, definition: unknown | null, actor: string): Promise<void> {
    if (!this.redis) throw FlagTierUnavailableError.of('redis')
    checkKey(key)
    const def = definition === null ? undefined : decodeFlagDefinition(definition, key)
    const previous = this.tiers.redis.get(key)
    await this.redis.write(key, def ?? null)
    this.notice(key)
    this.audit(def ? 'override' : 'override.remove', 'redis', key, actor, { definition: def, previous })
    this.apply('redis', key, def)
  }

  /**
   * Removes the flag's database-tier definition (a Redis override stays: remove it with
   * override(key, null)). True when there was one. The flag falls back to env or its default.
   */
  async delete(key: string, actor: string): Promise<boolean> {
    const store = this.requireStore()
    checkKey(key)
    const previous = this.tiers.database.get(key)
    const removed = await flagRows.remove(store, key)
    this.notice(key)
    if (removed) this.audit('delete', 'database', key, actor, { previous })
    this.apply('database', key, undefined)
    await this.announce(key)
    return removed
  }

  /** Called with the key whenever the definition or tier in force for it changes. Returns the unsubscribe. */
  onChange(listener: (key: string) => void): () => void {
    this.listeners.add(listener)
    return () => void this.listeners.delete(listener)
  }

  close(): Promise<void> {
    return (this.closing ??= (async () => {
      if (this.resyncTimer) clearInterval(this.resyncTimer)
      for (const t of this.retryTimers.values()) clearTimeout(t)
      this.retryTimers.clear()
      this.listeners.clear()
      await Promise.allSettled([...this.refreshing.values()])
      await this.unlisten?.()
      await Promise.all([this.redis?.close(), this.store?.close()])
    })())
  }

  private get closed(): boolean {
    return this.closing !== undefined
  }

  private requireStore(): FlagStore {
    if (!this.store) throw FlagTierUnavailableError.of('database')
    return this.store
  }

  private audit(action: string, tier: RemoteTier, key: string, actor: string, what: { definition?: FlagDefinition; previous?: FlagDefinition | undefined }): void {
    this.logger.info({ audit: true, action, flag: key, tier, actor, at: new Date().toISOString(), ...what }, `flag ${action}`)
  }

  /** Tells the other instances through Redis; Postgres NOTIFY already did through the trigger. */
  private async announce(key: string): Promise<void> {
    if (!this.redis) return
    await this.redis.publish(key).catch((err: Error) => {
      this.logger.warn({ flag: key, err: err.message }, 'redis publish failed; instances learn the change from Postgres NOTIFY')
    })
  }

  /** Reloads one flag from the remote tiers; calls for a key already reloading run once more after it. */
  private refresh(key: string): void {
    if (this.closed || !FLAG_KEY_PATTERN.test(key)) return
    this.notice(key)
    if (this.refreshing.has(key)) return void this.stale.add(key)
    const run = async () => {
      do {
        this.stale.delete(key)
        await Promise.all([this.redis && this.reloadKey('redis', key), this.store && this.reloadKey('database', key)])
      } while (this.stale.has(key) && !this.closed)
    }
    this.refreshing.set(key, run().finally(() => this.refreshing.delete(key)))
  }

  private async reloadKey(tier: RemoteTier, key: string): Promise<void> {
    try {
      if (tier === 'redis') this.applyStored('redis', key, await this.redis!.load(key))
      else this.applyStored('database', key, await flagRows.one(this.store!, key))
    } catch (err) {
      this.logger.warn({ tier, flag: key, err: (err as Error).message }, 'flag reload failed; retrying the whole tier')
      this.scheduleRetry(tier)
    }
  }

  private notice(key: string): void {
    this.noticed.set(key, ++this.notices)
  }

  /**
   * Replaces a whole tier from its source; on failure keeps the last values and retries. A key
   * noticed as changed while the tier was being read keeps what its own reload (which read after
   * the change) brings, rather than this possibly older read.
   */
  private async reloadTier(tier: RemoteTier): Promise<void> {
    if (this.closed) return
    const since = this.notices
    const untouched = (key: string) => (this.noticed.get(key) ?? 0) <= since
    try {
      const found = new Map<string, string | FlagRow>(tier === 'redis' ? await this.redis!.loadAll() : (await flagRows.all(this.store!)).map((r) => [r.key, r]))
      if (this.closed) return
      for (const key of [...this.tiers[tier].keys()]) if (!found.has(key) && untouched(key)) this.apply(tier, key, undefined)
      for (const [key, stored] of found) if (untouched(key)) this.applyStored(tier, key, stored)
      const timer = this.retryTimers.get(tier)
      if (timer) {
        clearTimeout(timer)
        this.retryTimers.delete(tier)
      }
      if (this.failing.delete(tier)) this.logger.info({ tier, flags: found.size }, 'flag tier loaded again')
    } catch (err) {
      const first = !this.failing.has(tier)
      this.failing.add(tier)
      this.logger[first ? 'warn' : 'debug']({ tier, err: (err as Error).message, retryMs: this.retryMs }, 'flag tier unavailable; serving the other tiers and retrying')
      this.scheduleRetry(tier)
    }
  }

  private scheduleRetry(tier: RemoteTier): void {
    if (this.closed || this.retryTimers.has(tier)) return
    const timer = setTimeout(() => {
      this.retryTimers.delete(tier)
      void this.reloadTier(tier)
    }, this.retryMs)
    timer.unref()
    this.retryTimers.set(tier, timer)
  }

  /** A stored definition (Redis text or a table row), validated; an invalid one is logged and ignored. */
  private applyStored(tier: RemoteTier, key: string, stored: string | FlagRow | undefined): void {
    if (stored === undefined) return this.apply(tier, key, undefined)
    let raw: unknown
    try {
      raw = typeof stored === 'string' ? JSON.parse(stored) : stored.definition
    } catch {
      this.logger.error({ tier, flag: key }, 'stored flag definition is not JSON; ignored')
      return this.apply(tier, key, undefined)
    }
    const parsed = parseFlagDefinition(raw, key)
    if (!parsed.ok) {
      this.logger.error({ tier, flag: key, details: parsed.details }, 'stored flag definition is invalid; ignored')
      return this.apply(tier, key, undefined)
    }
    const current = this.tiers[tier].get(key)
    if (current && JSON.stringify(current) === JSON.stringify(parsed.definition)) return
    const who = typeof stored === 'string' ? {} : { updatedBy: stored.updated_by, updatedAt: new Date(stored.updated_at).toISOString() }
    this.logger.info({ tier, flag: key, ...who }, 'flag definition loaded')
    this.apply(tier, key, parsed.definition)
  }

  private apply(tier: FlagTier, key: string, def: FlagDefinition | undefined): void {
    if (def) this.tiers[tier].set(key, def)
    else if (!this.tiers[tier].delete(key)) return
    this.recompute(key)
  }

  private recompute(key: string): void {
    const tier = FLAG_TIERS.find((t) => this.tiers[t].has(key))
    const before = this.resolved.get(key)
    if (tier === undefined) {
      if (!before) return
      this.resolved.delete(key)
    } else {
      const definition = this.tiers[tier].get(key)!
      const signature = `${tier}\u0000${JSON.stringify(definition)}`
      if (before?.signature === signature) return
      this.resolved.set(key, { definition, tier, evaluate: compileFlag(definition), signature })
      if (before && before.tier !== tier) this.logger.info({ flag: key, tier, previousTier: before.tier }, 'flag now resolved from another tier')
    }
    for (const listener of this.listeners) {
      try {
        listener(key)
      } catch (err) {
        this.logger.error({ flag: key, err: (err as Error).message }, 'flag change listener threw')
      }
    }
  }

  private allKeys(): Set<string> {
    return new Set(FLAG_TIERS.flatMap((t) => [...this.tiers[t].keys()]))
  }
}

function checkKey(key: string): void {
  if (!FLAG_KEY_PATTERN.test(key)) {
    throw FlagValidationError.of(key, [{ path: 'key', message: 'Expected 1–128 letters, digits, _ . - (starting with a letter or digit)' }])
  }
}
