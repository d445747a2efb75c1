import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client'
import { COLORS, type State } from '../state/state.ts'
import type { StoreStatus } from '../state/store.ts'

/**
 * The app's own Prometheus registry (never prom-client's global one, so two apps in one process, as in the tests,
 * do not collide). Names and labels are part of the contract: see README's "Metrics".
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

  constructor(storeStatus: () => StoreStatus | undefined) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry })
    this.activeColor = new Gauge({
      name: 'bluegreen_active_color',
      help: '1 for the active color, 0 for the other',
      labelNames: ['color'],
      registers,
    })
    this.trafficWeight = new Gauge({
      name: 'bluegreen_traffic_weight',
      help: 'Share of new traffic (0..100) per color',
      labelNames: ['color'],
      registers,
    })
    this.stateGeneration = new Gauge({
      name: 'bluegreen_state_generation',
      help: 'Generation of the routing state this replica serves',
      registers,
    })
    this.switches = new Counter({
      name: 'bluegreen_switches_total',
      help: 'Routing changes this replica applied, by what triggered them',
      labelNames: ['trigger'],
      registers,
    })
    this.invalidState = new Counter({
      name: 'bluegreen_state_invalid_total',
      help: 'Invalid states read from the state store and ignored',
      registers,
    })
    this.storeReachable = new Gauge({
      name: 'bluegreen_state_store_reachable',
      help: '1 while the state store answers, 0 while this replica serves its last state without it',
      registers,
      collect() {
        this.set(storeStatus()?.reachable === false ? 0 : 1)
      },
    })
    this.stateStaleness = new Gauge({
      name: 'bluegreen_state_staleness_seconds',
      help: 'Seconds since this replica last confirmed its state against the store',
      registers,
      collect() {
        const lastSyncAt = storeStatus()?.lastSyncAt
        this.set(lastSyncAt === undefined ? 0 : (Date.now() - lastSyncAt) / 1000)
      },
    })
    // Export the series from the start, so a dashboard's rate() has a zero to begin from.
    for (const trigger of ['admin', 'rollback', 'rollout']) this.switches.labels(trigger).inc(0)
  }

  /** Called with every state this replica applies. */
  applied(state: State, previous: State | undefined): void {
    for (const color of COLORS) {
      this.activeColor.labels(color).set(state.active === color ? 1 : 0)
      this.trafficWeight.labels(color).set(state.weights[color])
    }
    this.stateGeneration.set(state.generation)
    if (previous) this.switches.labels(triggerOf(state)).inc()
  }
}

/** The trigger label of a change: "admin", "rollback" or "rollout". */
export function triggerOf(state: State): string {
  return state.trigger ?? 'admin'
}
