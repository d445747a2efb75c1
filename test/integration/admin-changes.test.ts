import { readFile, writeFile } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost, errorCode } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import { withRedis } from '../helpers/replicas.ts'
import {
  type ChildProxy,
  echoUpstream,
  refusedUrl,
  spawnProxy,
  startProxy,
  startServer,
  type TestProxy,
  type TestServer,
  tempDir,
  useColorRig,
  writeConfig,
} from '../helpers/servers.ts'

// What a change through the admin API does besides changing the state: rollback, the health probe that gates it,
// compare-and-set under concurrency, and the audit trail of every attempt.

interface StateBody {
  active: string
  weights: { blue: number; green: number }
  generation: number
  reason: string
  trigger?: string
  updatedBy: string
}

/** The routing state, without the replica's self-report (health checks and drains move on their own). */
async function stateOf(admin: string): Promise<StateBody> {
  const reply = await adminGet(admin, '/state')
  expect(reply.status).toBe(200)
  const { replica: _replica, ...routing } = reply.body as Record<string, unknown>
  return routing as unknown as StateBody
}

interface Event {
  at: string
  actor: string
  address: string
  action: string
  from: { active: string; weights: { blue: number; green: number }; generation: number } | null
  to: { active: string; weights: { blue: number; green: number } } | null
  reason: string
  result: 'accepted' | 'unchanged' | 'refused'
  generation?: number
  code?: string
  message?: string
}

async function eventsOf(admin: string, limit = 100): Promise<Event[]> {
  const reply = await adminGet(admin, `/events?limit=${limit}`)
  expect(reply.status).toBe(200)
  return reply.body.events as Event[]
}

/** A metric's value from /metrics; labels as written there, e.g. '{trigger="rollback"}'. */
async function metric(admin: string, name: string): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text()
  const line = text.split('\n').find((entry) => entry.startsWith(`${name} `))
  if (!line) throw new Error(`no ${name} in /metrics`)
  return Number(line.slice(name.length + 1))
}

/** An upstream answering 200, except on /healthz, which answers `health` (or never, when it is 'hang'). */
async function probedUpstream(name: string) {
  const seen = { health: 200 as number | 'hang', probes: [] as { method: string; agent: string }[], other: 0 }
  const server = await startServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    if (req.url === '/healthz') {
      seen.probes.push({ method: req.method ?? '', agent: req.headers['user-agent'] ?? '' })
      if (seen.health === 'hang') return
      res.writeHead(seen.health, { 'content-type': 'text/plain' })
      res.end(String(seen.health))
      return
    }
    seen.other++
    res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name })
    res.end(name)
  })
  return Object.assign(seen, { server, url: server.url })
}

const colorOf = async (url: string) => (await fetch(url)).headers.get('x-bluegreen-color')

