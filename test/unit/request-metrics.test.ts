import { AggregatorRegistry, Counter, Histogram, Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import type { Color } from '../../src/colors.ts'
import { DURATION_BUCKETS, RequestMetrics } from '../../src/metrics/request-metrics.ts'

/** The same two metrics as prom-client's own classes, fed the same requests: the text they expose is the oracle. */
function reference() {
  const registry = new Registry()
  const requests = new Counter({
    name: 'bluegreen_requests_total',
    help: 'Requests answered, by the color that served them and the status class (1xx..5xx)',
    labelNames: ['color', 'status_class'],
    registers: [registry],
  })
  const duration = new Histogram({
    name: 'bluegreen_request_duration_seconds',
    help: 'Time from the request reaching the proxy to its response ending, by color',
    labelNames: ['color'],
    buckets: [...DURATION_BUCKETS],
    registers: [registry],
  })
  for (const color of ['blue', 'green']) {
    for (const statusClass of ['1xx', '2xx', '3xx', '4xx', '5xx'])
      requests.inc({ color, status_class: statusClass }, 0)
    duration.zero({ color })
  }
  const record = (color: Color, status: number, seconds: number) => {
    const statusClass = `${Math.min(Math.max(Math.floor(status / 100), 1), 5)}xx`
    requests.inc({ color, status_class: statusClass })
    duration.observe({ color }, seconds)
  }
  return { registry, record }
}

// Every bucket edge exactly, just above it, zero, beyond the last bucket; statuses of every class, 499 and 0.
const REQUESTS: [Color, number, number][] = [
  ...DURATION_BUCKETS.flatMap((bound): [Color, number, number][] => [
    ['blue', 200, bound],
    ['green', 503, bound * 1.0001],
  ]),
  ['blue', 101, 0],
  ['blue', 304, 0.0004],
  ['green', 499, 12.5],
  ['green', 404, 0.003],
  ['blue', 0, 0.2],
  ['green', 200, 0.0099],
]

describe('RequestMetrics', () => {
  it('exposes exactly what prom-client Counter and Histogram would, for every bucket edge and status class', async () => {
    const ours = new Registry()
    const metrics = new RequestMetrics(ours)
    const theirs = reference()
    expect(await ours.metrics()).toBe(await theirs.registry.metrics())
    for (const [color, status, seconds] of REQUESTS) {
      metrics.record(color, status, seconds)
      theirs.record(color, status, seconds)
    }
    expect(await ours.metrics()).toBe(await theirs.registry.metrics())
    expect(await ours.metrics()).toContain('bluegreen_requests_total{color="green",status_class="4xx"} 2')
  })

  it('adds up across workers through the cluster aggregator like prom-client metrics', async () => {
    const workers = [new Registry(), new Registry()]
    const metrics = workers.map((registry) => new RequestMetrics(registry))
    const theirs = reference()
    REQUESTS.forEach(([color, status, seconds], index) => {
      metrics[index % 2]!.record(color, status, seconds)
      theirs.record(color, status, seconds)
    })
    const aggregated = AggregatorRegistry.aggregate(
      await Promise.all(workers.map((registry) => registry.getMetricsAsJSON())),
    )
    expect(await aggregated.metrics()).toBe(await theirs.registry.metrics())
  })

  it('starts again from zero when the registry is reset', async () => {
    const registry = new Registry()
    const metrics = new RequestMetrics(registry)
    metrics.record('blue', 200, 0.01)
    registry.resetMetrics()
    expect(await registry.metrics()).toBe(await reference().registry.metrics())
  })
})
