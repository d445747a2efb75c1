import type { IncomingMessage, ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost, errorCode } from '../helpers/admin.ts'
import { killRunningClis, runCli } from '../helpers/cli.ts'
import { scrapeMetrics } from '../helpers/metrics.ts'
import { startProxy, startServer, type TestProxy, type TestServer } from '../helpers/servers.ts'

// Smoke checks: sent to the color a change gives traffic, through the proxy's upstream choice and header rewriting,
// refusing the change (412 BG_SMOKE_FAILED) when one fails, unless forced; and on demand (POST /smoke, bluegreen smoke).

/** How an upstream answers the smoke paths; each test breaks one thing and puts it back. */
interface Behaviour {
  status: number
  jsonStatus: string
  body: string
  delayMs: number
}

const HEALTHY: Behaviour = { status: 200, jsonStatus: 'ok', body: 'service ready', delayMs: 0 }

/** A real upstream: "/" for the active health checks (always up), /smoke/* as `behaviour` says. */
async function smokeUpstream(): Promise<{ server: TestServer; behaviour: Behaviour }> {
  const behaviour = { ...HEALTHY }
  const server = await startServer(async (req: IncomingMessage, res: ServerResponse) => {
    const json = (value: unknown) => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(value))
    }
    switch (req.url) {
      case '/smoke/status':
        res.statusCode = behaviour.status
        res.end('status')
        return
      case '/smoke/json':
        return json({ data: { status: behaviour.jsonStatus } })
      case '/smoke/body':
        res.end(behaviour.body)
        return
      case '/smoke/slow':
        await sleep(behaviour.delayMs)
        res.end('slow')
        return
      case '/smoke/headers':
        return json(req.headers)
      case '/smoke/echo': {
        const chunks: Buffer[] = []
        for await (const chunk of req) chunks.push(chunk as Buffer)
        return json({ method: req.method, body: JSON.parse(Buffer.concat(chunks).toString()) })
      }
      default:
        res.end('ok')
    }
  })
  return { server, behaviour }
}

const CHECKS = [
  { name: 'status', path: '/smoke/status', status: '200-299' },
  { name: 'json', path: '/smoke/json', json: { 'data.status': 'ok' } },
  { name: 'body', path: '/smoke/body', bodyContains: 'ready' },
  { name: 'latency', path: '/smoke/slow', maxLatency: '400ms' },
  {
    name: 'headers',
    path: '/smoke/headers',
    headers: { 'x-smoke': 'yes' },
    json: { 'x-smoke': 'yes', 'x-forwarded-proto': 'http', 'x-forwarded-for': '127.0.0.1' },
  },
  {
    name: 'post',
    method: 'POST',
    path: '/smoke/echo',
    headers: { 'content-type': 'application/json' },
    body: '{"ping":{"deep":[1,2]}}',
    json: { method: 'POST', 'body.ping': { deep: [1, 2] } },
  },
]

interface CheckResult {
  name: string
  passed: boolean
  status: number | null
  upstream: string | null
  problem?: string
}

interface Report {
  color: string
  passed: boolean
  checks: CheckResult[]
}

const failing = (report: Report) => report.checks.filter((check) => !check.passed).map((check) => check.name)

