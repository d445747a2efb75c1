// Redis misbehaving under three proxy replicas: bad data, a crash, a restart without its data, a pause, and no
// Redis at all at start-up. The replicas keep serving their last good state throughout and say so.

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { changesChannel } from '../../src/state/redis-store.ts'
import { adminGet, adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import {
  closeConnections,
  get,
  metric,
  percentile,
  type Replica,
  startReplica,
  startReplicas,
  stateOf,
  waitReady,
  withRedis,
} from '../helpers/replicas.ts'
import { echoUpstream, freePort, type TestServer } from '../helpers/servers.ts'

const KEY = 'bluegreen:outage-test'
const COMMAND_TIMEOUT_MS = 500
const redisSettings = (url: string) => ({
  url,
  key: KEY,
  pollInterval: 200,
  heartbeatInterval: 200,
  commandTimeout: COMMAND_TIMEOUT_MS,
  connectTimeout: 500,
})

let blue: TestServer
let green: TestServer

beforeAll(async () => {
  ;[blue, green] = await Promise.all([echoUpstream('blue'), echoUpstream('green')])
})

afterAll(async () => {
  closeConnections()
  await Promise.allSettled([blue?.close(), green?.close()])
})

describe('Redis outages under three replicas', () => {
  let redis: RedisProcess
  let replicas: Replica[] = []

  beforeAll(async () => {
    redis = await startRedis()
    replicas = await startReplicas(3, { redis: redisSettings(redis.url), blue: blue.url, green: green.url })
  })

  afterAll(async () => {
    await Promise.allSettled(replicas.map((replica) => replica.close()))
    await redis?.stop()
  })

  /** Requests round-robin over the replicas for `ms`, running `meanwhile` alongside; every failure is listed. */
  async function steadyTraffic(color: string, ms: number, meanwhile: () => Promise<void>) {
    const failures: string[] = []
    let requests = 0
    const deadline = Date.now() + ms
    const traffic = (async () => {
      while (Date.now() < deadline) {
        const replica = replicas[requests++ % replicas.length]!
        try {
          const answer = await get(`${replica.url}/steady`)
          if (answer.status !== 200 || answer.color !== color)
            failures.push(`${answer.status} ${answer.color}`)
        } catch (error) {
          failures.push(String(error))
        }
      }
    })()
    await Promise.all([traffic, meanwhile()])
    return { failures, requests }
  }

  async function everyReplica<T>(check: (replica: Replica) => Promise<T>, message: string): Promise<void> {
    await eventually(async () => (await Promise.all(replicas.map(check))).every(Boolean), {
      timeout: 5_000,
      message,
    })
  }

  async function storedGeneration(): Promise<number> {
    return withRedis(redis.port, async (client) => Number(await client.hget(KEY, 'generation')))
  }

  it('ignores invalid data in Redis, counts it, and keeps serving the last good state', async () => {
    const good = await stateOf(replicas[0]!)
    const saved = (await withRedis(redis.port, (client) => client.hget(KEY, 'state')))!
    const invalidCounts = () =>
      Promise.all(replicas.map((replica) => metric(replica, 'bluegreen_state_invalid_total')))
    const stillServingGood = async (what: string) => {
      for (const replica of replicas) {
        expect((await get(replica.url)).color, what).toBe(good.active)
        expect((await stateOf(replica)).generation, what).toBe(good.generation)
      }
    }

    // Published garbage, while the stored state is good: each message is counted once, and nothing else is.
    const before = await invalidCounts()
    await withRedis(redis.port, async (client) => {
      await client.publish(changesChannel(KEY), 'garbage')
      const purple = { ...JSON.parse(saved), active: 'purple', generation: good.generation + 1 }
      await client.publish(changesChannel(KEY), JSON.stringify(purple))
    })
    await eventually(async () => (await invalidCounts()).every((count, i) => count === before[i]! + 2), {
      message: 'every replica to count both published messages as invalid',
    })
    await stillServingGood('published garbage')

    const invalid = {
      'not JSON': '{"active": "blue",',
      'an unknown color': JSON.stringify({ ...JSON.parse(saved), active: 'purple' }),
      'weights not summing to 100': JSON.stringify({
        ...JSON.parse(saved),
        weights: { blue: 60, green: 30 },
      }),
    }
    for (const [what, value] of Object.entries(invalid)) {
      const counts = await invalidCounts()
      await withRedis(redis.port, (client) => client.hset(KEY, 'state', value))
      await eventually(async () => (await invalidCounts()).every((count, i) => count > counts[i]!), {
        message: `every replica to count ${what} as invalid`,
      })
      await stillServingGood(what)
    }
    for (const replica of replicas) expect(replica.output()).toContain('invalid state in Redis ignored')

    // A change on top of an unreadable state is refused rather than burying the evidence.
    await withRedis(redis.port, (client) => client.hset(KEY, 'state', invalid['not JSON']))
    const refused = await adminPost(replicas[0]!.admin, '/switch', { to: 'green' })
    expect(refused.status).toBe(503)
    expect((refused.body.error as { code: string }).code).toBe('BG_STATE_UNAVAILABLE')

    await withRedis(redis.port, (client) => client.hset(KEY, 'state', saved))
    const target = good.active === 'blue' ? 'green' : 'blue'
    const switched = await adminPost(replicas[1]!.admin, '/switch', { to: target, wait: true })
    expect(switched.status).toBe(200)
    expect(switched.body.generation).toBe(good.generation + 1)
    for (const replica of replicas) expect((await get(replica.url)).color).toBe(target)
  })

  it('Redis killed: zero errors while serving the last color, and changes refused with 503 at once', async () => {
    const { active, generation } = await stateOf(replicas[0]!)
    const { failures, requests } = await steadyTraffic(active, 2_500, async () => {
      await new Promise((resolve) => setTimeout(resolve, 300))
      await redis.kill()
      await everyReplica(
        async (replica) => (await stateOf(replica)).replica.store.reachable === false,
        'every replica to see Redis unreachable',
      )
      for (const replica of replicas) {
        expect(await metric(replica, 'bluegreen_state_store_reachable')).toBe(0)
        // It says how stale its state may be.
        expect((await stateOf(replica)).replica.store.staleSeconds).toBeGreaterThan(0)
        // Fail static: still ready, serving what it has.
        expect((await adminGet(replica.admin, '/readyz')).status).toBe(200)
        const started = performance.now()
        const refused = await adminPost(replica.admin, '/switch', {
          to: active === 'blue' ? 'green' : 'blue',
        })
        const elapsed = performance.now() - started
        expect(refused.status).toBe(503)
        expect((refused.body.error as { code: string }).code).toBe('BG_STATE_UNAVAILABLE')
        // No offline queue: refused without waiting for the command timeout.
        expect(elapsed).toBeLessThan(COMMAND_TIMEOUT_MS)
      }
    })
    expect(failures).toEqual([])
    expect(requests).toBeGreaterThan(100)
    for (const replica of replicas) expect((await stateOf(replica)).generation).toBe(generation)
  })

  it('Redis restarted empty: the replicas put their state back, and switching reaches all of them', async () => {
    const { active, generation } = await stateOf(replicas[0]!)
    await redis.restart()
    await everyReplica(
      async (replica) => (await stateOf(replica)).replica.store.reachable,
      'every replica to reach Redis again',
    )
    await eventually(async () => (await storedGeneration()) === generation, {
      message: 'the replicas to restore the state into Redis',
    })
    const stored = await withRedis(redis.port, (client) => client.hget(KEY, 'state'))
    expect(JSON.parse(stored!)).toMatchObject({ active, generation })
    await eventually(
      async () =>
        (await adminGet<{ replicas: unknown[] }>(replicas[2]!.admin, '/replicas')).body.replicas.length === 3,
      {
        message: 'every replica to heartbeat into the new Redis',
      },
    )

    const target = active === 'blue' ? 'green' : 'blue'
    const switched = await adminPost(replicas[2]!.admin, '/switch', { to: target, wait: true })
    expect(switched.status).toBe(200)
    expect(switched.body.generation).toBe(generation + 1)
    expect(switched.body.wait).toMatchObject({ complete: true, replicas: 3 })
    for (const replica of replicas) expect((await get(replica.url)).color).toBe(target)
  })

  it('a Redis that lost the last changes (an older generation) is brought forward, never backwards', async () => {
    const { active, generation } = await stateOf(replicas[0]!)
    expect(generation).toBeGreaterThan(0)
    // What a failover to a replica that had not received the last write looks like.
    await withRedis(redis.port, async (client) => {
      const older = JSON.parse((await client.hget(KEY, 'state'))!)
      older.generation = generation - 1
      older.active = active === 'blue' ? 'green' : 'blue'
      older.weights = { blue: older.active === 'blue' ? 100 : 0, green: older.active === 'green' ? 100 : 0 }
      await client.hset(KEY, 'state', JSON.stringify(older), 'generation', generation - 1)
    })
    await eventually(async () => (await storedGeneration()) === generation, {
      message: 'the replicas to restore their newer state',
    })
    for (const replica of replicas) expect((await get(replica.url)).color).toBe(active)

    const target = active === 'blue' ? 'green' : 'blue'
    const switched = await adminPost(replicas[0]!.admin, '/switch', { to: target, wait: true })
    expect(switched.status).toBe(200)
    expect(switched.body.generation).toBe(generation + 1)
    for (const replica of replicas) expect((await get(replica.url)).color).toBe(target)
  })

  it('a different state at the same generation (a change that raced a Redis restart) is followed by every replica', async () => {
    const { active, generation } = await stateOf(replicas[0]!)
    const other = active === 'blue' ? 'green' : 'blue'
    // What Redis holds when a replica that was behind restored its older state after a restart and a change went
    // through it before the others came back: the generation they applied, other content.
    const raced = await withRedis(redis.port, async (client) => {
      const state = JSON.parse((await client.hget(KEY, 'state'))!)
      Object.assign(state, {
        active: other,
        weights: { blue: other === 'blue' ? 100 : 0, green: other === 'green' ? 100 : 0 },
        updatedBy: 'admin@behind-replica',
        reason: 'raced a restart',
        updatedAt: new Date().toISOString(),
      })
      const text = JSON.stringify(state)
      await client.hset(KEY, 'state', text, 'generation', generation)
      await client.publish(changesChannel(KEY), text)
      return state
    })
    expect(raced.generation).toBe(generation)
    await everyReplica(
      async (replica) => (await get(replica.url)).color === other,
      'every replica to follow Redis',
    )
    for (const replica of replicas) {
      expect(await stateOf(replica)).toMatchObject({ active: other, generation, reason: 'raced a restart' })
    }
    expect(await storedGeneration()).toBe(generation)

    const switched = await adminPost(replicas[1]!.admin, '/switch', { to: active, wait: true })
    expect(switched.status).toBe(200)
    expect(switched.body.generation).toBe(generation + 1)
    for (const replica of replicas) expect((await get(replica.url)).color).toBe(active)
  })

  it('Redis paused: request latency unaffected, a change refused within the command timeout and never applied later', async () => {
    const { active, generation } = await stateOf(replicas[0]!)
    const target = active === 'blue' ? 'green' : 'blue'
    const sample = async () => {
      const times: number[] = []
      let wrong = 0
      for (let i = 0; i < 300; i++) {
        const answer = await get(replicas[i % 3]!.url)
        if (answer.status !== 200 || answer.color !== active) wrong++
        times.push(answer.ms)
      }
      return { p99: percentile(times, 99), wrong }
    }
    const before = await sample()

    redis.pause()
    try {
      const attempt = (async () => {
        const started = performance.now()
        const answer = await adminPost(replicas[0]!.admin, '/switch', { to: target })
        return { ...answer, elapsed: performance.now() - started }
      })()
      const during = await sample()
      const refused = await attempt
      expect(during.wrong).toBe(0)
      expect(during.p99, `p99 before the pause: ${before.p99.toFixed(2)} ms`).toBeLessThan(50)
      expect(refused.status).toBe(503)
      expect((refused.body.error as { code: string }).code).toBe('BG_STATE_UNAVAILABLE')
      expect(refused.elapsed).toBeLessThan(COMMAND_TIMEOUT_MS + 1_000)
    } finally {
      redis.resume()
    }

    await everyReplica(
      async (replica) => (await stateOf(replica)).replica.store.reachable,
      'every replica to reach Redis again',
    )
    // The refused change sat in Redis's socket buffer through the pause; it must not have run when Redis woke.
    expect(await storedGeneration()).toBe(generation)
    for (const replica of replicas) expect((await get(replica.url)).color).toBe(active)
    const switched = await adminPost(replicas[0]!.admin, '/switch', {
      to: target,
      expectedGeneration: generation,
      wait: true,
    })
    expect(switched.status, JSON.stringify(switched.body)).toBe(200)
    for (const replica of replicas) expect((await get(replica.url)).color).toBe(target)
  })
})

describe('start-up without Redis', () => {
  let redis: RedisProcess | undefined
  let replica: Replica | undefined

  afterEach(async () => {
    await replica?.close()
    await redis?.stop()
  })

  it('starts not ready, answers 503, says why in the log, and becomes ready once Redis is up', async () => {
    const port = await freePort()
    replica = await startReplica({
      redis: redisSettings(`redis://127.0.0.1:${port}`),
      blue: blue.url,
      green: green.url,
    })
    const readiness = await adminGet<{ reasons: string[] }>(replica.admin, '/readyz')
    expect(readiness.status).toBe(503)
    expect(readiness.body.reasons.join(' ')).toMatch(/state store/)
    const proxied = await get(replica.url)
    expect(proxied.status).toBe(503)
    expect(JSON.parse(proxied.body).error.code).toBe('BG_STATE_UNAVAILABLE')
    const change = await adminPost(replica.admin, '/switch', { to: 'green' })
    expect(change.status).toBe(503)
    expect((change.body.error as { code: string }).code).toBe('BG_STATE_UNAVAILABLE')
    await eventually(
      () =>
        replica!
          .output()
          .split('\n')
          .find((line) => line.includes('no routing state yet') && line.includes(`127.0.0.1:${port}`)),
      { message: 'a log line saying the state store is unreachable' },
    )

    redis = await startRedis({ port })
    await waitReady(replica)
    const served = await get(replica.url)
    expect(served.status).toBe(200)
    expect(served.color).toBe('blue')
    expect((await stateOf(replica)).generation).toBe(0)
  })
})
