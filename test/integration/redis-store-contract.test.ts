import { Redis } from 'ioredis'
import pino from 'pino'
import { afterAll, beforeAll } from 'vitest'
import { buildConfig } from '../../src/config/schema.ts'
import { silentLogger } from '../../src/log.ts'
import { changesChannel, RedisStateStore } from '../../src/state/redis-store.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import { describeStateStoreContract } from '../helpers/state-store-contract.ts'

let redis: RedisProcess
let fixtures = 0

beforeAll(async () => {
  redis = await startRedis()
})

afterAll(async () => {
  await redis?.stop()
})

describeStateStoreContract('redis', async () => {
  const key = `bluegreen:contract:${++fixtures}`
  const config = buildConfig(
    {
      pools: { blue: { upstreams: ['http://127.0.0.1:1'] }, green: { upstreams: [] } },
      state: { store: 'redis', redis: { url: redis.url, key, pollInterval: 200 } },
    },
    {},
  ).state.redis!
  const stores: RedisStateStore[] = []
  const make = (logger = silentLogger()) => {
    const store = new RedisStateStore({
      config,
      initial: 'blue',
      logger,
      replicaId: `contract-${stores.length}`,
    })
    stores.push(store)
    return store
  }
  const errorLines: string[] = []
  const store = make(pino({ level: 'error' }, { write: (line: string) => void errorLines.push(line) }))
  return {
    store,
    makePeer: async () => make(),
    corrupt: async () => {
      const client = new Redis(redis.port, '127.0.0.1')
      await client.hset(key, 'state', '{"active": "purple"')
      await client.publish(changesChannel(key), '{"active": "purple"')
      client.disconnect()
      await eventually(() => errorLines.some((line) => line.includes('invalid')), {
        message: 'the store to report the invalid state',
      })
    },
    writeLegacy: async (state, previous) => {
      const client = new Redis(redis.port, '127.0.0.1')
      await client.hset(key, 'state', JSON.stringify(state), 'generation', String(state.generation))
      if (previous) await client.hset(key, 'previous', JSON.stringify(previous))
      client.disconnect()
    },
    cleanup: async () => {
      await Promise.all(stores.map((each) => each.close()))
    },
  }
})
