import { afterEach, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

/** An upstream that passes its health check but answers everything else with `status`, after `delayMs`. */
function app(color: string, behaviour: { status: number; delayMs?: number }): Promise<TestServer> {
  return startServer((req, res) => {
    if (req.url === '/health') {
      res.end('ok')
      return
    }
    setTimeout(() => {
      res.writeHead(behaviour.status, { 'content-type': 'text/plain' })
      res.end(color)
    }, behaviour.delayMs ?? 0)
  })
}

const fastRollback = {
  window: '5s',
  evaluateEvery: '100ms',
  minRequests: 20,
  maxErrorRatio: 0.05,
  maxP99: '300ms',
  watch: '30s',
}

async function traffic(url: string, count: number): Promise<number[]> {
  const statuses: number[] = []
  for (let i = 0; i < count; i++) {
    const response = await fetch(`${url}/work/${i}`)
    await response.arrayBuffer()
    statuses.push(response.status)
  }
  return statuses
}

async function metric(admin: string, line: string): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text()
  const found = text.split('\n').find((entry) => entry.startsWith(line))
  return found ? Number(found.slice(line.length).trim()) : 0
}

describe('automatic rollback', () => {
  const servers: TestServer[] = []
  let proxy: TestProxy | undefined

  afterEach(async () => {
    await proxy?.close()
    proxy = undefined
    await Promise.all(servers.splice(0).map((server) => server.close()))
  })

  async function setUp(
    green: { status: number; delayMs?: number },
    rollback: Record<string, unknown> = fastRollback,
  ) {
    const blueServer = await app('blue', { status: 200 })
    const greenServer = await app('green', green)
    servers.push(blueServer, greenServer)
    proxy = await startProxy(
      { blue: [blueServer.url], green: [greenServer.url] },
      {
        pools: {
          blue: { upstreams: [blueServer.url], healthCheck: { path: '/health' } },
          green: { upstreams: [greenServer.url], healthCheck: { path: '/health' } },
        },
        rollback,
      },
    )
    return proxy
  }

  it('rolls back a switch to a green that answers 500, within the window, counted and audited', async () => {
    const { url, admin } = await setUp({ status: 500 })
    const switched = await adminPost(admin, '/switch', { to: 'green' })
    expect(switched.status).toBe(200)
    const started = Date.now()
    await traffic(url, 30)
    const state = await eventually(
      async () => {
        const current = (await (await fetch(`${admin}/state`)).json()) as Record<string, unknown>
        return current.active === 'blue' ? current : undefined
      },
      { timeout: 5000, message: 'the rollback to blue' },
    )
    expect(Date.now() - started).toBeLessThan(5000)
    expect(state).toMatchObject({
      active: 'blue',
      weights: { blue: 100, green: 0 },
      trigger: 'rollback',
      generation: 2,
    })
    expect(String(state.reason)).toMatch(/automatic rollback: green error ratio 100\.0%/)
    expect(await metric(admin, 'bluegreen_switches_total{trigger="rollback"}')).toBe(1)
    // The guard records the rollback after its compare-and-set; the state can be read before the audit write ends.
    const latest = await eventually(
      async () => {
        const { events } = (await (await fetch(`${admin}/events`)).json()) as {
          events: { action: string; actor: string; result: string }[]
        }
        return events[0]?.action === 'rollback' ? events[0] : undefined
      },
      { message: 'the rollback in the audit trail' },
    )
    expect(latest).toMatchObject({ action: 'rollback', actor: 'bluegreen', result: 'accepted' })
    // Traffic is back on blue.
    expect(await traffic(url, 5)).toEqual([200, 200, 200, 200, 200])
  })

  it('rolls back to blue a switch to a failing green that was repeated (the repeat changes nothing)', async () => {
    const { url, admin } = await setUp({ status: 500 })
    expect((await adminPost(admin, '/switch', { to: 'green' })).body).toMatchObject({ generation: 1 })
    // A nervous operator switches again: it must neither end the watch nor become what a rollback returns to.
    const again = await adminPost(admin, '/switch', { to: 'green' })
    expect(again.body).toMatchObject({ generation: 1, changed: false })
    await traffic(url, 30)
    const state = await eventually(
      async () => {
        const current = (await (await fetch(`${admin}/state`)).json()) as Record<string, unknown>
        return current.active === 'blue' ? current : undefined
      },
      { timeout: 5000, message: 'the rollback to blue' },
    )
    expect(state).toMatchObject({ weights: { blue: 100, green: 0 }, trigger: 'rollback', generation: 2 })
    expect(await traffic(url, 3)).toEqual([200, 200, 200])
  })

  it('rolls back on latency: p99 over maxP99', async () => {
    const { url, admin } = await setUp({ status: 200, delayMs: 400 })
    await adminPost(admin, '/switch', { to: 'green' })
    await Promise.all(
      Array.from({ length: 25 }, (_, i) => fetch(`${url}/slow/${i}`).then((r) => r.arrayBuffer())),
    )
    const state = await eventually(
      async () => {
        const current = (await (await fetch(`${admin}/state`)).json()) as Record<string, unknown>
        return current.active === 'blue' ? current : undefined
      },
      { timeout: 5000, message: 'the latency rollback' },
    )
    // At least the upstream's 400 ms; a loaded machine adds its own delay on top.
    const p99 = /p99 (\d+) ms/.exec(String(state.reason))
    expect(Number(p99?.[1])).toBeGreaterThanOrEqual(400)
  })

  it('leaves a healthy green alone', async () => {
    const { url, admin } = await setUp({ status: 200 })
    await adminPost(admin, '/switch', { to: 'green' })
    await traffic(url, 60)
    // Several evaluations have run over enough requests: the state is still the switch.
    await new Promise((resolve) => setTimeout(resolve, 500))
    const state = (await (await fetch(`${admin}/state`)).json()) as Record<string, unknown>
    expect(state).toMatchObject({ active: 'green', generation: 1, trigger: 'admin' })
    expect(await metric(admin, 'bluegreen_switches_total{trigger="rollback"}')).toBe(0)
  })

  it('decides nothing below minRequests, and nothing at all when turned off', async () => {
    const { url, admin } = await setUp({ status: 500 }, { ...fastRollback, enabled: false })
    await adminPost(admin, '/switch', { to: 'green' })
    await traffic(url, 40)
    await new Promise((resolve) => setTimeout(resolve, 500))
    const state = (await (await fetch(`${admin}/state`)).json()) as Record<string, unknown>
    expect(state).toMatchObject({ active: 'green', generation: 1 })
  })
})
