import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { bucketOf, inRollout } from '../../src/migration/bucketing.js'
import { decodeFlagDefinition, FlagValidationError, parseFlagDefinition, type FlagDefinition } from '../../src/flags/definition.js'
import { envTier, SEED_FLAGS } from '../../src/flags/env.js'
import { compileFlag, evaluateFlag } from '../../src/flags/rules.js'

const flag = (over: Record<string, unknown> = {}): FlagDefinition =>
  decodeFlagDefinition({ key: 'realtime', type: 'boolean', defaultValue: false, enabled: true, rules: [], ...over })

const ids = (n: number, seed: number): string[] => [...new Set(fc.sample(fc.uuid(), { numRuns: n, seed }))]

/** The problems of an invalid definition, as { path: message }. */
function problems(input: unknown, key?: string): Record<string, string> {
  const parsed = parseFlagDefinition(input, key)
  if (parsed.ok) throw new Error(`expected ${JSON.stringify(input)} to be rejected`)
  return Object.fromEntries(parsed.details.map((d) => [d.path, d.message]))
}

describe('rule evaluation', () => {
  it('a flag without rules serves its default value as STATIC', () => {
    expect(evaluateFlag(flag({ defaultValue: true }))).toEqual({ value: true, reason: 'STATIC', tier: 'default' })
  })

  it('a disabled flag serves its default value (DISABLED), whatever its rules', () => {
    const f = flag({ enabled: false, rules: [{ userIds: ['u1'], value: true }, { percentage: 100, value: true }] })
    expect(evaluateFlag(f, { userId: 'u1', targetingKey: 'c1' })).toMatchObject({ value: false, reason: 'DISABLED' })
  })

  it('userIds rules match the context userId (not the targetingKey)', () => {
    const f = flag({ rules: [{ userIds: ['alice', 'bob'], value: true }] })
    expect(evaluateFlag(f, { userId: 'bob' })).toMatchObject({ value: true, reason: 'TARGETING_MATCH' })
    expect(evaluateFlag(f, { userId: 'carol' })).toMatchObject({ value: false, reason: 'DEFAULT' })
    expect(evaluateFlag(f, { targetingKey: 'alice' })).toMatchObject({ value: false, reason: 'DEFAULT' })
  })

  it('segment rules match a named list of client ids (the targetingKey)', () => {
    const f = flag({ rules: [{ segment: { name: 'canary', clientIds: ['dash-1', 'dash-2'] }, value: true }] })
    expect(evaluateFlag(f, { targetingKey: 'dash-2' })).toMatchObject({ value: true, reason: 'TARGETING_MATCH' })
    expect(evaluateFlag(f, { targetingKey: 'dash-3' })).toMatchObject({ value: false, reason: 'DEFAULT' })
    expect(evaluateFlag(f, {})).toMatchObject({ value: false })
  })

  it('segment attribute ops: eq, neq, in, notIn, startsWith, gt, lt', () => {
    const on = (attribute: unknown, attributes: Record<string, string | number | boolean>) =>
      evaluateFlag(flag({ rules: [{ segment: { attribute }, value: true }] }), { attributes }).value
    expect(on({ key: 'region', op: 'eq', value: 'eu' }, { region: 'eu' })).toBe(true)
    expect(on({ key: 'region', op: 'eq', value: 'eu' }, { region: 'us' })).toBe(false)
    expect(on({ key: 'beta', op: 'eq', value: true }, { beta: true })).toBe(true)
    expect(on({ key: 'beta', op: 'eq', value: true }, { beta: 'true' })).toBe(false) // strict
    expect(on({ key: 'region', op: 'neq', value: 'eu' }, { region: 'us' })).toBe(true)
    expect(on({ key: 'region', op: 'neq', value: 'eu' }, { region: 'eu' })).toBe(false)
    expect(on({ key: 'plan', op: 'in', value: ['pro', 'team'] }, { plan: 'team' })).toBe(true)
    expect(on({ key: 'plan', op: 'in', value: ['pro', 'team'] }, { plan: 'free' })).toBe(false)
    expect(on({ key: 'plan', op: 'notIn', value: ['free'] }, { plan: 'pro' })).toBe(true)
    expect(on({ key: 'plan', op: 'notIn', value: ['free'] }, { plan: 'free' })).toBe(false)
    expect(on({ key: 'host', op: 'startsWith', value: 'ops-' }, { host: 'ops-7' })).toBe(true)
    expect(on({ key: 'host', op: 'startsWith', value: 'ops-' }, { host: 'dev-7' })).toBe(false)
    expect(on({ key: 'version', op: 'gt', value: 41 }, { version: 42 })).toBe(true)
    expect(on({ key: 'version', op: 'gt', value: 41 }, { version: '42' })).toBe(true) // numeric string
    expect(on({ key: 'version', op: 'gt', value: 42 }, { version: 42 })).toBe(false)
    expect(on({ key: 'version', op: 'lt', value: 42 }, { version: 41.5 })).toBe(true)
    expect(on({ key: 'version', op: 'lt', value: 42 }, { version: 'abc' })).toBe(false)
    // A missing attribute matches no operator, neq and notIn included.
    for (const op of ['eq', 'neq', 'startsWith', 'gt', 'lt'] as const) {
      expect(on({ key: 'absent', op, value: op === 'gt' || op === 'lt' ? 1 : 'x' }, { other: 'x' })).toBe(false)
    }
    expect(on({ key: 'absent', op: 'notIn', value: ['x'] }, {})).toBe(false)
  })

  it('a segment with both a list and an attribute needs both', () => {
    const f = flag({ rules: [{ segment: { clientIds: ['c1'], attribute: { key: 'region', op: 'eq', value: 'eu' } }, value: true }] })
    expect(evaluateFlag(f, { targetingKey: 'c1', attributes: { region: 'eu' } }).value).toBe(true)
    expect(evaluateFlag(f, { targetingKey: 'c1', attributes: { region: 'us' } }).value).toBe(false)
    expect(evaluateFlag(f, { targetingKey: 'c2', attributes: { region: 'eu' } }).value).toBe(false)
  })

  it('percentage rules are sticky: bucketOf(flag key, targetingKey) < percentage × 100, reason SPLIT', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.double({ min: 0, max: 100, noNaN: true }), (client, percentage) => {
        const evaluate = compileFlag(flag({ rules: [{ percentage, value: true }] }))
        const first = evaluate({ targetingKey: client }, 'database')
        const again = evaluate({ targetingKey: client }, 'database')
        expect(again).toEqual(first)
        expect(first.value).toBe(inRollout('realtime', client, percentage))
        expect(first.reason).toBe(first.value ? 'SPLIT' : 'DEFAULT')
      }),
    )
    expect(evaluateFlag(flag({ rules: [{ percentage: 100, value: true }] }), {}).value).toBe(false) // no targetingKey: no match
  })

  it('a percentage rule gives that share of clients within ±1 point over 100,000 ids', () => {
    const evaluate = compileFlag(flag({ rules: [{ percentage: 30, value: true }] }))
    const sample = ids(100_000, 11)
    const share = sample.filter((id) => evaluate({ targetingKey: id }, 'default').value === true).length / sample.length
    expect(Math.abs(share - 0.3)).toBeLessThan(0.01)
  })

  it('the first matching rule wins', () => {
    const f = decodeFlagDefinition({
      key: 'theme',
      type: 'string',
      defaultValue: 'light',
      rules: [
        { userIds: ['alice'], value: 'alice-theme' },
        { segment: { attribute: { key: 'plan', op: 'eq', value: 'pro' } }, value: 'pro-theme' },
        { percentage: 100, value: 'everyone-else' },
      ],
    })
    expect(evaluateFlag(f, { userId: 'alice', targetingKey: 'c', attributes: { plan: 'pro' } })).toMatchObject({ value: 'alice-theme', reason: 'TARGETING_MATCH' })
    expect(evaluateFlag(f, { userId: 'bob', targetingKey: 'c', attributes: { plan: 'pro' } })).toMatchObject({ value: 'pro-theme', reason: 'TARGETING_MATCH' })
    expect(evaluateFlag(f, { userId: 'bob', targetingKey: 'c' })).toMatchObject({ value: 'everyone-else', reason: 'SPLIT' })
    expect(evaluateFlag(f, { userId: 'bob' })).toMatchObject({ value: 'light', reason: 'DEFAULT' })
  })

  describe('A/B variants', () => {
    const ab = decodeFlagDefinition({
      key: 'transport-ab',
      type: 'variant',
      defaultValue: 'websocket',
      rules: [{ userIds: ['qa'], variant: 'realtime' }],
      variants: [
        { name: 'control', weight: 5000, value: 'websocket' },
        { name: 'realtime', weight: 3000, value: 'realtime' },
        { name: 'dual', weight: 2000, value: { transport: 'dual', compare: true } },
      ],
    })

    it('split clients by weight (sum 10,000) within ±1 point over 100,000 ids', () => {
      const evaluate = compileFlag(ab)
      const counts = new Map<string, number>()
      const sample = ids(100_000, 5)
      for (const id of sample) {
        const r = evaluate({ targetingKey: id }, 'default')
        expect(r.reason).toBe('SPLIT')
        counts.set(r.variant!, (counts.get(r.variant!) ?? 0) + 1)
      }
      expect(Math.abs(counts.get('control')! / sample.length - 0.5)).toBeLessThan(0.01)
      expect(Math.abs(counts.get('realtime')! / sample.length - 0.3)).toBeLessThan(0.01)
      expect(Math.abs(counts.get('dual')! / sample.length - 0.2)).toBeLessThan(0.01)
    })

    it('are sticky and serve the variant value; a rule may name a variant; no targetingKey → default', () => {
      const first = evaluateFlag(ab, { targetingKey: 'dash-9' })
      expect(evaluateFlag(ab, { targetingKey: 'dash-9' })).toEqual(first)
      expect(first.value).toEqual(ab.variants!.find((v) => v.name === first.variant)!.value)
      expect(evaluateFlag(ab, { userId: 'qa', targetingKey: 'dash-9' })).toMatchObject({ value: 'realtime', variant: 'realtime', reason: 'TARGETING_MATCH' })
      expect(evaluateFlag(ab, {})).toMatchObject({ value: 'websocket', reason: 'DEFAULT' })
      expect(evaluateFlag({ ...ab, enabled: false }, { targetingKey: 'dash-9' })).toMatchObject({ value: 'websocket', reason: 'DISABLED' })
    })

    it('are assigned independently of the percentage buckets of the same flag', () => {
      // Clients outside a 50 % rule (buckets ≥ 5000) still spread over every variant.
      const f = decodeFlagDefinition({ ...ab, rules: [{ percentage: 50, variant: 'dual' }] })
      const outside = ids(20_000, 9).filter((id) => bucketOf(f.key, id) >= 5000)
      const control = outside.filter((id) => evaluateFlag(f, { targetingKey: id }).variant === 'control').length / outside.length
      expect(Math.abs(control - 0.5)).toBeLessThan(0.03)
    })
  })
})