describe('smoke checks', () => {
  let blue: { server: TestServer; behaviour: Behaviour }
  let green: { server: TestServer; behaviour: Behaviour }
  let proxy: TestProxy

  beforeAll(async () => {
    blue = await smokeUpstream()
    green = await smokeUpstream()
    proxy = await startProxy(
      { blue: [blue.server.url], green: [green.server.url] },
      { smoke: { checks: CHECKS, timeout: '2s' }, rollback: { enabled: false } },
    )
  })
  afterEach(async () => {
    Object.assign(green.behaviour, HEALTHY)
    killRunningClis()
    const state = (await adminGet(proxy.admin, '/state')).body as {
      active: string
      weights: { blue: number }
    }
    if (state.weights.blue !== 100) {
      expect((await adminPost(proxy.admin, '/switch', { to: 'blue', force: true })).status).toBe(200)
    }
  })
  afterAll(async () => {
    await proxy?.close()
    await blue?.server.close()
    await green?.server.close()
  })

  it('refuses a switch to a green answering 500 with every check result, and allows it once green is fixed', async () => {
    green.behaviour.status = 500
    const refused = await adminPost(proxy.admin, '/switch', { to: 'green' })
    expect(refused.status).toBe(412)
    expect(errorCode(refused)).toBe('BG_SMOKE_FAILED')
    const report = (refused.body as { error: { details: Report } }).error.details
    expect(report.color).toBe('green')
    expect(report.checks.map((check) => check.name)).toEqual(CHECKS.map((check) => check.name))
    expect(failing(report)).toEqual(['status'])
    const status = report.checks.find((check) => check.name === 'status')!
    expect(status).toMatchObject({ status: 500, upstream: green.server.url })
    expect(status.problem).toMatch(/status 500, expected 200-299/)
    expect(((await adminGet(proxy.admin, '/state')).body as { active: string }).active).toBe('blue')

    green.behaviour.status = 200
    const accepted = await adminPost(proxy.admin, '/switch', { to: 'green' })
    expect(accepted.status).toBe(200)
    expect((accepted.body as { active: string }).active).toBe('green')
  })

  it('refuses a weight change toward green, not one away from it', async () => {
    green.behaviour.status = 503
    const toward = await adminPost(proxy.admin, '/weights', { blue: 90, green: 10 })
    expect(toward.status).toBe(412)
    expect(errorCode(toward)).toBe('BG_SMOKE_FAILED')

    green.behaviour.status = 200
    expect((await adminPost(proxy.admin, '/weights', { blue: 50, green: 50 })).status).toBe(200)
    // Green breaks while it has half; moving traffic back to blue must not be refused for it.
    green.behaviour.status = 500
    expect((await adminPost(proxy.admin, '/weights', { blue: 90, green: 10 })).status).toBe(200)
  })

  it('refuses to start a rollout toward a failing green', async () => {
    green.behaviour.jsonStatus = 'degraded'
    const refused = await adminPost(proxy.admin, '/rollout', {
      to: 'green',
      steps: [10, 100],
      stepSeconds: 60,
    })
    expect(refused.status).toBe(412)
    expect(errorCode(refused)).toBe('BG_SMOKE_FAILED')
    expect(failing((refused.body as { error: { details: Report } }).error.details)).toEqual(['json'])
  })

  it('fails the JSON field, body substring and latency checks each when they should', async () => {
    const smoke = async () => {
      const reply = await adminPost<Report>(proxy.admin, '/smoke', { color: 'green' })
      expect(reply.status).toBe(200)
      return reply.body
    }
    const passing = await smoke()
    expect(passing.passed).toBe(true)
    expect(failing(passing)).toEqual([])

    green.behaviour.jsonStatus = 'degraded'
    const json = await smoke()
    expect(json.passed).toBe(false)
    expect(failing(json)).toEqual(['json'])
    expect(json.checks[1]!.problem).toBe('data.status is "degraded", expected "ok"')
    Object.assign(green.behaviour, HEALTHY)

    green.behaviour.body = 'still warming up'
    const body = await smoke()
    expect(failing(body)).toEqual(['body'])
    expect(body.checks[2]!.problem).toBe('the body does not contain "ready"')
    Object.assign(green.behaviour, HEALTHY)

    green.behaviour.delayMs = 800
    const slow = await smoke()
    expect(failing(slow)).toEqual(['latency'])
    expect(slow.checks[3]!.problem).toMatch(/^took \d+ ms, more than 400 ms$/)
  })

  it('sends the checks with their method, body and headers, rewritten as for a proxied request', async () => {
    const reply = await adminPost<Report>(proxy.admin, '/smoke', { color: 'blue' })
    expect(reply.body.checks[4]).toMatchObject({ name: 'headers', passed: true, upstream: blue.server.url })
    expect(reply.body.checks[5]).toMatchObject({ name: 'post', passed: true, status: 200 })
  })

  it('POST /smoke takes a color and nothing else', async () => {
    const unknown = await adminPost(proxy.admin, '/smoke', { color: 'purple' })
    expect(unknown.status).toBe(400)
    expect(errorCode(unknown)).toBe('BG_UNKNOWN_COLOR')
    const extra = await adminPost(proxy.admin, '/smoke', { color: 'green', force: true })
    expect(extra.status).toBe(400)
    expect(errorCode(extra)).toBe('BG_BAD_REQUEST')
  })

  it('bluegreen smoke COLOR prints every check and exits 0 when all pass, 1 when one fails', async () => {
    const passed = await runCli(['smoke', 'green', '--admin', proxy.admin])
    expect(passed.stderr).toBe('')
    expect(passed.code).toBe(0)
    expect(passed.stdout).toMatch(/^smoke green: all 6 check\(s\) passed\n/)

    green.behaviour.status = 500
    const failed = await runCli(['smoke', 'green', '--admin', proxy.admin])
    expect(failed.code).toBe(1)
    expect(failed.stdout).toMatch(/^smoke green: 1 of 6 check\(s\) failed\n/)
    expect(failed.stdout).toMatch(/FAIL\s+status\s+500\s+\d+ ms\s+status 500, expected 200-299/)

    const json = await runCli(['smoke', 'green', '--json', '--admin', proxy.admin])
    expect(json.code).toBe(1)
    expect(failing(JSON.parse(json.stdout) as Report)).toEqual(['status'])
  })

  it('bluegreen switch refused by smoke exits 1 naming the failing check', async () => {
    green.behaviour.status = 500
    const refused = await runCli(['switch', 'green', '--admin', proxy.admin])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/BG_SMOKE_FAILED/)
    expect(refused.stderr).toMatch(/status: status 500/)
  })

  it('force sends traffic past failing checks, and the audit trail says it was forced past smoke', async () => {
    green.behaviour.status = 500
    const forced = await adminPost(proxy.admin, '/switch', { to: 'green', force: true, reason: 'hotfix' })
    expect(forced.status).toBe(200)
    expect((forced.body as { active: string }).active).toBe('green')
    const events = (await adminGet(proxy.admin, '/events?limit=5')).body.events as Record<string, unknown>[]
    expect(events[0]).toMatchObject({
      action: 'switch',
      result: 'accepted',
      reason: 'hotfix',
      forcedPast: ['smoke'],
    })

    const refusedEvent = async () => {
      await adminPost(proxy.admin, '/switch', { to: 'blue', force: true })
      await adminPost(proxy.admin, '/switch', { to: 'green' })
      return ((await adminGet(proxy.admin, '/events?limit=1')).body.events as Record<string, unknown>[])[0]
    }
    expect(await refusedEvent()).toMatchObject({
      action: 'switch',
      result: 'refused',
      code: 'BG_SMOKE_FAILED',
    })
  })

  it('counts every check in bluegreen_smoke_checks_total by color and result', async () => {
    const pass = 'bluegreen_smoke_checks_total{color="green",result="pass"}'
    const fail = 'bluegreen_smoke_checks_total{color="green",result="fail"}'
    const before = await scrapeMetrics(proxy.admin)
    green.behaviour.status = 500
    await adminPost(proxy.admin, '/smoke', { color: 'green' })
    const after = await scrapeMetrics(proxy.admin)
    expect((after.get(fail) ?? 0) - (before.get(fail) ?? 0)).toBe(1)
    expect((after.get(pass) ?? 0) - (before.get(pass) ?? 0)).toBe(5)
  })
})

