import type { SmokeCheckConfig, SmokeConfig, StatusRange } from './types.ts'
import {
  type Checker,
  durationIn,
  type Field,
  isPlainObject,
  MAX_TIMER_MS,
  parseBoolean,
} from './validate.ts'

// smoke: HTTP checks sent to a color before traffic moves to it. README's "Smoke checks" explains them.

const BOOLEAN = 'true or false'
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']
const STATUS_EXPECTED = 'a status (200), a list of them ([200, 204]) or a range ("200-299")'

export function buildSmoke(check: Checker, field: Field): SmokeConfig {
  const smoke = check.section(field, ['checks', 'timeout', 'on'])
  const on = check.section(smoke.field('on'), ['switch', 'weights', 'rollout', 'rolloutStep', 'promote'])
  const items = check.list(smoke.field('checks'), 'checks') ?? []
  const checks: SmokeCheckConfig[] = []
  const names = new Set<string>()
  for (const item of items) {
    const built = buildCheck(check, item)
    if (!built) continue
    // Results are reported by name, so two checks with one name could not be told apart.
    if (built.name !== '' && names.has(built.name))
      check.report(`${item.path}.name`, 'another check has this name')
    names.add(built.name)
    checks.push(built)
  }
  return {
    checks,
    timeout: check.read(smoke.field('timeout'), 5_000, ...durationIn(1, MAX_TIMER_MS)),
    on: {
      switch: check.read(on.field('switch'), true, parseBoolean, BOOLEAN),
      weights: check.read(on.field('weights'), true, parseBoolean, BOOLEAN),
      rollout: check.read(on.field('rollout'), true, parseBoolean, BOOLEAN),
      rolloutStep: check.read(on.field('rolloutStep'), true, parseBoolean, BOOLEAN),
      promote: check.read(on.field('promote'), true, parseBoolean, BOOLEAN),
    },
  }
}

function buildCheck(check: Checker, field: Field): SmokeCheckConfig | undefined {
  const item = check.section(field, [
    'name',
    'method',
    'path',
    'headers',
    'body',
    'status',
    'bodyContains',
    'json',
    'maxLatency',
  ])
  if (!item.present) {
    if (field.value === null) check.report(field.path, 'expected a check (a mapping with name and path)')
    return undefined
  }
  const text = (value: unknown) => (typeof value === 'string' && value !== '' ? value : undefined)
  check.required(item.field('name'), 'a name for the check, such as "home page"')
  check.required(item.field('path'), 'the path to request, such as "/healthz"')
  const json = item.field('json')
  const headers = item.field('headers')
  return {
    name: check.read(item.field('name'), '', text, 'a name'),
    method: check.oneOf(item.field('method'), METHODS, 'GET'),
    path: check.read(
      item.field('path'),
      '/',
      (value) => (typeof value === 'string' && value.startsWith('/') ? value : undefined),
      'a path starting with "/"',
    ),
    headers: check.read(headers, {}, parseHeaders, 'a mapping of header names to string values'),
    body: check.read(
      item.field('body'),
      undefined,
      (value) => (typeof value === 'string' ? value : undefined),
      'a string',
    ),
    status: check.read(item.field('status'), [{ min: 200, max: 200 }], parseStatus, STATUS_EXPECTED),
    bodyContains: check.read(item.field('bodyContains'), undefined, text, 'a non-empty string'),
    json: check.read(
      json,
      undefined,
      parseJsonExpectations,
      'a mapping of dotted paths ("data.status") to the values expected there',
    ),
    maxLatency: check.read(item.field('maxLatency'), undefined, ...durationIn(1, MAX_TIMER_MS)),
  }
}

function parseHeaders(value: unknown): Record<string, string> | undefined {
  if (!isPlainObject(value)) return undefined
  const entries = Object.entries(value)
  return entries.every(([, header]) => typeof header === 'string')
    ? (value as Record<string, string>)
    : undefined
}

function parseJsonExpectations(value: unknown): Record<string, unknown> | undefined {
  return isPlainObject(value) && Object.keys(value).length > 0 ? value : undefined
}

const isStatus = (value: unknown): value is number =>
  typeof value === 'number' && Number.isInteger(value) && value >= 100 && value <= 599
const RANGE = /^([1-5]\d\d)-([1-5]\d\d)$/

function parseStatus(value: unknown): StatusRange[] | undefined {
  if (Array.isArray(value)) {
    if (value.length === 0) return undefined
    const ranges = value.map(parseOneStatus)
    return ranges.every((range) => range !== undefined) ? (ranges as StatusRange[]) : undefined
  }
  const range = parseOneStatus(value)
  return range === undefined ? undefined : [range]
}

function parseOneStatus(value: unknown): StatusRange | undefined {
  if (isStatus(value)) return { min: value, max: value }
  if (typeof value !== 'string') return undefined
  const match = RANGE.exec(value)
  if (!match || Number(match[1]) > Number(match[2])) return undefined
  return { min: Number(match[1]), max: Number(match[2]) }
}
