import { Data, Result, Schema, SchemaIssue } from 'effect'
import { BUCKETS } from '../migration/bucketing.js'

/** A flag's value: any JSON value (booleans, strings and numbers for the typed flags). */
export type FlagValue = Schema.Json

export const FLAG_TYPES = ['boolean', 'string', 'number', 'variant'] as const
export type FlagType = (typeof FLAG_TYPES)[number]

export const ATTRIBUTE_OPS = ['eq', 'neq', 'in', 'notIn', 'startsWith', 'gt', 'lt'] as const
export type AttributeOp = (typeof ATTRIBUTE_OPS)[number]

/** Variant weights are in buckets: they sum to exactly 10,000 (a weight of 2,500 is 25 %). */
export const VARIANT_WEIGHT_TOTAL = BUCKETS

/** Letters, digits, `_`, `.`, `-`; 1–128 characters, starting with a letter or digit. */
export const FLAG_KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/

export type AttributeScalar = string | number | boolean

export interface AttributeMatch {
  readonly key: string
  readonly op: AttributeOp
  /** A scalar for eq/neq, a list for in/notIn, a string for startsWith, a number for gt/lt. */
  readonly value: AttributeScalar | readonly AttributeScalar[]
}

/** A named list of client ids and/or an attribute match; both must hold when both are given. */
export interface Segment {
  readonly name?: string
  readonly clientIds?: readonly string[]
  readonly attribute?: AttributeMatch
}

/** What a matching rule serves: a value, or one of the flag's variants by name. */
export type RuleOutcome = { readonly value: FlagValue; readonly variant?: undefined } | { readonly variant: string; readonly value?: undefined }

/** One targeting rule: exactly one of userIds, segment or percentage, and a value or a variant. */
export type Rule =
  | ({ readonly userIds: readonly string[] } & RuleOutcome)
  | ({ readonly segment: Segment } & RuleOutcome)
  | ({ /** 0–100; sticky: bucketOf(flag key, targetingKey) < percentage × 100. */ readonly percentage: number } & RuleOutcome)

export interface Variant {
  readonly name: string
  /** Integer buckets out of {@link VARIANT_WEIGHT_TOTAL}. */
  readonly weight: number
  readonly value: FlagValue
}

export interface FlagDefinition {
  readonly key: string
  readonly description?: string
  readonly type: FlagType
  /** Served when the flag is disabled, when no rule matches, or when it has no rules. */
  readonly defaultValue: FlagValue
  readonly enabled: boolean
  /** Tried in order; the first that matches wins. */
  readonly rules: readonly Rule[]
  /** A/B split for clients no rule matched (sticky, by targetingKey). Required for type 'variant'. */
  readonly variants?: readonly Variant[]
}

const Scalar = Schema.Union([Schema.String, Schema.Finite, Schema.Boolean])

const AttributeMatchSchema = Schema.Struct({
  key: Schema.NonEmptyString,
  op: Schema.Literals(ATTRIBUTE_OPS),
  value: Schema.Union([Scalar, Schema.Array(Scalar)]),
}).check(Schema.makeFilter((a) => attributeValueIssue(a.op, a.value)))

function attributeValueIssue(op: AttributeOp, value: AttributeScalar | readonly AttributeScalar[]): Schema.FilterIssue | undefined {
  const at = (issue: string) => ({ path: ['value'], issue })
  switch (op) {
    case 'in':
    case 'notIn':
      return Array.isArray(value) && value.length > 0 ? undefined : at(`op ${op} needs a non-empty list of strings, numbers or booleans`)
    case 'startsWith':
      return typeof value === 'string' ? undefined : at('op startsWith needs a string')
    case 'gt':
    case 'lt':
      return typeof value === 'number' ? undefined : at(`op ${op} needs a number`)
    default:
      return Array.isArray(value) ? at(`op ${op} needs a single string, number or boolean (use in/notIn for a list)`) : undefined
  }
}

