import { resolve } from 'node:path'
import { COLORS, type Color } from '../colors.ts'
import { ConfigError } from '../errors.ts'
import { buildAdmin } from './admin-schema.ts'
import { buildMirror } from './mirror-schema.ts'
import { buildNotify } from './notify-schema.ts'
import {
  buildDrain,
  buildHealthCheck,
  buildMetrics,
  buildOutlier,
  buildRollback,
  buildRollout,
  buildStandby,
} from './operations-schema.ts'
import { buildRetries } from './retries-schema.ts'
import { buildSmoke } from './smoke-schema.ts'
import { buildListenerTls, buildUpstreamTls } from './tls-schema.ts'
import type {
  Config,
  ListenAddress,
  LogConfig,
  PoolConfig,
  ProxyConfig,
  RedisConfig,
  RoutingConfig,
  ShutdownConfig,
  StateConfig,
  TimeoutsConfig,
  UpstreamConfig,
} from './types.ts'
import {
  Checker,
  deepFreeze,
  describe,
  durationIn,
  type Field,
  integerIn,
  isIpOrCidr,
  isPlainObject,
  isToken,
  LISTEN_EXPECTED,
  MAX_TIMER_MS,
  parseBoolean,
  parseHostPort,
  parseListen,
  readSecret,
  substituteEnv,
} from './validate.ts'

// The config file's schema: its keys, their defaults, and how each becomes part of the frozen Config.
// README's "Configuration" section documents the same keys.

const TIMEOUT_DEFAULTS: TimeoutsConfig = {
  connect: 5_000,
  header: 60_000,
  body: 60_000,
  upstreamIdle: 30_000,
  clientIdle: 65_000,
  clientHeader: 30_000,
  clientRequest: 300_000,
}
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
const WILDCARD_HOSTS = ['0.0.0.0', '::']
const HEADER_EXPECTED = 'an HTTP header name such as "x-user-id"'
const BOOLEAN_EXPECTED = 'true or false'
const COOKIE_EXPECTED = 'a cookie name (letters, digits and !#$%&\'*+-.^_`|~) such as "bluegreen_color"'
const CIDR_EXPECTED = 'an IP address or CIDR such as "10.0.0.0/8" or "fd00::/8"'
const REDIS_URL_EXPECTED = 'a redis:// or rediss:// URL such as "redis://127.0.0.1:6379"'

// Parsers for Checker.read: the value to keep, or undefined when it is invalid.
const anyString = (value: unknown) => (typeof value === 'string' ? value : undefined)
const nonEmptyString = (value: unknown) => (typeof value === 'string' && value !== '' ? value : undefined)
const headerName = (value: unknown) => (isToken(value) ? value.toLowerCase() : undefined)
const cookieName = (value: unknown) => (isToken(value) ? value : undefined)
const ipOrCidr = (value: unknown) => (typeof value === 'string' && isIpOrCidr(value) ? value : undefined)
const redisUrl = (value: unknown) =>
  typeof value === 'string' && /^rediss?:$/.test(URL.parse(value)?.protocol ?? '') ? value : undefined

export interface BuildOptions {
  /**
   * What relative file paths (state.path, tlsCaFile, lastStateFile, tls files) are relative to: the config file's directory
   * (loadConfig passes it), so a config means the same files whichever directory the proxy is started from.
   * Without a file, the current directory.
   */
  baseDir?: string
}

/**
 * Validates the parsed config file (after ${VAR} substitution from `env`) and returns it frozen with every default
 * filled in. Throws a ConfigError listing every problem at once.
 */
export function buildConfig(raw: unknown, env: NodeJS.ProcessEnv, options: BuildOptions = {}): Config {
  const baseDir = options.baseDir ?? process.cwd()
  const check = new Checker()
  const substituted = substituteEnv(raw, env, '', check)
  const keys = [
    'listen',
    'admin',
    'pools',
    'state',
    'proxy',
    'routing',
    'log',
    'shutdown',
    'rollback',
    'rollout',
    'drain',
    'metrics',
    'smoke',
    'standby',
    'notify',
    'mirror',
    'tls',
  ]
  const root = check.section({ path: '', value: substituted }, keys)
  const config: Config = {
    listen: check.read(root.field('listen'), { host: '0.0.0.0', port: 8080 }, parseListen, LISTEN_EXPECTED),
    tls: buildListenerTls(check, root.field('tls'), baseDir),
    admin: buildAdmin(check, root.field('admin')),
    pools: buildPools(check, root.field('pools'), baseDir),
    state: buildState(check, root.field('state'), baseDir),
    proxy: buildProxy(check, root.field('proxy')),
    routing: buildRouting(check, root.field('routing')),
    log: buildLog(check, root.field('log')),
    shutdown: buildShutdown(check, root.field('shutdown')),
    rollback: buildRollback(check, root.field('rollback')),
    rollout: buildRollout(check, root.field('rollout')),
    drain: buildDrain(check, root.field('drain')),
    metrics: buildMetrics(check, root.field('metrics')),
    smoke: buildSmoke(check, root.field('smoke')),
    standby: buildStandby(check, root.field('standby')),
    notify: buildNotify(check, root.field('notify')),
    mirror: buildMirror(check, root.field('mirror')),
  }
  checkListenersDiffer(check, config)
  if (check.problems.length > 0) throw new ConfigError(check.problems)
  return deepFreeze(config)
}

