import { afterEach, describe, expect, it } from 'vitest'
import type { Color } from '../../src/colors.ts'
import { buildConfig } from '../../src/config/schema.ts'
import type { OutlierConfig } from '../../src/config/types.ts'
import { UpstreamHealth } from '../../src/health/health.ts'
import { maxEjectedFor, OutlierDetector } from '../../src/health/outlier.ts'
import { silentLogger } from '../../src/log.ts'
import type { RequestOutcome } from '../../src/proxy/http-forward.ts'
import { createUpstreams, type Upstream } from '../../src/routing/upstream.ts'
import { eventually } from '../helpers/eventually.ts'

// The detector is bookkeeping with the time passed in, so every rule is checked here without waiting. The
// UpstreamHealth cases use real Upstream objects (no connection is ever made: active checks are off).

const config = (extra: Partial<OutlierConfig> = {}): OutlierConfig => ({
  consecutiveFailures: 3,
  ejectionTime: 1_000,
  maxEjectionTime: 10_000,
  maxEjectedPercent: 100,
  ...extra,
})

/** Fails `index` `times` times at `now`; the last call's ejection, if any. */
function fail(detector: OutlierDetector, index: number, times: number, now: number) {
  let ejection: ReturnType<OutlierDetector['failure']>
  for (let i = 0; i < times; i++) ejection = detector.failure(index, now)
  return ejection
}

describe('maxEjectedFor', () => {
  it('rounds the share of the pool down, so a pool of one is only ever ejected at 100%', () => {
    expect(maxEjectedFor(1, 50)).toBe(0)
    expect(maxEjectedFor(1, 99)).toBe(0)
    expect(maxEjectedFor(1, 100)).toBe(1)
    expect(maxEjectedFor(2, 50)).toBe(1)
    expect(maxEjectedFor(3, 50)).toBe(1)
    expect(maxEjectedFor(4, 50)).toBe(2)
    expect(maxEjectedFor(10, 10)).toBe(1)
    expect(maxEjectedFor(9, 10)).toBe(0)
    expect(maxEjectedFor(5, 0)).toBe(0)
    expect(maxEjectedFor(0, 100)).toBe(0)
  })
})