const SegmentSchema = Schema.Struct({
  name: Schema.optionalKey(Schema.NonEmptyString),
  clientIds: Schema.optionalKey(Schema.Array(Schema.NonEmptyString)),
  attribute: Schema.optionalKey(AttributeMatchSchema),
}).check(
  Schema.makeFilter((s) => (s.clientIds !== undefined || s.attribute !== undefined ? undefined : 'a segment needs clientIds, an attribute match, or both')),
)

const RuleSchema = Schema.Struct({
  userIds: Schema.optionalKey(Schema.Array(Schema.NonEmptyString)),
  segment: Schema.optionalKey(SegmentSchema),
  percentage: Schema.optionalKey(Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 100 }))),
  value: Schema.optionalKey(Schema.Json),
  variant: Schema.optionalKey(Schema.NonEmptyString),
}).check(
  Schema.makeFilter((r) => {
    const issues: Schema.FilterIssue[] = []
    const targets = [r.userIds, r.segment, r.percentage].filter((t) => t !== undefined).length
    if (targets !== 1) issues.push(`a rule targets exactly one of userIds, segment or percentage (got ${targets})`)
    if ((r.value === undefined) === (r.variant === undefined)) issues.push('a rule serves exactly one of value or variant')
    return issues
  }),
)

const VariantSchema = Schema.Struct({
  name: Schema.NonEmptyString,
  weight: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: VARIANT_WEIGHT_TOTAL })),
  value: Schema.Json,
})

type Decoded = typeof FlagDefinitionInput.Type

/**
 * A flag definition as accepted from an operator (admin API, Redis, the database): `enabled`
 * defaults to true and `rules` to []. Decode with {@link parseFlagDefinition}, which also fills
 * `key` from the flag's name and reports every problem with its path.
 */
export const FlagDefinitionInput = Schema.Struct({
  key: Schema.String.check(Schema.isPattern(FLAG_KEY_PATTERN, { expected: '1–128 letters, digits, _ . - (starting with a letter or digit)' })),
  description: Schema.optionalKey(Schema.String.check(Schema.isMaxLength(1000))),
  type: Schema.Literals(FLAG_TYPES),
  defaultValue: Schema.Json,
  enabled: Schema.optionalKey(Schema.Boolean),
  rules: Schema.optionalKey(Schema.Array(RuleSchema)),
  variants: Schema.optionalKey(Schema.Array(VariantSchema)),
}).check(Schema.makeFilter((d) => coherenceIssues(d)))

/** Values match the flag's type; variants are named uniquely, weigh 10,000 in all, and exist where rules name them. */
function coherenceIssues(d: Decoded): Schema.FilterIssue[] {
  const issues: Schema.FilterIssue[] = []
  const expected = `a ${d.type} (the flag's type)`
  if (!valueFits(d.type, d.defaultValue)) issues.push({ path: ['defaultValue'], issue: `Expected ${expected}, got ${describe(d.defaultValue)}` })
  const names = new Set<string>()
  d.variants?.forEach((v, i) => {
    if (names.has(v.name)) issues.push({ path: ['variants', i, 'name'], issue: `duplicate variant name ${JSON.stringify(v.name)}` })
    names.add(v.name)
    if (!valueFits(d.type, v.value)) issues.push({ path: ['variants', i, 'value'], issue: `Expected ${expected}, got ${describe(v.value)}` })
  })
  if (d.variants !== undefined) {
    const total = d.variants.reduce((sum, v) => sum + v.weight, 0)
    if (d.variants.length === 0) issues.push({ path: ['variants'], issue: 'omit variants or give at least one' })
    else if (total !== VARIANT_WEIGHT_TOTAL) {
      issues.push({ path: ['variants'], issue: `variant weights must sum to ${VARIANT_WEIGHT_TOTAL} (basis points: 2500 = 25 %), got ${total}` })
    }
  } else if (d.type === 'variant') {
    issues.push({ path: ['variants'], issue: 'a flag of type variant needs variants' })
  }
  d.rules?.forEach((r, i) => {
    if (r.value !== undefined && !valueFits(d.type, r.value)) issues.push({ path: ['rules', i, 'value'], issue: `Expected ${expected}, got ${describe(r.value)}` })
    if (r.variant !== undefined && !names.has(r.variant)) {
      issues.push({ path: ['rules', i, 'variant'], issue: `no variant named ${JSON.stringify(r.variant)}${names.size ? ` (have ${[...names].join(', ')})` : ' (the flag has no variants)'}` })
    }
  })
  return issues
}