describe('POST /rollback', () => {
  const rig = useColorRig()

  it('answers 409 BG_NO_PREVIOUS_STATE before any change, changing nothing', async () => {
    for (const body of [{}, { reason: 'undo' }, { force: true, wait: true }, '']) {
      const reply = await adminPost(rig.proxy.admin, '/rollback', body)
      expect(reply.status, JSON.stringify(body)).toBe(409)
      expect(errorCode(reply)).toBe('BG_NO_PREVIOUS_STATE')
    }
    expect(await stateOf(rig.proxy.admin)).toMatchObject({ active: 'blue', generation: 0 })
    expect(await metric(rig.proxy.admin, 'bluegreen_switches_total{trigger="rollback"}')).toBe(0)
  })

  it('refuses unknown fields and bad types with 400', async () => {
    for (const body of [
      { to: 'green' },
      { reason: 7 },
      { expectedGeneration: 'now' },
      { force: 'yes' },
      '[]',
    ]) {
      const reply = await adminPost(rig.proxy.admin, '/rollback', body)
      expect(reply.status, JSON.stringify(body)).toBe(400)
      expect(errorCode(reply)).toBe('BG_BAD_REQUEST')
    }
  })

  it('goes back to the state before the last change, marked "rollback"; a second one undoes the first', async () => {
    expect((await adminPost(rig.proxy.admin, '/switch', { to: 'green', reason: 'release 7' })).status).toBe(
      200,
    )
    const split = await adminPost(rig.proxy.admin, '/weights', { blue: 90, green: 10, reason: 'back off' })
    expect(split.body).toMatchObject({ active: 'blue', generation: 2 })

    const first = await adminPost(rig.proxy.admin, '/rollback', {})
    expect(first.status).toBe(200)
    expect(first.body).toMatchObject({
      active: 'green',
      weights: { blue: 0, green: 100 },
      generation: 3,
      trigger: 'rollback',
      reason: 'rollback to generation 1',
      replica: { appliedGeneration: 3 },
    })
    expect(await colorOf(rig.proxy.url)).toBe('green')
    expect(await stateOf(rig.proxy.admin)).toMatchObject({
      active: 'green',
      generation: 3,
      trigger: 'rollback',
    })

    const second = await adminPost(rig.proxy.admin, '/rollback', { reason: 'the rollback was wrong' })
    expect(second.status).toBe(200)
    expect(second.body).toMatchObject({
      active: 'blue',
      weights: { blue: 90, green: 10 },
      generation: 4,
      trigger: 'rollback',
      reason: 'the rollback was wrong',
    })
    // And again: rollbacks toggle between the last two states.
    expect((await adminPost(rig.proxy.admin, '/rollback', {})).body).toMatchObject({
      active: 'green',
      generation: 5,
    })

    expect(await metric(rig.proxy.admin, 'bluegreen_switches_total{trigger="rollback"}')).toBe(3)
    expect(await metric(rig.proxy.admin, 'bluegreen_switches_total{trigger="admin"}')).toBe(2)
    // A plain change after a rollback is an admin change again.
    const admin = await adminPost(rig.proxy.admin, '/switch', { to: 'blue' })
    expect(admin.body).toMatchObject({ trigger: 'admin', generation: 6 })
    expect(await metric(rig.proxy.admin, 'bluegreen_switches_total{trigger="admin"}')).toBe(3)
  })

  it('answers 409 to a stale expectedGeneration and accepts the current one', async () => {
    const before = await stateOf(rig.proxy.admin)
    for (const expectedGeneration of [before.generation - 1, before.generation + 1, 0]) {
      const reply = await adminPost(rig.proxy.admin, '/rollback', { expectedGeneration })
      expect(reply.status, String(expectedGeneration)).toBe(409)
      expect(errorCode(reply)).toBe('BG_GENERATION_CONFLICT')
    }
    expect(await stateOf(rig.proxy.admin)).toEqual(before)
    const reply = await adminPost(rig.proxy.admin, '/rollback', { expectedGeneration: before.generation })
    expect(reply.status).toBe(200)
    expect(reply.body.generation).toBe(before.generation + 1)
  })

  it('records the client address as the actor when no token is configured', async () => {
    const [latest] = await eventsOf(rig.proxy.admin, 1)
    expect(latest).toMatchObject({
      actor: '127.0.0.1',
      address: '127.0.0.1',
      action: 'rollback',
      result: 'accepted',
    })
  })
})

