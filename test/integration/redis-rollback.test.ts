import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import {
  type FailingGreenFleet,
  get,
  metric,
  type Replica,
  startFailingGreenFleet,
  stateOf,
} from '../helpers/replicas.ts'

describe('automatic rollback with three replicas on Redis', () => {
  let redis: RedisProcess
  let fleet: FailingGreenFleet | undefined
  let replicas: Replica[] = []

  beforeAll(async () => {
    redis = await startRedis()
    fleet = await startFailingGreenFleet(3, {
      url: redis.url,
      key: 'bluegreen:rollback-test',
      heartbeatInterval: '100ms',
    })
    replicas = fleet.replicas
  })

  afterAll(async () => {
    await fleet?.close()
    await redis?.stop()
  })

  it('pools the figures of every replica and rolls back exactly once', async () => {
    const switched = await adminPost(replicas[0]!.admin, '/switch', { to: 'green', wait: true })
    expect(switched.status, JSON.stringify(switched.body)).toBe(200)
    for (let round = 0; round < 10; round++) {
      for (const replica of replicas) {
        expect((await get(`${replica.url}/work`)).status, `round ${round}`).toBe(500)
      }
    }
    await eventually(
      async () => {
        const states = await Promise.all(replicas.map(stateOf))
        return states.every((state) => state.active === 'blue')
      },
      { timeout: 5000, message: 'every replica back on blue' },
    )
    const state = await stateOf(replicas[1]!)
    // One decision for generation 1: the rollback is generation 2, and no replica made a second one.
    expect(state).toMatchObject({ active: 'blue', generation: 2 })
    const events = (await (await fetch(`${replicas[2]!.admin}/events`)).json()) as {
      events: { action: string; actor: string; result: string }[]
    }
    const rollbacks = events.events.filter(
      (event) => event.action === 'rollback' && event.result === 'accepted',
    )
    expect(rollbacks).toHaveLength(1)
    for (const replica of replicas) {
      expect(await metric(replica, 'bluegreen_switches_total{trigger="rollback"}')).toBe(1)
    }
    // A little later still nothing more happened.
    await new Promise((resolve) => setTimeout(resolve, 500))
    expect((await stateOf(replicas[0]!)).generation).toBe(2)
  })
})
