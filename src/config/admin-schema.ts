import { isIP } from 'node:net'
import type { AdminConfig, AdminToken, ListenAddress } from './types.ts'
import {
  type Checker,
  durationIn,
  type Field,
  integerIn,
  isPlainObject,
  LISTEN_EXPECTED,
  MAX_TIMER_MS,
  parseListen,
} from './validate.ts'

// The admin section: where the admin API listens, and who may use it. The admin API can move all traffic, so the
// rules that keep it safe are checked here, once, at start-up.

const TOKEN_NAME = /^[A-Za-z0-9_.-]{1,64}$/
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1']

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true
  if (isIP(host) === 4) return host.startsWith('127.')
  return host === '::1'
}

export function buildAdmin(check: Checker, field: Field): AdminConfig {
  const admin = check.section(field, [
    'listen',
    'token',
    'tokens',
    'allowedHosts',
    'allowedOrigins',
    'waitTimeout',
    'auditKeep',
  ])
  const listen = check.read(
    admin.field('listen'),
    { host: '127.0.0.1', port: 9090 },
    parseListen,
    LISTEN_EXPECTED,
  )
  const tokens: AdminToken[] = []
  const token = secret(check, admin.field('token'), 'a string (quote it if it looks like a number)')
  if (token !== undefined && token !== '') tokens.push({ name: 'admin', token })
  tokens.push(...namedTokens(check, admin.field('tokens')))
  const seen = new Map<string, string>()
  for (const { name, token: value } of tokens) {
    const other = seen.get(value)
    if (other)
      check.report(
        `admin.tokens.${name}`,
        `the same token as "${other}": the audit trail could not tell them apart`,
      )
    seen.set(value, name)
  }
  if (tokens.length === 0 && !isLoopback(listen.host) && !check.hasProblem('admin.listen')) {
    check.report(
      'admin.token',
      `required when admin.listen is not a loopback address (${listen.host}): anyone who reaches the admin API could move all traffic`,
    )
  }
  return {
    listen,
    tokens,
    allowedHosts: allowedHosts(check, admin.field('allowedHosts'), listen),
    allowedOrigins: allowedOrigins(check, admin.field('allowedOrigins')),
    waitTimeout: check.read(admin.field('waitTimeout'), 5_000, ...durationIn(1, MAX_TIMER_MS)),
    auditKeep: check.read(admin.field('auditKeep'), 1_000, ...integerIn(1, 1_000_000)),
  }
}

function namedTokens(check: Checker, field: Field): AdminToken[] {
  if (field.value === undefined || field.value === null) return []
  if (!isPlainObject(field.value)) {
    check.report(field.path, `expected a mapping of names to tokens, got ${kindOf(field.value)}`)
    return []
  }
  const tokens = check.section(field, [], { allowAnyKey: true })
  const built: AdminToken[] = []
  for (const name of Object.keys(tokens.values)) {
    const entry = tokens.field(name)
    if (!TOKEN_NAME.test(name))
      check.report(entry.path, 'a token name is 1 to 64 letters, digits, ".", "_" or "-"')
    else if (name === 'admin') check.report(entry.path, '"admin" names admin.token; choose another name')
    else if (typeof entry.value !== 'string' || entry.value.length < 16) {
      check.report(
        entry.path,
        `expected a token of at least 16 characters, got ${typeof entry.value === 'string' ? `${entry.value.length}` : kindOf(entry.value)}`,
      )
    } else built.push({ name, token: entry.value })
  }
  return built
}

/** A token's string; a problem that says what kind of value it got, never the value: a mistyped token is a token. */
function secret(check: Checker, field: Field, expected: string): string | undefined {
  if (field.value === undefined || typeof field.value === 'string') return field.value
  check.report(field.path, `expected ${expected}, got ${kindOf(field.value)}`)
  return undefined
}

function kindOf(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  return typeof value === 'object' ? 'a mapping' : `a ${typeof value}`
}

/**
 * Host headers the admin API answers to. A browser tricked by DNS rebinding sends the attacker's host name, so by
 * default a loopback listener answers only to loopback names; a listener on a wildcard address (which must have a
 * token) answers to any host unless a list is given.
 */
function allowedHosts(check: Checker, field: Field, listen: ListenAddress): readonly string[] | null {
  const items = check.list(field, 'host names')
  if (items) {
    return items.map((item) =>
      check.read(
        item,
        '',
        (value) =>
          typeof value === 'string' && value !== '' && !value.includes(':')
            ? value.toLowerCase()
            : value === '::1'
              ? '::1'
              : undefined,
        'a host name without a port, such as "bluegreen-admin.internal"',
      ),
    )
  }
  if (listen.host === '0.0.0.0' || listen.host === '::' || listen.host === '') return null
  return [...new Set([...LOOPBACK_NAMES, listen.host.toLowerCase()])]
}

function allowedOrigins(check: Checker, field: Field): readonly string[] {
  const items = check.list(field, 'origins') ?? []
  return items.map((item) =>
    check.read(
      item,
      '',
      (value) => {
        const url = typeof value === 'string' ? URL.parse(value) : null
        return url && /^https?:$/.test(url.protocol) && url.origin === value ? value : undefined
      },
      'an origin such as "https://ops.example.com" (scheme, host and port only)',
    ),
  )
}