function buildPools(check: Checker, field: Field, baseDir: string): Record<Color, PoolConfig> {
  const pools = check.section(field, COLORS, { required: true })
  const built = {
    blue: buildPool(check, pools.field('blue'), pools.present, baseDir),
    green: buildPool(check, pools.field('green'), pools.present, baseDir),
  }
  // A pool with no upstreams is a color with nothing deployed yet; one of the two must serve traffic.
  const empty = (pool: unknown) =>
    isPlainObject(pool) &&
    (pool.upstreams === undefined || (Array.isArray(pool.upstreams) && pool.upstreams.length === 0))
  if (empty(pools.values.blue) && empty(pools.values.green)) {
    check.report('pools', 'both pools have no upstreams; at least one needs an upstream to send traffic to')
  }
  return built
}

function buildPool(check: Checker, field: Field, required: boolean, baseDir: string): PoolConfig {
  const pool = check.section(
    field,
    ['upstreams', 'balance', 'maxConnectionsPerUpstream', 'healthCheck', 'outlier', 'tls'],
    { required },
  )
  const upstreams: UpstreamConfig[] = []
  const seen = new Map<string, string>()
  for (const item of check.list(pool.field('upstreams'), 'upstream URLs') ?? []) {
    const upstream = buildUpstream(check, item)
    if (!upstream) continue
    const duplicate = seen.get(upstream.origin)
    if (duplicate) check.report(item.path, `duplicate of ${duplicate} (both are ${upstream.origin})`)
    else seen.set(upstream.origin, item.path)
    upstreams.push(upstream)
  }
  const tlsField = pool.field('tls')
  const tls = buildUpstreamTls(check, tlsField, baseDir)
  if (tls && upstreams.length > 0 && !upstreams.some((upstream) => upstream.origin.startsWith('https:'))) {
    check.report(tlsField.path, 'applies to https:// upstreams, and this pool has none')
  }
  return {
    upstreams,
    tls,
    balance: check.oneOf(pool.field('balance'), ['round-robin', 'least-outstanding'], 'round-robin'),
    maxConnectionsPerUpstream: check.read(
      pool.field('maxConnectionsPerUpstream'),
      128,
      ...integerIn(1, 65535),
    ),
    healthCheck: buildHealthCheck(check, pool.field('healthCheck')),
    outlier: buildOutlier(check, pool.field('outlier')),
  }
}

function buildUpstream(check: Checker, { path, value }: Field): UpstreamConfig | undefined {
  const url = typeof value === 'string' ? URL.parse(value) : null
  const problem = upstreamProblem(value, url)
  if (problem) {
    check.report(path, problem)
    return undefined
  }
  return { url: value as string, origin: url!.origin }
}

