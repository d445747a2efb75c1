import { ReplicaWatch } from '../admin/replica-watch.ts'
import { Notifier } from '../notify/notifier.ts'
import type { Context, Core } from './context.ts'

/**
 * The replica watch (live `replica` events) and the notifier (it sends nothing while `notify` names no target; a
 * reload may add some). Built before the parts that make changes, so it closes after them: what they do while
 * closing is still sent, within a bound.
 */
export function startNotifications(context: Context, core: Core): Notifier {
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
