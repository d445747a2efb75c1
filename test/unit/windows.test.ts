import { afterEach, describe, expect, it, vi } from 'vitest'
import type { RollbackConfig } from '../../src/config/types.ts'
import {
  addFigures,
  emptyFigures,
  errorRatio,
  LATENCY_BOUNDS_MS,
  quantile,
  SlidingWindows,
} from '../../src/metrics/windows.ts'
import { judge } from '../../src/rollout/judge.ts'

const config: RollbackConfig = {
  enabled: true,
  window: 10_000,
  watch: 60_000,
  evaluateEvery: 1_000,
  minRequests: 10,
  maxErrorRatio: 0.05,
  maxP99: 500,
  unavailableFor: 5_000,
}

describe('sliding windows', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('counts requests, errors and latency per color', () => {
    const windows = new SlidingWindows(10_000)
    for (let i = 0; i < 90; i++) windows.record('green', 200, 3)
    for (let i = 0; i < 10; i++) windows.record('green', 503, 900)
    windows.record('blue', 404, 1)
    const green = windows.figures('green')
    expect(green.requests).toBe(100)
    expect(green.errors).toBe(10)
    expect(errorRatio(green)).toBeCloseTo(0.1)
    // p99 falls among the slow ones; p50 among the fast ones. Bucket upper bounds: never an underestimate.
    expect(quantile(green, 0.99)).toBeGreaterThanOrEqual(900)
    expect(quantile(green, 0.5)).toBeGreaterThanOrEqual(3)
    expect(quantile(green, 0.5)).toBeLessThan(4)
    expect(windows.figures('blue')).toMatchObject({ requests: 1, errors: 0 })
    windows.close()
  })

  it('forgets what is older than the window, and can count from a moment on', () => {
    vi.useFakeTimers({ now: new Date('2026-01-01T00:00:00.000Z') })
    const windows = new SlidingWindows(3_000)
    windows.record('green', 500, 1)
    vi.advanceTimersByTime(2_000)
    windows.record('green', 200, 1)
    expect(windows.figures('green')).toMatchObject({ requests: 2, errors: 1 })
    // Only what happened from the second request's second on.
    expect(windows.figures('green', Date.now())).toMatchObject({ requests: 1, errors: 0 })
    vi.advanceTimersByTime(2_000)
    expect(windows.figures('green')).toMatchObject({ requests: 1, errors: 0 })
    // After a long pause (timers late, process asleep) everything has left the window.
    vi.setSystemTime(Date.now() + 60_000)
    expect(windows.figures('green').requests).toBe(0)
    windows.close()
  })

  it('adds figures from several replicas', () => {
    const a = emptyFigures()
    a.requests = 3
    a.errors = 1
    a.latency[0] = 3
    const b = emptyFigures()
    b.requests = 2
    b.latency[LATENCY_BOUNDS_MS.length - 1] = 2
    const total = addFigures(emptyFigures(), a)
    addFigures(total, b)
    expect(total).toMatchObject({ requests: 5, errors: 1 })
    expect(quantile(total, 0.99)).toBe(Number.POSITIVE_INFINITY)
    expect(quantile(emptyFigures(), 0.99)).toBe(0)
  })
})

describe('judge', () => {
  function figures(requests: number, errors: number, latencyMs: number) {
    const windows = new SlidingWindows(10_000)
    for (let i = 0; i < requests; i++) windows.record('green', i < errors ? 500 : 200, latencyMs)
    const result = windows.figures('green')
    windows.close()
    return result
  }

  it('is undecided below minRequests, whatever the errors, and says how many it has of how many it needs', () => {
    expect(judge(figures(9, 9, 1), config)).toEqual({ verdict: 'undecided', summary: '9 of 10 requests' })
    expect(judge(emptyFigures(), config)).toEqual({ verdict: 'undecided', summary: '0 of 10 requests' })
  })

  it('fails past the error ratio, and passes at it', () => {
    expect(judge(figures(100, 6, 1), config)).toMatchObject({
      verdict: 'failing',
      summary: expect.stringContaining('6.0% (6/100)'),
    })
    expect(judge(figures(100, 5, 1), config).verdict).toBe('healthy')
  })

  it('fails past the p99 limit, unless the limit is off', () => {
    expect(judge(figures(50, 0, 800), config).verdict).toBe('failing')
    expect(judge(figures(50, 0, 800), { ...config, maxP99: 0 }).verdict).toBe('healthy')
  })
})
