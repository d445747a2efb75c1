import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { AdminServer, type Readiness } from './admin/server.ts'
import type { ClusterLink } from './cluster-worker.ts'
import type { Config } from './config/types.ts'
import { UpstreamHealth } from './health/health.ts'
import type { Logger } from './log.ts'
import { Metrics } from './metrics/registry.ts'
import { SlidingWindows } from './metrics/windows.ts'
import type { RequestOutcome } from './proxy/http-forward.ts'
import { ProxyListener } from './proxy/server.ts'
import { exchangeFreshness } from './rollout/exchange.ts'
import { ReleaseGuard } from './rollout/guard.ts'
import { buildSnapshot, type RoutingSnapshot } from './routing/snapshot.ts'
import { createUpstreams } from './routing/upstream.ts'
import { type State, supersedes } from './state/state.ts'
import type { StoreStatus } from './state/store.ts'
import { createStateBackend } from './state-backend.ts'

export interface App {
  readonly replicaId: string
  /** Where the public proxy and the admin API listen (the real ports when the config said 0). */
  readonly proxyAddress: { host: string; port: number }
  readonly adminAddress: { host: string; port: number }
  /** The routing snapshot requests are served from right now; undefined until the state has loaded. */
  snapshot(): RoutingSnapshot | undefined
  /** Graceful shutdown, in the reverse order of start-up. Safe to call more than once. */
  close(): Promise<void>
}

export interface AppOptions {
  /** Set in a `serve --workers N` worker: how changes and metrics reach the other workers. */
  cluster?: ClusterLink
}

const RETRY_LOAD_MS = 1_000

/**
 * Wires the parts together and owns their order: upstream pools, the state store, the routing snapshot, the
 * proxy listener, the admin listener. Shutdown runs the other way round.
 */