describe('changes to the state already in force', () => {
  const rig = useColorRig()
  const blueAll = { active: 'blue', weights: { blue: 100, green: 0 } }
  const greenAll = { active: 'green', weights: { blue: 0, green: 100 } }
  const watchingOf = async (admin: string) =>
    ((await adminGet(admin, '/state')).body.replica as { watching: unknown }).watching

  it('switch green twice, then rollback: traffic is back on blue', async () => {
    const { admin } = rig.proxy
    expect((await adminPost(admin, '/switch', { to: 'green' })).body).toMatchObject({ generation: 1 })
    expect((await adminPost(admin, '/switch', { to: 'green' })).status).toBe(200)
    expect(await colorOf(rig.proxy.url)).toBe('green')

    const rollback = await adminPost(admin, '/rollback', {})
    expect(rollback.status).toBe(200)
    expect(rollback.body).toMatchObject({
      ...blueAll,
      generation: 2,
      trigger: 'rollback',
      reason: 'rollback to generation 0',
      changed: true,
    })
    expect(await colorOf(rig.proxy.url)).toBe('blue')
  })

  it('a repeated switch answers changed: false with the same generation, audited as unchanged, not watched anew', async () => {
    const { admin } = rig.proxy
    const first = await adminPost(admin, '/switch', { to: 'green', reason: 'release 8' })
    expect(first.body).toMatchObject({ ...greenAll, generation: 3, changed: true })
    const watching = await watchingOf(admin)
    expect(watching).toMatchObject({ color: 'green', generation: 3 })

    const again = await adminPost(admin, '/switch', { to: 'green', reason: 'release 8, to be sure' })
    expect(again.status).toBe(200)
    // The state in force, as the first switch left it.
    expect(again.body).toMatchObject({ ...greenAll, generation: 3, reason: 'release 8', changed: false })
    expect(await stateOf(admin)).toMatchObject({ generation: 3, reason: 'release 8' })
    expect(await metric(admin, 'bluegreen_switches_total{trigger="admin"}')).toBe(2)
    // The first switch's watch goes on as it was: the repeat neither ends nor restarts it.
    expect(await watchingOf(admin)).toEqual(watching)

    const [latest, before] = await eventsOf(admin, 2)
    expect(latest).toEqual({
      at: expect.any(String),
      actor: '127.0.0.1',
      address: '127.0.0.1',
      action: 'switch',
      from: { ...greenAll, generation: 3 },
      to: greenAll,
      reason: 'release 8, to be sure',
      result: 'unchanged',
      generation: 3,
    })
    expect(before).toMatchObject({ reason: 'release 8', result: 'accepted', generation: 3 })
  })

  it('repeated weights likewise, and with wait: true it waits for the generation in force', async () => {
    const { admin } = rig.proxy
    const split = await adminPost(admin, '/weights', { blue: 90, green: 10 })
    expect(split.body).toMatchObject({ generation: 4, changed: true })
    const again = await adminPost(admin, '/weights', { blue: 90, green: 10, wait: true, reason: 'same' })
    expect(again.status).toBe(200)
    expect(again.body).toMatchObject({
      active: 'blue',
      weights: { blue: 90, green: 10 },
      generation: 4,
      changed: false,
      wait: { complete: true, pending: [], replicas: 1 },
    })
    // A stale expectedGeneration is as stale for a change that would alter nothing.
    const stale = await adminPost(admin, '/weights', { blue: 90, green: 10, expectedGeneration: 3 })
    expect(stale.status).toBe(409)
    expect(errorCode(stale)).toBe('BG_GENERATION_CONFLICT')
    expect((await eventsOf(admin, 2)).map((event) => event.result)).toEqual(['refused', 'unchanged'])
  })

  it('says changed: true on every change, and a plain change ending a rollout at its weights is one', async () => {
    const { admin } = rig.proxy
    const rollout = await adminPost(admin, '/rollout', { to: 'green', steps: [50, 100], stepSeconds: 600 })
    expect(rollout.body).toMatchObject({ weights: { blue: 50, green: 50 }, generation: 5, changed: true })
    // The weights stay 50/50, but the rollout ends: that is a change, stored and answered as one.
    const ended = await adminPost(admin, '/weights', { blue: 50, green: 50 })
    expect(ended.body).toMatchObject({ weights: { blue: 50, green: 50 }, generation: 6, changed: true })
    expect(ended.body).not.toHaveProperty('rollout')
    // The rollback goes past the 50/50 states to the last routing that differs: 90/10.
    const rollback = await adminPost(admin, '/rollback', {})
    expect(rollback.body).toMatchObject({ weights: { blue: 90, green: 10 }, generation: 7, changed: true })
    const restarted = await adminPost(admin, '/rollout', { to: 'green', steps: [60, 100], stepSeconds: 600 })
    expect(restarted.body).toMatchObject({ weights: { blue: 40, green: 60 }, generation: 8, changed: true })
    const aborted = await adminPost(admin, '/rollout/abort', {})
    expect(aborted.body).toMatchObject({ weights: { blue: 90, green: 10 }, generation: 9, changed: true })
    expect((await adminPost(admin, '/switch', { to: 'blue' })).body).toMatchObject({
      generation: 10,
      changed: true,
    })
  })
})

