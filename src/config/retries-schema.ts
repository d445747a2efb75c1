import { METHODS } from 'node:http'
import type { RetriesConfig, RetryableFailure } from './types.ts'
import { type Checker, closest, describe, type Field, integerIn } from './validate.ts'

// proxy.retries: which requests that reached an upstream are sent again, and how many. README's "Retries" says why
// each default is what it is.

/** RFC 9110 9.2.2's idempotent methods. */
const DEFAULT_METHODS = ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']
/** Not idempotent (RFC 9110 9.3.3, 9.3.6; RFC 5789 2): a second copy could order twice, so never listed. */
const NEVER_RESENT = ['POST', 'PATCH', 'CONNECT']
const RETRYABLE: readonly RetryableFailure[] = ['reset', 'header_timeout']

export function buildRetries(check: Checker, field: Field): RetriesConfig {
  const retries = check.section(field, ['max', 'methods', 'on', 'budget'])
  const budget = check.section(retries.field('budget'), ['percent', 'minPerSecond'])
  const on = check.list(retries.field('on'), RETRYABLE.join(' or '))
  return {
    max: check.read(retries.field('max'), 1, ...integerIn(0, 10)),
    methods: buildMethods(check, retries.field('methods')),
    on: on ? on.map((item) => check.oneOf(item, RETRYABLE, 'reset')) : ['reset'],
    budget: {
      percent: check.read(budget.field('percent'), 20, ...integerIn(0, 100)),
      minPerSecond: check.read(budget.field('minPerSecond'), 3, ...integerIn(0, 100_000)),
    },
  }
}

function buildMethods(check: Checker, field: Field): string[] {
  const items = check.list(field, 'HTTP methods such as "GET"')
  if (!items) return DEFAULT_METHODS
  const methods: string[] = []
  for (const { path, value } of items) {
    // Node's parser takes only the methods it knows, in upper case: anything else here would never match.
    const method = typeof value === 'string' ? value.toUpperCase() : undefined
    if (method !== undefined && NEVER_RESENT.includes(method)) {
      check.report(
        path,
        `${method} is not idempotent: a request that reached an upstream is never sent again`,
      )
    } else if (method !== undefined && METHODS.includes(method)) {
      methods.push(method)
    } else {
      const hint = typeof value === 'string' ? closest(value, METHODS) : undefined
      const suggestion = hint === undefined ? '' : `; did you mean "${hint}"?`
      check.report(path, `expected an HTTP method such as "GET", got ${describe(value)}${suggestion}`)
    }
  }
  return methods
}
