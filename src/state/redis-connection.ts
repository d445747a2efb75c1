import { readFileSync } from 'node:fs'
import { Redis, type RedisOptions } from 'ioredis'
import type { RedisConfig } from '../config/types.ts'
import { BlueGreenError } from '../errors.ts'

/**
 * ioredis options for a proxy, not for a job queue. The library's defaults queue commands while disconnected and
 * retry each up to 20 times, so during an outage a command can hang for about a minute; a proxy must instead answer
 * "state store unreachable" at once and keep serving from the state it has.
 */
export function redisOptions(config: RedisConfig, connectionName: string): RedisOptions {
  const url = new URL(config.url)
  const tls = url.protocol === 'rediss:' ? tlsOptions(config, url.hostname) : undefined
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0
  const common: RedisOptions = {
    connectionName,
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    db: Number.isInteger(db) ? db : 0,
    lazyConnect: true,
    // Fail fast instead of queueing: a change during an outage is refused with 503 straight away.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: config.commandTimeout,
    connectTimeout: config.connectTimeout,
    // Reconnect quickly and keep trying for ever; the proxy serves its last state meanwhile.
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
    // After a Sentinel failover the old master turns replica and answers READONLY: reconnect to the new master.
    reconnectOnError: (error) => (error.message.startsWith('READONLY') ? 2 : false),
    keepAlive: 10_000,
    tls,
  }
  if (config.sentinels && config.name) {
    return {
      ...common,
      sentinels: config.sentinels.map(({ host, port }) => ({ host, port })),
      name: config.name,
      sentinelPassword: config.sentinelPassword,
      sentinelRetryStrategy: (times) => Math.min(100 * times, 1_000),
      // Learn of a failover from the sentinels' +switch-master at once, not at the next failed command.
      failoverDetector: true,
      enableTLSForSentinelMode: tls !== undefined,
    }
  }
  return { ...common, host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 6379 }
}

function tlsOptions(config: RedisConfig, servername: string): RedisOptions['tls'] {
  return config.tlsCaFile ? { ca: readFileSync(config.tlsCaFile), servername } : { servername }
}

/** Why each connection last failed to connect (ECONNREFUSED, ETIMEDOUT...), until it is ready again. */
const lastFailure = new WeakMap<Redis, string>()

export function createRedis(config: RedisConfig, connectionName: string): Redis {
  const connection = new Redis(redisOptions(config, connectionName))
  connection.on('error', (error: NodeJS.ErrnoException) => {
    lastFailure.set(connection, error.code ?? error.message)
  })
  connection.on('ready', () => lastFailure.delete(connection))
  return connection
}

/** "127.0.0.1:6379", or with Sentinel "sentinel master mymaster". */
export function redisAddress(connection: Redis): string {
  const { host, port, sentinels, name } = connection.options
  if (sentinels && sentinels.length > 0 && name) return `sentinel master ${name}`
  return `${host?.includes(':') ? `[${host}]` : host}:${port}`
}

/** "Redis at 127.0.0.1:6379 is unreachable (ECONNREFUSED)": what an operator is told, in the log and in answers. */
export function unreachableMessage(connection: Redis): string {
  const reason =
    lastFailure.get(connection) ??
    (connection.status === 'ready'
      ? 'not answering'
      : connection.status === 'wait'
        ? 'not connected'
        : 'connection lost')
  return `Redis at ${redisAddress(connection)} is unreachable (${reason})`
}

/**
 * A command's failure as an operator should read it: while the connection is down, ioredis rejects commands with
 * its own internals ("Stream isn't writeable and enableOfflineQueue options is false"); say which Redis and why.
 */
export function plainRedisError(connection: Redis, error: unknown): unknown {
  if (error instanceof BlueGreenError) return error
  const timedOut = error instanceof Error && error.message === 'Command timed out'
  if (connection.status === 'ready' && !timedOut) return error
  const plain = new BlueGreenError('BG_STATE_UNAVAILABLE', unreachableMessage(connection))
  return plain
}

/** Runs commands on the connection; a failure while Redis is unreachable says so plainly (plainRedisError). */
export async function onRedis<T>(connection: Redis, run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (error) {
    throw plainRedisError(connection, error)
  }
}
