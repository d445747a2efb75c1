import type { AuditTrail } from '../audit/audit.ts'
import { FileAuditTrail } from '../audit/file-audit.ts'
import type { Config, RedisConfig } from '../config/types.ts'
import type { Logger } from '../log.ts'
import { localSeriesExchange, type SeriesExchange } from '../metrics/series-exchange.ts'
import { localMirrorExchange, type MirrorExchange } from '../mirror/exchange.ts'
import { exchangeFreshness, LocalExchange, type WindowExchange } from '../rollout/exchange.ts'
import { claimInDirectory, claimInRedis } from '../state/claims.ts'
import { FileStateStore } from '../state/file-store.ts'
import type { LocalStateCopy } from '../state/local-copy.ts'
import { LocalReplicaRegistry } from '../state/local-replicas.ts'
import type { RedisStateStore } from '../state/redis-store.ts'
import type { ReplicaRegistry, StateStore } from '../state/store.ts'
import type { Closers } from './closers.ts'

export interface StateBackend {
  store: StateStore
  replicas: ReplicaRegistry
  audit: AuditTrail
  /** How replicas pool their traffic figures for rollback decisions. */
  exchange: WindowExchange
  /** How replicas pool the console's charts (GET /windows). */
  series: SeriesExchange
  /** How the mirror's figures are pooled across replicas (Redis), or this process's own (file store). */
  mirror: MirrorExchange
  /** The file store must load before the proxy listens (a broken file is a start-up error); Redis may come later. */
  loadBeforeListening: boolean
  /**
   * With Redis and state.redis.lastStateFile: when the store cannot load, serves this replica's local copy of the
   * last state it applied until it can (read once). True when there was one.
   */
  restoreLastState?: () => Promise<boolean>
  /**
   * Claims a notification every replica observes (a replica missing, the standby over) for this one: true when no
   * other replica (with the file store, no other process on the same state file) has claimed `id`.
   */
  claimNotification: (id: string) => Promise<boolean>
  /** How often the replica registry changes at most: its heartbeat. */
  heartbeatInterval: number
  /** Sets standby.keepFor for the store's changes from now on (a reload). */
  keepStandbyFor: (ms: number) => void
}

/** The console's charts: one point per 5 seconds. */
export const SERIES_STEP_MS = 5_000

export interface StateBackendOptions {
  config: Config
  logger: Logger
  replicaId: string
  /** Where each part registers how it closes. */
  closers: Closers
  /** A state read from the store was not valid (counted in bluegreen_state_invalid_total). */
  onInvalidState: (problem: string) => void
}

/**
 * The state store and what goes with it (replica registry, audit trail, window exchange), each registering how it
 * closes. Redis's modules (and ioredis) are loaded only when the config asks for Redis: start-up is mostly module
 * loading.
 */
export async function createStateBackend(options: StateBackendOptions): Promise<StateBackend> {
  const { config, logger, replicaId, closers } = options
  const { state } = config
  if (state.store === 'redis' && state.redis) return createRedisBackend(options, state.redis)
  const store = new FileStateStore({
    path: state.path,
    initial: state.initial,
    logger,
    standbyKeepFor: config.standby.keepFor,
  })
  closers.add('state store', () => store.close())
  const replicas = new LocalReplicaRegistry(replicaId)
  closers.add('replica registry', () => replicas.close())
  const audit = new FileAuditTrail(`${state.path}.events.jsonl`, config.admin.auditKeep)
  closers.add('audit trail', () => audit.close())
  const exchange = new LocalExchange()
  closers.add('window exchange', () => exchange.close())
  const series = localSeriesExchange()
  const mirror = localMirrorExchange()
  return {
    store,
    replicas,
    audit,
    exchange,
    series,
    mirror,
    loadBeforeListening: true,
    claimNotification: (id) => claimInDirectory(`${state.path}.claims`, id, replicaId),
    heartbeatInterval: 1_000,
    keepStandbyFor: (ms) => store.keepStandbyFor(ms),
  }
}

async function createRedisBackend(options: StateBackendOptions, redis: RedisConfig): Promise<StateBackend> {
  const { config, logger, replicaId, closers, onInvalidState } = options
  const [
    { RedisStateStore },
    { onRedis },
    { RedisReplicaRegistry },
    { RedisAuditTrail },
    { RedisExchange },
    { LocalStateCopy },
    { redisSeriesExchange },
    { redisMirrorExchange },
  ] = await Promise.all([
    import('../state/redis-store.ts'),
    import('../state/redis-connection.ts'),
    import('../state/redis-replicas.ts'),
    import('../audit/redis-audit.ts'),
    import('../rollout/exchange.ts'),
    import('../state/local-copy.ts'),
    import('../metrics/series-exchange.ts'),
    import('../mirror/exchange.ts'),
  ])
  // Built first so that it closes last: the store may still apply a state while it closes.
  const copy =
    redis.lastStateFile === null
      ? undefined
      : new LocalStateCopy({ file: redis.lastStateFile, key: redis.key, logger })
  if (copy) closers.add('local copy of the state', () => copy.close())
  const store = new RedisStateStore({
    config: redis,
    initial: config.state.initial,
    logger,
    replicaId,
    onInvalidState,
    standbyKeepFor: config.standby.keepFor,
  })
  closers.add('state store', () => store.close())
  const replicas = new RedisReplicaRegistry({
    client: store.client,
    subscriber: store.subscriber,
    key: redis.key,
    replicaId,
    heartbeatInterval: redis.heartbeatInterval,
    forgetMissingAfter: redis.forgetMissingAfter,
    logger,
  })
  closers.add('replica registry', () => replicas.close())
  const audit = new RedisAuditTrail(store.client, redis.key, config.admin.auditKeep)
  closers.add('audit trail', () => audit.close())
  const freshness = exchangeFreshness(config.rollback.evaluateEvery)
  const exchange = new RedisExchange(store.client, redis.key, replicaId, freshness)
  closers.add('window exchange', () => exchange.close())
  const series = redisSeriesExchange(store.client, redis.key, replicaId, SERIES_STEP_MS)
  closers.add('chart exchange', () => series.close())
  const mirror = redisMirrorExchange(store.client, redis.key, replicaId, SERIES_STEP_MS)
  closers.add('mirror exchange', () => mirror.close())
  let restoreLastState: (() => Promise<boolean>) | undefined
  if (copy) {
    store.subscribe((applied) => copy.save(applied))
    // Read once: the first failed load finds out whether there is a usable copy; later retries only ask Redis.
    let restoring: Promise<boolean> | undefined
    restoreLastState = () => (restoring ??= restore(copy, store, logger))
  }
  return {
    store,
    replicas,
    audit,
    exchange,
    series,
    mirror,
    loadBeforeListening: false,
    restoreLastState,
    claimNotification: (id) =>
      onRedis(store.client, () => claimInRedis(store.client, redis.key, id, replicaId)),
    heartbeatInterval: redis.heartbeatInterval,
    keepStandbyFor: (ms) => store.keepStandbyFor(ms),
  }
}

async function restore(copy: LocalStateCopy, store: RedisStateStore, logger: Logger): Promise<boolean> {
  const saved = await copy.read()
  if (!saved || !store.adopt(saved.state, saved.savedAt, copy.file)) return false
  logger.warn(
    {
      file: copy.file,
      generation: saved.state.generation,
      active: saved.state.active,
      savedAt: new Date(saved.savedAt).toISOString(),
    },
    'Redis does not answer at start-up: serving the last state this replica applied, from its local copy, until it does (stale)',
  )
  return true
}