describe('a state file written before unchanged changes were refused', () => {
  let blue: TestServer
  let green: TestServer
  let dir: Awaited<ReturnType<typeof tempDir>>
  let proxy: TestProxy | undefined

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
    dir = await tempDir('bluegreen-legacy-')
  })
  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
    await green?.close()
    await dir?.remove()
  })

  it('a rollback from a repeated switch refuses with 409, saying why, rather than changing nothing', async () => {
    // What an older version left after "switch green" twice: the second switch replaced the first.
    const at = (generation: number, active: 'blue' | 'green', reason: string) => ({
      active,
      weights: active === 'blue' ? { blue: 100, green: 0 } : { blue: 0, green: 100 },
      generation,
      updatedAt: new Date(2026, 0, generation + 1).toISOString(),
      updatedBy: 'admin@127.0.0.1',
      reason,
      trigger: 'admin',
    })
    const path = join(dir.path, 'state.json')
    await writeFile(
      path,
      JSON.stringify({ state: at(2, 'green', 'again'), previous: at(1, 'green', 'once') }),
    )
    proxy = await startProxy({ blue: [blue.url], green: [green.url] }, { state: { path } })

    const refused = await adminPost(proxy.admin, '/rollback', {})
    expect(refused.status).toBe(409)
    expect(errorCode(refused)).toBe('BG_NO_PREVIOUS_STATE')
    expect((refused.body.error as { message: string }).message).toMatch(/switch or set the weights/)
    expect(await stateOf(proxy.admin)).toMatchObject({ active: 'green', generation: 2 })
    // From the next change on, rollbacks work as ever.
    expect((await adminPost(proxy.admin, '/switch', { to: 'blue' })).body).toMatchObject({ generation: 3 })
    expect((await adminPost(proxy.admin, '/rollback', {})).body).toMatchObject({
      active: 'green',
      generation: 4,
    })
  })
})

describe('readiness-gated changes', () => {
  let blue: TestServer
  let green: Awaited<ReturnType<typeof probedUpstream>>
  let hanging: Awaited<ReturnType<typeof probedUpstream>>
  let dead: string
  let proxy: TestProxy

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await probedUpstream('green')
    green.health = 500
    hanging = await probedUpstream('hanging')
    hanging.health = 'hang'
    // Nothing listens there.
    dead = await refusedUrl()
    proxy = await startProxy(
      { blue: [], green: [] },
      {
        pools: {
          blue: { upstreams: [blue.url] },
          // Active checks off: this is about the probe a change makes, and every probe is counted.
          green: {
            upstreams: [dead, green.url],
            healthCheck: { path: '/healthz', timeout: '2s', enabled: false },
          },
        },
      },
    )
  })
  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
    await green?.server.close()
    await hanging?.server.close()
  })

  it('refuses with 412 BG_TARGET_UNHEALTHY naming each probe, and changes nothing', async () => {
    for (const [path, body] of [
      ['/switch', { to: 'green' }],
      ['/switch', { to: 'green', force: false, wait: true }],
      ['/weights', { blue: 99, green: 1 }],
      ['/weights', { blue: 0, green: 100 }],
    ] as const) {
      const reply = await adminPost(proxy.admin, path, body)
      expect(reply.status, `${path} ${JSON.stringify(body)}`).toBe(412)
      expect(errorCode(reply)).toBe('BG_TARGET_UNHEALTHY')
      const error = reply.body.error as { message: string; details: { probes: unknown[] } }
      expect(error.message).toContain(`${dead} ECONNREFUSED`)
      expect(error.message).toContain(`${green.url} HTTP 500`)
      expect(error.message).toContain('force')
      expect(error.details.probes).toEqual([
        { upstream: dead, up: false, detail: 'ECONNREFUSED' },
        { upstream: green.url, up: false, detail: 'HTTP 500' },
      ])
    }
    expect(await stateOf(proxy.admin)).toMatchObject({ active: 'blue', generation: 0 })
    expect(await colorOf(proxy.url)).toBe('blue')
    // The probe is a GET of pools.green.healthCheck.path, and nothing else reached green.
    expect(green.probes).toHaveLength(4)
    expect(
      green.probes.every((probe) => probe.method === 'GET' && probe.agent === 'bluegreen-proxy/probe'),
    ).toBe(true)
    expect(green.other).toBe(0)
  })

  it('lets force through, and does not probe a pool that already carries traffic', async () => {
    const forced = await adminPost(proxy.admin, '/weights', { blue: 90, green: 10, force: true })
    expect(forced.status).toBe(200)
    expect(forced.body).toMatchObject({ weights: { blue: 90, green: 10 }, generation: 1 })
    const probes = green.probes.length
    // Green carries traffic already: moving more to it is not gated, whatever its probe says.
    expect((await adminPost(proxy.admin, '/weights', { blue: 50, green: 50 })).status).toBe(200)
    expect((await adminPost(proxy.admin, '/switch', { to: 'green' })).status).toBe(200)
    expect(green.probes.length).toBe(probes)
    // Blue does not carry traffic now, so going back probes it; it answers.
    expect((await adminPost(proxy.admin, '/switch', { to: 'blue' })).status).toBe(200)
    // A rollback to the all-green state is a change like any other: gated.
    const rollback = await adminPost(proxy.admin, '/rollback', {})
    expect(rollback.status).toBe(412)
    expect(errorCode(rollback)).toBe('BG_TARGET_UNHEALTHY')
    expect((await adminPost(proxy.admin, '/rollback', { force: true })).body).toMatchObject({
      active: 'green',
    })
    expect((await adminPost(proxy.admin, '/switch', { to: 'blue' })).status).toBe(200)
  })

  it('counts any answer below 500 as up, and one upstream up is enough', async () => {
    for (const status of [404, 200]) {
      green.health = status
      const reply = await adminPost(proxy.admin, '/weights', { blue: 80, green: 20 })
      expect(reply.status, String(status)).toBe(200)
      expect((await adminPost(proxy.admin, '/switch', { to: 'blue' })).status).toBe(200)
    }
    green.health = 500
  })

  it('bounds the probe by healthCheck.timeout', async () => {
    const slow = await startProxy(
      { blue: [], green: [] },
      {
        pools: {
          blue: { upstreams: [blue.url] },
          green: {
            upstreams: [hanging.url],
            healthCheck: { path: '/healthz', timeout: '300ms', enabled: false },
          },
        },
      },
    )
    try {
      const started = performance.now()
      const reply = await adminPost(slow.admin, '/switch', { to: 'green' })
      const elapsed = performance.now() - started
      expect(reply.status).toBe(412)
      expect(errorCode(reply)).toBe('BG_TARGET_UNHEALTHY')
      expect(elapsed).toBeGreaterThanOrEqual(250)
      expect(elapsed).toBeLessThan(2_000)
      expect(hanging.probes.length).toBeGreaterThan(0)
      expect(await stateOf(slow.admin)).toMatchObject({ active: 'blue', generation: 0 })
    } finally {
      await slow.close()
    }
  })
})