describe('smoke.on', () => {
  let blue: { server: TestServer; behaviour: Behaviour }
  let green: { server: TestServer; behaviour: Behaviour }
  let proxy: TestProxy

  beforeAll(async () => {
    blue = await smokeUpstream()
    green = await smokeUpstream()
    green.behaviour.status = 500
    proxy = await startProxy(
      { blue: [blue.server.url], green: [green.server.url] },
      { smoke: { checks: CHECKS.slice(0, 1), on: { switch: false } }, rollback: { enabled: false } },
    )
  })
  afterAll(async () => {
    await proxy?.close()
    await blue?.server.close()
    await green?.server.close()
  })

  it('runs no checks before the changes it turns off, and still before the others', async () => {
    const weights = await adminPost(proxy.admin, '/weights', { blue: 90, green: 10 })
    expect(errorCode(weights)).toBe('BG_SMOKE_FAILED')
    const switched = await adminPost(proxy.admin, '/switch', { to: 'green' })
    expect(switched.status).toBe(200)
    const events = (await adminGet(proxy.admin, '/events?limit=1')).body.events as Record<string, unknown>[]
    expect(events[0]).toMatchObject({ action: 'switch', result: 'accepted' })
    expect(events[0]).not.toHaveProperty('forcedPast')
  })
})
