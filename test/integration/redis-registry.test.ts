// The replica registry on a real Redis, in this process: the registries here share one host name and process id,
// as a container restarted in place does (same pod name, node as pid 1).

import { Redis } from 'ioredis'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisReplicaRegistry } from '../../src/state/redis-replicas.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'

const HEARTBEAT_MS = 100
const KEY = 'bluegreen:registry-test'

describe('RedisReplicaRegistry', () => {
  let redis: RedisProcess
  const connections: Redis[] = []
  const registries: RedisReplicaRegistry[] = []

  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await Promise.allSettled(registries.map((registry) => registry.close()))
    for (const connection of connections) connection.disconnect()
    await redis?.stop()
  })

  function registry(replicaId: string): { registry: RedisReplicaRegistry; client: Redis } {
    const client = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 0 })
    const subscriber = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 0 })
    connections.push(client, subscriber)
    const created = new RedisReplicaRegistry({
      client,
      subscriber,
      key: KEY,
      replicaId,
      heartbeatInterval: HEARTBEAT_MS,
      forgetMissingAfter: 60_000,
      logger: pino({ level: 'silent' }),
    })
    registries.push(created)
    return { registry: created, client }
  }

  it('a replica restarted in place (same host and pid) replaces its silent predecessor at once', async () => {
    const lister = registry('lister').registry
    const before = registry('before-restart')
    await eventually(() => before.client.status === 'ready')
    before.registry.report(3)
    await eventually(async () =>
      (await lister.list()).live.some((replica) => replica.id === 'before-restart'),
    )

    // It dies: no deregistration, no more heartbeats.
    before.client.disconnect()
    const silent = await eventually(async () => {
      const { missing } = await lister.list()
      return missing.find((replica) => replica.id === 'before-restart')
    })
    expect(silent).toMatchObject({ pid: process.pid, generation: 3 })

    const after = registry('after-restart')
    await eventually(() => after.client.status === 'ready')
    after.registry.report(3)
    const listing = await eventually(async () => {
      const listed = await lister.list()
      return listed.live.some((replica) => replica.id === 'after-restart') ? listed : undefined
    })
    expect(listing.missing).toEqual([])
    // Dropped from Redis, not only from the answer.
    const stored = await eventually(async () => {
      const ids = await connections[0]!.hkeys(`${KEY}:replicas`)
      return ids.includes('before-restart') ? undefined : ids
    })
    expect(stored).toEqual(['after-restart'])
  })
})