describe('readiness-gated changes with active health checks', () => {
  let blue: TestServer
  let green: Awaited<ReturnType<typeof probedUpstream>>
  let proxy: TestProxy

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await probedUpstream('green')
    green.health = 500
    proxy = await startProxy(
      { blue: [], green: [] },
      {
        pools: {
          blue: { upstreams: [blue.url] },
          green: {
            upstreams: [green.url],
            healthCheck: { path: '/healthz', interval: '100ms', unhealthyThreshold: 1, healthyThreshold: 1 },
          },
        },
      },
    )
  })
  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
    await green?.server.close()
  })

  it('says the pool failed its health checks once they took every upstream out, and passes once one is back', async () => {
    const refused = await eventually(async () => {
      const reply = await adminPost(proxy.admin, '/switch', { to: 'green' })
      return /failing its health checks/.test(
        (reply.body.error as { message?: string } | undefined)?.message ?? '',
      )
        ? reply
        : undefined
    })
    expect(refused.status).toBe(412)
    expect(errorCode(refused)).toBe('BG_TARGET_UNHEALTHY')
    expect((refused.body.error as { message: string }).message).toMatch(
      /^none of the 1 upstream\(s\) of the green pool is available .*"force": true/,
    )
    expect(await stateOf(proxy.admin)).toMatchObject({ active: 'blue', generation: 0 })
    green.health = 200
    const accepted = await eventually(async () => {
      const reply = await adminPost(proxy.admin, '/switch', { to: 'green' })
      return reply.status === 200 ? reply : undefined
    })
    expect(accepted.body).toMatchObject({ active: 'green', generation: 1 })
  })
})

