import { inRollout, variantBucketOf } from '../migration/bucketing.js'
import type { AttributeMatch, AttributeScalar, FlagDefinition, FlagValue, Rule, Variant } from './definition.js'

/**
 * Shaped like OpenFeature's evaluation context, so an OpenFeature provider can pass its context
 * through unchanged: `targetingKey` is the dashboard's client id (what percentages and variants
 * hash), `userId` what userIds rules match, `attributes` what segment attribute matches read.
 */
export interface EvaluationContext {
  readonly targetingKey?: string
  readonly userId?: string
  readonly attributes?: Readonly<Record<string, string | number | boolean>>
}

/** OpenFeature's resolution reasons. */
export type EvaluationReason = 'STATIC' | 'TARGETING_MATCH' | 'SPLIT' | 'DEFAULT' | 'DISABLED' | 'ERROR'

/** Where a flag's definition came from, highest precedence first. */
export type FlagTier = 'redis' | 'database' | 'env' | 'default'

export interface EvaluationResult {
  readonly value: FlagValue
  readonly variant?: string
  readonly reason: EvaluationReason
  readonly tier: FlagTier
  /** With reason ERROR: OpenFeature's error code. */
  readonly errorCode?: 'FLAG_NOT_FOUND'
}

/** A definition turned into a function of the context (lists become sets), built once per change. */
export type CompiledFlag = (ctx: EvaluationContext, tier: FlagTier) => EvaluationResult

/**
 * Disabled → defaultValue (DISABLED). Otherwise the first matching rule serves its value or
 * variant (TARGETING_MATCH; SPLIT for a percentage rule). Otherwise, with variants and a
 * targetingKey, the sticky weighted split (SPLIT). Otherwise defaultValue: STATIC for a flag
 * without rules or variants, DEFAULT when it has some and none applied.
 */
export function compileFlag(def: FlagDefinition): CompiledFlag {
  const variants = new Map((def.variants ?? []).map((v) => [v.name, v]))
  const rules = def.rules.map((rule) => ({ matches: compileMatcher(def.key, rule), serve: outcomeOf(rule, variants), split: 'percentage' in rule }))
  const split = def.variants?.length ? splitter(def.key, def.variants) : undefined
  const fallthrough = rules.length === 0 && split === undefined ? 'STATIC' : 'DEFAULT'

  return (ctx, tier) => {
    if (!def.enabled) return { value: def.defaultValue, reason: 'DISABLED', tier }
    for (const rule of rules) {
      if (rule.matches(ctx)) return { ...rule.serve, reason: rule.split ? 'SPLIT' : 'TARGETING_MATCH', tier }
    }
    if (split !== undefined && ctx.targetingKey !== undefined) {
      const variant = split(ctx.targetingKey)
      return { value: variant.value, variant: variant.name, reason: 'SPLIT', tier }
    }
    return { value: def.defaultValue, reason: fallthrough, tier }
  }
}

/** Evaluates a definition once (compile it with {@link compileFlag} to evaluate it often). */
export function evaluateFlag(def: FlagDefinition, ctx: EvaluationContext = {}, tier: FlagTier = 'default'): EvaluationResult {
  return compileFlag(def)(ctx, tier)
}

function outcomeOf(rule: Rule, variants: ReadonlyMap<string, Variant>): { value: FlagValue; variant?: string } {
  if (rule.variant === undefined) return { value: rule.value }
  const variant = variants.get(rule.variant)
  // Validation guarantees the variant exists; a definition built in code without validation gets null.
  return { value: variant?.value ?? null, variant: rule.variant }
}

type Matcher = (ctx: EvaluationContext) => boolean

function compileMatcher(flagKey: string, rule: Rule): Matcher {
  if ('userIds' in rule) {
    const ids = new Set(rule.userIds)
    return (ctx) => ctx.userId !== undefined && ids.has(ctx.userId)
  }
  if ('segment' in rule) {
    const { clientIds, attribute } = rule.segment
    const ids = clientIds && new Set(clientIds)
    const attributeMatches = attribute && compileAttribute(attribute)
    return (ctx) =>
      (ids === undefined || (ctx.targetingKey !== undefined && ids.has(ctx.targetingKey))) &&
      (attributeMatches === undefined || attributeMatches(ctx.attributes?.[attribute!.key]))
  }
  const { percentage } = rule
  return (ctx) => ctx.targetingKey !== undefined && inRollout(flagKey, ctx.targetingKey, percentage)
}

/**
 * Strict equality for eq/neq/in/notIn ('1' is not 1). gt/lt compare numbers; an attribute that is
 * a numeric string ('42', as query parameters arrive) counts as that number. A missing attribute
 * matches no operator, neq and notIn included: targeting never selects on absence.
 */
function compileAttribute(match: AttributeMatch): (actual: AttributeScalar | undefined) => boolean {
  const { op, value } = match
  const list = new Set<AttributeScalar>(Array.isArray(value) ? value : [value as AttributeScalar])
  switch (op) {
    case 'eq':
      return (a) => a !== undefined && a === value
    case 'neq':
      return (a) => a !== undefined && a !== value
    case 'in':
      return (a) => a !== undefined && list.has(a)
    case 'notIn':
      return (a) => a !== undefined && !list.has(a)
    case 'startsWith':
      return (a) => typeof a === 'string' && a.startsWith(value as string)
    case 'gt':
      return (a) => numberOf(a) > (value as number)
    case 'lt':
      return (a) => numberOf(a) < (value as number)
  }
}

function numberOf(a: AttributeScalar | undefined): number {
  if (typeof a === 'number') return a
  if (typeof a === 'string' && a.trim() !== '') return Number(a)
  return Number.NaN
}

/** Variant i covers buckets [sum of earlier weights, + weight): a variant weighing 0 gets nobody. */
function splitter(flagKey: string, variants: readonly Variant[]): (targetingKey: string) => Variant {
  const bounds: number[] = []
  let total = 0
  for (const v of variants) bounds.push((total += v.weight))
  return (targetingKey) => {
    const bucket = variantBucketOf(flagKey, targetingKey) % Math.max(total, 1)
    const index = bounds.findIndex((upTo) => bucket < upTo)
    return variants[index === -1 ? variants.length - 1 : index]!
  }
}
