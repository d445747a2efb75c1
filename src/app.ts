import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { EventStream, publishingTrail } from './admin/event-stream.ts'
import { AdminServer } from './admin/server.ts'
import { SmokeGate } from './admin/smoke-gate.ts'
import { followAppliedStates, liveState, replicaDrain } from './app/applied-states.ts'
import { type Charts, chartFigures, startCharts } from './app/charts.ts'
import { Closers } from './app/closers.ts'
import type { Context, Core } from './app/context.ts'
import { startGuard } from './app/guard.ts'
import { startMirror } from './app/mirror.ts'
import { startNotifications } from './app/notifications.ts'
import { outcomeReporting } from './app/outcomes.ts'
import type { ReloadTrigger } from './app/reload.ts'
import { startReloader } from './app/reload-wiring.ts'
import { startStandbyWatch } from './app/standby.ts'
import { createStateBackend } from './app/state-backend.ts'
import { StateLoader } from './app/state-loader.ts'
import type { ClusterLink } from './cluster-worker.ts'
import type { ReloadOutcome } from './config/changes.ts'
import type { Config } from './config/types.ts'
import { UpstreamHealth } from './health/health.ts'
import type { Logger } from './log.ts'
import { Metrics } from './metrics/registry.ts'
import type { TrafficSeries } from './metrics/series.ts'
import type { SlidingWindows } from './metrics/windows.ts'
import type { Mirror } from './proxy/mirror.ts'
import { ProxyListener } from './proxy/server.ts'
import type { ReleaseGuard } from './rollout/release-guard.ts'
import type { StandbyWatch } from './rollout/standby-watch.ts'
import type { RoutingSnapshot } from './routing/snapshot.ts'
import { RoutingTable } from './routing/table.ts'
import { UpstreamPools } from './routing/upstream-pools.ts'

export interface App {
  readonly replicaId: string
  /** Where the public proxy and the admin API listen (the real ports when the config said 0). */
  readonly proxyAddress: Address
  readonly adminAddress: Address
  /** The routing snapshot requests are served from right now; undefined until the state has loaded. */
  snapshot(): RoutingSnapshot | undefined
  /**
   * Re-reads the config file and applies it whole or not at all (SIGHUP, POST /reload); answers how it ended and
   * never throws for a bad file.
   */
  reload(trigger: ReloadTrigger): Promise<ReloadOutcome>
  /** Graceful shutdown, in the reverse order of start-up. Safe to call more than once. */
  close(): Promise<void>
}

export interface AppOptions {
  /** Set in a `serve --workers N` worker: how changes and metrics reach the other workers. */
  cluster?: ClusterLink
  /** The config file the app was started from, re-read by a reload; none for `bluegreen demo`. */
  configFile?: string
}

export interface Address {
  host: string
  port: number
}

/**
 * Wires the parts together and owns their order. Each part registers how it closes as it is built, so shutdown
 * runs the other way round by construction: the proxy drains first, then the admin API closes, then the release
 * guard, the state store and what goes with it, health checks, and last the upstream connection pools. A start-up
 * that fails half way (a port in use, a broken state file) releases whatever it had started.
 */
export async function startApp(config: Config, logger: Logger, options: AppOptions = {}): Promise<App> {
  const context: Context = {
    config,
    logger,
    cluster: options.cluster,
    configFile: options.configFile,
    replicaId: `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`,
    closers: new Closers(logger),
    closing: false,
  }
  try {
    return await start(context)
  } catch (error) {
    context.closing = true
    await context.closers.abort()
    throw error
  }
}

async function start(context: Context): Promise<App> {
  const { config, logger, cluster, closers } = context
  const core = await startCore(context)
  const notifier = startNotifications(context, core)
  const { windows, guard } = startGuard(context, core)
  const loader = new StateLoader({
    store: core.store,
    apply: core.table.apply,
    loadBeforeListening: core.backend.loadBeforeListening,
    restoreLastState: core.backend.restoreLastState,
    hasState: () => core.table.snapshot() !== undefined,
    closing: () => context.closing,
    logger,
  })
  closers.add('state loader', () => loader.stop())
  const standby = startStandbyWatch(context, core)
  const mirror = startMirror(context, core)
  const charts = startCharts(context, core)
  const admin = startAdmin(
    context,
    core,
    guard,
    standby,
    mirror,
    charts,
    () => proxy.drainStatus(),
    (trigger) => reloader.reload(trigger),
  )
  const proxy = startProxy(context, core, windows, mirror, charts.series)
  const reloader = startReloader(context, core, { proxy, admin, guard, notifier, mirror })
  followAppliedStates(context, core, { proxy, guard, mirror, standby })
  core.store.subscribe(core.table.apply)
  // Both listeners bind before the state loads: a port in use must fail the start-up before anything (the state
  // file and its lock, the audit trail, Redis's local copy) is written to disk. Until the state has loaded, the
  // proxy answers 503 and /readyz fails, as with a state store that answers late.
  const proxyAddress = addressOf(await proxy.listen())
  const adminAddress = addressOf(await admin.listen())
  await loader.start()
  // A sibling's change is applied like one from the store: only if it supersedes the state applied.
  cluster?.attach({
    apply: core.table.apply,
    registry: core.metrics.registry,
    applyConfig: (next) => reloader.apply(next),
    recordReload: (outcome, trigger) => reloader.record(outcome, trigger),
  })
  core.health.start()
  logger.info(
    {
      replica: context.replicaId,
      proxy: proxyAddress,
      admin: adminAddress,
      store: config.state.store,
      adminTokens: config.admin.tokens.map((token) => token.name),
    },
    'bluegreen-proxy started',
  )
  let closed: Promise<void> | undefined
  return {
    replicaId: context.replicaId,
    proxyAddress,
    adminAddress,
    snapshot: () => core.table.snapshot(),
    reload: (trigger) => reloader.reload(trigger),
    close: () => {
      closed ??= close(context)
      return closed
    },
  }
}

