// The replica watch on a real Redis registry. The other replica is written into the registry as its heartbeats
// would write it, with another pid: replicas in one process would count as one restarted in place.

import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EventStream } from '../../src/admin/event-stream.ts'
import { ReplicaWatch } from '../../src/admin/replica-watch.ts'
import { silentLogger } from '../../src/log.ts'
import { RedisReplicaRegistry, registryKey } from '../../src/state/redis-replicas.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'

const KEY = 'bluegreen:watch-test'

interface ReplicaEvent {
  phase: string
  id: string
  generation: number
  was?: string
  current?: number
  lastSeen?: string
}

describe('ReplicaWatch', () => {
  let redis: RedisProcess
  let client: Redis
  let subscriber: Redis
  let registry: RedisReplicaRegistry
  let watch: ReplicaWatch
  let beating: NodeJS.Timeout | undefined
  const seen: ReplicaEvent[] = []

  beforeAll(async () => {
    redis = await startRedis()
    client = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 0 })
    subscriber = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 0 })
    registry = new RedisReplicaRegistry({
      client,
      subscriber,
      key: KEY,
      replicaId: 'self',
      // Missing after 1.5 s without a heartbeat: the test's own 50 ms heartbeats stall on a loaded machine.
      heartbeatInterval: 500,
      forgetMissingAfter: 60_000,
      logger: silentLogger(),
    })
    await eventually(() => client.status === 'ready')
    registry.report(5)
    const events = new EventStream()
    events.subscribe((event) => {
      if (event.kind === 'replica') seen.push(event.data as ReplicaEvent)
    })
    watch = new ReplicaWatch({
      replicas: registry,
      events,
      logger: silentLogger(),
      interval: 50,
      generation: () => 5,
      lagAfter: 400,
    })
  })
  afterAll(async () => {
    clearInterval(beating)
    watch?.close()
    await registry?.close()
    client?.disconnect()
    subscriber?.disconnect()
    await redis?.stop()
  })

  /** Heartbeats of another replica at `generation`, stamped with Redis's clock as the real ones are. */
  function heartbeat(generation: number): void {
    clearInterval(beating)
    const beat = async () => {
      const [seconds, micros] = await client.time()
      const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
      const entry = JSON.stringify({ id: 'other', host: 'elsewhere', pid: 999_999, generation })
      await client.hset(registryKey(KEY), 'other', `${now}|${entry}`)
    }
    void beat()
    beating = setInterval(() => void beat(), 50)
  }

  const phases = () => seen.filter((event) => event.id === 'other').map((event) => event.phase)

  it('tells a replica lagging, missing, and back from each, once per change', async () => {
    const started = Date.now()
    heartbeat(3)
    const lagging = await eventually(() => seen.find((event) => event.phase === 'lagging'), {
      message: 'the lagging replica to be told',
    })
    // Behind for lagAfter first: a change takes a moment to apply everywhere.
    expect(Date.now() - started).toBeGreaterThanOrEqual(400)
    expect(lagging).toMatchObject({ id: 'other', generation: 3, current: 5 })

    heartbeat(5)
    await eventually(() => phases().length === 2, { message: 'back from lagging' })
    expect(seen.at(-1)).toMatchObject({ phase: 'back', was: 'lagging', id: 'other', generation: 5 })

    clearInterval(beating)
    const missing = await eventually(() => phases().length === 3 && seen.at(-1), {
      timeout: 10_000,
      message: 'missing',
    })
    expect(missing).toMatchObject({
      phase: 'missing',
      id: 'other',
      generation: 5,
      lastSeen: expect.any(String),
    })
    // Told once, not at every look at the registry.
    await eventually(async () => (await registry.list()).missing.length === 1)
    await new Promise((resolve) => setTimeout(resolve, 500))
    expect(phases()).toEqual(['lagging', 'back', 'missing'])

    heartbeat(5)
    await eventually(() => phases().length === 4, { message: 'back from missing' })
    expect(seen.at(-1)).toMatchObject({ phase: 'back', was: 'missing' })
    // This replica itself, at the generation it serves, is never told of.
    expect(seen.every((event) => event.id === 'other')).toBe(true)
  })
})
