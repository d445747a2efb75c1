import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { runCli } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import {
  type ChildProxy,
  spawnProxy,
  startProxy,
  startServer,
  type TestProxy,
  type TestServer,
  tempDir,
  writeConfig,
} from '../helpers/servers.ts'
import { steadyTraffic } from '../helpers/traffic.ts'

function app(color: string, status: () => number): Promise<TestServer> {
  return startServer((req, res) => {
    res.writeHead(req.url === '/health' ? 200 : status())
    res.end(color)
  })
}

const guard = { window: '10s', evaluateEvery: '100ms', minRequests: 10, maxErrorRatio: 0.05, watch: '30s' }

interface RolloutView {
  active: string
  generation: number
  trigger: string
  reason: string
  weights: { blue: number; green: number }
  rollout?: { status: string; step: number; outcome?: string }
  replica: { rolloutStep: { generation: number; figures: string; waitingFor: string | null } | null }
}

async function stateOf(admin: string): Promise<RolloutView> {
  return (await (await fetch(`${admin}/state`)).json()) as RolloutView
}

describe('progressive rollout', () => {
  const servers: TestServer[] = []
  let proxy: TestProxy | undefined
  const children: ChildProxy[] = []

  afterEach(async () => {
    await proxy?.close()
    proxy = undefined
    await Promise.all(children.splice(0).map((child) => child.stop()))
    await Promise.all(servers.splice(0).map((server) => server.close()))
  })

  async function setUp(greenStatus: () => number, rollout?: Record<string, unknown>) {
    const blue = await app('blue', () => 200)
    const green = await app('green', greenStatus)
    servers.push(blue, green)
    proxy = await startProxy(
      { blue: [blue.url], green: [green.url] },
      {
        pools: {
          blue: { upstreams: [blue.url], healthCheck: { path: '/health' } },
          green: { upstreams: [green.url], healthCheck: { path: '/health' } },
        },
        rollback: guard,
        ...(rollout ? { rollout } : {}),
        routing: { sticky: { mode: 'none' } },
      },
    )
    return proxy
  }

  it('moves a healthy green through every step to 100%, shown in GET /state', async () => {
    const { url, admin } = await setUp(() => 200)
    const started = await adminPost(admin, '/rollout', { to: 'green', steps: [20, 50, 100], stepSeconds: 1 })
    expect(started.status).toBe(200)
    expect(started.body).toMatchObject({
      weights: { blue: 80, green: 20 },
      trigger: 'rollout',
      rollout: { to: 'green', steps: [20, 50, 100], step: 0, status: 'running', from: { active: 'blue' } },
    })
    const traffic = steadyTraffic(url, { everyMs: 5, limit: 5000 })
    const seen = new Set<number>()
    const done = await eventually(
      async () => {
        const state = await stateOf(admin)
        seen.add(state.weights.green)
        return state.rollout?.status === 'completed' ? state : undefined
      },
      { timeout: 8000, interval: 50, message: 'the rollout to complete' },
    )
    const statuses = (await traffic.stop()).map((answer) => answer.status)
    expect(done).toMatchObject({ active: 'green', weights: { blue: 0, green: 100 }, rollout: { step: 2 } })
    expect([...seen]).toEqual(expect.arrayContaining([20, 50, 100]))
    expect(statuses.every((status) => status === 200)).toBe(true)
    // One change per step: start, 50, 100.
    expect(done.generation).toBe(3)
  })

  it('rolls a failing green back to where it started', async () => {
    const { url, admin } = await setUp(() => 500)
    await adminPost(admin, '/rollout', { to: 'green', steps: [30, 100], stepSeconds: 5 })
    const traffic = steadyTraffic(url, { everyMs: 5, limit: 5000 })
    const state = await eventually(
      async () => {
        const current = await stateOf(admin)
        return current.rollout?.status === 'rolled-back' ? current : undefined
      },
      { timeout: 8000, message: 'the rollout to roll back' },
    )
    await traffic.stop()
    expect(state).toMatchObject({ active: 'blue', weights: { blue: 100, green: 0 }, trigger: 'rollback' })
    expect(state.rollout?.outcome).toMatch(/rolled back at 30%/)
    const metrics = await (await fetch(`${admin}/metrics`)).text()
    expect(metrics).toContain('bluegreen_switches_total{trigger="rollback"} 1')
  })

  it('holds a step it cannot judge, saying in /state how many requests it waits for, and moves on with traffic', async () => {
    const { url, admin } = await setUp(() => 200)
    await adminPost(admin, '/rollout', { to: 'green', steps: [20, 50, 100], stepSeconds: 1 })
    // Held: the step's second is long over, and nothing was judged.
    const held = await eventually(
      async () => {
        const state = await stateOf(admin)
        return state.replica.rolloutStep?.waitingFor ? state : undefined
      },
      { timeout: 5000, interval: 50, message: 'the step to hold' },
    )
    expect(held.replica.rolloutStep).toMatchObject({ generation: 1, waitingFor: '0 of 10 requests' })
    expect(held).toMatchObject({
      generation: 1,
      weights: { green: 20 },
      rollout: { status: 'running', step: 0 },
    })
    const status = await runCli(['status', '--admin', admin])
    expect(status.stdout).toMatch(
      /^rollout\s+running, step 1\/3 \(20% to green\), held: too little traffic to judge \(0 of 10 requests\)$/m,
    )
    // A few requests, fewer than minRequests: still held, and the count follows what green served.
    let green = 0
    while (green < 3) {
      const response = await fetch(`${url}/few`)
      await response.arrayBuffer()
      if (response.headers.get('x-bluegreen-color') === 'green') green++
    }
    await eventually(
      async () => (await stateOf(admin)).replica.rolloutStep?.waitingFor === '3 of 10 requests',
      { message: 'the step to count 3 of 10 requests' },
    )
    expect(await stateOf(admin)).toMatchObject({ generation: 1, rollout: { step: 0 } })
    const traffic = steadyTraffic(url, { everyMs: 5, limit: 5000 })
    const moved = await eventually(
      async () => {
        const state = await stateOf(admin)
        return state.rollout?.step === 1 ? state : undefined
      },
      { timeout: 5000, interval: 50, message: 'the rollout to move on with traffic' },
    )
    await traffic.stop()
    expect(moved.weights.green).toBe(50)
    expect(moved.reason).toMatch(/^rollout to green: step 2\/3 \(50%\) after error ratio 0\.0%/)
  })

  it('with rollout.onLowTraffic: proceed, moves on without traffic and says so in each reason', async () => {
    const { admin } = await setUp(() => 200, { onLowTraffic: 'proceed' })
    await adminPost(admin, '/rollout', { to: 'green', steps: [20, 100], stepSeconds: 1 })
    const done = await eventually(
      async () => {
        const state = await stateOf(admin)
        return state.rollout?.status === 'completed' ? state : undefined
      },
      { timeout: 5000, interval: 50, message: 'the rollout to complete' },
    )
    expect(done).toMatchObject({ weights: { blue: 0, green: 100 }, generation: 2 })
    expect(done.reason).toBe(
      'rollout to green: step 2/2 (100%) after too little traffic to judge (0 of 10 requests)',
    )
  })

  it('aborts back to where it started, and refuses a second rollout while one runs', async () => {
    const { admin } = await setUp(() => 200)
    await adminPost(admin, '/rollout', { to: 'green', steps: [10, 100], stepSeconds: 60 })
    const again = await adminPost(admin, '/rollout', { to: 'green', steps: [10, 100], stepSeconds: 60 })
    expect(again.status).toBe(409)
    expect(again.body).toMatchObject({ error: { code: 'BG_ROLLOUT_RUNNING' } })
    const aborted = await adminPost(admin, '/rollout/abort', {})
    expect(aborted.status).toBe(200)
    expect(aborted.body).toMatchObject({ weights: { blue: 100, green: 0 }, rollout: { status: 'aborted' } })
    expect((await adminPost(admin, '/rollout/abort', {})).body).toMatchObject({
      error: { code: 'BG_NO_ROLLOUT' },
    })
  })

  it('after an abort, rolls a failing color back once, to the routing before the abort, as POST /rollback does', async () => {
    let blueStatus = 200
    const blue = await app('blue', () => blueStatus)
    const green = await app('green', () => 200)
    servers.push(blue, green)
    proxy = await startProxy(
      { blue: [blue.url], green: [green.url] },
      {
        pools: {
          blue: { upstreams: [blue.url], healthCheck: { path: '/health' } },
          green: { upstreams: [green.url], healthCheck: { path: '/health' } },
        },
        rollback: guard,
        routing: { sticky: { mode: 'none' } },
      },
    )
    const { url, admin } = proxy
    await adminPost(admin, '/rollout', { to: 'green', steps: [10, 100], stepSeconds: 60 })
    const aborted = await adminPost(admin, '/rollout/abort', {})
    expect(aborted.body).toMatchObject({ generation: 2, weights: { blue: 100, green: 0 } })
    // The abort sent blue more traffic, so blue is watched; now blue fails.
    blueStatus = 500
    for (let i = 0; i < 20; i++) await (await fetch(`${url}/work/${i}`)).arrayBuffer()
    const state = await eventually(
      async () => {
        const current = await stateOf(admin)
        return current.trigger === 'rollback' ? current : undefined
      },
      { timeout: 5000, message: 'the automatic rollback of the abort' },
    )
    expect(state).toMatchObject({ active: 'blue', weights: { blue: 90, green: 10 }, generation: 3 })
    expect(state.reason).toMatch(/^automatic rollback: blue error ratio 100\.0%/)
    expect(state.rollout).toBeUndefined()
    const { events } = (await (await fetch(`${admin}/events`)).json()) as { events: { action: string }[] }
    expect(events.filter((event) => event.action === 'rollback')).toHaveLength(1)
  })

  it('refuses bad steps with 400 and changes nothing', async () => {
    const { admin } = await setUp(() => 200)
    for (const body of [
      { to: 'green', steps: [50, 20, 100], stepSeconds: 1 },
      { to: 'green', steps: [10, 50], stepSeconds: 1 },
      { to: 'green', steps: [], stepSeconds: 1 },
      { to: 'green', steps: [10, 100], stepSeconds: 0 },
      { to: 'purple', steps: [10, 100], stepSeconds: 1 },
      { to: 'blue', steps: [10, 100], stepSeconds: 1 },
    ]) {
      const reply = await adminPost(admin, '/rollout', body)
      expect(reply.status, JSON.stringify(body)).toBe(400)
    }
    expect(await stateOf(admin)).toMatchObject({ generation: 0 })
  })

  it('survives a restart: a new process on the same state carries the rollout on', async () => {
    const blue = await app('blue', () => 200)
    const green = await app('green', () => 200)
    servers.push(blue, green)
    const dir = await tempDir()
    const config = {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      pools: {
        blue: { upstreams: [blue.url], healthCheck: { path: '/health' } },
        green: { upstreams: [green.url], healthCheck: { path: '/health' } },
      },
      state: { path: join(dir.path, 'state.json') },
      rollback: guard,
      // No traffic here: what is tested is that the new process carries the steps on, not how they are judged.
      rollout: { onLowTraffic: 'proceed' },
    }
    const file = await writeConfig(dir.path, config)
    const first = await spawnProxy(file)
    children.push(first)
    await adminPost(first.admin, '/rollout', { to: 'green', steps: [10, 100], stepSeconds: 1 })
    expect(await first.stop()).toBe(0)
    const second = await spawnProxy(file)
    children.push(second)
    expect((await stateOf(second.admin)).rollout).toMatchObject({ status: 'running', step: 0 })
    const done = await eventually(
      async () => {
        const state = await stateOf(second.admin)
        return state.rollout?.status === 'completed' ? state : undefined
      },
      { timeout: 6000, message: 'the restarted proxy to finish the rollout' },
    )
    expect(done.weights).toEqual({ blue: 0, green: 100 })
    await dir.remove()
  })
})
