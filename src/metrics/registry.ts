import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client'
import { COLORS, type Color } from '../colors.ts'
import { onlyMirrorChanged, type State } from '../state/state.ts'
import type { StoreStatus } from '../state/store.ts'
import { buildInfo } from '../version.ts'
import { RequestMetrics } from './request-metrics.ts'

/**
 * The app's own Prometheus registry (never prom-client's global one, so two apps in one process, as in the tests,
 * do not collide). Names and labels are part of the contract: see README's "Metrics".
 *
 * With `serve --workers N` the primary adds the workers' registries up (prom-client's AggregatorRegistry), each
 * metric by its `aggregator`: sum unless set. Counts of requests and errors add up; a worker's view of the state
 * does not, so those say how to combine N views of one thing.
 */
export class Metrics {
  readonly registry = new Registry()
  readonly activeColor: Gauge<'color'>
  readonly trafficWeight: Gauge<'color'>
  readonly stateGeneration: Gauge
  readonly switches: Counter<'trigger'>
  readonly invalidState: Counter
  readonly storeReachable: Gauge
  readonly stateStaleness: Gauge
  /** bluegreen_requests_total and bluegreen_request_duration_seconds. */
  readonly requests: RequestMetrics
  readonly upstreamErrors: Counter<'color' | 'reason'>
  readonly upstreamRetries: Counter<'color' | 'reason'>
  readonly upstreamRetriesDenied: Counter<'color' | 'reason'>
  readonly upstreamHealthy: Gauge<'color' | 'upstream'>
  readonly smokeChecks: Counter<'color' | 'result'>
  readonly configReloads: Counter<'result'>
  readonly notifications: Counter<'target' | 'result'>
  readonly mirrorRequests: Counter<'result'>
  readonly buildInfo: Gauge<'version' | 'node'>

