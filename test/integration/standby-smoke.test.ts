import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { adminGet, adminPost, errorCode } from '../helpers/admin.ts'
import { killRunningClis, runCli, spawnCollecting } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { followEvents, type LiveEvents } from '../helpers/live-events.ts'
import { CLI, startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// Smoke checks where standby ends and where a rollout moves on: a switch back to a color whose standby is over
// must pass them again, and a rollout's later step waits for them. A real proxy, real upstreams whose smoke
// endpoint the test breaks and fixes.

/** An upstream whose GET /smoke answers `smokeStatus`, and everything else 200 with its name. */
interface SmokeUpstream {
  server: TestServer
  smokeStatus: number
}

async function upstream(name: string): Promise<SmokeUpstream> {
  const upstream = { smokeStatus: 200 } as SmokeUpstream
  upstream.server = await startServer((req, res) => {
    res.writeHead(req.url === '/smoke' ? upstream.smokeStatus : 200)
    res.end(name)
  })
  return upstream
}

const smoke = (on: Record<string, boolean>) => ({ checks: [{ name: 'smoke page', path: '/smoke' }], on })

interface Audited {
  action: string
  result: string
  code?: string
  forcedPast?: string[]
}

async function audited(admin: string): Promise<Audited[]> {
  return (await adminGet<{ events: Audited[] }>(admin, '/events?limit=100')).body.events
}

describe('smoke checks at the end of standby and before a rollout step, and the standby in the CLI', () => {
  const upstreams: SmokeUpstream[] = []
  let proxy: TestProxy | undefined
  let events: LiveEvents | undefined

  afterAll(() => killRunningClis())

  afterEach(async () => {
    events?.close()
    await proxy?.close()
    proxy = undefined
    await Promise.all(upstreams.splice(0).map((each) => each.server.close()))
  })

  async function setUp(extra: Record<string, unknown>) {
    const blue = await upstream('blue')
    const green = await upstream('green')
    upstreams.push(blue, green)
    proxy = await startProxy({ blue: [blue.server.url], green: [green.server.url] }, extra)
    events = await followEvents(proxy.admin)
    return { blue, green, admin: proxy.admin }
  }

  async function standbyOver(admin: string): Promise<void> {
    const { body } = await adminGet<{ standby: { keepUntil: string } }>(admin, '/state')
    await eventually(() => Date.now() > Date.parse(body.standby.keepUntil) + 50, {
      timeout: 10_000,
      message: 'keepFor to be over',
    })
  }

  it('a switch back after standby is refused while the old color fails its smoke check, allowed once fixed', {
    timeout: 40_000,
  }, async () => {
    // No smoke check on ordinary switches: only the end of standby asks for them here.
    const { blue, admin } = await setUp({
      smoke: smoke({ switch: false, weights: false, rollout: false }),
      standby: { keepFor: '3s' },
    })
    expect((await adminPost(admin, '/switch', { to: 'green' })).status).toBe(200)
    blue.smokeStatus = 500
    // During standby, a rollback is instant: blue is still the way back, smoke checks or not.
    const rolledBack = await adminPost(admin, '/rollback', {})
    expect(rolledBack.status, JSON.stringify(rolledBack.body)).toBe(200)
    expect(rolledBack.body).toMatchObject({ active: 'blue', standby: { color: 'green' } })
    expect((await adminPost(admin, '/switch', { to: 'green' })).status).toBe(200)
    await standbyOver(admin)

    // Standby over: blue may have been scaled down, so it must pass its smoke checks again, rollback included.
    const refused = await adminPost(admin, '/switch', { to: 'blue' })
    expect(refused.status).toBe(412)
    expect(errorCode(refused)).toBe('BG_SMOKE_FAILED')
    expect(JSON.stringify(refused.body)).toMatch(/standby is over/)
    expect(refused.body).toMatchObject({
      error: { details: { color: 'blue', passed: false, checks: [{ name: 'smoke page', passed: false }] } },
    })
    expect(errorCode(await adminPost(admin, '/rollback', {}))).toBe('BG_SMOKE_FAILED')
    const event = await events!.next('smoke', (data) => data.color === 'blue' && data.passed === false)
    expect(event).toMatchObject({ trigger: 'switch', retired: true, checks: [{ name: 'smoke page' }] })

    // force goes past them, audited.
    const forced = await adminPost(admin, '/switch', { to: 'blue', force: true })
    expect(forced.status).toBe(200)
    const trail = await audited(admin)
    expect(
      trail.find((entry) => entry.action === 'switch' && entry.result === 'accepted' && entry.forcedPast),
    ).toMatchObject({
      forcedPast: ['smoke'],
    })
    expect(trail.some((entry) => entry.result === 'refused' && entry.code === 'BG_SMOKE_FAILED')).toBe(true)

    // Once more, and fixed this time: the switch back goes through.
    expect((await adminPost(admin, '/switch', { to: 'green' })).status).toBe(200)
    await standbyOver(admin)
    expect(errorCode(await adminPost(admin, '/switch', { to: 'blue' }))).toBe('BG_SMOKE_FAILED')
    blue.smokeStatus = 200
    const allowed = await adminPost(admin, '/switch', { to: 'blue' })
    expect(allowed.status, JSON.stringify(allowed.body)).toBe(200)
    expect(allowed.body).toMatchObject({ active: 'blue', standby: { color: 'green' } })
  })

  it("a rollout's later step is held while its smoke check fails, and moves on once it passes", {
    timeout: 40_000,
  }, async () => {
    const { green, admin } = await setUp({
      smoke: smoke({ rollout: true, rolloutStep: true, promote: true }),
      rollout: { onLowTraffic: 'proceed' },
      rollback: { evaluateEvery: '100ms' },
    })
    const started = await adminPost(admin, '/rollout', { to: 'green', steps: [10, 100], stepSeconds: 1 })
    expect(started.status, JSON.stringify(started.body)).toBe(200)
    green.smokeStatus = 503

    interface Held {
      generation: number
      weights: { green: number }
      replica: { rolloutStep: { waitingFor: string | null; heldBy?: string } | null }
    }
    const held = await eventually(
      async () => {
        const { body } = await adminGet<Held>(admin, '/state')
        return body.replica.rolloutStep?.waitingFor?.startsWith('smoke checks') ? body : undefined
      },
      { timeout: 8_000, message: 'the step to be held by its smoke check' },
    )
    expect(held.weights.green).toBe(10)
    expect(held.replica.rolloutStep?.heldBy).toBe('smoke')
    expect(held.replica.rolloutStep?.waitingFor).toMatch(/smoke page: .*503/)
    const status = await runCli(['status', '--admin', admin])
    expect(status.stdout).toMatch(
      /^rollout {5}running, step 1\/2 \(10% to green\), held: waiting for smoke checks passing on green \(1 of 1 failing: smoke page: .*503.*\)$/m,
    )
    expect(
      await events!.next('smoke', (data) => data.trigger === 'rollout-step' && data.passed === false),
    ).toMatchObject({ color: 'green', checks: [{ name: 'smoke page', passed: false }] })
    const refusal = (await audited(admin)).find((entry) => entry.code === 'BG_SMOKE_FAILED')
    expect(refusal).toMatchObject({ action: 'rollout', result: 'refused' })
    // A promote is held by the same checks.
    expect(errorCode(await adminPost(admin, '/rollout/promote', {}))).toBe('BG_SMOKE_FAILED')
    // Still at 10% well past the step's second.
    await new Promise((resolve) => setTimeout(resolve, 1500))
    expect((await adminGet<Held>(admin, '/state')).body).toMatchObject({
      generation: held.generation,
      weights: { green: 10 },
    })

    green.smokeStatus = 200
    const completed = await eventually(
      async () => {
        const { body } = await adminGet<Held & { standby: { color: string } | null }>(admin, '/state')
        return body.weights.green === 100 ? body : undefined
      },
      { timeout: 10_000, message: 'the rollout to move on once the smoke check passes' },
    )
    // The rollout's last step took blue's last traffic: blue is on standby, as after a switch.
    expect(completed.standby).toMatchObject({ color: 'blue' })
  })

  it('bluegreen status shows the standby line; status --watch redraws it on the live stream', async () => {
    const { admin } = await setUp({ standby: { keepFor: '3s' } })
    const cli = ['--admin', admin]
    expect((await runCli(['status', ...cli])).stdout).not.toMatch(/^standby/m)
    // An hour between polls: only the live stream can make it redraw.
    const watch = spawnCollecting(
      process.execPath,
      [CLI, 'status', '--watch', '--interval', '3600', ...cli],
      {
        env: { ...process.env, BLUEGREEN_ADMIN: undefined, BLUEGREEN_ADMIN_TOKEN: undefined },
      },
    )
    try {
      await eventually(() => /^active {6}blue$/m.test(watch.output()), { message: 'the first frame' })
      expect((await adminPost(admin, '/switch', { to: 'green' })).status).toBe(200)
      const line =
        /^standby {5}blue since \S+Z, kept until \S+Z, drained on 1 of 1 replica\(s\) at \S+Z, safeToScaleDown no$/m
      await eventually(() => line.test(watch.output()), {
        timeout: 8_000,
        message: `a frame with the standby; got ${watch.output()}`,
      })
      // keepFor over: the `over` event redraws it, safe now.
      await eventually(() => /^standby .* \(over\), .*, safeToScaleDown yes$/m.test(watch.output()), {
        timeout: 8_000,
        message: `a frame saying safeToScaleDown yes; got ${watch.output()}`,
      })
    } finally {
      watch.child.kill('SIGTERM')
    }
    const once = await runCli(['status', ...cli])
    expect(once.stdout).toMatch(/^standby {5}blue since .*safeToScaleDown yes$/m)
  })
})
