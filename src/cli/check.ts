// `bluegreen check`: what a valid config will do, on one screen, before anything is started (nginx -t, caddy
// validate). An invalid config never gets here: loading it throws, and the CLI prints every problem and exits 2.
import { COLORS } from '../colors.ts'
import { NOTIFY_EVENTS } from '../config/notify-schema.ts'
import type { Config, ListenAddress, PoolConfig, StateConfig } from '../config/types.ts'

export function describeConfig(config: Config, file: string): string {
  const lines = [
    `${file}: the configuration is valid`,
    '',
    `proxy       ${address(config.listen)}${listenerTls(config)}`,
    `admin       ${address(config.admin.listen)}, ${tokens(config)}`,
    ...COLORS.map((color) => `${color.padEnd(12)}${pool(config.pools[color])}`),
    `state       ${store(config.state)}, initial ${config.state.initial}`,
    `rollback    ${rollback(config)}`,
    `rollout     a step with too little traffic to judge: ${config.rollout.onLowTraffic}`,
    `drain       ${config.drain.timeout === 0 ? 'left open' : `closed after ${seconds(config.drain.timeout)}`}`,
    `shutdown    delay ${seconds(config.shutdown.delay)}, grace ${seconds(config.shutdown.grace)}`,
    ...(config.notify.length === 0 ? [] : [`notify      ${notify(config)}`]),
  ]
  return `${lines.join('\n')}\n`
}

function address({ host, port }: ListenAddress): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

function listenerTls({ tls }: Config): string {
  if (tls === null) return ''
  const parts = [
    tls.http2.enabled ? 'h2 and HTTP/1.1' : 'HTTP/1.1',
    `${tls.minVersion.replace('TLSv', 'TLS ')}+`,
    `certificate ${tls.cert}`,
  ]
  if (tls.sni.length > 0) parts.push(`${tls.sni.length} more by SNI`)
  if (tls.redirectFrom) parts.push(`redirect from ${address(tls.redirectFrom)}`)
  return ` (https: ${parts.join(', ')})`
}

function tokens(config: Config): string {
  const names = config.admin.tokens.map((token) => token.name)
  return names.length === 0 ? 'no token asked for changes' : `token(s): ${names.join(', ')}`
}

function pool(pool: PoolConfig): string {
  if (pool.upstreams.length === 0) return 'no upstream'
  const check = pool.healthCheck.enabled
    ? `health check ${pool.healthCheck.path} every ${seconds(pool.healthCheck.interval)}`
    : 'no active health check'
  const tls = pool.tls
    ? `, TLS: ${pool.tls.ca ? 'own CA' : 'system CAs'}${pool.tls.cert ? ', client certificate' : ''}`
    : ''
  return `${pool.upstreams.map((upstream) => upstream.url).join(', ')} (${pool.balance}, ${check}${tls})`
}

function store(state: StateConfig): string {
  if (state.store === 'file' || !state.redis) return `file ${state.path}`
  const { redis } = state
  const where = redis.sentinels
    ? `Sentinel ${redis.name} via ${redis.sentinels.map((sentinel) => `${sentinel.host}:${sentinel.port}`).join(', ')}`
    : withoutPassword(redis.url)
  return `redis ${where}, key ${redis.key}`
}

/** A Redis URL may carry a password; the summary is for a terminal or a CI log. */
function withoutPassword(url: string): string {
  const parsed = URL.parse(url)
  if (!parsed || parsed.password === '') return url
  parsed.password = '***'
  return parsed.toString()
}

function rollback(config: Config): string {
  const { rollback } = config
  if (!rollback.enabled) return 'automatic rollback off'
  const p99 = rollback.maxP99 === 0 ? '' : ` or p99 > ${rollback.maxP99} ms`
  const unavailable =
    rollback.unavailableFor === 0 ? '' : `, or no upstream for ${seconds(rollback.unavailableFor)}`
  return (
    `watches a change for ${seconds(rollback.watch)}: errors > ${rollback.maxErrorRatio * 100}%${p99}` +
    ` over ${seconds(rollback.window)} (at least ${rollback.minRequests} requests)${unavailable}`
  )
}

/** Each target by name and host only: a webhook URL's path is often its secret (Slack's is). */
function notify(config: Config): string {
  return config.notify
    .map((target) => {
      const events = target.events.length === NOTIFY_EVENTS.length ? 'every event' : target.events.join(' ')
      const signed = target.secret === undefined ? 'unsigned' : 'signed'
      return `${target.name} (${new URL(target.url).host}, ${target.format}, ${signed}: ${events})`
    })
    .join('; ')
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`
}
