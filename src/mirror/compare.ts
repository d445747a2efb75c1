// How a mirrored answer is compared with the live one: the status, chosen headers, and the body, field by field
// when both are JSON. Pure functions, so they are unit-tested on their own (test/unit/mirror-compare.test.ts).

/** One response as the mirror keeps it: the body only up to a limit. */
export interface CapturedResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  /** Whether the body was longer than what was kept. */
  truncated: boolean
}

export interface CompareOptions {
  /** Response headers to compare, lower case. */
  headers: readonly string[]
  /** Whether a field (as differences() names it) is not to be counted: configured or learned noise. */
  ignored: (field: string) => boolean
}

/** At most this many differing fields are named for one pair of answers; the rest would only repeat the story. */
export const MAX_FIELDS = 20
/** JSON deeper than this is compared as a whole below it. */
const MAX_DEPTH = 32

/**
 * The fields in which two answers differ, each named as a reader would look for it: `status`, `header:etag`,
 * `body` (not both JSON: compared byte for byte), or a JSON path such as `$.user.name` or `$.items[2].price`.
 */
export function differences(a: CapturedResponse, b: CapturedResponse, options: CompareOptions): string[] {
  const fields: string[] = []
  const note = (field: string) => {
    if (fields.length < MAX_FIELDS && !options.ignored(field)) fields.push(field)
  }
  if (a.status !== b.status) note('status')
  for (const name of options.headers) {
    if (headerText(a.headers[name]) !== headerText(b.headers[name])) note(`header:${name}`)
  }
  if (a.body.equals(b.body)) return fields
  const left = a.truncated ? undefined : parseJson(a.body)
  const right = b.truncated ? undefined : parseJson(b.body)
  if (left === undefined || right === undefined) note('body')
  else jsonDifferences(left.value, right.value, '$', 0, note)
  return fields
}

function headerText(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value
}

/** The parsed body when it is JSON (an object or a list), else undefined; wrapped so `null` is a value too. */
function parseJson(body: Buffer): { value: unknown } | undefined {
  const first = body.find((byte) => byte !== 0x20 && byte !== 0x0a && byte !== 0x0d && byte !== 0x09)
  if (first !== 0x7b && first !== 0x5b) return undefined
  try {
    return { value: JSON.parse(body.toString('utf8')) }
  } catch {
    return undefined
  }
}

function jsonDifferences(
  a: unknown,
  b: unknown,
  path: string,
  depth: number,
  note: (field: string) => void,
): void {
  if (Object.is(a, b)) return
  const bothObjects =
    typeof a === 'object' &&
    a !== null &&
    typeof b === 'object' &&
    b !== null &&
    Array.isArray(a) === Array.isArray(b)
  if (!bothObjects || depth >= MAX_DEPTH) {
    if (!bothObjects || JSON.stringify(a) !== JSON.stringify(b)) note(path)
    return
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const length = Math.max(a.length, b.length)
    for (let i = 0; i < length; i++) jsonDifferences(a[i], b[i], `${path}[${i}]`, depth + 1, note)
    return
  }
  const left = a as Record<string, unknown>
  const right = b as Record<string, unknown>
  for (const key of new Set([...Object.keys(left), ...Object.keys(right)])) {
    const inLeft = Object.hasOwn(left, key)
    const inRight = Object.hasOwn(right, key)
    const child = `${path}.${key}`
    if (inLeft !== inRight) note(child)
    else jsonDifferences(left[key], right[key], child, depth + 1, note)
  }
}

/** A field with its list indexes generalised: `$.items[3].id` -> `$.items[*].id`, as ignore lists and noise keep them. */
export function fieldPattern(field: string): string {
  return field.replace(/\[\d+\]/g, '[*]')
}

/**
 * Whether `field` is covered by one of `patterns`: the field itself (indexes generalised) or one of its ancestors
 * (ignoring `$.meta` ignores everything under it).
 */
export function coveredBy(field: string, patterns: ReadonlySet<string>): boolean {
  if (patterns.size === 0) return false
  let pattern = fieldPattern(field)
  for (;;) {
    if (patterns.has(pattern)) return true
    const cut = Math.max(pattern.lastIndexOf('.'), pattern.lastIndexOf('['))
    if (cut <= 1) return false
    pattern = pattern.slice(0, cut)
  }
}
