import type { Context, Core } from './context.ts'
import { ConfigReloader } from './reload.ts'
import type { ReloadTargets } from './reload-sections.ts'

/** The parts built after the core that a reload reconfigures. */
export type ReloadedParts = Pick<ReloadTargets, 'proxy' | 'admin' | 'guard' | 'notifier' | 'mirror'>

/**
 * The reloader over the running parts: it replaces the context's config when a reload applies. In a `--workers`
 * worker, a reload goes through the primary, which validates it once for every worker.
 */
export function startReloader(context: Context, core: Core, parts: ReloadedParts): ConfigReloader {
  const { cluster, logger } = context
  return new ConfigReloader({
    file: context.configFile,
    running: () => context.config,
    setRunning: (next) => {
      context.config = next
    },
    targets: {
      upstreams: core.upstreams,
      health: core.health,
      table: core.table,
      ...parts,
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
}
