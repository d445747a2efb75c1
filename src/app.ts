import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { EventStream, publishingTrail } from './admin/event-stream.ts'
import { AdminServer } from './admin/server.ts'
import { Closers } from './app/closers.ts'
import { outcomeReporting } from './app/outcomes.ts'
import { createStateBackend, SERIES_STEP_MS, type StateBackend } from './app/state-backend.ts'
import { StateLoader } from './app/state-loader.ts'
import type { AuditTrail } from './audit/audit.ts'
import type { ClusterLink } from './cluster-worker.ts'
import type { Color } from './colors.ts'
import type { Config } from './config/types.ts'
import { UpstreamHealth } from './health/health.ts'
import type { Logger } from './log.ts'
import { Metrics } from './metrics/registry.ts'
import { describeSeries, type SeriesSnapshot, TrafficSeries } from './metrics/series.ts'
import type { SeriesExchange } from './metrics/series-exchange.ts'
import { SlidingWindows } from './metrics/windows.ts'
import { ProxyListener } from './proxy/server.ts'
import { exchangeFreshness } from './rollout/exchange.ts'
import { ReleaseGuard } from './rollout/release-guard.ts'
import type { RoutingSnapshot } from './routing/snapshot.ts'
import { RoutingTable } from './routing/table.ts'
import { createUpstreams, type Upstream } from './routing/upstream.ts'
import type { State } from './state/state.ts'
import type { StateStore } from './state/store.ts'

export interface App {
  readonly replicaId: string
  /** Where the public proxy and the admin API listen (the real ports when the config said 0). */
  readonly proxyAddress: Address
  readonly adminAddress: Address
  /** The routing snapshot requests are served from right now; undefined until the state has loaded. */
  snapshot(): RoutingSnapshot | undefined
  /** Graceful shutdown, in the reverse order of start-up. Safe to call more than once. */
  close(): Promise<void>
}

export interface AppOptions {
  /** Set in a `serve --workers N` worker: how changes and metrics reach the other workers. */
  cluster?: ClusterLink
}

export interface Address {
  host: string
  port: number
}

/** What every step of the start-up reads. */
interface Context {
  config: Config
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
  upstreams: Record<Color, Upstream[]>
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
  const charts = startCharts(context, core)
  const admin = startAdmin(context, core, guard, charts, () => proxy.drainStatus())
  const proxy = startProxy(context, core, windows, charts.series)
  core.table.onApplied((state, previous) => {
    core.metrics.applied(state, previous)
    guard.stateApplied(previous, state)
    // The first state drains nothing.
    if (previous) proxy.stateApplied(previous, state)
    core.backend.replicas.report(state.generation)
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
  cluster?.attach({ apply: core.table.apply, registry: core.metrics.registry })
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
    close: () => {
      closed ??= close(context)
      return closed
    },
  }
}

async function startCore(context: Context): Promise<Core> {
  const { config, logger, cluster, closers, replicaId } = context
  const upstreams = createUpstreams(config.pools, config.proxy.timeouts)
  closers.add(
    'upstream connection pools',
    () => eachUpstream(upstreams, (upstream) => upstream.close()),
    () => eachUpstream(upstreams, (upstream) => upstream.destroy()),
  )
  // Read at scrape time, once the store below exists.
  const metrics = new Metrics(() => store.status?.())
  const health = new UpstreamHealth({
    upstreams,
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
    upstreams,
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
  return { upstreams, metrics, health, backend, store, table, events, audit }
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
  })
  closers.add('release guard', () => guard.close())
  return { windows, guard }
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
  { series, exchange }: Charts,
  drainStatus: () => unknown,
): AdminServer {
  const { config, cluster } = context
  const { enabled, window, maxErrorRatio, maxP99, minRequests } = config.rollback
  const admin = new AdminServer({
    config: config.admin,
    pools: config.pools,
    logger: context.logger.child({ part: 'admin' }),
    store: core.store,
    replicas: core.backend.replicas,
    audit: core.audit,
    metrics: core.metrics,
    smoke: { config: config.smoke, preserveHost: config.proxy.preserveHost },
    replicaId: context.replicaId,
    snapshot: () => core.table.snapshot(),
    readiness: () => core.table.readiness(context.closing),
    drainStatus,
    healthStatus: () => core.health.status(),
    watchStatus: () => guard.status(),
    rolloutStepStatus: () => guard.rolloutStep(),
    clusterMetrics: cluster ? () => cluster.clusterMetrics() : undefined,
    events: core.events,
    windows: async () => {
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
  series: TrafficSeries,
): ProxyListener {
  const { config, logger } = context
  const proxy = new ProxyListener({
    config,
    logger: logger.child({ part: 'proxy' }),
    snapshot: () => core.table.snapshot(),
    onDrainChange: (change) => core.events.publish('drain', change),
    ...outcomeReporting({ config, logger, windows, series, health: core.health, metrics: core.metrics }),
  })
  context.closers.add(
    'proxy listener',
    async () => {
      logger.info({ ...proxy.active, graceMs: config.shutdown.grace }, 'shutting down: draining')
      await proxy.drain(config.shutdown.grace)
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

async function eachUpstream(
  upstreams: Record<Color, Upstream[]>,
  each: (upstream: Upstream) => Promise<void>,
): Promise<void> {
  await Promise.all(Object.values(upstreams).flat().map(each))
}

/** A `state` live event: what this replica now routes by, and what it replaced. */
function liveState(state: State, previous: State | undefined): unknown {
  const { generation, active, weights, trigger, reason, updatedBy, updatedAt, rollout } = state
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
