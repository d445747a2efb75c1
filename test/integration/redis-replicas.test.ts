// Three proxy replicas (child processes) sharing one real redis-server: they agree on the color, `wait: true`
// means what it says, and a compare-and-set race between two replicas has exactly one winner.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import {
  closeConnections,
  get,
  percentile,
  type Replica,
  startReplicas,
  stateOf,
} from '../helpers/replicas.ts'
import { echoUpstream, type TestServer } from '../helpers/servers.ts'

const HEARTBEAT_MS = 500
// Shorter than a replica's liveness (three heartbeats), so a frozen replica is still listed when a wait gives up.
const WAIT_TIMEOUT_MS = 400

interface ListedReplica {
  id: string
  host: string
  pid: number
  generation: number
}

describe('Redis state shared by three proxy replicas', () => {
  let redis: RedisProcess
  let blue: TestServer
  let green: TestServer
  let replicas: Replica[] = []

  beforeAll(async () => {
    ;[redis, blue, green] = await Promise.all([startRedis(), echoUpstream('blue'), echoUpstream('green')])
    replicas = await startReplicas(3, {
      redis: {
        url: redis.url,
        key: 'bluegreen:replicas-test',
        pollInterval: '1s',
        heartbeatInterval: HEARTBEAT_MS,
        commandTimeout: 500,
      },
      blue: blue.url,
      green: green.url,
      waitTimeout: `${WAIT_TIMEOUT_MS}ms`,
    })
  })

  afterAll(async () => {
    await Promise.allSettled(replicas.map((replica) => replica.close()))
    closeConnections()
    await Promise.allSettled([redis?.stop(), blue?.close(), green?.close()])
  })

  async function everyReplicaAt(generation: number): Promise<void> {
    await eventually(
      async () => {
        const states = await Promise.all(replicas.map(stateOf))
        return states.every((state) => state.generation === generation)
      },
      { message: `every replica to apply generation ${generation}` },
    )
  }

  it('follow a switch made through one of them, and list each other with their generations', async () => {
    const before = await stateOf(replicas[0]!)
    const target = before.active === 'blue' ? 'green' : 'blue'
    const switched = await adminPost(replicas[0]!.admin, '/switch', { to: target })
    expect(switched.status).toBe(200)
    expect(switched.body.generation).toBe(before.generation + 1)

    await everyReplicaAt(before.generation + 1)
    for (const replica of replicas) expect((await get(replica.url)).color).toBe(target)

    const ids = (await Promise.all(replicas.map(stateOf))).map((state) => state.replica.id).sort()
    for (const replica of replicas) {
      const listed = await eventually(
        async () => {
          const { status, body } = await adminGet<{ replicas: ListedReplica[] }>(replica.admin, '/replicas')
          expect(status).toBe(200)
          const entries = body.replicas
          return entries.length === 3 && entries.every((entry) => entry.generation === before.generation + 1)
            ? entries
            : undefined
        },
        { timeout: HEARTBEAT_MS * 5, message: `${replica.admin}/replicas to list all three` },
      )
      expect(listed.map((entry) => entry.id).sort()).toEqual(ids)
      for (const entry of listed) expect(entry.pid).toBe(Number(entry.id.split('-').at(-2)))
    }
  })

  it('after a switch with wait: true answers, every replica serves the new color on the very next request', async () => {
    const before = await stateOf(replicas[0]!)
    let generation = before.generation
    // Away from the color in force first: a switch to it would be answered unchanged, at the same generation.
    const colors = before.active === 'blue' ? (['green', 'blue'] as const) : (['blue', 'green'] as const)
    const waits: number[] = []
    let wrong = 0
    for (let round = 0; round < 100; round++) {
      const target = colors[round % 2]!
      const started = performance.now()
      const switched = await adminPost(replicas[round % 3]!.admin, '/switch', { to: target, wait: true })
      waits.push(performance.now() - started)
      expect(switched.status, JSON.stringify(switched.body)).toBe(200)
      expect(switched.body.generation).toBe(++generation)
      const wait = switched.body.wait as { complete: boolean; replicas: number; pending: unknown[] }
      expect(wait).toEqual({
        complete: true,
        replicas: 3,
        pending: [],
        applied: expect.any(Array),
        missing: [],
      })
      const answers = await Promise.all(replicas.map((replica) => get(replica.url)))
      for (const answer of answers) {
        if (answer.status !== 200 || answer.color !== target || !answer.body.includes(`"${target}"`)) wrong++
      }
    }
    expect(wrong).toBe(0)
    // The replicas acknowledge over pub/sub: a wait takes milliseconds, not a heartbeat interval.
    expect(percentile(waits, 50)).toBeLessThan(HEARTBEAT_MS / 3)
  })

  it('two concurrent switches with the same expectedGeneration: exactly one wins, the other gets 409', async () => {
    for (let round = 0; round < 10; round++) {
      // From a split, both switches are changes (a switch to the color in force would be answered unchanged).
      const split = await adminPost(replicas[0]!.admin, '/weights', { blue: 40 + round, green: 60 - round })
      expect(split.status).toBe(200)
      const { generation } = split.body as { generation: number }
      await everyReplicaAt(generation)
      const [first, second] = [replicas[round % 3]!, replicas[(round + 1) % 3]!]
      const answers = await Promise.all([
        adminPost(first.admin, '/switch', { to: 'green', expectedGeneration: generation }),
        adminPost(second.admin, '/switch', { to: 'blue', expectedGeneration: generation }),
      ])
      expect(answers.map((answer) => answer.status).sort()).toEqual([200, 409])
      const winner = answers.find((answer) => answer.status === 200)!
      const loser = answers.find((answer) => answer.status === 409)!
      expect(winner.body.generation).toBe(generation + 1)
      expect((loser.body.error as { code: string }).code).toBe('BG_GENERATION_CONFLICT')
      await everyReplicaAt(generation + 1)
      for (const replica of replicas) expect((await get(replica.url)).color).toBe(winner.body.active)
    }
  })

  it('a wait names a replica that has not applied the change at the timeout, and it catches up later', async () => {
    const frozen = replicas[2]!
    const { id } = (await stateOf(frozen)).replica
    const { active, generation } = await stateOf(replicas[0]!)
    const target = active === 'blue' ? 'green' : 'blue'
    frozen.child.kill('SIGSTOP')
    try {
      const started = performance.now()
      const switched = await adminPost(replicas[0]!.admin, '/switch', { to: target, wait: true })
      const elapsed = performance.now() - started
      expect(switched.status).toBe(200)
      expect(switched.body.generation).toBe(generation + 1)
      const wait = switched.body.wait as { complete: boolean; replicas: number; pending: { id: string }[] }
      expect(wait.complete).toBe(false)
      expect(wait.replicas).toBe(3)
      expect(wait.pending.map((replica) => replica.id)).toEqual([id])
      expect(elapsed).toBeGreaterThanOrEqual(WAIT_TIMEOUT_MS - 5)
      expect(elapsed).toBeLessThan(WAIT_TIMEOUT_MS + 1_000)
    } finally {
      frozen.child.kill('SIGCONT')
    }
    await everyReplicaAt(generation + 1)
    for (const replica of replicas) expect((await get(replica.url)).color).toBe(target)
  })
})
