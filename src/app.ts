import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { EventStream, publishingTrail } from './admin/event-stream.ts'
import { ReplicaWatch } from './admin/replica-watch.ts'
import { AdminServer } from './admin/server.ts'
import { SmokeGate } from './admin/smoke-gate.ts'
import { Closers } from './app/closers.ts'
import { outcomeReporting } from './app/outcomes.ts'
import { ConfigReloader, type ReloadTrigger } from './app/reload.ts'
import { createStateBackend, SERIES_STEP_MS, type StateBackend } from './app/state-backend.ts'
import { StateLoader } from './app/state-loader.ts'
import type { AuditTrail } from './audit/audit.ts'
import type { ClusterLink } from './cluster-worker.ts'
import type { ReloadOutcome } from './config/changes.ts'
import type { Config } from './config/types.ts'
import { UpstreamHealth } from './health/health.ts'
import type { Logger } from './log.ts'
import { Metrics } from './metrics/registry.ts'
import { describeSeries, type SeriesSnapshot, TrafficSeries } from './metrics/series.ts'
import type { SeriesExchange } from './metrics/series-exchange.ts'
import { SlidingWindows } from './metrics/windows.ts'
import { Notifier } from './notify/notifier.ts'
import type { DrainStatus } from './proxy/drain.ts'
import { Mirror } from './proxy/mirror.ts'
import { ProxyListener } from './proxy/server.ts'
import { exchangeFreshness } from './rollout/exchange.ts'
import { ReleaseGuard } from './rollout/release-guard.ts'
import { StandbyWatch } from './rollout/standby-watch.ts'
import type { RoutingSnapshot } from './routing/snapshot.ts'
import { RoutingTable } from './routing/table.ts'
import { UpstreamPools } from './routing/upstream-pools.ts'
import type { ReplicaDrain } from './state/standby.ts'
import type { State } from './state/state.ts'
import type { StateStore } from './state/store.ts'

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

/** What every step of the start-up reads. */
interface Context {
  /** The running config: a reload replaces it. */
  config: Config
  configFile: string | undefined
  logger: Logger
  cluster: ClusterLink | undefined
  replicaId: string
  /** Where each part registers how it closes, as it is built. */
  closers: Closers
  /** Set once shutdown (or a failed start-up) begins: /readyz fails and a failed load is not tried again. */
  closing: boolean
}

