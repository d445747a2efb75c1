import { afterEach, describe, expect, it } from 'vitest'
import { describeSeries, poolSeries, type SeriesSnapshot, TrafficSeries } from '../../src/metrics/series.ts'
import { emptyFigures, LATENCY_BOUNDS_MS, type WindowFigures } from '../../src/metrics/windows.ts'

// The console's charts: buckets per color, added up across replicas by start time, described as chart points.

function figures(requests: number, errors: number, latencyMs: number): WindowFigures {
  const sums = emptyFigures()
  sums.requests = requests
  sums.errors = errors
  sums.latency[LATENCY_BOUNDS_MS.findIndex((bound) => latencyMs <= bound)] = requests
  return sums
}

describe('TrafficSeries', () => {
  let series: TrafficSeries | undefined
  afterEach(() => series?.close())

  it('keeps each color apart, counts 5xx as errors, and leaves out colors without a request', () => {
    series = new TrafficSeries(5_000, 60_000)
    series.record('blue', 200, 3)
    series.record('blue', 503, 40)
    series.record('blue', 200, 3)
    const snapshot = series.snapshot()
    expect(snapshot.green).toEqual([])
    expect(snapshot.blue).toHaveLength(1)
    const [bucket] = snapshot.blue
    expect(bucket!.at % 5_000).toBe(0)
    expect(bucket!.figures.requests).toBe(3)
    expect(bucket!.figures.errors).toBe(1)
    expect(bucket!.figures.latency.reduce((sum, count) => sum + count, 0)).toBe(3)
  })

  it('gives copies: a snapshot does not move with later requests', () => {
    series = new TrafficSeries(5_000, 60_000)
    series.record('green', 200, 1)
    const snapshot = series.snapshot()
    series.record('green', 200, 1)
    expect(snapshot.green[0]!.figures.requests).toBe(1)
    expect(series.snapshot().green[0]!.figures.requests).toBe(2)
  })
})

describe('poolSeries', () => {
  it('adds up the buckets that start at the same time, and keeps the others, oldest first', () => {
    const a: SeriesSnapshot = { blue: [{ at: 10_000, figures: figures(4, 1, 2) }], green: [] }
    const b: SeriesSnapshot = {
      blue: [
        { at: 5_000, figures: figures(1, 0, 2) },
        { at: 10_000, figures: figures(6, 2, 2) },
      ],
      green: [{ at: 10_000, figures: figures(3, 0, 100) }],
    }
    const pooled = poolSeries([a, b])
    expect(pooled.blue.map((bucket) => [bucket.at, bucket.figures.requests, bucket.figures.errors])).toEqual([
      [5_000, 1, 0],
      [10_000, 10, 3],
    ])
    expect(pooled.green[0]!.figures.requests).toBe(3)
    // The inputs are left as they were.
    expect(a.blue[0]!.figures.requests).toBe(4)
  })
})

describe('describeSeries', () => {
  const stepMs = 5_000
  const now = 1_000_002_500 // half way through the bucket that starts at 1_000_000_000

  it('gives every bucket of the span as a point, empty ones as zeros, the current one over the seconds it has had', () => {
    const snapshot: SeriesSnapshot = {
      blue: [
        { at: 999_990_000, figures: figures(50, 5, 20) },
        { at: 1_000_000_000, figures: figures(10, 0, 20) },
      ],
      green: [],
    }
    const described = describeSeries(snapshot, { stepMs, spanMs: 60_000, windowMs: 30_000, now })
    expect(described.stepSeconds).toBe(5)
    const points = described.colors.blue.points
    expect(points).toHaveLength(12)
    expect(points.at(-1)).toMatchObject({ at: new Date(1_000_000_000).toISOString(), requests: 10, rps: 4 })
    expect(points.at(-3)).toMatchObject({ requests: 50, rps: 10, errorRatio: 0.1 })
    expect(points.at(-3)!.p99).toBeGreaterThanOrEqual(20)
    expect(points.at(-2)).toMatchObject({ requests: 0, rps: 0, errorRatio: 0, p99: 0 })
    expect(described.colors.green.points.every((point) => point.requests === 0)).toBe(true)
    // The window sums what the last 30 s saw: both buckets.
    expect(described.colors.blue.window).toMatchObject({ requests: 60, rps: 2, errorRatio: 0.0833 })
  })

  it('leaves out of the window the buckets older than it, and caps a p99 past the last bound at a minute', () => {
    const slow = emptyFigures()
    slow.requests = 1
    slow.latency[LATENCY_BOUNDS_MS.length - 1] = 1
    const snapshot: SeriesSnapshot = {
      blue: [
        { at: 999_900_000, figures: figures(7, 0, 1) },
        { at: 1_000_000_000, figures: slow },
      ],
      green: [],
    }
    const described = describeSeries(snapshot, { stepMs, spanMs: 300_000, windowMs: 10_000, now })
    expect(described.colors.blue.window.requests).toBe(1)
    expect(described.colors.blue.window.p99).toBe(60_000)
    expect(JSON.parse(JSON.stringify(described)).colors.blue.points.at(-1).p99).toBe(60_000)
  })
})
