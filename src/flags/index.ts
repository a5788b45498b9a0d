export { flagAdminRoutes, FLAG_BODY_LIMIT, type FlagAdminDeps } from './adminRoutes.js'
export { FLAGS_CHANNEL, pgFlagStore, pgliteFlagStore, type FlagStore, type ListenEvents, type PgFlagStoreOptions } from './database.js'
export {
  ATTRIBUTE_OPS,
  decodeFlagDefinition,
  FLAG_KEY_PATTERN,
  FLAG_TYPES,
  FlagDefinitionInput,
  FlagValidationError,
  parseFlagDefinition,
  VARIANT_WEIGHT_TOTAL,
  type AttributeMatch,
  type AttributeOp,
  type FlagDefinition,
  type FlagIssue,
  type FlagType,
  type FlagValue,
  type Rule,
  type Segment,
  type Variant,
} from './definition.js'
export { envTier, SEED_FLAGS } from './env.js'
export { FLAG_TIERS, FlagService, FlagTierUnavailableError, type FlagServiceOptions } from './flags.js'
export { DEFAULT_REDIS_PREFIX } from './redis.js'
export { compileFlag, evaluateFlag, type EvaluationContext, type EvaluationReason, type EvaluationResult, type FlagTier } from './rules.js'
