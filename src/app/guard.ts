import { SlidingWindows } from '../metrics/windows.ts'
import { exchangeFreshness } from '../rollout/exchange.ts'
import { ReleaseGuard } from '../rollout/release-guard.ts'
import type { Context, Core } from './context.ts'

/**
 * The rollback windows (every finished request's figures, per color) and the release guard that reads them: it
 * watches each change and drives rollouts, with the smoke checks before a step or a rollback when configured.
 */
export function startGuard(context: Context, core: Core): { windows: SlidingWindows; guard: ReleaseGuard } {
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