export async function startApp(config: Config, logger: Logger, options: AppOptions = {}): Promise<App> {
  const { cluster } = options
  const replicaId = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`
  const upstreams = createUpstreams(config.pools, config.proxy.timeouts)
  const balance = { blue: config.pools.blue.balance, green: config.pools.green.balance }
  const stateLogger = logger.child({ part: 'state' })
  let metrics: Metrics | undefined
  const backend = await createStateBackend(config, stateLogger, replicaId, () => metrics?.invalidState.inc())
  const { replicas } = backend
  // In a cluster, a change this worker commits reaches its siblings before the change is answered.
  const store = cluster ? cluster.shareChanges(backend.store) : backend.store
  metrics = new Metrics(() => store.status?.())
  const health = new UpstreamHealth({
    upstreams,
    pools: config.pools,
    logger: logger.child({ part: 'health' }),
    metrics,
  })

  let snapshot: RoutingSnapshot | undefined
  let closing = false
  const windows = new SlidingWindows(config.rollback.window)
  const guard = new ReleaseGuard({
    config: config.rollback,
    rollout: config.rollout,
    store,
    windows,
    // Workers sharing a state file pool their figures through the primary; with Redis they meet in Redis.
    exchange:
      cluster && config.state.store === 'file'
        ? cluster.windowExchange(exchangeFreshness(config.rollback.evaluateEvery))
        : backend.exchange,
    audit: backend.audit,
    logger: logger.child({ part: 'guard' }),
    replicaId,
    current: () => snapshot?.state,
    unavailableSince: (color) => health.unavailableSince(color),
  })
  const accessLog = config.log.access ? logger.child({ part: 'access' }) : undefined
  const countRequests = config.metrics.enabled
  // The one place a finished request is reported: metrics, then the access log. Kept flat: it runs per request.
  const onOutcome = (outcome: RequestOutcome): void => {
    windows.record(outcome.color, outcome.status, outcome.durationMs)
    health.recordOutcome(outcome)
    if (countRequests) metrics.observe(outcome.color, outcome.status, outcome.durationMs / 1000)
    if (accessLog) {
      accessLog.info({
        method: outcome.method,
        path: outcome.path,
        status: outcome.status,
        color: outcome.color,
        upstream: outcome.upstream,
        ms: Math.round(outcome.durationMs * 100) / 100,
        failure: outcome.failure,
      })
    }
  }
  const proxy = new ProxyListener({
    config,
    logger: logger.child({ part: 'proxy' }),
    snapshot: () => snapshot,
    onOutcome,
    onUpstreamFailure: (upstream, reason, _error, retry) => {
      health.recordFailure(upstream, reason)
      if (!countRequests) return
      metrics.upstreamErrors.labels(upstream.color, reason).inc()
      if (retry === 'retried') metrics.upstreamRetries.labels(upstream.color, reason).inc()
      else if (retry === 'denied') metrics.upstreamRetriesDenied.labels(upstream.color, reason).inc()
    },
  })
  const apply = (state: State): void => {
    const previous = snapshot?.state
    if (!supersedes(state, previous)) return
    snapshot = buildSnapshot(state, upstreams, balance, (upstream) => health.isAvailable(upstream))
    metrics.applied(state, previous)
    guard.stateApplied(previous, state)
    // The first state drains nothing.
    if (previous) proxy.stateApplied(previous, state)
    replicas.report(state.generation)
    logger.info(
      {
        active: state.active,
        weights: state.weights,
        generation: state.generation,
        from: previous?.active,
        reason: state.reason,
        by: state.updatedBy,
      },
      previous ? 'state applied' : 'state loaded',
    )
  }
  store.subscribe(apply)
  // An upstream in or out of service: the same state over other upstreams, so nothing is "applied" or counted.
  health.onChange(() => {
    if (snapshot) {
      snapshot = buildSnapshot(snapshot.state, upstreams, balance, (upstream) => health.isAvailable(upstream))
    }
  })

  // Keeps trying until the store answers. Meanwhile the replica serves its local copy of the last state it
  // applied, if it has one; without one the proxy answers 503 and /readyz says why.
  let loadTimer: NodeJS.Timeout | undefined
  const load = async (): Promise<void> => {
    try {
      apply(await store.start())
    } catch (error) {
      if (backend.loadBeforeListening || closing) throw error
      if (!snapshot) await backend.lastState?.restore()
      logger.error(
        { err: error, retryInMs: RETRY_LOAD_MS },
        snapshot
          ? 'the state store does not answer: serving a stale state until it does'
          : 'no routing state yet: not ready until the state store answers',
      )
      loadTimer = setTimeout(() => void load().catch(() => {}), RETRY_LOAD_MS)
      loadTimer.unref()
    }
  }
  if (backend.loadBeforeListening) await load()
  else void load()

  // A sibling's change is applied like one from the store: only if its generation is newer.
  cluster?.attach({ apply, registry: metrics.registry })

  const readiness = (): Readiness => {
    const reasons: string[] = []
    if (closing) reasons.push('shutting down')
    if (!snapshot) reasons.push('the routing state is not loaded (is the state store reachable?)')
    else if (snapshot.pools[snapshot.state.active].upstreams.length === 0) {
      reasons.push(`the active pool (${snapshot.state.active}) has no healthy upstream`)
    }
    const cutOff = cutOffFor(store.status?.(), config.state.maxStaleness)
    if (cutOff !== undefined) {
      reasons.push(
        `cut off from the state store for ${(cutOff / 1000).toFixed(1)} s, longer than state.maxStaleness (${config.state.maxStaleness / 1000} s)`,
      )
    }
    return { ready: reasons.length === 0, reasons }
  }
  const admin = new AdminServer({
    config: config.admin,
    pools: config.pools,
    logger: logger.child({ part: 'admin' }),
    store,
    replicas,
    audit: backend.audit,
    metrics,
    replicaId,
    snapshot: () => snapshot,
    readiness,
    drainStatus: () => proxy.drainStatus(),
    healthStatus: () => health.status(),
    watchStatus: () => guard.status(),
    rolloutStepStatus: () => guard.rolloutStep(),
    clusterMetrics: cluster ? () => cluster.clusterMetrics() : undefined,
  })

  const release = async (): Promise<void> => {
    clearTimeout(loadTimer)
    guard.close()
    windows.close()
    await backend.exchange.close()
    await backend.audit.close()
    await replicas.close()
    await store.close()
    await backend.lastState?.close()
  }

  health.start()
  let proxyAddress: { host: string; port: number }
  let adminAddress: { host: string; port: number }
  try {
    const proxyBound = await proxy.listen()
    proxyAddress = { host: proxyBound.address, port: proxyBound.port }
    const adminBound = await admin.listen()
    adminAddress = { host: adminBound.address, port: adminBound.port }
  } catch (error) {
    closing = true
    proxy.server.close()
    await release()
    await health.close()
    await Promise.all([...upstreams.blue, ...upstreams.green].map((upstream) => upstream.destroy()))
    throw error
  }
  logger.info(
    {
      replica: replicaId,
      proxy: proxyAddress,
      admin: adminAddress,
      store: config.state.store,
      adminTokens: config.admin.tokens.map((token) => token.name),
    },
    'bluegreen-proxy started',
  )

  let closed: Promise<void> | undefined
  const close = async (): Promise<void> => {
    closing = true
    if (config.shutdown.delay > 0) await new Promise((resolve) => setTimeout(resolve, config.shutdown.delay))
    logger.info({ ...proxy.active, graceMs: config.shutdown.grace }, 'shutting down: draining')
    await proxy.drain(config.shutdown.grace)
    await admin.close()
    await release()
    await health.close()
    await Promise.all([...upstreams.blue, ...upstreams.green].map((upstream) => upstream.close()))
    logger.info('shutdown complete')
  }

  return {
    replicaId,
    proxyAddress,
    adminAddress,
    snapshot: () => snapshot,
    close: () => {
      closed ??= close()
      return closed
    },
  }
}

/**
 * How long (ms) this replica has been cut off from its store, when that is longer than `maxStaleness` (0: off).
 * Counted from the last sync, and only while the store does not answer: a quiet store is not a stale one.
 */
function cutOffFor(status: StoreStatus | undefined, maxStaleness: number): number | undefined {
  if (maxStaleness === 0 || !status || status.reachable || status.lastSyncAt === undefined) return undefined
  const staleFor = Date.now() - status.lastSyncAt
  return staleFor > maxStaleness ? staleFor : undefined
}
