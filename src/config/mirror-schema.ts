import type { MirrorConfig } from './types.ts'
import {
  type Checker,
  durationIn,
  type Field,
  integerIn,
  isToken,
  MAX_TIMER_MS,
  parseBoolean,
} from './validate.ts'

// mirror: a share of live requests copied to the idle color and the answers compared. README's "Mirroring"
// explains it; whether it is on, and its share, live in the state (POST /mirror), not here.

const BOOLEAN = 'true or false'
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']
const MEBIBYTE = 1024 * 1024

export function buildMirror(check: Checker, field: Field): MirrorConfig {
  const mirror = check.section(field, [
    'percent',
    'methods',
    'pathPrefixes',
    'maxInFlight',
    'timeout',
    'maxBodyBytes',
    'window',
    'compare',
    'diffs',
    'gate',
  ])
  const compare = check.section(mirror.field('compare'), [
    'headers',
    'ignore',
    'noiseSampleRate',
    'maxCaptureBytes',
  ])
  const gate = check.section(mirror.field('gate'), ['maxMismatchRatio', 'minCompared', 'on'])
  const on = check.section(gate.field('on'), ['switch', 'weights', 'rollout'])
  return {
    percent: check.read(mirror.field('percent'), 10, ...integerIn(1, 100)),
    methods: strings(check, mirror.field('methods'), ['GET', 'HEAD'], 'methods such as GET, HEAD', (value) =>
      METHODS.includes(value.toUpperCase()) ? value.toUpperCase() : undefined,
    ),
    pathPrefixes: strings(check, mirror.field('pathPrefixes'), [], 'paths starting with "/"', (value) =>
      value.startsWith('/') ? value : undefined,
    ),
    maxInFlight: check.read(mirror.field('maxInFlight'), 64, ...integerIn(1, 100_000)),
    timeout: check.read(mirror.field('timeout'), 2_000, ...durationIn(1, MAX_TIMER_MS)),
    maxBodyBytes: check.read(mirror.field('maxBodyBytes'), 64 * 1024, ...integerIn(0, 64 * MEBIBYTE)),
    window: check.read(mirror.field('window'), 300_000, ...durationIn(1_000, 86_400_000)),
    compare: {
      headers: strings(check, compare.field('headers'), ['content-type'], 'header names', (value) =>
        isToken(value) ? value.toLowerCase() : undefined,
      ),
      ignore: strings(check, compare.field('ignore'), [], 'JSON paths such as "$.meta.requestId"', jsonPath),
      noiseSampleRate: check.read(
        compare.field('noiseSampleRate'),
        0.1,
        (value) => (typeof value === 'number' && value >= 0 && value <= 1 ? value : undefined),
        'a fraction from 0 to 1',
      ),
      maxCaptureBytes: check.read(
        compare.field('maxCaptureBytes'),
        256 * 1024,
        ...integerIn(0, 64 * MEBIBYTE),
      ),
    },
    diffs: check.read(mirror.field('diffs'), 50, ...integerIn(1, 1000)),
    gate: {
      maxMismatchRatio: check.read(
        gate.field('maxMismatchRatio'),
        0.01,
        (value) => (typeof value === 'number' && value >= 0 && value <= 1 ? value : undefined),
        'a fraction from 0 to 1',
      ),
      minCompared: check.read(gate.field('minCompared'), 100, ...integerIn(1, 10_000_000)),
      on: {
        switch: check.read(on.field('switch'), false, parseBoolean, BOOLEAN),
        weights: check.read(on.field('weights'), false, parseBoolean, BOOLEAN),
        rollout: check.read(on.field('rollout'), false, parseBoolean, BOOLEAN),
      },
    },
  }
}

/** A list of strings, each checked by `parse` (undefined: invalid), reported by its own key path. */
function strings(
  check: Checker,
  field: Field,
  fallback: string[],
  expected: string,
  parse: (value: string) => string | undefined,
): string[] {
  const items = check.list(field, expected)
  if (!items) return fallback
  const out: string[] = []
  for (const item of items) {
    const parsed = typeof item.value === 'string' ? parse(item.value) : undefined
    if (parsed === undefined)
      check.report(item.path, `expected one of ${expected}, got ${JSON.stringify(item.value)}`)
    else out.push(parsed)
  }
  return out
}

/** "$.a.b[*].c" or "a.b": written with the "$." the diffs name fields with. */
function jsonPath(value: string): string | undefined {
  const path = value.startsWith('$') ? value : `$.${value}`
  return /^\$(\.[^.[\]]+|\[(\d+|\*)\])*$/.test(path) ? path : undefined
}
