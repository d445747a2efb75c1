import { describeSeries, type SeriesSnapshot, TrafficSeries } from '../metrics/series.ts'
import type { SeriesExchange } from '../metrics/series-exchange.ts'
import type { Context, Core } from './context.ts'
import { SERIES_STEP_MS } from './state-backend.ts'

export interface Charts {
  series: TrafficSeries
  exchange: SeriesExchange
}

/** The charts' figures as GET /windows answers them: pooled, or this replica's own and why. */
interface Pooled {
  series: SeriesSnapshot
  replicas: number
  problem?: string
}

/** How far back the console's charts go. */
const CHART_SPAN_MS = 5 * 60_000

/** The console's charts: this replica's figures, published for the others with Redis. */
export function startCharts(context: Context, core: Core): Charts {
  const series = new TrafficSeries(SERIES_STEP_MS, CHART_SPAN_MS)
  // Workers sharing a state file pool their charts through the primary; with Redis they meet in Redis.
  const { cluster, config } = context
  const throughPrimary = cluster && config.state.store === 'file'
  const exchange = throughPrimary ? cluster.seriesExchange(SERIES_STEP_MS) : core.backend.series
  exchange.start(() => series.snapshot())
  context.closers.add('charts', async () => {
    series.close()
    // The backend's own exchange closes with the backend.
    if (throughPrimary) await exchange.close()
  })
  return { series, exchange }
}

/** GET /windows: the charts' figures pooled across replicas, described as points, with the rollback thresholds. */
export function chartFigures(context: Context, { series, exchange }: Charts): () => Promise<unknown> {
  return async () => {
    // Read at each call: a reload may have changed the thresholds.
    const { enabled, window, maxErrorRatio, maxP99, minRequests } = context.config.rollback
    const local = series.snapshot()
    // Without Redis the charts still show this replica's own traffic, saying that is all they show.
    const {
      series: pooled,
      replicas,
      problem,
    }: Pooled = await exchange.pooled(local).catch((error: unknown) => ({
      series: local,
      replicas: 1,
      problem: `only this replica's figures: cannot read the others' (${(error as Error).message})`,
    }))
    const described = describeSeries(pooled, {
      stepMs: series.stepMs,
      spanMs: series.spanMs,
      windowMs: window,
      now: Date.now(),
    })
    const thresholds = { enabled, windowSeconds: window / 1000, maxErrorRatio, maxP99, minRequests }
    return { ...described, replicas, ...(problem ? { problem } : {}), thresholds }
  }
}
