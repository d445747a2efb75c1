import type { Logger } from '../log.ts'
import type { DrainStatus } from '../proxy/drain.ts'
import type { Mirror } from '../proxy/mirror.ts'
import type { ProxyListener } from '../proxy/server.ts'
import type { ReleaseGuard } from '../rollout/release-guard.ts'
import type { StandbyWatch } from '../rollout/standby-watch.ts'
import type { ReplicaDrain } from '../state/standby.ts'
import type { State } from '../state/state.ts'
import type { Context, Core } from './context.ts'

/** The parts told of each state the routing table applies, besides the live events (src/app.ts startCore). */
export interface AppliedStateParts {
  proxy: ProxyListener
  guard: ReleaseGuard
  mirror: Mirror
  standby: StandbyWatch
}

/** Tells every part of each state applied, in this order: metrics, mirror, guard, drain, registry, standby, log. */
export function followAppliedStates(context: Context, core: Core, parts: AppliedStateParts): void {
  const { proxy, guard, mirror, standby } = parts
  core.table.onApplied((state, previous) => {
    core.metrics.applied(state, previous)
    mirror.stateApplied(state)
    guard.stateApplied(previous, state)
    // The first state drains nothing.
    if (previous) proxy.stateApplied(previous, state)
    core.backend.replicas.report(state.generation)
    if (!previous) core.backend.replicas.reportDrain(replicaDrain(proxy.drainStatus()))
    standby.stateApplied(previous, state)
    logApplied(context.logger, state, previous)
  })
}

/** What the registry shares of this replica's drain. */
export function replicaDrain(status: DrainStatus): ReplicaDrain {
  const { draining } = status
  return draining ? { color: draining.color, since: draining.since, drainedAt: draining.drainedAt } : null
}

/** A `state` live event: what this replica now routes by, and what it replaced. */
export function liveState(state: State, previous: State | undefined): unknown {
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
