import { StandbyWatch } from '../rollout/standby-watch.ts'
import type { Context, Core } from './context.ts'

/** The standby's fleet view and its live events; the registry is read as often as replicas heartbeat. */
export function startStandbyWatch(context: Context, core: Core): StandbyWatch {
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
