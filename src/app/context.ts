// What the start-up steps in src/app.ts and src/app/ share: the context every step reads, and the core parts the
// others are built on.
import type { EventStream } from '../admin/event-stream.ts'
import type { SmokeGate } from '../admin/smoke-gate.ts'
import type { AuditTrail } from '../audit/audit.ts'
import type { ClusterLink } from '../cluster-worker.ts'
import type { Config } from '../config/types.ts'
import type { UpstreamHealth } from '../health/health.ts'
import type { Logger } from '../log.ts'
import type { Metrics } from '../metrics/registry.ts'
import type { RoutingTable } from '../routing/table.ts'
import type { UpstreamPools } from '../routing/upstream-pools.ts'
import type { StateStore } from '../state/store.ts'
import type { Closers } from './closers.ts'
import type { StateBackend } from './state-backend.ts'

/** What every step of the start-up reads. */
export interface Context {
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
export interface Core {
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