describe('concurrent changes on the file store', () => {
  let blue: TestServer
  let green: TestServer
  let dir: Awaited<ReturnType<typeof tempDir>>
  const children: ChildProxy[] = []

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
    dir = await tempDir('bluegreen-concurrent-')
  })
  afterAll(async () => {
    await Promise.all(children.map((child) => child.stop('SIGKILL')))
    await blue?.close()
    await green?.close()
    await dir?.remove()
  })

  /** Ten rounds of two switches racing on one expectedGeneration; `admins` says where each of the two goes. */
  async function race(admins: [string, string]) {
    for (let round = 0; round < 10; round++) {
      const { generation, active } = await stateOf(admins[0])
      const other = active === 'blue' ? 'green' : 'blue'
      // Different targets, so the state itself shows which one won, and each a change from whatever the state is
      // (a change to the state in force would be answered unchanged, not raced): a new split every round.
      const replies = await Promise.all([
        adminPost(admins[0], '/switch', { to: other, expectedGeneration: generation, reason: 'first' }),
        adminPost(admins[1], '/weights', {
          blue: 40 + round,
          green: 60 - round,
          expectedGeneration: generation,
          reason: 'second',
        }),
      ])
      const statuses = replies.map((reply) => reply.status)
      expect([...statuses].sort(), `round ${round}`).toEqual([200, 409])
      const winner = replies.find((reply) => reply.status === 200)!
      const loser = replies.find((reply) => reply.status === 409)!
      expect(errorCode(loser)).toBe('BG_GENERATION_CONFLICT')
      expect(winner.body.generation).toBe(generation + 1)
      for (const admin of new Set(admins)) {
        const state = await stateOf(admin)
        expect(state.generation).toBe(generation + 1)
        expect(state.reason).toBe(winner.body.reason)
      }
    }
  }

  it('lets exactly one of two switches with the same expectedGeneration through (one process)', async () => {
    const proxy = await startProxy({ blue: [blue.url], green: [green.url] })
    try {
      await race([proxy.admin, proxy.admin])
      const events = await eventsOf(proxy.admin)
      expect(events.filter((event) => event.result === 'accepted')).toHaveLength(10)
      const refused = events.filter((event) => event.result === 'refused')
      expect(refused).toHaveLength(10)
      for (const event of refused) expect(event.code).toBe('BG_GENERATION_CONFLICT')
    } finally {
      await proxy.close()
    }
  })

  it('lets exactly one through when the two go to two processes sharing the state file', async () => {
    const config = {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
      state: { path: join(dir.path, 'shared.json') },
      shutdown: { grace: '1s' },
    }
    const file = await writeConfig(dir.path, config, 'shared.config.json')
    children.push(await spawnProxy(file))
    children.push(await spawnProxy(file))
    await race([children[0]!.admin, children[1]!.admin])
    // Both processes wrote to the one audit file: each attempt is there once.
    const events = await eventsOf(children[1]!.admin)
    expect(events).toHaveLength(20)
    expect(events.filter((event) => event.result === 'accepted')).toHaveLength(10)
  })
})

