import { COLORS, type Color } from '../colors.ts'
import { addFigures, bucketOf, emptyFigures, errorRatio, quantile, type WindowFigures } from './windows.ts'

// The console's charts: per color, requests, errors and latency in buckets of a few seconds over the last minutes.
// Like the rollback windows, recording is a few increments at the current bucket, which a one-second timer
// advances, so the request path reads no clock. Buckets start at multiples of the step since the epoch, so the
// buckets of every replica line up and can be added up.

/** One bucket of one color: when it starts (ms since the epoch) and its sums. */
export interface SeriesBucket {
  at: number
  figures: WindowFigures
}

/** Every non-empty bucket of the span, oldest first, per color. */
export type SeriesSnapshot = Record<Color, SeriesBucket[]>

export class TrafficSeries {
  readonly stepMs: number
  readonly spanMs: number
  readonly #slots: number
  readonly #figures: Record<Color, WindowFigures[]>
  /** The start of the bucket each slot holds, so a slot from a lap ago reads as old. */
  readonly #starts: number[]
  readonly #timer: NodeJS.Timeout
  #slot = 0

  constructor(stepMs: number, spanMs: number) {
    this.stepMs = stepMs
    this.spanMs = spanMs
    this.#slots = Math.ceil(spanMs / stepMs) + 1
    const empty = () => Array.from({ length: this.#slots }, emptyFigures)
    this.#figures = { blue: empty(), green: empty() }
    this.#starts = new Array<number>(this.#slots).fill(-1)
    this.#starts[0] = this.#bucketStart(Date.now())
    this.#timer = setInterval(() => this.#advance(), 1000)
    this.#timer.unref()
  }

  /** One finished request. Hot path. */
  record(color: Color, status: number, durationMs: number): void {
    const figures = this.#figures[color][this.#slot]!
    figures.requests++
    if (status >= 500) figures.errors++
    figures.latency[bucketOf(durationMs)]!++
  }

  /** Copies of the buckets within the span that saw a request. */
  snapshot(): SeriesSnapshot {
    this.#advance()
    const oldest = this.#starts[this.#slot]! - this.spanMs
    const snapshot: SeriesSnapshot = { blue: [], green: [] }
    for (const color of COLORS) {
      for (let slot = 0; slot < this.#slots; slot++) {
        const at = this.#starts[slot]!
        const figures = this.#figures[color][slot]!
        if (at < oldest || figures.requests === 0) continue
        snapshot[color].push({ at, figures: addFigures(emptyFigures(), figures) })
      }
      snapshot[color].sort((a, b) => a.at - b.at)
    }
    return snapshot
  }

  close(): void {
    clearInterval(this.#timer)
  }

  #bucketStart(ms: number): number {
    return Math.floor(ms / this.stepMs) * this.stepMs
  }

  #advance(): void {
    const start = this.#bucketStart(Date.now())
    const current = this.#starts[this.#slot]!
    if (start <= current) return
    // At most one lap of slots needs clearing, however long the process slept.
    const steps = Math.min((start - current) / this.stepMs, this.#slots)
    for (let i = 0; i < steps; i++) {
      this.#slot = (this.#slot + 1) % this.#slots
      this.#starts[this.#slot] = start - (steps - 1 - i) * this.stepMs
      for (const color of COLORS) this.#figures[color][this.#slot] = emptyFigures()
    }
  }
}

/** Several replicas' snapshots added up, bucket by bucket. */
export function poolSeries(snapshots: readonly SeriesSnapshot[]): SeriesSnapshot {
  const pooled: SeriesSnapshot = { blue: [], green: [] }
  for (const color of COLORS) {
    const byStart = new Map<number, WindowFigures>()
    for (const snapshot of snapshots) {
      for (const bucket of snapshot[color] ?? []) {
        const sum = byStart.get(bucket.at) ?? emptyFigures()
        byStart.set(bucket.at, addFigures(sum, bucket.figures))
      }
    }
    pooled[color] = [...byStart].sort(([a], [b]) => a - b).map(([at, figures]) => ({ at, figures }))
  }
  return pooled
}

/** One point of a chart: a bucket's requests per second, error ratio and p99 (ms). */
export interface SeriesPoint {
  at: string
  requests: number
  rps: number
  errorRatio: number
  p99: number
}

export interface DescribedSeries {
  stepSeconds: number
  spanSeconds: number
  /** Per color: every bucket of the span (empty ones as zeros), oldest first, and the sums over `windowMs`. */
  colors: Record<Color, { points: SeriesPoint[]; window: Omit<SeriesPoint, 'at'> }>
}

/**
 * What GET /windows answers: every bucket of the span as a chart point, the current one (still filling) counted
 * over the seconds it has had, and the figures over the last `windowMs` as the release guard judges them.
 */
export function describeSeries(
  snapshot: SeriesSnapshot,
  options: { stepMs: number; spanMs: number; windowMs: number; now: number },
): DescribedSeries {
  const { stepMs, spanMs, windowMs, now } = options
  const current = Math.floor(now / stepMs) * stepMs
  const first = current - Math.ceil(spanMs / stepMs) * stepMs + stepMs
  const colors = {} as DescribedSeries['colors']
  for (const color of COLORS) {
    const byStart = new Map((snapshot[color] ?? []).map((bucket) => [bucket.at, bucket.figures]))
    const points: SeriesPoint[] = []
    for (let at = first; at <= current; at += stepMs) {
      const seconds = at === current ? Math.max(1, (now - at) / 1000) : stepMs / 1000
      points.push({ at: new Date(at).toISOString(), ...pointOf(byStart.get(at) ?? emptyFigures(), seconds) })
    }
    const inWindow = emptyFigures()
    for (const [at, figures] of byStart) if (at + stepMs > now - windowMs) addFigures(inWindow, figures)
    colors[color] = { points, window: pointOf(inWindow, windowMs / 1000) }
  }
  return { stepSeconds: stepMs / 1000, spanSeconds: spanMs / 1000, colors }
}

function pointOf(figures: WindowFigures, seconds: number): Omit<SeriesPoint, 'at'> {
  return {
    requests: figures.requests,
    rps: Math.round((figures.requests / seconds) * 100) / 100,
    errorRatio: Math.round(errorRatio(figures) * 10_000) / 10_000,
    // Past the last bound (a minute) there is no upper bound to give: a minute it is, which any threshold flags.
    p99: Math.min(quantile(figures, 0.99), 60_000),
  }
}
