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

// Gates on a rollout, pause, resume and promote, against a real proxy and real upstreams; the CLI as a child
// process. The transitions themselves are unit-tested in test/unit/machine.test.ts.

function app(color: string): Promise<TestServer> {
  return startServer((_req, res) => {
    res.writeHead(200)
    res.end(color)
  })
}

const guard = { window: '10s', evaluateEvery: '100ms', minRequests: 10, maxErrorRatio: 0.05, watch: '30s' }

interface Waiting {
  for: string
  since: string
  until?: string
  onTimeout?: string
}

interface GateView {
  generation: number
  reason: string
  weights: { blue: number; green: number }
  rollout?: { status: string; step: number; outcome?: string; pausedAt?: string; waiting?: Waiting }
}

async function stateOf(admin: string): Promise<GateView> {
  return (await (await fetch(`${admin}/state`)).json()) as GateView
}

function until(admin: string, test: (state: GateView) => boolean, message: string, timeout = 8000) {
  return eventually(
    async () => {
      const state = await stateOf(admin)
      return test(state) ? state : undefined
    },
    { timeout, interval: 50, message },
  )
}

/** What the state stays at for `ms`: a gate or a pause holding is the absence of a change. */
async function heldFor(admin: string, ms: number): Promise<GateView> {
  const before = await stateOf(admin)
  await new Promise((resolve) => setTimeout(resolve, ms))
  const after = await stateOf(admin)
  expect(after.generation).toBe(before.generation)
  return after
}

interface AuditLine {
  action: string
  reason: string
  actor: string
  result: string
}

async function eventsOf(admin: string): Promise<AuditLine[]> {
  const reply = (await (await fetch(`${admin}/events?limit=100`)).json()) as { events: AuditLine[] }
  return reply.events
}

