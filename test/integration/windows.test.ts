import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { callAdmin } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// GET /windows: the console's charts, per color, from the proxy's own figures; with Redis, every replica's added up.

interface Windows {
  stepSeconds: number
  spanSeconds: number
  replicas: number
  thresholds: {
    enabled: boolean
    windowSeconds: number
    maxErrorRatio: number
    maxP99: number
    minRequests: number
  }
  colors: Record<
    'blue' | 'green',
    {
      points: { at: string; requests: number; rps: number; errorRatio: number; p99: number }[]
      window: { requests: number; rps: number; errorRatio: number; p99: number }
    }
  >
}

async function send(url: string, count: number, path = '/'): Promise<void> {
  for (let i = 0; i < count; i++) await (await fetch(`${url}${path}`)).arrayBuffer()
}

let blue: TestServer
let green: TestServer

beforeAll(async () => {
  // /fail answers 500: an error for the windows, as the release guard counts it.
  const upstream = (name: string) =>
    startServer((req, res) => {
      res.writeHead(req.url === '/fail' ? 500 : 200)
      res.end(name)
    })
  blue = await upstream('blue')
  green = await upstream('green')
})

afterAll(async () => {
  await blue?.close()
  await green?.close()
})

describe('GET /windows with the file store', () => {
  let proxy: TestProxy

  beforeAll(async () => {
    proxy = await startProxy(
      { blue: [blue.url], green: [green.url] },
      { rollback: { maxErrorRatio: 0.2, maxP99: '300ms', minRequests: 7, window: '20s' } },
    )
  })

  afterAll(async () => {
    await proxy?.close()
  })

  it('answers per color the points of the last minutes and the window figures, with the rollback thresholds', async () => {
    await send(proxy.url, 8)
    await send(proxy.url, 2, '/fail')
    const { status, headers, body } = await callAdmin<Windows>(proxy.admin, '/windows')
    expect(status).toBe(200)
    expect(headers.get('cache-control')).toBe('no-store')
    expect(body.stepSeconds).toBe(5)
    expect(body.spanSeconds).toBe(300)
    expect(body.replicas).toBe(1)
    expect(body.thresholds).toEqual({
      enabled: true,
      windowSeconds: 20,
      maxErrorRatio: 0.2,
      maxP99: 300,
      minRequests: 7,
    })
    expect(body.colors.blue.points).toHaveLength(60)
    expect(body.colors.blue.window).toMatchObject({ requests: 10, errorRatio: 0.2 })
    expect(body.colors.blue.points.reduce((sum, point) => sum + point.requests, 0)).toBe(10)
    expect(body.colors.green.window.requests).toBe(0)
  })

  it('is a read: no token needed, but the Host is checked like every admin call', async () => {
    const rebound = await callAdmin(proxy.admin, '/windows', { headers: { host: 'evil.example' } })
    expect(rebound.status).toBe(403)
  })
})

describe('GET /windows with two replicas on Redis', () => {
  let redis: RedisProcess
  const proxies: TestProxy[] = []

  beforeAll(async () => {
    redis = await startRedis()
    for (let i = 0; i < 2; i++) {
      proxies.push(
        await startProxy(
          { blue: [blue.url], green: [green.url] },
          {
            state: {
              store: 'redis',
              redis: { url: redis.url, key: 'bluegreen:windows-test', lastStateFile: false },
            },
          },
        ),
      )
    }
  })

  afterAll(async () => {
    for (const proxy of proxies) await proxy.close()
    await redis?.stop()
  })

  it("adds up every replica's figures, whichever replica is asked", async () => {
    const [first, second] = proxies as [TestProxy, TestProxy]
    // Ready (the state loaded) without a request through either proxy, so the counts below are all there is.
    for (const proxy of proxies) {
      await eventually(async () => (await callAdmin(proxy.admin, '/readyz')).status === 200, {
        timeout: 10_000,
        message: 'both replicas to be ready',
      })
    }
    await send(first.url, 6)
    await send(second.url, 9)
    // The other replica's figures arrive with its next publication (every step, 5 s).
    for (const asked of [first, second]) {
      await eventually(
        async () => {
          const { body } = await callAdmin<Windows>(asked.admin, '/windows')
          return body.replicas === 2 && body.colors.blue.window.requests === 15
        },
        { timeout: 15_000, interval: 250, message: 'the pooled figures of both replicas' },
      )
    }
  }, 60_000)

  it("without Redis, answers this replica's own figures and says so", async () => {
    const [first] = proxies as [TestProxy]
    await send(first.url, 3)
    await redis.kill()
    const { status, body } = await callAdmin<Windows & { problem?: string }>(first.admin, '/windows')
    expect(status).toBe(200)
    expect(body.replicas).toBe(1)
    expect(body.problem).toMatch(/^only this replica's figures/)
    expect(body.colors.blue.points.reduce((sum, point) => sum + point.requests, 0)).toBe(9)
  })
})