/** The parts the others are built on: upstreams, their health, the state store, and the routing table. */
interface Core {
  upstreams: UpstreamPools
  metrics: Metrics
  health: UpstreamHealth
  backend: StateBackend
  /** The backend's store as the app uses it (in a cluster, committed changes are shared with the siblings). */
  store: StateStore
  table: RoutingTable
  /** This replica's live events (GET /events/stream): applied states, audited attempts, drain steps. */
  events: EventStream
  /** The backend's audit trail, each event also published live. */
  audit: AuditTrail
  /** The smoke checks: before a change (the admin API), before a rollout's step (the release guard), on demand. */
  smoke: SmokeGate
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
  const reloader = new ConfigReloader({
    file: context.configFile,
    running: () => context.config,
    setRunning: (next) => {
      context.config = next
    },
    targets: {
      upstreams: core.upstreams,
      health: core.health,
      table: core.table,
      proxy,
      admin,
      guard,
      notifier,
      mirror,
      keepStandbyFor: core.backend.keepStandbyFor,
    },
    viaPrimary: cluster ? () => cluster.requestReload() : undefined,
    metrics: core.metrics,
    audit: core.audit,
    events: core.events,
    snapshot: () => core.table.snapshot(),
    closing: () => context.closing,
    logger: logger.child({ part: 'reload' }),
  })
  core.table.onApplied((state, previous) => {
    core.metrics.applied(state, previous)
    mirror.stateApplied(state)
    guard.stateApplied(previous, state)
    // The first state drains nothing.
    if (previous) proxy.stateApplied(previous, state)
    core.backend.replicas.report(state.generation)
    if (!previous) core.backend.replicas.reportDrain(replicaDrain(proxy.drainStatus()))
    standby.stateApplied(previous, state)
    logApplied(logger, state, previous)
  })
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

/**
 * The replica watch (live `replica` events) and the notifier (it sends nothing while `notify` names no target; a
 * reload may add some). Built before the parts that make changes, so it closes after them: what they do while
 * closing is still sent, within a bound.
 */
function startNotifications(context: Context, core: Core): Notifier {
  const { config, logger, closers } = context
  const interval = core.backend.heartbeatInterval
  const watch = new ReplicaWatch({
    replicas: core.backend.replicas,
    events: core.events,
    logger: logger.child({ part: 'replicas' }),
    interval,
    generation: () => core.table.snapshot()?.state.generation,
    // A change reaches every replica in milliseconds: one still behind after seconds is stuck, not slow.
    lagAfter: Math.max(interval * 3, 5_000),
  })
  closers.add('replica watch', () => watch.close())
  const notifier = new Notifier({
    targets: config.notify,
    events: core.events,
    audit: core.audit,
    metrics: core.metrics,
    logger: logger.child({ part: 'notify' }),
    replicaId: context.replicaId,
    claim: core.backend.claimNotification,
  })
  closers.add('notifier', () => notifier.close())
  return notifier
}

function startGuard(context: Context, core: Core): { windows: SlidingWindows; guard: ReleaseGuard } {
  const { config, logger, cluster, closers } = context
  const windows = new SlidingWindows(config.rollback.window)
  closers.add('rollback windows', () => windows.close())
  const guard = new ReleaseGuard({
    config: config.rollback,
    rollout: config.rollout,
    store: core.store,
    windows,
    // Workers sharing a state file pool their figures through the primary; with Redis they meet in Redis.
    exchange:
      cluster && config.state.store === 'file'
        ? cluster.windowExchange(exchangeFreshness(config.rollback.evaluateEvery))
        : core.backend.exchange,
    audit: core.audit,
    logger: logger.child({ part: 'guard' }),
    replicaId: context.replicaId,
    current: () => core.table.snapshot()?.state,
    unavailableSince: (color) => core.health.unavailableSince(color),
    smoke:
      config.smoke.checks.length > 0 && config.smoke.on.rolloutStep
        ? (color) => core.smoke.run(color, 'rollout-step')
        : undefined,
    claim: core.backend.claimNotification,
    retiredSmoke:
      config.smoke.checks.length > 0 ? (color) => core.smoke.run(color, 'rollback', true) : undefined,
  })
  closers.add('release guard', () => guard.close())
  return { windows, guard }
}

/** The standby's fleet view and its live events; the registry is read as often as replicas heartbeat. */
function startStandbyWatch(context: Context, core: Core): StandbyWatch {
  const { config, logger, closers } = context
  const watch = new StandbyWatch({
    replicas: core.backend.replicas,
    current: () => core.table.snapshot()?.state,
    publish: (kind, data) => core.events.publish(kind, data),
    pollMs: config.state.redis?.heartbeatInterval ?? 1000,
    logger: logger.child({ part: 'standby' }),
  })
  closers.add('standby watch', () => watch.close())
  return watch
}

/** Copies of live requests to the idle color, compared with the live answers; closed after the proxy has drained. */
function startMirror(context: Context, core: Core): Mirror {
  const mirror = new Mirror({
    config: context.config.mirror,
    logger: context.logger.child({ part: 'mirror' }),
    count: (result) => core.metrics.mirrorRequests.labels(result).inc(),
  })
  context.closers.add('mirror', () => mirror.close())
  return mirror
}

/** The console's charts: this replica's figures, published for the others with Redis. */
function startCharts(context: Context, core: Core): Charts {
  const series = new TrafficSeries(SERIES_STEP_MS, CHART_SPAN_MS)
  // Workers sharing a state file pool their charts through the primary; with Redis they meet in Redis.
  const { cluster, config } = context
  const throughPrimary = cluster && config.state.store === 'file'
  const exchange = throughPrimary ? cluster.seriesExchange(SERIES_STEP_MS) : core.backend.series
  exchange.start(() => series.snapshot())
  context.closers.add('charts', async () => {
    series.close()
    // The backend's own exchange closes with the backend.
    if (throughPrimary) await exchange.close()
  })
  return { series, exchange }
}

interface Charts {
  series: TrafficSeries
  exchange: SeriesExchange
}

/** The charts' figures as GET /windows answers them: pooled, or this replica's own and why. */
interface Pooled {
  series: SeriesSnapshot
  replicas: number
  problem?: string
}

/** How far back the console's charts go. */
const CHART_SPAN_MS = 5 * 60_000

function startAdmin(
  context: Context,
  core: Core,
  guard: ReleaseGuard,
  standby: StandbyWatch,
  mirror: Mirror,
  { series, exchange }: Charts,
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
    windows: async () => {
      // Read at each call: a reload may have changed the thresholds.
      const { enabled, window, maxErrorRatio, maxP99, minRequests } = context.config.rollback
      const local = series.snapshot()
      // Without Redis the charts still show this replica's own traffic, saying that is all they show.
      const {
        series: pooled,
        replicas,
        problem,
      }: Pooled = await exchange.pooled(local).catch((error: unknown) => ({
        series: local,
        replicas: 1,
        problem: `only this replica's figures: cannot read the others' (${(error as Error).message})`,
      }))
      const described = describeSeries(pooled, {
        stepMs: series.stepMs,
        spanMs: series.spanMs,
        windowMs: window,
        now: Date.now(),
      })
      const thresholds = { enabled, windowSeconds: window / 1000, maxErrorRatio, maxP99, minRequests }
      return { ...described, replicas, ...(problem ? { problem } : {}), thresholds }
    },
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

/** What the registry shares of this replica's drain. */
function replicaDrain(status: DrainStatus): ReplicaDrain {
  const { draining } = status
  return draining ? { color: draining.color, since: draining.since, drainedAt: draining.drainedAt } : null
}

/** A `state` live event: what this replica now routes by, and what it replaced. */
function liveState(state: State, previous: State | undefined): unknown {
  const { generation, active, weights, trigger, reason, updatedBy, updatedAt, rollout, mirror } = state
  return {
    generation,
    from: previous
      ? { active: previous.active, weights: previous.weights, generation: previous.generation }
      : null,
    to: { active, weights },
    trigger: trigger ?? 'admin',
    reason,
    by: updatedBy,
    at: updatedAt,
    ...(rollout ? { rollout } : {}),
    ...(mirror ? { mirror } : {}),
  }
}

function logApplied(logger: Logger, state: State, previous: State | undefined): void {
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
