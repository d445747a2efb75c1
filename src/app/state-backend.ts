import type { AuditTrail } from './audit/audit.ts'
import { FileAuditTrail } from './audit/file-audit.ts'
import type { Config } from './config/types.ts'
import type { Logger } from './log.ts'
import { exchangeFreshness, LocalExchange, type WindowExchange } from './rollout/exchange.ts'
import { FileStateStore } from './state/file-store.ts'
import type { LocalStateCopy } from './state/local-copy.ts'
import { LocalReplicaRegistry } from './state/local-replicas.ts'
import type { RedisStateStore } from './state/redis-store.ts'
import type { ReplicaRegistry, StateStore } from './state/store.ts'

export interface StateBackend {
  store: StateStore
  replicas: ReplicaRegistry
  audit: AuditTrail
  /** How replicas pool their traffic figures for rollback decisions. */
  exchange: WindowExchange
  /** The file store must load before the proxy listens (a broken file is a start-up error); Redis may come later. */
  loadBeforeListening: boolean
  /** With Redis, this replica's local copy of the last state it applied (state.redis.lastStateFile). */
  lastState?: LastStateCopy
}

export interface LastStateCopy {
  /** When the store cannot load: serves the local copy until it can (read once). True when there was one. */
  restore(): Promise<boolean>
  /** Finishes the write in progress. */
  close(): Promise<void>
}

/** Redis's modules (and ioredis) are loaded only when the config asks for Redis: start-up is mostly module loading. */
export async function createStateBackend(
  config: Config,
  logger: Logger,
  replicaId: string,
  onInvalidState: (problem: string) => void,
): Promise<StateBackend> {
  const { state } = config
  if (state.store === 'redis' && state.redis) {
    const [
      { RedisStateStore },
      { RedisReplicaRegistry },
      { RedisAuditTrail },
      { RedisExchange },
      { LocalStateCopy },
    ] = await Promise.all([
      import('./state/redis-store.ts'),
      import('./state/redis-replicas.ts'),
      import('./audit/redis-audit.ts'),
      import('./rollout/exchange.ts'),
      import('./state/local-copy.ts'),
    ])
    const store = new RedisStateStore({
      config: state.redis,
      initial: state.initial,
      logger,
      replicaId,
      onInvalidState,
    })
    const replicas = new RedisReplicaRegistry({
      client: store.client,
      subscriber: store.subscriber,
      key: state.redis.key,
      replicaId,
      heartbeatInterval: state.redis.heartbeatInterval,
      forgetMissingAfter: state.redis.forgetMissingAfter,
      logger,
    })
    const audit = new RedisAuditTrail(store.client, state.redis.key, config.admin.auditKeep)
    const exchange = new RedisExchange(
      store.client,
      state.redis.key,
      replicaId,
      exchangeFreshness(config.rollback.evaluateEvery),
    )
    const { lastStateFile } = state.redis
    let lastState: LastStateCopy | undefined
    if (lastStateFile !== null) {
      const copy = new LocalStateCopy({ file: lastStateFile, key: state.redis.key, logger })
      store.subscribe((applied) => copy.save(applied))
      // Read once: the first failed load finds out whether there is a usable copy; later retries only ask Redis.
      let restoring: Promise<boolean> | undefined
      lastState = {
        restore: () => (restoring ??= restore(copy, store, logger)),
        close: () => copy.close(),
      }
    }
    return { store, replicas, audit, exchange, loadBeforeListening: false, lastState }
  }
  return {
    store: new FileStateStore({ path: state.path, initial: state.initial, logger }),
    replicas: new LocalReplicaRegistry(replicaId),
    audit: new FileAuditTrail(`${state.path}.events.jsonl`, config.admin.auditKeep),
    exchange: new LocalExchange(),
    loadBeforeListening: true,
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