describe('audit trail', () => {
  let blue: TestServer
  let green: Awaited<ReturnType<typeof probedUpstream>>
  let proxy: TestProxy
  const token = 'admin-token-0123456789'
  const ci = 'ci-token-0123456789abcdef'

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await probedUpstream('green')
    proxy = await startProxy(
      { blue: [], green: [] },
      {
        admin: { listen: '127.0.0.1:0', token, tokens: { ci } },
        pools: {
          blue: { upstreams: [blue.url] },
          green: { upstreams: [green.url], healthCheck: { path: '/healthz', enabled: false } },
        },
      },
    )
  })
  afterAll(async () => {
    await proxy?.close()
    await blue?.close()
    await green?.server.close()
  })

  it('records every attempt, accepted or refused, newest first, with who, what, why and how it ended', async () => {
    expect(await eventsOf(proxy.admin)).toEqual([])
    green.health = 500
    const attempts: [string, unknown, string | undefined, number][] = [
      ['/switch', { to: 'green', reason: 'release 7' }, ci, 412],
      ['/switch', 'not json', ci, 400],
      ['/weights', { blue: 60, green: 50, reason: 'canary' }, ci, 400],
      ['/switch', { to: 'green', reason: 'x'.repeat(70 * 1024) }, ci, 413],
      ['/switch', { to: 'green', force: true, reason: 'forced release 7' }, ci, 200],
      ['/switch', { to: 'blue', expectedGeneration: 0, reason: 'stale' }, token, 409],
      ['/switch', { to: 'blue' }, 'wrong-token-0123456789', 401],
      ['/switch', { to: 'blue' }, undefined, 401],
      ['/rollback', { reason: 'undo the release' }, token, 200],
    ]
    for (const [path, body, bearer, status] of attempts) {
      const reply = await adminPost(proxy.admin, path, body, bearer)
      expect(reply.status, `${path} ${JSON.stringify(body).slice(0, 50)}`).toBe(status)
    }
    const events = await eventsOf(proxy.admin)
    expect(events).toHaveLength(attempts.length)
    // Newest first.
    const times = events.map((event) => Date.parse(event.at))
    expect(times).toEqual([...times].sort((a, b) => b - a))
    const blueAll = { active: 'blue', weights: { blue: 100, green: 0 } }
    const greenAll = { active: 'green', weights: { blue: 0, green: 100 } }
    expect(events.reverse()).toEqual([
      expect.objectContaining({
        actor: 'token:ci',
        action: 'switch',
        from: { ...blueAll, generation: 0 },
        to: greenAll,
        reason: 'release 7',
        result: 'refused',
        code: 'BG_TARGET_UNHEALTHY',
        message: expect.stringContaining('HTTP 500'),
      }),
      expect.objectContaining({ actor: 'token:ci', result: 'refused', code: 'BG_BAD_REQUEST', to: null }),
      // Refused as invalid: no target to record, but the reason given is kept.
      expect.objectContaining({
        actor: 'token:ci',
        action: 'weights',
        code: 'BG_INVALID_WEIGHTS',
        to: null,
        reason: 'canary',
      }),
      expect.objectContaining({ actor: 'token:ci', code: 'BG_BODY_TOO_LARGE' }),
      expect.objectContaining({
        actor: 'token:ci',
        action: 'switch',
        from: { ...blueAll, generation: 0 },
        to: greenAll,
        reason: 'forced release 7',
        result: 'accepted',
        generation: 1,
      }),
      expect.objectContaining({
        actor: 'token:admin',
        from: { ...greenAll, generation: 1 },
        to: blueAll,
        reason: 'stale',
        code: 'BG_GENERATION_CONFLICT',
      }),
      // Without a valid token there is no name: the address is who.
      expect.objectContaining({
        actor: '127.0.0.1',
        address: '127.0.0.1',
        code: 'BG_UNAUTHORIZED',
        to: null,
      }),
      expect.objectContaining({ actor: '127.0.0.1', code: 'BG_UNAUTHORIZED' }),
      expect.objectContaining({
        actor: 'token:admin',
        action: 'rollback',
        from: { ...greenAll, generation: 1 },
        to: blueAll,
        reason: 'undo the release',
        result: 'accepted',
        generation: 2,
      }),
    ])
    for (const event of events) {
      if (event.result === 'accepted') expect(event).not.toHaveProperty('code')
      else expect(event).not.toHaveProperty('generation')
    }
  })

  it('GET /events?limit=N answers the N newest; a bad limit is 400', async () => {
    const all = await eventsOf(proxy.admin)
    expect(await eventsOf(proxy.admin, 2)).toEqual(all.slice(0, 2))
    expect(await eventsOf(proxy.admin, 1000)).toEqual(all)
    // The default is 50.
    expect((await adminGet(proxy.admin, '/events')).body.events).toEqual(all)
    for (const limit of ['0', '-1', '1001', 'abc', '1.5', '', '2x']) {
      const reply = await adminGet(proxy.admin, `/events?limit=${limit}`)
      expect(reply.status, limit).toBe(400)
      expect(errorCode(reply)).toBe('BG_BAD_REQUEST')
    }
  })

  it('is readable by anyone who can read the state, without a token', async () => {
    expect((await adminGet(proxy.admin, '/events?limit=1')).status).toBe(200)
  })
})

