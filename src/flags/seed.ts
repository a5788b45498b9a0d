import { FlagService, pgFlagStore, SEED_FLAGS } from './index.js'
import type { Logger } from '../observability/logger.js'

/**
 * The seed flags (MONITORING_USE_ADAPTER, MONITORING_DUAL_MODE, MONITORING_ADAPTER_TYPE) are
 * flags of the flag service with their env values as the env tier. They shape the actor system
 * (which transports, flushers and breakers exist), so they are resolved once, before the relay is
 * built: a Redis override or a feature_flags row wins over env. Returns the env entries to replace.
 * Only Postgres and Redis tiers are consulted here (the embedded PGlite is opened by the relay).
 */
export async function resolveSeedFlags(env: Record<string, string | undefined>, logger: Logger): Promise<Record<string, string>> {
  const databaseUrl = env.DATABASE_URL || undefined
  const redisUrl = env.REDIS_URL || undefined
  if (!databaseUrl && !redisUrl) return {}
  const flags = await FlagService.open({
    store: databaseUrl ? pgFlagStore(databaseUrl) : undefined,
    redisUrl,
    redisPrefix: env.REDIS_PREFIX || 'relay:',
    env,
    defaults: SEED_FLAGS,
    logger: logger.child({ phase: 'seed-flags' }),
  })
  try {
    const out: Record<string, string> = {}
    for (const { key } of SEED_FLAGS) {
      const result = flags.evaluate(key)
      if ((result.tier === 'redis' || result.tier === 'database') && result.value !== null && result.value !== undefined) {
        out[key] = String(result.value)
        logger.info({ flag: key, value: result.value, tier: result.tier }, 'seed flag overridden')
      }
    }
    return out
  } finally {
    await flags.close()
  }
}
