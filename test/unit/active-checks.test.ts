import { afterEach, describe, expect, it } from 'vitest'
import type { Color } from '../../src/colors.ts'
import { buildConfig } from '../../src/config/schema.ts'
import type { HealthCheckConfig } from '../../src/config/types.ts'
import { ActiveChecks, CheckVerdict } from '../../src/health/active-checks.ts'
import { UpstreamHealth } from '../../src/health/health.ts'
import { silentLogger } from '../../src/log.ts'
import { Metrics } from '../../src/metrics/registry.ts'
import { createUpstreams, type Upstream } from '../../src/routing/upstream.ts'
import { UpstreamPools } from '../../src/routing/upstream-pools.ts'
import { eventually } from '../helpers/eventually.ts'
import { refusedUrl, startServer, type TestServer } from '../helpers/servers.ts'

describe('CheckVerdict', () => {
  it('starts healthy and goes out after unhealthyThreshold failures in a row', () => {
    const verdict = new CheckVerdict(2, 3)
    expect(verdict.healthy).toBe(true)
    expect(verdict.record(false)).toBe(false)
    expect(verdict.record(false)).toBe(false)
    expect(verdict.record(true)).toBe(false)
    expect(verdict.record(false)).toBe(false)
    expect(verdict.record(false)).toBe(false)
    expect(verdict.record(false)).toBe(true)
    expect(verdict.healthy).toBe(false)
    expect(verdict.run).toBe(3)
    expect(verdict.record(false)).toBe(false)
  })

  it('comes back after healthyThreshold passes in a row', () => {
    const verdict = new CheckVerdict(2, 1)
    verdict.record(false)
    expect(verdict.healthy).toBe(false)
    expect(verdict.record(true)).toBe(false)
    expect(verdict.record(false)).toBe(false)
    expect(verdict.record(true)).toBe(false)
    expect(verdict.record(true)).toBe(true)
    expect(verdict.healthy).toBe(true)
  })

  it('with thresholds of one, every check decides', () => {
    const verdict = new CheckVerdict(1, 1)
    expect(verdict.record(false)).toBe(true)
    expect(verdict.record(true)).toBe(true)
    expect(verdict.record(true)).toBe(false)
  })

  it('guards its thresholds', () => {
    expect(() => new CheckVerdict(0, 1)).toThrow(/healthyThreshold must be a positive integer/)
    expect(() => new CheckVerdict(1, 1.5)).toThrow(/unhealthyThreshold must be a positive integer/)
  })
})

/** An upstream whose health answer the test sets: a status, or 'hang' (never answers). */
interface Controlled {
  server: TestServer
  health: number | 'hang'
  checks: number
}

async function controlled(): Promise<Controlled> {
  const state: Controlled = { server: undefined as unknown as TestServer, health: 200, checks: 0 }
  state.server = await startServer((req, res) => {
    if (req.url !== '/health') {
      res.writeHead(200).end('traffic')
      return
    }
    state.checks++
    if (state.health === 'hang') return
    res.writeHead(state.health).end()
  })
  return state
}

const checkConfig = (extra: Partial<HealthCheckConfig> = {}): HealthCheckConfig => ({
  enabled: true,
  path: '/health',
  timeout: 150,
  interval: 100,
  healthyThreshold: 2,
  unhealthyThreshold: 2,
  ...extra,
})