  // Long, and left so: one metric definition after another, each read on its own; split up, a reader would have to
  // hunt for where a metric is defined.
  constructor(storeStatus: () => StoreStatus | undefined) {
    const registers = [this.registry]
    this.requests = new RequestMetrics(this.registry)
    this.upstreamErrors = new Counter({
      name: 'bluegreen_upstream_errors_total',
      help: 'Failed attempts to reach an upstream (refused, reset, timeouts, broken responses), by color and reason',
      labelNames: ['color', 'reason'],
      registers,
    })
    this.upstreamRetries = new Counter({
      name: 'bluegreen_upstream_retries_total',
      help: 'Failed attempts after which the request was tried again, by color and the reason of the failure',
      labelNames: ['color', 'reason'],
      registers,
    })
    this.upstreamRetriesDenied = new Counter({
      name: 'bluegreen_upstream_retries_denied_total',
      help: 'Failed attempts that were not tried again for want of retry budget, by color and reason',
      labelNames: ['color', 'reason'],
      registers,
    })
    this.upstreamHealthy = new Gauge({
      name: 'bluegreen_upstream_healthy',
      help: '1 while an upstream receives traffic (passing health checks, not ejected), else 0',
      labelNames: ['color', 'upstream'],
      // Each worker checks and ejects on its own: the share of workers sending the upstream traffic.
      aggregator: 'average',
      registers,
    })
    this.configReloads = new Counter({
      name: 'bluegreen_config_reloads_total',
      help: 'Config reloads by result: applied, unchanged, invalid (the file has problems), refused (needs a restart)',
      labelNames: ['result'],
      registers,
    })
    // Every result from the first scrape, so a rate() or an alert on refusals has a series before the first one.
    for (const result of ['applied', 'unchanged', 'invalid', 'refused']) this.configReloads.labels(result)
    collectDefaultMetrics({ register: this.registry })
    this.activeColor = new Gauge({
      name: 'bluegreen_active_color',
      help: '1 for the active color, 0 for the other',
      labelNames: ['color'],
      // The oldest worker's view (the primary orders them), so color and weights come from one state.
      aggregator: 'first',
      registers,
    })
    this.trafficWeight = new Gauge({
      name: 'bluegreen_traffic_weight',
      help: 'Share of new traffic (0..100) per color',
      labelNames: ['color'],
      aggregator: 'first',
      registers,
    })
    this.stateGeneration = new Gauge({
      name: 'bluegreen_state_generation',
      help: 'Generation of the routing state this replica serves',
      aggregator: 'max',
      registers,
    })
    this.switches = new Counter({
      name: 'bluegreen_switches_total',
      help: 'Routing changes this replica applied, by what triggered them',
      labelNames: ['trigger'],
      // Every worker applies every change: a sum would count each one N times.
      aggregator: 'max',
      registers,
    })
    this.mirrorRequests = new Counter({
      name: 'bluegreen_mirror_requests_total',
      help: 'Requests copied to the idle color, by result: match, mismatch, error (no answer), dropped (too many in flight, body over the limit, live answer incomplete)',
      labelNames: ['result'],
      registers,
    })
    this.smokeChecks = new Counter({
      name: 'bluegreen_smoke_checks_total',
      help: 'Smoke checks run against a color, before a change or on demand, by result (pass, fail)',
      labelNames: ['color', 'result'],
      registers,
    })
    this.notifications = new Counter({
      name: 'bluegreen_notifications_total',
      help: 'Webhook deliveries by target and result (delivered, retried, failed, dropped)',
      labelNames: ['target', 'result'],
      registers,
    })
    this.invalidState = new Counter({
      name: 'bluegreen_state_invalid_total',
      help: 'Invalid states read from the state store and ignored',
      // Every worker reads the same invalid state.
      aggregator: 'max',
      registers,
    })
    this.storeReachable = new Gauge({
      name: 'bluegreen_state_store_reachable',
      help: '1 while the state store answers, 0 while this replica serves its last state without it',
      // 0 as soon as any worker has lost the store.
      aggregator: 'min',
      registers,
      collect() {
        this.set(storeStatus()?.reachable === false ? 0 : 1)
      },
    })
    this.stateStaleness = new Gauge({
      name: 'bluegreen_state_staleness_seconds',
      help: 'Seconds since this replica last confirmed its state against the store',
      // The stalest worker.
      aggregator: 'max',
      registers,
      collect() {
        const lastSyncAt = storeStatus()?.lastSyncAt
        this.set(lastSyncAt === undefined ? 0 : (Date.now() - lastSyncAt) / 1000)
      },
    })
    this.buildInfo = new Gauge({
      name: 'bluegreen_build_info',
      help: 'Always 1; its labels say which version of bluegreen-proxy runs on which Node.js',
      labelNames: ['version', 'node'],
      // Every worker runs the same code.
      aggregator: 'first',
      registers,
    })
    const build = buildInfo()
    this.buildInfo.labels(build.version, build.node).set(1)
    // Export the series from the start, so a dashboard's rate() has a zero to begin from.
    for (const trigger of ['admin', 'rollback', 'rollout']) this.switches.labels(trigger).inc(0)
  }

  /** One request, on the hot path. A client that went away first (499) is counted as 4xx. */
  observe(color: Color, status: number, seconds: number): void {
    this.requests.record(color, status, seconds)
  }

  /** Called with every state this replica applies. */
  applied(state: State, previous: State | undefined): void {
    for (const color of COLORS) {
      this.activeColor.labels(color).set(state.active === color ? 1 : 0)
      this.trafficWeight.labels(color).set(state.weights[color])
    }
    this.stateGeneration.set(state.generation)
    if (previous && !onlyMirrorChanged(previous, state)) this.switches.labels(triggerOf(state)).inc()
  }
}

/** The trigger label of a change: "admin", "rollback" or "rollout". */
export function triggerOf(state: State): string {
  return state.trigger ?? 'admin'
}