describe('audit trail storage', () => {
  let blue: TestServer
  let green: TestServer
  let redis: RedisProcess
  let dir: Awaited<ReturnType<typeof tempDir>>

  beforeAll(async () => {
    blue = await echoUpstream('blue')
    green = await echoUpstream('green')
    redis = await startRedis()
    dir = await tempDir('bluegreen-audit-')
  })
  afterAll(async () => {
    await blue?.close()
    await green?.close()
    await redis?.stop()
    await dir?.remove()
  })

  it('file store: survives a restart and keeps the last admin.auditKeep events', async () => {
    const path = join(dir.path, 'state.json')
    const options = { admin: { listen: '127.0.0.1:0', auditKeep: 3 }, state: { path } }
    const first = await startProxy({ blue: [blue.url], green: [green.url] }, options)
    const reasons = ['one', 'two', 'three', 'four', 'five']
    try {
      for (const [index, reason] of reasons.entries()) {
        const reply = await adminPost(first.admin, '/switch', { to: index % 2 ? 'blue' : 'green', reason })
        expect(reply.status).toBe(200)
      }
      expect((await eventsOf(first.admin)).map((event) => event.reason)).toEqual(['five', 'four', 'three'])
    } finally {
      await first.close()
    }
    const second = await startProxy({ blue: [blue.url], green: [green.url] }, options)
    try {
      expect((await eventsOf(second.admin)).map((event) => event.reason)).toEqual(['five', 'four', 'three'])
      expect(await stateOf(second.admin)).toMatchObject({ generation: 5, reason: 'five' })
      const lines = (await readFile(`${path}.events.jsonl`, 'utf8')).trim().split('\n')
      expect(lines.length).toBeGreaterThanOrEqual(3)
    } finally {
      await second.close()
    }
  })

  it('file store: loses no attempt made while the file is being trimmed', async () => {
    const proxy = await startProxy(
      { blue: [blue.url], green: [green.url] },
      { admin: { listen: '127.0.0.1:0', auditKeep: 4 } },
    )
    try {
      for (let round = 0; round < 25; round++) {
        const reasons = [0, 1, 2, 3].map((index) => `round ${round} call ${index}`)
        // Four refused attempts at once: with a cap of 4, every round trims the file while others append.
        const replies = await Promise.all(
          reasons.map((reason) => adminPost(proxy.admin, '/weights', { blue: 1, green: 1, reason })),
        )
        expect(replies.map((reply) => reply.status)).toEqual([400, 400, 400, 400])
        const kept = (await eventsOf(proxy.admin)).map((event) => event.reason)
        expect(kept.sort(), `round ${round}`).toEqual(reasons)
      }
    } finally {
      await proxy.close()
    }
  })

  it('Redis: one capped stream that every replica writes to and reads', async () => {
    const key = 'bluegreen:audit-test'
    const options = {
      admin: { listen: '127.0.0.1:0', auditKeep: 5 },
      state: { store: 'redis', redis: { url: redis.url, key } },
    }
    const a = await startProxy({ blue: [blue.url], green: [green.url] }, options)
    const b = await startProxy({ blue: [blue.url], green: [green.url] }, options)
    try {
      // The Redis store loads after the listeners are up.
      for (const proxy of [a, b]) {
        await eventually(async () => (await adminGet(proxy.admin, '/readyz')).status === 200, {
          message: 'the replica to load its state from Redis',
        })
      }
      const attempts: [TestProxy, string, unknown, number][] = [
        [a, '/switch', { to: 'green', reason: 'a1' }, 200],
        [b, '/weights', { blue: 10, green: 10, reason: 'b1' }, 400],
        [b, '/weights', { blue: 10, green: 90, reason: 'b2' }, 200],
        [a, '/switch', { to: 'blue', expectedGeneration: 1, reason: 'a2' }, 409],
        [a, '/rollback', { reason: 'a3' }, 200],
        [b, '/switch', { to: 'blue', reason: 'b3' }, 200],
        [a, '/switch', { to: 'purple', reason: 'a4' }, 400],
      ]
      for (const [proxy, path, body, status] of attempts) {
        expect((await adminPost(proxy.admin, path, body)).status, JSON.stringify(body)).toBe(status)
      }
      const fromA = await eventsOf(a.admin)
      const fromB = await eventsOf(b.admin)
      expect(fromA).toEqual(fromB)
      // Capped at admin.auditKeep: the five newest, newest first.
      expect(fromA.map((event) => event.reason)).toEqual(['a4', 'b3', 'a3', 'a2', 'b2'])
      expect(fromA.map((event) => event.result)).toEqual([
        'refused',
        'accepted',
        'accepted',
        'refused',
        'accepted',
      ])
      await withRedis(redis.port, async (client) => {
        expect(await client.type(`${key}:events`)).toBe('stream')
        expect(await client.xlen(`${key}:events`)).toBe(5)
      })
    } finally {
      await a.close()
      await b.close()
    }
  })
})