describe('OutlierDetector', () => {
  it('ejects after the configured failures in a row, for ejectionTime', () => {
    const detector = new OutlierDetector(config(), 2)
    expect(fail(detector, 0, 2, 5_000)).toBeUndefined()
    expect(detector.ejectedUntil(0)).toBe(0)
    expect(detector.failure(0, 5_000)).toEqual({ until: 6_000, duration: 1_000, step: 1, failures: 3 })
    expect(detector.ejectedUntil(0)).toBe(6_000)
    expect(detector.ejectedCount).toBe(1)
    expect(detector.ejectedUntil(1)).toBe(0)
  })

  it('a success ends the run of failures', () => {
    const detector = new OutlierDetector(config(), 1)
    fail(detector, 0, 2, 0)
    detector.success(0)
    expect(detector.consecutiveFailures(0)).toBe(0)
    expect(fail(detector, 0, 2, 0)).toBeUndefined()
    expect(detector.failure(0, 0)).toBeDefined()
  })

  it('ignores failures while ejected (answers to requests sent before) and starts afresh when restored', () => {
    const detector = new OutlierDetector(config(), 1)
    fail(detector, 0, 3, 0)
    expect(fail(detector, 0, 10, 100)).toBeUndefined()
    expect(detector.ejectedUntil(0)).toBe(1_000)
    detector.restore(0, 1_000)
    expect(detector.ejectedCount).toBe(0)
    expect(detector.consecutiveFailures(0)).toBe(0)
    expect(fail(detector, 0, 2, 1_000)).toBeUndefined()
  })

  it('doubles the ejection each time the upstream is ejected again soon, up to maxEjectionTime', () => {
    const detector = new OutlierDetector(config({ maxEjectionTime: 5_000 }), 1)
    const durations: number[] = []
    const steps: number[] = []
    let now = 0
    for (let i = 0; i < 6; i++) {
      const ejection = fail(detector, 0, 3, now)!
      durations.push(ejection.duration)
      steps.push(ejection.step)
      now = ejection.until
      detector.restore(0, now)
    }
    expect(durations).toEqual([1_000, 2_000, 4_000, 5_000, 5_000, 5_000])
    expect(steps).toEqual([1, 2, 3, 4, 4, 4])
  })

  it('steps the backoff down by one for every ejectionTime spent back in service without an ejection', () => {
    const detector = new OutlierDetector(config(), 1)
    let now = 0
    for (let i = 0; i < 3; i++) {
      now = fail(detector, 0, 3, now)!.until
      detector.restore(0, now)
    }
    // Three ejections (1 s, 2 s, 4 s): the next would be 8 s. 1.5 ejectionTimes clean forgive one step.
    expect(fail(detector, 0, 3, now + 1_500)!.duration).toBe(4_000)
    now = now + 1_500 + 4_000
    detector.restore(0, now)
    // A long clean period forgives everything: back to the base ejection.
    expect(fail(detector, 0, 3, now + 60_000)!.duration).toBe(1_000)
  })

  it('with ejectionTime equal to maxEjectionTime every ejection lasts the same', () => {
    const detector = new OutlierDetector(config({ ejectionTime: 2_000, maxEjectionTime: 2_000 }), 1)
    let now = 0
    for (let i = 0; i < 3; i++) {
      const ejection = fail(detector, 0, 3, now)!
      expect(ejection.duration).toBe(2_000)
      now = ejection.until
      detector.restore(0, now)
    }
  })

  it('never ejects more than maxEjectedPercent of the pool; the next failure after a return ejects', () => {
    const detector = new OutlierDetector(config({ maxEjectedPercent: 50 }), 4)
    expect(detector.maxEjected).toBe(2)
    expect(fail(detector, 0, 3, 0)).toBeDefined()
    expect(fail(detector, 1, 3, 0)).toBeDefined()
    expect(fail(detector, 2, 3, 0)).toBeUndefined()
    expect(fail(detector, 3, 10, 0)).toBeUndefined()
    expect(detector.ejectedCount).toBe(2)
    detector.restore(0, 1_000)
    // Upstream 2 is still past its threshold: one more failure takes the freed place.
    expect(detector.failure(2, 1_000)).toBeDefined()
    expect(detector.ejectedCount).toBe(2)
    expect(detector.failure(3, 1_000)).toBeUndefined()
  })

  it('never ejects the only upstream of a pool below 100%, and does at 100%', () => {
    const half = new OutlierDetector(config({ maxEjectedPercent: 50 }), 1)
    expect(fail(half, 0, 100, 0)).toBeUndefined()
    const all = new OutlierDetector(config({ maxEjectedPercent: 100 }), 1)
    expect(fail(all, 0, 3, 0)).toBeDefined()
  })

  it('consecutiveFailures 0 turns detection off', () => {
    const detector = new OutlierDetector(config({ consecutiveFailures: 0 }), 2)
    expect(detector.enabled).toBe(false)
    expect(fail(detector, 0, 1_000, 0)).toBeUndefined()
    expect(detector.ejectedCount).toBe(0)
  })

  it('restore of an upstream in service changes nothing', () => {
    const detector = new OutlierDetector(config(), 2)
    detector.restore(0, 0)
    expect(detector.ejectedCount).toBe(0)
  })

  it('guards its construction', () => {
    expect(() => new OutlierDetector(config(), -1)).toThrow(/poolSize/)
    expect(() => new OutlierDetector(config({ ejectionTime: 5, maxEjectionTime: 4 }), 1)).toThrow(
      /maxEjectionTime/,
    )
  })
})