function valueFits(type: FlagType, value: FlagValue): boolean {
  switch (type) {
    case 'boolean':
      return typeof value === 'boolean'
    case 'string':
      return typeof value === 'string'
    case 'number':
      return typeof value === 'number'
    case 'variant':
      return true
  }
}

/** One problem of a definition: a dotted path ('rules.0.percentage'; '' for the whole) and what is wrong. */
export interface FlagIssue {
  readonly path: string
  readonly message: string
}

/** A flag definition (or key) that does not validate, with every problem and its path: answer 400. */
export class FlagValidationError extends Data.TaggedError('FlagValidationError')<{
  readonly message: string
  readonly key: string | undefined
  readonly details: readonly FlagIssue[]
}> {
  static of(key: string | undefined, details: readonly FlagIssue[]): FlagValidationError {
    const message = `invalid flag definition${key ? ` ${JSON.stringify(key)}` : ''}: ${details.map((d) => (d.path ? `${d.path}: ${d.message}` : d.message)).join('; ')}`
    return new FlagValidationError({ message, key, details })
  }
}

export type ParseResult = { ok: true; definition: FlagDefinition } | { ok: false; details: FlagIssue[] }

const decode = Schema.decodeUnknownResult(FlagDefinitionInput, { errors: 'all', onExcessProperty: 'error', reportInput: true })
const format = SchemaIssue.makeFormatterStandardSchemaV1({
  leafHook: (issue) => {
    if (issue._tag === 'UnexpectedKey') return `unknown field${allowedFields(issue.ast)}`
    if (issue._tag === 'MissingKey') return 'required field is missing'
    return SchemaIssue.defaultLeafHook(issue)
  },
})

function allowedFields(ast: unknown): string {
  const signatures = (ast as { propertySignatures?: ReadonlyArray<{ name: PropertyKey }> }).propertySignatures
  return signatures ? ` (expected only ${signatures.map((p) => String(p.name)).join(', ')})` : ''
}

/**
 * Validates a definition. With `key` (the flag's name, e.g. from the URL or the Redis key) a
 * missing `key` field is filled in and a different one is an error.
 */
export function parseFlagDefinition(input: unknown, key?: string): ParseResult {
  let candidate = input
  if (key !== undefined && isRecord(input)) {
    if (input.key === undefined) candidate = { ...input, key }
    else if (input.key !== key) return { ok: false, details: [{ path: 'key', message: `must be the flag's key ${JSON.stringify(key)}, got ${describe(input.key)}` }] }
  }
  const result = decode(candidate)
  if (Result.isFailure(result)) {
    const seen = new Set<string>()
    const details: FlagIssue[] = []
    for (const { path, message } of format(result.failure.issue).issues) {
      const dotted = (path ?? []).map((p) => String(typeof p === 'object' && p !== null && 'key' in p ? p.key : p)).join('.')
      const id = `${dotted}\u0000${message}`
      if (seen.has(id)) continue
      seen.add(id)
      details.push({ path: dotted, message })
    }
    return { ok: false, details }
  }
  const d = result.success
  const definition = { ...d, enabled: d.enabled ?? true, rules: d.rules ?? [] }
  // The filters above established what the Rule union states (one target, one outcome).
  return { ok: true, definition: definition as FlagDefinition }
}

/** {@link parseFlagDefinition}, throwing a {@link FlagValidationError} with every problem. */
export function decodeFlagDefinition(input: unknown, key?: string): FlagDefinition {
  const parsed = parseFlagDefinition(input, key)
  if (!parsed.ok) throw FlagValidationError.of(key ?? (isRecord(input) && typeof input.key === 'string' ? input.key : undefined), parsed.details)
  return parsed.definition
}

function isRecord(u: unknown): u is Record<string, unknown> {
  return typeof u === 'object' && u !== null && !Array.isArray(u)
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing'
  const text = JSON.stringify(value)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}
