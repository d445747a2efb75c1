import { afterEach, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'
import { type SteadyTraffic, steadyTraffic } from '../helpers/traffic.ts'

// A release that dies after the switch (issue 11, item 1): green passes its checks when traffic moves to it, then
// answers 500 to everything, its health path too. The checks soon take its only upstream out, and from then on
// the proxy answers 503 BG_NO_HEALTHY_UPSTREAM on green's behalf. Real upstreams, the real proxy, its /state and
// /metrics as the evidence.

/** An upstream that answers 200 (health path included) until die(), then 500 to everything. */
interface Dying {
  server: TestServer
  die(): void
}

async function dying(color: string): Promise<Dying> {
  let dead = false
  const server = await startServer((_req, res) => {
    res.writeHead(dead ? 500 : 200, { 'content-type': 'text/plain' }).end(color)
  })
  return {
    server,
    die: () => {
      dead = true
    },
  }
}

interface StateView {
  active: string
  generation: number
  trigger: string
  reason: string
  weights: { blue: number; green: number }
  rollout?: { status: string; step: number; outcome?: string }
}

async function stateOf(admin: string): Promise<StateView> {
  return (await (await fetch(`${admin}/state`)).json()) as StateView
}

async function metric(admin: string, line: string): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text()
  const found = text.split('\n').find((entry) => entry.startsWith(`${line} `))
  return found ? Number(found.slice(line.length).trim()) : 0
}

/** Checks every 100 ms, out after two failures: green's upstream is out of service within about 0.3 s. */
const fastChecks = { path: '/health', interval: '100ms', unhealthyThreshold: 2, healthyThreshold: 2 }

describe('a color that dies after the switch', () => {
  const servers: TestServer[] = []
  const loops: SteadyTraffic[] = []
  let proxy: TestProxy | undefined

  afterEach(async () => {
    await Promise.all(loops.splice(0).map((traffic) => traffic.stop()))
    await proxy?.close()
    proxy = undefined
    await Promise.all(servers.splice(0).map((server) => server.close()))
  })

  async function setUp(rollback: Record<string, unknown>, rollout?: Record<string, unknown>) {
    const blue = await dying('blue')
    const green = await dying('green')
    servers.push(blue.server, green.server)
    proxy = await startProxy(
      { blue: [blue.server.url], green: [green.server.url] },
      {
        pools: {
          blue: { upstreams: [blue.server.url], healthCheck: fastChecks },
          green: { upstreams: [green.server.url], healthCheck: fastChecks },
        },
        rollback: { evaluateEvery: '100ms', watch: '60s', ...rollback },
        ...(rollout ? { rollout } : {}),
        routing: { sticky: { mode: 'none' } },
      },
    )
    return { proxy, green }
  }

  function startTraffic(url: string, everyMs: number): SteadyTraffic {
    const started = steadyTraffic(url, { everyMs })
    loops.push(started)
    return started
  }

  async function rolledBack(admin: string, timeout: number): Promise<StateView> {
    return eventually(
      async () => {
        const state = await stateOf(admin)
        return state.active === 'blue' && state.trigger === 'rollback' ? state : undefined
      },
      { timeout, interval: 50, message: 'the rollback to blue' },
    )
  }

  it('at 2 requests/s, is rolled back within seconds for having no upstream, and its 503s count as green', async () => {
    // 50 requests at 2/s would take 25 s to judge: only the outage can decide within seconds.
    const { proxy, green } = await setUp({ window: '30s', minRequests: 50, unavailableFor: '2s' })
    expect((await adminPost(proxy.admin, '/switch', { to: 'green' })).status).toBe(200)
    const traffic = startTraffic(proxy.url, 500)
    await eventually(
      () => traffic.answers.some((answer) => answer.status === 200 && answer.color === 'green'),
      {
        message: 'green to serve',
      },
    )
    green.die()
    const state = await rolledBack(proxy.admin, 6000)
    const answers = await traffic.stop()
    expect(state).toMatchObject({ active: 'blue', weights: { blue: 100, green: 0 }, generation: 2 })
    expect(state.reason).toBe('automatic rollback: green had no available upstream for 2 s')
    // The health checks took green out before the rollback: users got the proxy's own 503 on green's behalf...
    const refused = answers.filter((answer) => answer.code === 'BG_NO_HEALTHY_UPSTREAM')
    expect(refused.length).toBeGreaterThan(0)
    expect(refused.every((answer) => answer.status === 503 && answer.color === 'green')).toBe(true)
    // ...and every 5xx answered as green, the 500s and those 503s alike, is in green's count.
    const green5xx = answers.filter((answer) => answer.color === 'green' && answer.status >= 500).length
    expect(await metric(proxy.admin, 'bluegreen_requests_total{color="green",status_class="5xx"}')).toBe(
      green5xx,
    )
    const durations = await metric(proxy.admin, 'bluegreen_request_duration_seconds_count{color="green"}')
    expect(durations).toBe(answers.filter((answer) => answer.color === 'green').length)
  })

  it("counts the proxy's own 503s in the rollback window: the error ratio decides when the outage rule is off", async () => {
    const { proxy, green } = await setUp({
      window: '10s',
      minRequests: 20,
      maxErrorRatio: 0.05,
      unavailableFor: 0,
    })
    await adminPost(proxy.admin, '/switch', { to: 'green' })
    const traffic = startTraffic(proxy.url, 20)
    await eventually(() => traffic.answers.some((answer) => answer.color === 'green'), {
      message: 'green to serve',
    })
    green.die()
    await eventually(() => traffic.answers.some((answer) => answer.code === 'BG_NO_HEALTHY_UPSTREAM'), {
      message: 'the checks to take green out',
    })
    const state = await rolledBack(proxy.admin, 5000)
    await traffic.stop()
    expect(state.reason).toMatch(/^automatic rollback: green error ratio \d+\.\d% \(\d+\/\d+\)/)
  })

  it('is rolled back with no traffic at all once it has had no upstream for unavailableFor', async () => {
    const { proxy, green } = await setUp({ minRequests: 50, unavailableFor: '1s' })
    await adminPost(proxy.admin, '/switch', { to: 'green' })
    green.die()
    const state = await rolledBack(proxy.admin, 5000)
    expect(state.reason).toBe('automatic rollback: green had no available upstream for 1 s')
    expect(await metric(proxy.admin, 'bluegreen_requests_total{color="green",status_class="5xx"}')).toBe(0)
    const events = (await (await fetch(`${proxy.admin}/events`)).json()) as {
      events: { action: string; actor: string; result: string; reason: string }[]
    }
    expect(events.events[0]).toMatchObject({ action: 'rollback', actor: 'bluegreen', result: 'accepted' })
  })

  it('rolls a running rollout back to where it started when its target has no upstream, traffic or not', async () => {
    const { proxy, green } = await setUp({ minRequests: 50, unavailableFor: '1s' })
    const started = await adminPost(proxy.admin, '/rollout', {
      to: 'green',
      steps: [10, 50, 100],
      stepSeconds: 60,
    })
    expect(started.status).toBe(200)
    green.die()
    const state = await rolledBack(proxy.admin, 5000)
    expect(state).toMatchObject({
      weights: { blue: 100, green: 0 },
      rollout: { status: 'rolled-back', step: 0 },
    })
    expect(state.rollout?.outcome).toBe(
      'rollout to green rolled back at 10%: green had no available upstream for 1 s',
    )
  })
})
