import { afterEach, describe, expect, it } from 'vitest'
import { eventually } from '../helpers/eventually.ts'
import { refusedUrl, startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// Active health checks and passive outlier detection, through the whole proxy: real upstreams whose health and
// traffic answers the test switches, the proxy's own traffic and its /metrics and /readyz as the evidence.

/** An upstream answering `traffic` to requests and `health` to GET /health ('hang': never answers). */
interface Controlled {
  name: string
  url: string
  server: TestServer
  health: number | 'hang'
  traffic: number
}

async function controlled(name: string): Promise<Controlled> {
  const upstream = { name, health: 200, traffic: 200 } as Controlled
  upstream.server = await startServer((req, res) => {
    if (req.url === '/health') {
      if (upstream.health !== 'hang') res.writeHead(upstream.health).end()
      return
    }
    res.writeHead(upstream.traffic, { 'content-type': 'application/json' }).end(JSON.stringify({ name }))
  })
  upstream.url = upstream.server.url
  return upstream
}

interface Answer {
  status: number
  name: string | undefined
  code: string | undefined
  at: number
}

async function get(proxy: TestProxy, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(`${proxy.url}/work`, { headers })
  const body = (await response.json()) as { name?: string; error?: { code: string } }
  return { status: response.status, name: body.name, code: body.error?.code, at: performance.now() }
}

async function names(proxy: TestProxy, count: number): Promise<Set<string | undefined>> {
  const seen = new Set<string | undefined>()
  for (let i = 0; i < count; i++) seen.add((await get(proxy)).name)
  return seen
}

async function metricsText(proxy: TestProxy): Promise<string> {
  return (await fetch(`${proxy.admin}/metrics`)).text()
}

/** bluegreen_upstream_healthy for one upstream, read from the exposition. */
async function healthyGauge(proxy: TestProxy, color: string, url: string): Promise<number | undefined> {
  const line = (await metricsText(proxy))
    .split('\n')
    .find((entry) => entry.startsWith(`bluegreen_upstream_healthy{color="${color}",upstream="${url}"} `))
  return line === undefined ? undefined : Number(line.split(' ').at(-1))
}

const noOutlier = { consecutiveFailures: 0 }
const noChecks = { enabled: false }

describe('upstream health', () => {
  const proxies: TestProxy[] = []
  const upstreams: Controlled[] = []

  async function upstream(name: string): Promise<Controlled> {
    const created = await controlled(name)
    upstreams.push(created)
    return created
  }

  async function proxyWith(pools: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    const proxy = await startProxy({ blue: [], green: [] }, { pools, ...extra })
    proxies.push(proxy)
    return proxy
  }

  afterEach(async () => {
    await Promise.all(proxies.splice(0).map((proxy) => proxy.close()))
    await Promise.all(upstreams.splice(0).map((created) => created.server.close()))
  })

  describe('active checks', () => {
    const healthCheck = { path: '/health', interval: '100ms', timeout: '200ms', unhealthyThreshold: 2 }

    it('take an upstream failing its check out of traffic and bring it back when it recovers', async () => {
      const [a, b, c, green] = await Promise.all(['a', 'b', 'c', 'green'].map(upstream))
      const proxy = await proxyWith({
        blue: { upstreams: [a!.url, b!.url, c!.url], healthCheck, outlier: noOutlier },
        green: { upstreams: [green!.url], healthCheck, outlier: noOutlier },
      })
      expect(await names(proxy, 12)).toEqual(new Set(['a', 'b', 'c']))
      for (const each of [a!, b!, c!]) expect(await healthyGauge(proxy, 'blue', each.url)).toBe(1)

      b!.health = 503
      c!.health = 'hang'
      await eventually(async () => (await healthyGauge(proxy, 'blue', b!.url)) === 0, {
        message: 'b to be taken out',
      })
      await eventually(async () => (await healthyGauge(proxy, 'blue', c!.url)) === 0, {
        message: 'c (no answer) to be taken out',
      })
      expect(await healthyGauge(proxy, 'blue', a!.url)).toBe(1)
      expect(await names(proxy, 20)).toEqual(new Set(['a']))

      b!.health = 200
      c!.health = 404
      await eventually(async () => (await healthyGauge(proxy, 'blue', b!.url)) === 1, {
        message: 'b to come back',
      })
      await eventually(async () => (await healthyGauge(proxy, 'blue', c!.url)) === 1, {
        message: 'c to come back (404 is a live server)',
      })
      expect(await names(proxy, 12)).toEqual(new Set(['a', 'b', 'c']))
    })

    it('a pool with no upstream passing its checks answers 503 BG_NO_HEALTHY_UPSTREAM, and /readyz fails', async () => {
      const [a, b, green] = await Promise.all(['a', 'b', 'green'].map(upstream))
      const fast = { ...healthCheck, unhealthyThreshold: 1, healthyThreshold: 1 }
      const proxy = await proxyWith({
        blue: { upstreams: [a!.url, b!.url], healthCheck: fast, outlier: noOutlier },
        green: { upstreams: [green!.url], healthCheck: fast, outlier: noOutlier },
      })
      expect((await fetch(`${proxy.admin}/readyz`)).status).toBe(200)

      a!.health = 500
      b!.health = 500
      const refused = await eventually(
        async () => {
          const response = await fetch(`${proxy.url}/work`)
          return response.status === 503 ? response : undefined
        },
        { message: 'the blue pool to have no upstream' },
      )
      expect(refused.headers.get('x-bluegreen-color')).toBe('blue')
      expect(await refused.json()).toEqual({
        error: { code: 'BG_NO_HEALTHY_UPSTREAM', message: expect.any(String) },
      })
      const ready = await fetch(`${proxy.admin}/readyz`)
      expect(ready.status).toBe(503)
      expect(await ready.json()).toEqual({
        ready: false,
        reasons: ['the active pool (blue) has no healthy upstream'],
      })

      b!.health = 200
      await eventually(async () => (await get(proxy)).status === 200, { message: 'b to serve again' })
      expect(await names(proxy, 6)).toEqual(new Set(['b']))
      expect((await fetch(`${proxy.admin}/readyz`)).status).toBe(200)
    })
  })

  describe('passive outlier detection', () => {
    it('ejects an upstream answering 500s after N in a row, for ejectionTime, doubling on a repeat', async () => {
      const [a, b, green] = await Promise.all(['a', 'b', 'green'].map(upstream))
      const outlier = {
        consecutiveFailures: 3,
        ejectionTime: '400ms',
        maxEjectionTime: '10s',
        maxEjectedPercent: 50,
      }
      const proxy = await proxyWith({
        blue: { upstreams: [a!.url, b!.url], healthCheck: noChecks, outlier },
        green: { upstreams: [green!.url], healthCheck: noChecks },
      })
      b!.traffic = 500

      /** Sends requests until b has answered three 500s in a row (`run` of them seen already): its ejection. */
      const untilEjected = async (run: number): Promise<number> => {
        for (;;) {
          const answer = await get(proxy)
          if (answer.name !== 'b') continue
          expect(answer.status).toBe(500)
          if (++run === 3) return answer.at
        }
      }
      /** Sends requests (answered by a meanwhile) until one reaches b again. */
      const untilBack = async (): Promise<number> => {
        for (;;) {
          const answer = await get(proxy)
          if (answer.name === 'b') return answer.at
          expect(answer).toMatchObject({ status: 200, name: 'a' })
        }
      }

      const firstOut = await untilEjected(0)
      expect(await healthyGauge(proxy, 'blue', b!.url)).toBe(0)
      expect(await names(proxy, 10)).toEqual(new Set(['a']))
      const firstBack = await untilBack()
      // That answer from b (a 500) is the first of its next run.
      const secondOut = await untilEjected(1)
      const secondBack = await untilBack()

      const first = firstBack - firstOut
      const second = secondBack - secondOut
      expect(first).toBeGreaterThanOrEqual(380)
      expect(first).toBeLessThan(780)
      expect(second).toBeGreaterThanOrEqual(780)
      expect(second).toBeLessThan(2_500)

      // Recovered: it stays in.
      b!.traffic = 200
      await eventually(async () => (await get(proxy)).name === 'b', {
        timeout: 5_000,
        message: 'b back after its third ejection',
      })
      expect(await names(proxy, 20)).toEqual(new Set(['a', 'b']))
      expect(await healthyGauge(proxy, 'blue', b!.url)).toBe(1)
    })

    it('ejects an upstream that refuses connections; its requests go to the others meanwhile', async () => {
      const [a, green] = await Promise.all(['a', 'green'].map(upstream))
      const dead = await refusedUrl()
      const proxy = await proxyWith({
        blue: {
          upstreams: [a!.url, dead],
          healthCheck: noChecks,
          outlier: { consecutiveFailures: 2, ejectionTime: '30s' },
        },
        green: { upstreams: [green!.url] },
      })
      const errors = async () => {
        const line = (await metricsText(proxy))
          .split('\n')
          .find((entry) =>
            entry.startsWith('bluegreen_upstream_errors_total{color="blue",reason="refused"} '),
          )
        return Number(line?.split(' ').at(-1) ?? 0)
      }
      // Refused connections are retried on a, so every client is answered.
      for (let i = 0; i < 6; i++) expect(await get(proxy)).toMatchObject({ status: 200, name: 'a' })
      expect(await healthyGauge(proxy, 'blue', dead)).toBe(0)
      expect(await errors()).toBe(2)
      for (let i = 0; i < 10; i++) await get(proxy)
      expect(await errors()).toBe(2)
    })

    it('never ejects more than maxEjectedPercent of a pool, nor the only upstream of a pool below 100%', async () => {
      const failing = await Promise.all(['a', 'b', 'c', 'd', 'green'].map(upstream))
      for (const each of failing) each.traffic = 500
      const [a, b, c, d, green] = failing
      const outlier = { consecutiveFailures: 2, ejectionTime: '30s', maxEjectedPercent: 50 }
      const proxy = await proxyWith(
        {
          blue: { upstreams: [a!.url, b!.url, c!.url, d!.url], healthCheck: noChecks, outlier },
          green: { upstreams: [green!.url], healthCheck: noChecks, outlier },
        },
        { routing: { preview: {} } },
      )
      const gauges = async () =>
        Promise.all([a!, b!, c!, d!].map((each) => healthyGauge(proxy, 'blue', each.url)))

      for (let i = 0; i < 40; i++) expect((await get(proxy)).status).toBe(500)
      const ejected = (await gauges()).filter((value) => value === 0)
      expect(ejected).toHaveLength(2)
      const serving = await names(proxy, 20)
      expect(serving.size).toBe(2)
      expect((await gauges()).filter((value) => value === 0)).toHaveLength(2)

      // The green pool has one upstream: with 50%, rounded down, none of it may go.
      for (let i = 0; i < 10; i++) {
        expect(await get(proxy, { 'x-bluegreen-preview': 'green' })).toMatchObject({
          status: 500,
          name: 'green',
        })
      }
      expect(await healthyGauge(proxy, 'green', green!.url)).toBe(1)
    })
  })
})