describe('definition validation', () => {
  it('fills enabled (true), rules ([]) and key (from the flag name)', () => {
    expect(decodeFlagDefinition({ type: 'number', defaultValue: 3 }, 'retries')).toEqual({ key: 'retries', type: 'number', defaultValue: 3, enabled: true, rules: [] })
  })

  it('rejects bad rules with a path and a message for each problem', () => {
    expect(
      problems({
        key: 'f',
        type: 'boolean',
        defaultValue: false,
        rules: [
          { percentage: 150, value: true },
          { userIds: 'alice', value: true },
          { percent: 10, value: true },
          { value: true },
          { userIds: ['a'], percentage: 5, value: true },
          { userIds: ['a'], value: true, variant: 'x' },
          { segment: { name: 'empty' }, value: true },
          { segment: { attribute: { key: 'n', op: 'gt', value: 'ten' } }, value: true },
          { segment: { attribute: { key: 'n', op: 'in', value: [] } }, value: true },
          { segment: { attribute: { key: 'n', op: 'like', value: 'x' } }, value: true },
        ],
      }),
    ).toEqual({
      'rules.0.percentage': 'Expected a value between 0 and 100, got 150',
      'rules.1.userIds': 'Expected array, got "alice"',
      'rules.2.percent': 'unknown field (expected only userIds, segment, percentage, value, variant)',
      'rules.3': 'a rule targets exactly one of userIds, segment or percentage (got 0)',
      'rules.4': 'a rule targets exactly one of userIds, segment or percentage (got 2)',
      'rules.5': 'a rule serves exactly one of value or variant',
      'rules.6.segment': 'a segment needs clientIds, an attribute match, or both',
      'rules.7.segment.attribute.value': 'op gt needs a number',
      'rules.8.segment.attribute.value': 'op in needs a non-empty list of strings, numbers or booleans',
      'rules.9.segment.attribute.op': 'Expected "eq" | "neq" | "in" | "notIn" | "startsWith" | "gt" | "lt", got "like"',
    })
  })

  it('rejects values of the wrong type, unknown variants and weights not summing to 10,000', () => {
    expect(problems({ key: 'f', type: 'boolean', defaultValue: 'yes', rules: [{ userIds: ['a'], value: 1 }, { userIds: ['b'], variant: 'nope' }] })).toEqual({
      defaultValue: 'Expected a boolean (the flag\'s type), got "yes"',
      'rules.0.value': "Expected a boolean (the flag's type), got 1",
      'rules.1.variant': 'no variant named "nope" (the flag has no variants)',
    })
    expect(
      problems({ key: 'f', type: 'variant', defaultValue: 'a', variants: [{ name: 'a', weight: 50, value: 1 }, { name: 'a', weight: 50, value: 2 }] }),
    ).toEqual({
      'variants.1.name': 'duplicate variant name "a"',
      variants: 'variant weights must sum to 10000 (basis points: 2500 = 25 %), got 100',
    })
    expect(problems({ key: 'f', type: 'variant', defaultValue: 'a' })).toEqual({ variants: 'a flag of type variant needs variants' })
    expect(problems({ key: 'f', type: 'variant', defaultValue: 'a', variants: [{ name: 'a', weight: 2.5, value: 1 }] })).toEqual({
      'variants.0.weight': 'Expected an integer, got 2.5',
    })
  })

  it('rejects a bad key, a key that disagrees with the flag name, a missing type, and non-objects', () => {
    expect(problems({ key: 'no spaces', type: 'boolean', defaultValue: true })).toEqual({
      key: 'Expected 1–128 letters, digits, _ . - (starting with a letter or digit), got "no spaces"',
    })
    expect(problems({ key: 'a', type: 'boolean', defaultValue: true }, 'b')).toEqual({ key: 'must be the flag\'s key "b", got "a"' })
    expect(problems({ key: 'a', defaultValue: true })).toEqual({ type: 'required field is missing' })
    expect(problems(null)).toEqual({ '': 'Expected object, got null' })
    expect(problems({ key: 'a', type: 'boolean', defaultValue: true, colour: 'red' })).toMatchObject({ colour: expect.stringMatching(/^unknown field/) })
  })

  it('throws FlagValidationError carrying the details', () => {
    try {
      decodeFlagDefinition({ type: 'boolean', defaultValue: true, rules: [{ percentage: -1, value: true }] }, 'f')
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(FlagValidationError)
      expect((err as FlagValidationError).details).toEqual([{ path: 'rules.0.percentage', message: 'Expected a value between 0 and 100, got -1' }])
      expect((err as FlagValidationError).message).toContain('rules.0.percentage')
    }
  })
})

describe('env tier', () => {
  it('turns the seed flags set in env into static flags of their type; bad values are reported', () => {
    const { definitions, problems: bad } = envTier(SEED_FLAGS, {
      MONITORING_USE_ADAPTER: 'yes',
      MONITORING_ADAPTER_TYPE: 'realtime',
      MONITORING_DUAL_MODE: 'maybe',
      UNRELATED: 'x',
    })
    expect(definitions.map((d) => [d.key, d.defaultValue])).toEqual([
      ['MONITORING_USE_ADAPTER', true],
      ['MONITORING_ADAPTER_TYPE', 'realtime'],
    ])
    expect(bad).toEqual([{ key: 'MONITORING_DUAL_MODE', value: 'maybe', expected: 'true or false' }])
    for (const d of definitions) expect(evaluateFlag(d).reason).toBe('STATIC')
  })
})