describe('UpstreamHealth (passive)', () => {
  const healths: UpstreamHealth[] = []
  const upstreamSets: Record<Color, Upstream[]>[] = []

  function healthFor(blue: string[], outlier: Partial<OutlierConfig> = {}) {
    const pool = { upstreams: blue, healthCheck: { enabled: false }, outlier }
    const built = buildConfig(
      { pools: { blue: pool, green: { upstreams: ['http://127.0.0.1:9'] } }, state: { path: '/tmp/unused' } },
      {},
    )
    const upstreams = createUpstreams(built.pools, built.proxy.timeouts)
    const health = new UpstreamHealth({ upstreams, pools: built.pools, logger: silentLogger() })
    healths.push(health)
    upstreamSets.push(upstreams)
    return { health, upstreams }
  }

  const outcome = (
    upstream: Upstream,
    status: number,
    extra: Partial<RequestOutcome> = {},
  ): RequestOutcome => ({
    color: upstream.color,
    upstream: upstream.url,
    method: 'GET',
    path: '/',
    status,
    durationMs: 1,
    ...extra,
  })

  afterEach(async () => {
    await Promise.all(healths.splice(0).map((health) => health.close()))
    for (const set of upstreamSets.splice(0)) {
      await Promise.all([...set.blue, ...set.green].map((upstream) => upstream.destroy()))
    }
  })

  it('counts 5xx answers and connection failures together, and announces the ejection once', async () => {
    const { health, upstreams } = healthFor(['http://127.0.0.1:1', 'http://127.0.0.1:2'], {
      consecutiveFailures: 3,
    })
    const [first, second] = upstreams.blue as [Upstream, Upstream]
    let changes = 0
    health.onChange(() => changes++)
    health.recordOutcome(outcome(first, 502))
    health.recordFailure(first, 'refused')
    expect(health.isAvailable(first)).toBe(true)
    health.recordOutcome(outcome(first, 500))
    expect(health.isAvailable(first)).toBe(false)
    expect(health.isAvailable(second)).toBe(true)
    expect(changes).toBe(0)
    await Promise.resolve()
    expect(changes).toBe(1)
    const [status] = health.status().blue
    expect(status).toMatchObject({
      url: 'http://127.0.0.1:1',
      available: false,
      condition: 'ejected',
      healthy: true,
      lastCheck: null,
    })
    expect(Date.parse(status!.ejectedUntil!)).toBeGreaterThan(Date.now())
  })

  it('leaves out outcomes that say nothing about the upstream: proxy errors already reported, 499', () => {
    const { health, upstreams } = healthFor(['http://127.0.0.1:1', 'http://127.0.0.1:2'], {
      consecutiveFailures: 2,
    })
    const upstream = upstreams.blue[0]!
    health.recordOutcome(outcome(upstream, 500))
    // The forwarder's own 502 after a failure it reported through recordFailure: not counted twice.
    health.recordOutcome(outcome(upstream, 502, { failure: 'refused', error: new Error('refused') }))
    health.recordOutcome(outcome(upstream, 499))
    health.recordOutcome(outcome(upstream, 400, { error: new Error('bad request') }))
    expect(health.status().blue[0]!.consecutiveFailures).toBe(1)
    expect(health.isAvailable(upstream)).toBe(true)
    health.recordOutcome(outcome(upstream, 200))
    expect(health.status().blue[0]!.consecutiveFailures).toBe(0)
  })

  it('comes back after the ejection time and says so', async () => {
    const { health, upstreams } = healthFor(['http://127.0.0.1:1', 'http://127.0.0.1:2'], {
      consecutiveFailures: 1,
      ejectionTime: 50,
    })
    const upstream = upstreams.blue[0]!
    let changes = 0
    health.onChange(() => changes++)
    health.recordFailure(upstream, 'reset')
    expect(health.isAvailable(upstream)).toBe(false)
    await eventually(() => health.isAvailable(upstream), { message: 'the ejection to end' })
    await Promise.resolve()
    expect(changes).toBe(2)
    expect(health.status().blue[0]).toMatchObject({
      available: true,
      condition: 'healthy',
      ejectedUntil: null,
    })
  })

  it('an unknown upstream counts as available and its outcomes are ignored', () => {
    const { health } = healthFor(['http://127.0.0.1:1'])
    const stranger = { color: 'blue', url: 'http://127.0.0.1:77' } as Upstream
    expect(health.isAvailable(stranger)).toBe(true)
    health.recordFailure(stranger, 'refused')
    health.recordOutcome(outcome(stranger, 500))
  })
})
