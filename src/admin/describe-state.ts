import type { RoutingSnapshot } from '../routing/snapshot.ts'
import type { StandbyView } from '../state/standby.ts'
import type { State } from '../state/state.ts'
import type { StateStore } from '../state/store.ts'
import type { ChangeResult } from './changes.ts'
import type { EventStream } from './event-stream.ts'

// The state as the admin API answers it (GET /state and every change): the record, then this replica's view of it:
// what it applied, its store, drain, health, what the release guard watches, the standby fleet view.

/** What the description reads from the rest of the app (part of the admin server's options). */
export interface StateSources {
  replicaId: string
  store: StateStore
  snapshot: () => RoutingSnapshot | undefined
  /** What is still open per color and how the last drained color is doing, for GET /state. */
  drainStatus?: () => unknown
  /** Per color, each upstream's health (active checks, ejections). */
  healthStatus?: () => unknown
  /** What the release guard is watching for an automatic rollback, if anything. */
  watchStatus?: () => unknown
  /** How the release guard judges the running rollout's step, and what a held step waits for. */
  rolloutStepStatus?: () => unknown
  /** The fleet view of the color on standby, or null when none is. */
  standbyStatus?: () => Promise<StandbyView | null>
  /** This replica's live events, for GET /events/stream. */
  events?: EventStream
}

/** A change's answer: the state described, whether it changed, and how the wait for the replicas went. */
export async function describeChange(sources: StateSources, result: ChangeResult): Promise<unknown> {
  const described = { ...((await describeState(sources, result.state)) as object), changed: result.changed }
  if (!result.wait) return described
  const { complete, pending, replicas, missing } = result.wait
  const late = new Set(pending.map((replica) => replica.id))
  // `replicas` stays a count of the live ones (as it always was); `applied` names those that have the change.
  const applied = replicas.filter((replica) => !late.has(replica.id)).map((replica) => replica.id)
  return { ...described, wait: { complete, pending, replicas: replicas.length, applied, missing } }
}

/** GET /state: the state this replica serves or was answered, and this replica's view of it. */
export async function describeState(sources: StateSources, state: State): Promise<unknown> {
  const applied = sources.snapshot()?.state.generation ?? null
  const status = sources.store.status?.()
  // stale: what this replica serves is not confirmed by its store right now (it does not answer, or the state
  // came from the replica's local copy at start-up).
  const store = status
    ? {
        reachable: status.reachable,
        lastSyncAt: status.lastSyncAt === undefined ? null : new Date(status.lastSyncAt).toISOString(),
        staleSeconds: status.lastSyncAt === undefined ? null : (Date.now() - status.lastSyncAt) / 1000,
        stale: !status.reachable || status.restoredFrom !== undefined,
        ...(status.restoredFrom === undefined ? {} : { restoredFrom: status.restoredFrom }),
      }
    : { reachable: true, lastSyncAt: null, staleSeconds: 0, stale: false }
  const drain = sources.drainStatus?.()
  const health = sources.healthStatus?.()
  const watching = sources.watchStatus?.() ?? null
  const rolloutStep = sources.rolloutStepStatus?.() ?? null
  // The view is of the state this replica serves; a change answered before it applied it has the record only.
  const applying = sources.snapshot()?.state.generation === state.generation
  const standby = applying ? ((await sources.standbyStatus?.()) ?? null) : null
  // The contract's order first, then what was added to it.
  const { active, weights, generation, updatedAt, updatedBy, reason, trigger, rollout, mirror } = state
  return {
    active,
    weights,
    generation,
    updatedAt,
    updatedBy,
    reason,
    trigger: trigger ?? 'admin',
    ...(rollout ? { rollout } : {}),
    standby,
    ...(mirror ? { mirror } : {}),
    replica: {
      id: sources.replicaId,
      appliedGeneration: applied,
      store,
      drain,
      health,
      watching,
      rolloutStep,
      eventStreams: sources.events?.clients ?? 0,
    },
  }
}