async function startCore(context: Context): Promise<Core> {
  const { config, logger, cluster, closers, replicaId } = context
  const upstreams = new UpstreamPools(config.pools, config.proxy.timeouts, (upstream) =>
    logger.info(
      { color: upstream.color, upstream: upstream.url },
      'removed upstream drained: its connections are closed',
    ),
  )
  closers.add(
    'upstream connection pools',
    () => upstreams.close(),
    () => upstreams.destroy(),
  )
  // Read at scrape time, once the store below exists.
  const metrics = new Metrics(() => store.status?.())
  const health = new UpstreamHealth({
    upstreams: upstreams.current,
    pools: config.pools,
    logger: logger.child({ part: 'health' }),
    metrics,
  })
  closers.add('health checks', () => health.close())
  const backend = await createStateBackend({
    config,
    logger: logger.child({ part: 'state' }),
    replicaId,
    closers,
    onInvalidState: () => metrics.invalidState.inc(),
  })
  // In a cluster, a change this worker commits reaches its siblings before the change is answered.
  const store = cluster ? cluster.shareChanges(backend.store) : backend.store
  const table = new RoutingTable({
    upstreams: upstreams.current,
    balance: { blue: config.pools.blue.balance, green: config.pools.green.balance },
    isAvailable: (upstream) => health.isAvailable(upstream),
    storeStatus: () => store.status?.(),
    maxStaleness: config.state.maxStaleness,
  })
  // An upstream in or out of service: the same state over other upstreams, so nothing is "applied" or counted.
  health.onChange(() => table.upstreamsChanged())
  const events = new EventStream()
  table.onApplied((state, previous) => events.publish('state', liveState(state, previous)))
  const audit = publishingTrail(backend.audit, events)
  const smoke = new SmokeGate({
    smoke: { config: config.smoke, preserveHost: config.proxy.preserveHost },
    metrics,
    snapshot: () => table.snapshot(),
    publish: (kind, data) => events.publish(kind, data),
  })
  return { upstreams, metrics, health, backend, store, table, events, audit, smoke }
}

function startAdmin(
  context: Context,
  core: Core,
  guard: ReleaseGuard,
  standby: StandbyWatch,
  mirror: Mirror,
  charts: Charts,
  drainStatus: () => unknown,
  reload: (trigger: ReloadTrigger) => Promise<ReloadOutcome>,
): AdminServer {
  const { config, cluster } = context
  const admin = new AdminServer({
    config: config.admin,
    pools: config.pools,
    logger: context.logger.child({ part: 'admin' }),
    store: core.store,
    replicas: core.backend.replicas,
    audit: core.audit,
    metrics: core.metrics,
    smoke: { config: config.smoke, preserveHost: config.proxy.preserveHost },
    smokeGate: core.smoke,
    replicaId: context.replicaId,
    snapshot: () => core.table.snapshot(),
    readiness: () => core.table.readiness(context.closing),
    drainStatus,
    healthStatus: () => core.health.status(),
    watchStatus: () => guard.status(),
    rolloutStepStatus: () => guard.rolloutStep(),
    standbyStatus: () => standby.view(),
    clusterMetrics: cluster ? () => cluster.clusterMetrics() : undefined,
    events: core.events,
    reload,
    mirror,
    windows: chartFigures(context, charts),
  })
  context.closers.add('admin listener', () => admin.close())
  return admin
}

function startProxy(
  context: Context,
  core: Core,
  windows: SlidingWindows,
  mirror: Mirror,
  series: TrafficSeries,
): ProxyListener {
  const { config, logger } = context
  const proxy = new ProxyListener({
    config,
    logger: logger.child({ part: 'proxy' }),
    snapshot: () => core.table.snapshot(),
    onDrainChange: (change) => {
      core.events.publish('drain', change)
      // The fleet's standby view is every replica's drain put together.
      core.backend.replicas.reportDrain(replicaDrain(proxy.drainStatus()))
    },
    mirror,
    ...outcomeReporting({ config, logger, windows, series, health: core.health, metrics: core.metrics }),
  })
  context.closers.add(
    'proxy listener',
    async () => {
      const { grace } = context.config.shutdown
      logger.info({ ...proxy.active, graceMs: grace }, 'shutting down: draining')
      await proxy.drain(grace)
    },
    // Nothing has been served that deserves to finish.
    () => void proxy.server.close(),
  )
  return proxy
}

/** /readyz fails at once; after shutdown.delay (for load balancers to notice) the parts close, the proxy first. */
async function close(context: Context): Promise<void> {
  context.closing = true
  const { delay } = context.config.shutdown
  if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay))
  await context.closers.close()
  context.logger.info('shutdown complete')
}

function addressOf(bound: { address: string; port: number }): Address {
  return { host: bound.address, port: bound.port }
}