function upstreamProblem(value: unknown, url: URL | null): string | undefined {
  if (typeof value !== 'string' || !url) {
    return `expected an http:// or https:// URL such as "http://10.0.0.11:8080", got ${describe(value)}`
  }
  if (!/^https?:$/.test(url.protocol)) return `expected http:// or https://, got ${url.protocol}//`
  if (url.username || url.password) return 'must not contain credentials (user:password@)'
  if (url.pathname !== '/' || /[?#]/.test(value)) {
    return "must be scheme://host[:port] only, with no path, query or fragment (the request's own path is forwarded)"
  }
  return undefined
}

function buildState(check: Checker, field: Field, baseDir: string): StateConfig {
  const state = check.section(field, ['store', 'path', 'redis', 'initial', 'maxStaleness'])
  const store = check.oneOf(state.field('store'), ['file', 'redis'], 'file')
  const redisField = state.field('redis')
  if (store === 'redis') check.required(redisField, 'a mapping (url, key, ...) when state.store is "redis"')
  const path = check.read(state.field('path'), './bluegreen-state.json', nonEmptyString, 'a file path')
  const built: StateConfig = {
    store,
    path: resolve(baseDir, path),
    initial: check.oneOf(state.field('initial'), COLORS, 'blue'),
    maxStaleness: check.read(state.field('maxStaleness'), 0, ...durationIn(0, MAX_TIMER_MS)),
  }
  if (redisField.value !== undefined) built.redis = buildRedis(check, redisField, baseDir)
  return built
}

function buildRedis(check: Checker, field: Field, baseDir: string): RedisConfig {
  const redis = check.section(field, [
    'url',
    'key',
    'sentinels',
    'name',
    'sentinelPassword',
    'tlsCaFile',
    'commandTimeout',
    'connectTimeout',
    'pollInterval',
    'heartbeatInterval',
    'forgetMissingAfter',
    'lastStateFile',
  ])
  const duration = (key: string, fallback: number) =>
    check.read(redis.field(key), fallback, ...durationIn(1, MAX_TIMER_MS))
  const built: RedisConfig = {
    url: readSecret(check, redis.field('url'), redisUrl, REDIS_URL_EXPECTED) ?? 'redis://127.0.0.1:6379',
    key: check.read(redis.field('key'), 'bluegreen:default', nonEmptyString, 'a non-empty string'),
    commandTimeout: duration('commandTimeout', 1_000),
    connectTimeout: duration('connectTimeout', 2_000),
    pollInterval: duration('pollInterval', 5_000),
    heartbeatInterval: duration('heartbeatInterval', 1_000),
    forgetMissingAfter: duration('forgetMissingAfter', 600_000),
    lastStateFile: lastStateFile(check, redis.field('lastStateFile'), baseDir),
  }
  // Missing means silent for more than three heartbeats: a replica forgotten sooner would never be seen missing.
  if (built.forgetMissingAfter <= built.heartbeatInterval * 3) {
    check.report(
      `${redis.path}.forgetMissingAfter`,
      `must be longer than three heartbeatIntervals (${built.heartbeatInterval * 3}ms)`,
    )
  }
  const sentinelPassword = readSecret(check, redis.field('sentinelPassword'), anyString, 'a string')
  if (sentinelPassword) built.sentinelPassword = sentinelPassword
  const tlsCaFile = check.read(redis.field('tlsCaFile'), undefined, nonEmptyString, 'a file path')
  if (tlsCaFile !== undefined) built.tlsCaFile = resolve(baseDir, tlsCaFile)
  const sentinelsField = redis.field('sentinels')
  const items = check.list(sentinelsField, 'sentinel addresses ("host:port" or {host, port})')
  if (items?.length === 0) check.report(sentinelsField.path, 'expected at least one sentinel address')
  if (items) built.sentinels = items.map((item) => buildSentinel(check, item))
  const name = check.read(redis.field('name'), undefined, nonEmptyString, 'the Sentinel master name')
  if (items) check.required(redis.field('name'), 'the Sentinel master name when sentinels are listed')
  if (name !== undefined) built.name = name
  return built
}

/**
 * The image creates /var/lib/bluegreen for its user (and Kubernetes mounts a volume there), and it is where a
 * service keeps its state on Linux (systemd's StateDirectory=bluegreen).
 */
export const LAST_STATE_FILE = '/var/lib/bluegreen/last-state.json'

function lastStateFile(check: Checker, field: Field, baseDir: string): string | null {
  const file = check.read(
    field,
    LAST_STATE_FILE as string | false,
    (value) => (value === false ? false : nonEmptyString(value)),
    'a file path, or false to keep no local copy',
  )
  return file === false ? null : resolve(baseDir, file)
}

function buildSentinel(check: Checker, field: Field): { host: string; port: number } {
  if (typeof field.value === 'string') {
    const address = parseHostPort(field.value)
    if (address && address.host !== '' && address.port > 0) return address
    check.report(field.path, `expected "host:port" such as "10.0.0.5:26379", got ${describe(field.value)}`)
    return { host: '', port: 0 }
  }
  const sentinel = check.section(field, ['host', 'port'], { required: true })
  const hostField = sentinel.field('host')
  const portField = sentinel.field('port')
  if (sentinel.present) {
    check.required(hostField, 'the sentinel host name or IP')
    check.required(portField, 'the sentinel port')
  }
  return {
    host: check.read(hostField, '', nonEmptyString, 'a host name or IP'),
    port: check.read(portField, 0, ...integerIn(1, 65535)),
  }
}

function buildProxy(check: Checker, field: Field): ProxyConfig {
  const proxy = check.section(field, ['timeouts', 'retries', 'preserveHost', 'trustedProxies', 'colorHeader'])
  const timeouts = buildTimeouts(check, proxy.field('timeouts'))
  const retries = buildRetries(check, proxy.field('retries'))
  const items = check.list(proxy.field('trustedProxies'), 'IP addresses or CIDRs') ?? []
  const trustedProxies = items.map((item) => check.read(item, '', ipOrCidr, CIDR_EXPECTED))
  const colorHeader = check.read(
    proxy.field('colorHeader'),
    'x-bluegreen-color' as string | false,
    (value) => (value === false ? false : headerName(value)),
    `${HEADER_EXPECTED}, or false to turn it off`,
  )
  return {
    timeouts,
    retries,
    preserveHost: check.read(proxy.field('preserveHost'), true, parseBoolean, BOOLEAN_EXPECTED),
    trustedProxies,
    colorHeader: colorHeader === false ? null : colorHeader,
  }
}

function buildTimeouts(check: Checker, field: Field): TimeoutsConfig {
  const keys = Object.keys(TIMEOUT_DEFAULTS) as (keyof TimeoutsConfig)[]
  const section = check.section(field, keys)
  const timeouts = { ...TIMEOUT_DEFAULTS }
  for (const key of keys) {
    // Only the whole-request limit can be turned off; a zero connect or idle timeout would fail every request.
    const min = key === 'clientRequest' ? 0 : 1
    timeouts[key] = check.read(section.field(key), TIMEOUT_DEFAULTS[key], ...durationIn(min, MAX_TIMER_MS))
  }
  // Node's http.Server refuses a headersTimeout longer than a non-zero requestTimeout.
  const { clientHeader, clientRequest } = timeouts
  if (clientRequest > 0 && clientHeader > clientRequest) {
    check.report(
      section.field('clientHeader').path,
      `must not be longer than clientRequest (${clientRequest}ms)`,
    )
  }
  return timeouts
}

function buildRouting(check: Checker, field: Field): RoutingConfig {
  const routing = check.section(field, ['sticky', 'preview'])
  const sticky = check.section(routing.field('sticky'), ['mode', 'cookie', 'header', 'cookieMaxAge'])
  const preview = check.section(routing.field('preview'), ['header'])
  return {
    sticky: {
      mode: check.oneOf(sticky.field('mode'), ['cookie', 'header', 'none'], 'cookie'),
      cookie: check.read(sticky.field('cookie'), 'bluegreen_color', cookieName, COOKIE_EXPECTED),
      header: check.read(sticky.field('header'), 'x-user-id', headerName, HEADER_EXPECTED),
      cookieMaxAge: check.read(
        sticky.field('cookieMaxAge'),
        86_400_000,
        ...durationIn(0, Number.MAX_SAFE_INTEGER),
      ),
    },
    // Preview routing is opt-in: it stays off unless the `preview` block is written (even as `preview: {}`).
    previewHeader: preview.present
      ? check.read(preview.field('header'), 'x-bluegreen-preview', headerName, HEADER_EXPECTED)
      : null,
  }
}

function buildLog(check: Checker, field: Field): LogConfig {
  const log = check.section(field, ['level', 'format', 'access'])
  return {
    level: check.oneOf(log.field('level'), LOG_LEVELS, 'info'),
    format: check.oneOf(log.field('format'), ['auto', 'json', 'pretty'], 'auto'),
    access: check.read(log.field('access'), false, parseBoolean, BOOLEAN_EXPECTED),
  }
}

function buildShutdown(check: Checker, field: Field): ShutdownConfig {
  const shutdown = check.section(field, ['delay', 'grace'])
  return {
    delay: check.read(shutdown.field('delay'), 0, ...durationIn(0, MAX_TIMER_MS)),
    grace: check.read(shutdown.field('grace'), 30_000, ...durationIn(0, MAX_TIMER_MS)),
  }
}

/** Two listeners on one port fail at start-up with EADDRINUSE; say so now, with the key to change. */
function checkListenersDiffer(check: Checker, config: Config): void {
  if (check.hasProblem('listen') || check.hasProblem('admin.listen')) return
  const overlap = (a: ListenAddress, b: ListenAddress) =>
    a.port !== 0 &&
    a.port === b.port &&
    (a.host === b.host || WILDCARD_HOSTS.includes(a.host) || WILDCARD_HOSTS.includes(b.host))
  if (overlap(config.admin.listen, config.listen)) {
    const { host, port } = config.listen
    check.report('admin.listen', `conflicts with listen (${host}:${port}); the admin API needs its own port`)
  }
  const redirectFrom = config.tls?.redirectFrom
  if (redirectFrom && !check.hasProblem('tls.redirectFrom')) {
    for (const [key, address] of [
      ['listen', config.listen],
      ['admin.listen', config.admin.listen],
    ] as const) {
      if (overlap(redirectFrom, address))
        check.report('tls.redirectFrom', `conflicts with ${key} (${address.host}:${address.port})`)
    }
  }
}
