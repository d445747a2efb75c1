import { Mirror } from '../proxy/mirror.ts'
import type { Context, Core } from './context.ts'
import { SERIES_STEP_MS } from './state-backend.ts'

/** Copies of live requests to the idle color, compared with the live answers; closed after the proxy has drained. */
export function startMirror(context: Context, core: Core): Mirror {
  const mirror = new Mirror({
    config: context.config.mirror,
    logger: context.logger.child({ part: 'mirror' }),
    count: (result) => core.metrics.mirrorRequests.labels(result).inc(),
  })
  // Its figures are pooled for GET /mirror and the gate: with Redis across replicas; workers sharing a state file
  // through the primary, as the charts are.
  const { cluster, config } = context
  const throughPrimary = cluster && config.state.store === 'file'
  mirror.exchange = throughPrimary ? cluster.mirrorExchange(SERIES_STEP_MS) : core.backend.mirror
  mirror.exchange.start(() => mirror.snapshot())
  context.closers.add('mirror', async () => {
    await mirror.close()
    // The backend's own exchange closes with the backend.
    if (throughPrimary) await mirror.exchange.close()
  })
  return mirror
}
