import type { Metric, Registry } from 'prom-client'
import { COLORS, type Color } from '../colors.ts'

/** Upper bounds of the request-duration buckets, in seconds: from 1 ms (a proxied cache hit) to 10 s. */
export const DURATION_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const

/** One exported sample, in the shape prom-client's registries (and its cluster aggregator) read. */
interface Sample {
  labels: Record<string, string | number>
  value: number
  metricName?: string
}

/** What prom-client's Registry asks of a metric: its text comes from `get()`. */
interface Collector {
  name: string
  help: string
  type: 'counter' | 'histogram'
  aggregator: 'sum'
  get(): MetricData
  reset(): void
}

interface MetricData {
  name: string
  help: string
  type: 'counter' | 'histogram'
  aggregator: 'sum'
  values: Sample[]
}

/** Per color: counts by status class, then the non-cumulative bucket counts (the last is above 10 s), sum, count. */
const CLASS_SLOTS = STATUS_CLASSES.length
const BUCKET_SLOTS = DURATION_BUCKETS.length + 1
const SUM = CLASS_SLOTS + BUCKET_SLOTS
const COUNT = SUM + 1

/**
 * `bluegreen_requests_total` and `bluegreen_request_duration_seconds`: the two metrics every request touches.
 *
 * prom-client's Counter and Histogram look their series up by a string built from the labels on every call
 * (label objects, validation, a hash), about a microsecond a request; measured, a tenth of what the proxy adds
 * over a bare undici pass-through. Here a request adds to numbers in a typed array, and the samples are built only
 * when Prometheus scrapes, in the shape prom-client's own metrics produce, so the registry, its text format and
 * the cluster aggregator treat them like any other metric.
 */
export class RequestMetrics {
  readonly #slots: Record<Color, Float64Array> = {
    blue: new Float64Array(COUNT + 1),
    green: new Float64Array(COUNT + 1),
  }

  constructor(registry: Registry) {
    // Not a prom-client class, so typed loosely here; the registry only calls get() and reset().
    registry.registerMetric(this.#counter() as unknown as Metric)
    registry.registerMetric(this.#histogram() as unknown as Metric)
  }

  /** One request, on the hot path. A client that went away first (499) is counted as 4xx. */
  record(color: Color, status: number, seconds: number): void {
    const slots = this.#slots[color]
    slots[Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1]!++
    let bucket = 0
    while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]!) bucket++
    slots[CLASS_SLOTS + bucket]!++
    slots[SUM]! += seconds
    slots[COUNT]!++
  }

  #counter(): Collector {
    const data = (): MetricData => {
      const values: Sample[] = []
      for (const color of COLORS) {
        STATUS_CLASSES.forEach((statusClass, index) => {
          values.push({ labels: { color, status_class: statusClass }, value: this.#slots[color][index]! })
        })
      }
      return { ...meta, values }
    }
    const meta = {
      name: 'bluegreen_requests_total',
      help: 'Requests answered, by the color that served them and the status class (1xx..5xx)',
      type: 'counter' as const,
      aggregator: 'sum' as const,
    }
    return { ...meta, get: data, reset: () => this.#reset() }
  }

  #histogram(): Collector {
    const name = 'bluegreen_request_duration_seconds'
    const meta = {
      name,
      help: 'Time from the request reaching the proxy to its response ending, by color',
      type: 'histogram' as const,
      aggregator: 'sum' as const,
    }
    const data = (): MetricData => {
      const values: Sample[] = []
      for (const color of COLORS) {
        const slots = this.#slots[color]
        let cumulative = 0
        DURATION_BUCKETS.forEach((upperBound, index) => {
          cumulative += slots[CLASS_SLOTS + index]!
          values.push({ labels: { le: upperBound, color }, value: cumulative, metricName: `${name}_bucket` })
        })
        values.push(
          { labels: { le: '+Inf', color }, value: slots[COUNT]!, metricName: `${name}_bucket` },
          { labels: { color }, value: slots[SUM]!, metricName: `${name}_sum` },
          { labels: { color }, value: slots[COUNT]!, metricName: `${name}_count` },
        )
      }
      return { ...meta, values }
    }
    return { ...meta, get: data, reset: () => this.#reset() }
  }

  #reset(): void {
    for (const color of COLORS) this.#slots[color].fill(0)
  }
}