describe('rollout gates, pause, resume and promote', () => {
  const servers: TestServer[] = []
  let proxy: TestProxy | undefined
  const children: ChildProxy[] = []

  afterEach(async () => {
    await proxy?.close()
    proxy = undefined
    await Promise.all(children.splice(0).map((child) => child.stop()))
    await Promise.all(servers.splice(0).map((server) => server.close()))
  })

  async function setUp(rollout?: Record<string, unknown>) {
    const blue = await app('blue')
    const green = await app('green')
    servers.push(blue, green)
    proxy = await startProxy(
      { blue: [blue.url], green: [green.url] },
      { rollback: guard, routing: { sticky: { mode: 'none' } }, ...(rollout ? { rollout } : {}) },
    )
    return proxy
  }

  it('a manual gate holds once its step passed, GET /state saying since when, until rollout promote', async () => {
    const { url, admin } = await setUp()
    const started = await adminPost(admin, '/rollout', {
      to: 'green',
      steps: [{ weight: 20, gate: 'manual' }, 50, 100],
      stepSeconds: 1,
    })
    expect(started.status).toBe(200)
    const traffic = steadyTraffic(url, { everyMs: 5, limit: 5000 })
    try {
      const waiting = await until(admin, (state) => state.rollout?.waiting !== undefined, 'the gate')
      expect(waiting).toMatchObject({ weights: { green: 20 }, rollout: { status: 'running', step: 0 } })
      expect(waiting.rollout?.waiting).toEqual({ for: 'promote', since: expect.any(String) })
      expect(waiting.reason).toMatch(
        /^rollout to green: step 1\/3 \(20%\) waits for promote after error ratio/,
      )
      await heldFor(admin, 2500)
      const status = await runCli(['rollout', 'status', '--admin', admin])
      expect(status.code, status.stderr).toBe(0)
      expect(status.stdout).toMatch(
        /^rollout\s+running, step 1\/3 \(20% to green\), waiting for promote since \S+$/m,
      )
      const promoted = await runCli(['rollout', 'promote', '--reason', 'looks good', '--admin', admin])
      expect(promoted.code, promoted.stderr).toBe(0)
      expect(promoted.stdout).toMatch(/weights\s+blue 50 \/ green 50/)
      expect(await stateOf(admin)).toMatchObject({ reason: 'looks good', rollout: { step: 1 } })
      expect((await stateOf(admin)).rollout?.waiting).toBeUndefined()
      // With no gate on it, the next step moves on by itself.
      await until(admin, (state) => state.rollout?.status === 'completed', 'the rollout to complete')
    } finally {
      await traffic.stop()
    }
    const promote = (await eventsOf(admin)).filter((event) => event.action === 'rollout-promote')
    expect(promote).toHaveLength(1)
    expect(promote[0]).toMatchObject({ reason: 'looks good', actor: '127.0.0.1' })
  })

  it('rollout pause holds the weights, rollout resume carries on, each audited', async () => {
    const { admin } = await setUp({ onLowTraffic: 'proceed' })
    // Steps long enough that the CLI, a child process, pauses the first one.
    await adminPost(admin, '/rollout', { to: 'green', steps: [20, 50, 100], stepSeconds: 3 })
    const paused = await runCli(['rollout', 'pause', '--admin', admin])
    expect(paused.code, paused.stderr).toBe(0)
    expect(paused.stdout).toMatch(/^rollout\s+paused since \S+, step 1\/3 \(20% to green\)$/m)
    const held = await heldFor(admin, 2500)
    expect(held).toMatchObject({ weights: { green: 20 }, rollout: { status: 'paused', step: 0 } })
    expect(held.rollout?.pausedAt).toEqual(expect.any(String))
    const again = await runCli(['rollout', 'pause', '--admin', admin])
    expect(again.code).toBe(1)
    expect(again.stderr).toBe(
      'bluegreen: there is no rollout running to pause (the last one, to green, is paused) (BG_NO_ROLLOUT)\n',
    )
    const resumed = await runCli(['rollout', 'resume', '--admin', admin])
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(resumed.stdout).toMatch(/^rollout\s+running, step 1\/3/m)
    // It carries on: the resumed step's time runs out and the next step follows.
    const moved = await until(admin, (state) => state.rollout?.step === 1, 'the next step', 10_000)
    expect(moved).toMatchObject({ weights: { green: 50 }, rollout: { status: 'running' } })
    const actions = (await eventsOf(admin)).map((event) => `${event.action} ${event.result}`)
    // The second pause was refused, and audited as such.
    expect(actions.filter((action) => action.startsWith('rollout-pause'))).toEqual([
      'rollout-pause refused',
      'rollout-pause accepted',
    ])
    expect(actions.filter((action) => action.startsWith('rollout-resume'))).toEqual([
      'rollout-resume accepted',
    ])
  })

  it('rollout promote --full goes straight to 100%', async () => {
    const { admin } = await setUp()
    await adminPost(admin, '/rollout', { to: 'green', steps: [10, 25, 50, 100], stepSeconds: 600 })
    const full = await runCli(['rollout', 'promote', '--full', '--admin', admin])
    expect(full.code, full.stderr).toBe(0)
    expect(full.stdout).toMatch(/rollout\s+completed, step 4\/4 \(100% to green\)/)
    expect(await stateOf(admin)).toMatchObject({
      weights: { blue: 0, green: 100 },
      rollout: { status: 'completed', step: 3 },
    })
    const nothing = await runCli(['rollout', 'promote', '--admin', admin])
    expect(nothing.code).toBe(1)
    expect(nothing.stderr).toMatch(/BG_NO_ROLLOUT/)
    expect((await runCli(['rollout', 'pause', '--full', '--admin', admin])).code).toBe(2)
  })

  it('autoPromoteAfter promotes a manual gate once', async () => {
    const { admin } = await setUp({ onLowTraffic: 'proceed' })
    await adminPost(admin, '/rollout', {
      to: 'green',
      steps: [{ weight: 20, gate: 'manual' }, 50, { weight: 75, gate: 'manual' }, 100],
      stepSeconds: 1,
      autoPromoteAfter: '2s',
    })
    const waiting = await until(admin, (state) => state.rollout?.waiting !== undefined, 'the gate')
    expect(waiting.rollout?.waiting).toMatchObject({ for: 'promote', onTimeout: 'promote' })
    const { since, until: deadline } = waiting.rollout!.waiting!
    expect(Date.parse(deadline!) - Date.parse(since)).toBe(2000)
    const moved = await until(admin, (state) => state.rollout?.step === 1, 'the automatic promote')
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(deadline!))
    expect(moved.reason).toBe('rollout to green: step 2/4 (50%) promoted automatically after 2 s')
    await until(admin, (state) => state.rollout?.status === 'completed', 'the rollout to complete')
    const automatic = (await eventsOf(admin)).filter((event) => /promoted automatically/.test(event.reason))
    // One per gate: step 1 and step 3.
    expect(automatic.map((event) => event.reason)).toEqual([
      'rollout to green: step 4/4 (100%) promoted automatically after 2 s',
      'rollout to green: step 2/4 (50%) promoted automatically after 2 s',
    ])
  })

  it('abortIfNotApprovedWithin aborts a manual gate nobody promoted, once, back where it started', async () => {
    const { admin } = await setUp({ onLowTraffic: 'proceed' })
    await adminPost(admin, '/rollout', {
      to: 'green',
      steps: [{ weight: 20, gate: 'manual' }, 100],
      stepSeconds: 1,
      abortIfNotApprovedWithin: '2s',
    })
    const waiting = await until(admin, (state) => state.rollout?.waiting !== undefined, 'the gate')
    expect(waiting.rollout?.waiting).toMatchObject({ for: 'promote', onTimeout: 'abort' })
    const aborted = await until(admin, (state) => state.rollout?.status === 'aborted', 'the abort')
    expect(aborted).toMatchObject({ weights: { blue: 100, green: 0 } })
    expect(aborted.rollout?.outcome).toBe('rollout to green aborted at 20%: not promoted within 2 s')
    await heldFor(admin, 500)
    const aborts = (await eventsOf(admin)).filter((event) => event.action === 'rollout-abort')
    expect(aborts).toHaveLength(1)
    expect(aborts[0]).toMatchObject({ actor: 'bluegreen' })
  })

  it('a pause of a given time moves on by itself', async () => {
    const { admin } = await setUp({ onLowTraffic: 'proceed' })
    await adminPost(admin, '/rollout', {
      to: 'green',
      steps: [{ weight: 20, pause: '2s' }, 100],
      stepSeconds: 1,
    })
    const waiting = await until(admin, (state) => state.rollout?.waiting !== undefined, 'the pause')
    expect(waiting.rollout?.waiting).toMatchObject({ for: 'pause', until: expect.any(String) })
    const done = await until(
      admin,
      (state) => state.rollout?.status === 'completed',
      'the rollout to complete',
    )
    expect(done.reason).toBe('rollout to green: step 2/2 (100%) after a pause of 2 s')
  })

  it('refuses bad gates with 400 and changes nothing', async () => {
    const { admin } = await setUp()
    for (const body of [
      { steps: [{ weight: 20, gate: 'approval' }, 100] },
      { steps: [{ weight: 20, gate: 'manual', pause: '2s' }, 100] },
      { steps: [{ weight: 20, pause: '2' }, 100] },
      { steps: [20, { weight: 100, gate: 'manual' }] },
      { steps: [20, 100], autoPromoteAfter: '1m' },
      {
        steps: [{ weight: 20, gate: 'manual' }, 100],
        autoPromoteAfter: '1m',
        abortIfNotApprovedWithin: '2m',
      },
    ]) {
      const reply = await adminPost(admin, '/rollout', { to: 'green', stepSeconds: 1, ...body })
      expect(reply.status, JSON.stringify(body)).toBe(400)
      expect(reply.body).toMatchObject({ error: { code: 'BG_BAD_REQUEST' } })
    }
    expect(await stateOf(admin)).toMatchObject({ generation: 0 })
  })

  it('a restarted proxy keeps the pause, then resumes and finishes', async () => {
    const blue = await app('blue')
    const green = await app('green')
    servers.push(blue, green)
    const dir = await tempDir()
    const file = await writeConfig(dir.path, {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
      state: { path: join(dir.path, 'state.json') },
      rollback: guard,
      rollout: { onLowTraffic: 'proceed' },
    })
    const first = await spawnProxy(file)
    children.push(first)
    await adminPost(first.admin, '/rollout', { to: 'green', steps: [10, 100], stepSeconds: 3 })
    expect((await adminPost(first.admin, '/rollout/pause', {})).status).toBe(200)
    expect(await first.stop()).toBe(0)
    const second = await spawnProxy(file)
    children.push(second)
    const held = await heldFor(second.admin, 2500)
    expect(held).toMatchObject({ weights: { green: 10 }, rollout: { status: 'paused', step: 0 } })
    expect((await adminPost(second.admin, '/rollout/resume', {})).status).toBe(200)
    await until(second.admin, (state) => state.rollout?.status === 'completed', 'the rollout to complete')
    await dir.remove()
  })
})
