import { Mirror } from '../proxy/mirror.ts'
import type { Context, Core } from './context.ts'

/** Copies of live requests to the idle color, compared with the live answers; closed after the proxy has drained. */
export function startMirror(context: Context, core: Core): Mirror {
  const mirror = new Mirror({
    config: context.config.mirror,
    logger: context.logger.child({ part: 'mirror' }),
    count: (result) => core.metrics.mirrorRequests.labels(result).inc(),
  })
  // With Redis its figures are published for the other replicas' GET /mirror and gate, and theirs read.
  mirror.exchange = core.backend.mirror
  mirror.exchange.start(() => mirror.snapshot())
  context.closers.add('mirror', () => mirror.close())
  return mirror
}