describe('ActiveChecks', () => {
  const cleanups: (() => Promise<void>)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })

  function upstreamsFor(urls: string[]): Upstream[] {
    const config = buildConfig(
      { pools: { blue: { upstreams: urls }, green: { upstreams: [] } }, state: { path: '/tmp/unused' } },
      {},
    )
    const upstreams = createUpstreams(config.pools, config.proxy.timeouts).blue
    cleanups.push(async () => {
      await Promise.all(upstreams.map((upstream) => upstream.destroy()))
    })
    return upstreams
  }

  async function upstreamServer(): Promise<Controlled> {
    const upstream = await controlled()
    cleanups.push(() => upstream.server.close())
    return upstream
  }

  function checksFor(upstreams: Upstream[], config: HealthCheckConfig) {
    const verdicts: { index: number; healthy: boolean; why: string }[] = []
    const checks = new ActiveChecks(upstreams, config, (index, healthy, why) =>
      verdicts.push({ index, healthy, why }),
    )
    cleanups.push(() => checks.close())
    return { checks, verdicts }
  }

  it('takes a failing upstream out after unhealthyThreshold checks and brings it back after healthyThreshold', async () => {
    const good = await upstreamServer()
    const bad = await upstreamServer()
    const { checks, verdicts } = checksFor(upstreamsFor([good.server.url, bad.server.url]), checkConfig())
    checks.start()
    await eventually(() => good.checks >= 2 && bad.checks >= 2, { message: 'a few checks' })
    expect(checks.healthy(0)).toBe(true)
    expect(checks.healthy(1)).toBe(true)
    expect(checks.lastCheck(1)).toMatchObject({ up: true, detail: 'HTTP 200' })

    bad.health = 503
    await eventually(() => !checks.healthy(1), { message: 'the failing upstream to go out' })
    expect(verdicts).toEqual([
      { index: 1, healthy: false, why: '2 failed health checks in a row (last: HTTP 503)' },
    ])
    expect(checks.lastCheck(1)).toMatchObject({ up: false, detail: 'HTTP 503' })
    expect(checks.healthy(0)).toBe(true)

    // Anything below 500 proves a live server (the documented rule).
    bad.health = 404
    await eventually(() => checks.healthy(1), { message: 'the upstream to come back' })
    expect(verdicts[1]).toEqual({
      index: 1,
      healthy: true,
      why: '2 passing health checks in a row (HTTP 404)',
    })
  })

  it('a check that gets no answer within the timeout fails, and so does a refused connection', async () => {
    const hanging = await upstreamServer()
    hanging.health = 'hang'
    const refused = await refusedUrl()
    const { checks } = checksFor(
      upstreamsFor([hanging.server.url, refused]),
      checkConfig({ unhealthyThreshold: 1, timeout: 100 }),
    )
    checks.start()
    await eventually(() => !checks.healthy(0) && !checks.healthy(1), { message: 'both to go out' })
    expect(checks.lastCheck(0)).toMatchObject({ up: false, detail: 'no answer within 100 ms' })
    expect(checks.lastCheck(0)!.durationMs).toBeGreaterThanOrEqual(90)
    expect(checks.lastCheck(1)).toMatchObject({ up: false, detail: 'ECONNREFUSED' })
  })

  it('checks each upstream once at a time, about every interval', async () => {
    const upstream = await upstreamServer()
    const { checks } = checksFor(upstreamsFor([upstream.server.url]), checkConfig({ interval: 100 }))
    const startedAt = Date.now()
    checks.start()
    await eventually(() => upstream.checks >= 6, { message: 'six checks' })
    const elapsed = Date.now() - startedAt
    // Five intervals of 90..110 ms after a first check within 10 ms.
    expect(elapsed).toBeGreaterThanOrEqual(440)
    expect(elapsed).toBeLessThan(1_500)
  })

  it('close() aborts a check in flight, waits for it, and stops checking', async () => {
    const upstream = await upstreamServer()
    upstream.health = 'hang'
    const { checks, verdicts } = checksFor(
      upstreamsFor([upstream.server.url]),
      checkConfig({ timeout: 10_000, unhealthyThreshold: 1 }),
    )
    checks.start()
    await eventually(() => upstream.checks === 1, { message: 'a check in flight' })
    const closingAt = Date.now()
    await checks.close()
    expect(Date.now() - closingAt).toBeLessThan(1_000)
    // The aborted check is no verdict on the upstream.
    expect(checks.healthy(0)).toBe(true)
    expect(verdicts).toEqual([])
    const seen = upstream.checks
    await new Promise((resolve) => setTimeout(resolve, 250))
    expect(upstream.checks).toBe(seen)
  })

  it('enabled: false checks nothing and keeps every upstream healthy', async () => {
    const upstream = await upstreamServer()
    upstream.health = 500
    const { checks } = checksFor(upstreamsFor([upstream.server.url]), checkConfig({ enabled: false }))
    checks.start()
    expect(checks.enabled).toBe(false)
    await new Promise((resolve) => setTimeout(resolve, 250))
    expect(upstream.checks).toBe(0)
    expect(checks.healthy(0)).toBe(true)
    expect(checks.lastCheck(0)).toBeUndefined()
  })
})

describe('UpstreamHealth (active)', () => {
  it('reports checks in status(), sets the gauge and announces changes', async () => {
    const failing = await controlled()
    const passing = await controlled()
    const config = buildConfig(
      {
        pools: {
          blue: {
            upstreams: [passing.server.url, failing.server.url],
            healthCheck: { path: '/health', interval: 100, timeout: 150, unhealthyThreshold: 1 },
          },
          green: { upstreams: [] },
        },
        state: { path: '/tmp/unused' },
      },
      {},
    )
    const upstreams: Record<Color, Upstream[]> = createUpstreams(config.pools, config.proxy.timeouts)
    const metrics = new Metrics(() => undefined)
    const health = new UpstreamHealth({ upstreams, pools: config.pools, logger: silentLogger(), metrics })
    let changes = 0
    health.onChange(() => changes++)
    const gauge = async () => (await metrics.upstreamHealthy.get()).values.map((value) => value.value)
    try {
      expect(await gauge()).toEqual([1, 1])
      failing.health = 500
      health.start()
      await eventually(() => changes === 1, { message: 'the failing upstream to go out' })
      await eventually(() => health.status().blue[0]!.lastCheck, {
        message: 'a check of the passing upstream',
      })
      expect(health.isAvailable(upstreams.blue[1]!)).toBe(false)
      expect(health.isAvailable(upstreams.blue[0]!)).toBe(true)
      expect(await gauge()).toEqual([1, 0])
      const [up, down] = health.status().blue
      expect(up).toMatchObject({
        url: passing.server.url,
        available: true,
        condition: 'healthy',
        healthy: true,
      })
      expect(up!.lastCheck).toMatchObject({ up: true, detail: 'HTTP 200' })
      expect(down).toMatchObject({
        url: failing.server.url,
        available: false,
        condition: 'unhealthy',
        healthy: false,
        ejectedUntil: null,
        consecutiveFailures: 0,
      })
      expect(down!.lastCheck).toMatchObject({ up: false, detail: 'HTTP 500' })
      expect(Date.parse(down!.lastCheck!.at)).toBeGreaterThan(Date.now() - 5_000)
      expect(health.status().green).toEqual([])
    } finally {
      await health.close()
      await Promise.all(upstreams.blue.map((upstream) => upstream.destroy()))
      await failing.server.close()
      await passing.server.close()
    }
  })
})

describe('UpstreamHealth.replace (a reload)', () => {
  it('keeps an unhealthy upstream out when a reload keeps it, checks a new one, and forgets a removed one', async () => {
    const failing = await controlled()
    const passing = await controlled()
    const added = await controlled()
    const healthCheck = {
      path: '/health',
      interval: 100,
      timeout: 150,
      unhealthyThreshold: 1,
      healthyThreshold: 3,
    }
    const raw = (blue: string[]) =>
      buildConfig(
        {
          pools: { blue: { upstreams: blue, healthCheck }, green: { upstreams: [] } },
          state: { path: '/tmp/unused' },
        },
        {},
      )
    const before = raw([passing.server.url, failing.server.url])
    const pools = new UpstreamPools(before.pools, before.proxy.timeouts)
    const metrics = new Metrics(() => undefined)
    const health = new UpstreamHealth({
      upstreams: pools.current,
      pools: before.pools,
      logger: silentLogger(),
      metrics,
    })
    const series = async () =>
      (await metrics.upstreamHealthy.get()).values
        .map((value) => `${value.labels.upstream}=${value.value}`)
        .sort()
    try {
      failing.health = 500
      health.start()
      const [kept, goingOut] = pools.current.blue
      await eventually(() => !health.isAvailable(goingOut!), { message: 'the failing upstream to go out' })
      // The failing one stays; the passing one goes; a new one comes.
      const after = raw([failing.server.url, added.server.url])
      pools.replace(after.pools, after.proxy.timeouts)
      health.replace(pools.current, after.pools)
      const [stayed, fresh] = pools.current.blue
      expect(stayed).toBe(goingOut)
      expect(health.isAvailable(stayed!)).toBe(false)
      expect(health.isAvailable(fresh!)).toBe(true)
      expect(pools.retiring).toEqual([])
      expect(health.status().blue.map((upstream) => upstream.url)).toEqual([
        failing.server.url,
        added.server.url,
      ])
      expect(await series()).toEqual([`${added.server.url}=1`, `${failing.server.url}=0`].sort())
      // The new pool's checks run: the failing one comes back once it passes healthyThreshold checks.
      failing.health = 200
      await eventually(() => health.isAvailable(stayed!), {
        timeout: 5_000,
        message: 'the kept upstream back',
      })
      expect(kept!.dispatcher.closed).toBe(true)
    } finally {
      await health.close()
      await pools.destroy()
      for (const server of [failing, passing, added]) await server.server.close()
    }
  })
})
