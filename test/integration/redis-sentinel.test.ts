// Redis Sentinel: the replicas find the master through a real redis-sentinel, and when the master dies and the
// sentinel promotes its replica, switching works against the new master and every proxy replica follows.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { onPath, type RedisProcess, startRedis, startSentinel } from '../helpers/redis.ts'
import {
  closeConnections,
  get,
  type Replica,
  startReplicas,
  stateOf,
  withRedis,
} from '../helpers/replicas.ts'
import { echoUpstream, type TestServer, tempDir } from '../helpers/servers.ts'

const KEY = 'bluegreen:sentinel-test'
const MASTER = 'mymaster'

const SENTINEL_MISSING = !onPath('redis-sentinel')
// vitest's skip takes no reason: the reason goes into the name that the report shows as skipped.
const TITLE = SENTINEL_MISSING
  ? 'Redis Sentinel failover (skipped: redis-sentinel is not on PATH; apt-get install redis-sentinel)'
  : 'Redis Sentinel failover'

describe.skipIf(SENTINEL_MISSING)(TITLE, () => {
  let master: RedisProcess
  let standby: RedisProcess
  let sentinel: RedisProcess
  let blue: TestServer
  let green: TestServer
  let replicas: Replica[] = []
  let standbyDir: Awaited<ReturnType<typeof tempDir>> | undefined

  beforeAll(async () => {
    ;[master, blue, green] = await Promise.all([startRedis(), echoUpstream('blue'), echoUpstream('green')])
    // A replica writes the master's snapshot to disk while it syncs: keep it out of the working directory.
    standbyDir = await tempDir('bluegreen-standby-')
    standby = await startRedis({
      args: ['--replicaof', '127.0.0.1', String(master.port), '--dir', standbyDir.path],
    })
    sentinel = await startSentinel(master.port, MASTER)
    // The sentinel learns of the standby from the master's INFO; a failover needs it known and in sync.
    await eventually(
      async () => {
        const standbyInfo = await withRedis(standby.port, (client) => client.info('replication'))
        const known = await withRedis(sentinel.port, (client) => client.call('SENTINEL', 'replicas', MASTER))
        return (
          standbyInfo.includes('master_link_status:up') && JSON.stringify(known).includes(`${standby.port}`)
        )
      },
      { timeout: 10_000, interval: 100, message: 'the sentinel to know the standby' },
    )
    replicas = await startReplicas(2, {
      redis: {
        url: 'redis://127.0.0.1',
        sentinels: [`127.0.0.1:${sentinel.port}`],
        name: MASTER,
        key: KEY,
        pollInterval: 300,
        heartbeatInterval: 300,
        commandTimeout: 500,
        connectTimeout: 500,
      },
      blue: blue.url,
      green: green.url,
    })
  })

  afterAll(async () => {
    await Promise.allSettled(replicas.map((replica) => replica.close()))
    closeConnections()
    await Promise.allSettled([
      sentinel?.stop(),
      standby?.stop(),
      master?.stop(),
      blue?.close(),
      green?.close(),
    ])
    await standbyDir?.remove()
  })

  /** A failover is timing-sensitive: when a wait times out, say what the sentinel and the replicas saw. */
  function explained<T>(waiting: Promise<T>, extra = () => ''): Promise<T> {
    return waiting.catch((error: Error) => {
      const logs = replicas.map((replica, i) => `replica ${i}:\n${replica.output()}`).join('\n')
      throw new Error(`${error.message}\n${extra()}\nsentinel:\n${sentinel.output()}\n${logs}`)
    })
  }

  it('switching works against the new master after the old one is killed, and the replicas follow', async () => {
    const first = await adminPost(replicas[0]!.admin, '/switch', { to: 'green', wait: true })
    expect(first.status).toBe(200)
    expect(first.body.wait).toMatchObject({ complete: true, replicas: 2 })
    const generation = first.body.generation as number
    await eventually(
      async () =>
        Number(await withRedis(standby.port, (client) => client.hget(KEY, 'generation'))) === generation,
      { message: 'the standby to replicate the state' },
    )

    await master.kill()
    let lastAnswer: unknown
    const switched = await explained(
      eventually(
        async () => {
          const answer = await adminPost(replicas[1]!.admin, '/switch', { to: 'blue' })
          lastAnswer = answer.body
          return answer.status === 200 ? answer : undefined
        },
        { timeout: 15_000, interval: 200, message: 'a switch to succeed against the new master' },
      ),
      () => `last answer: ${JSON.stringify(lastAnswer)}`,
    )
    expect(switched.body.generation).toBe(generation + 1)
    const promoted = await withRedis(sentinel.port, (client) =>
      client.call('SENTINEL', 'get-master-addr-by-name', MASTER),
    )
    expect(JSON.stringify(promoted)).toContain(`${standby.port}`)
    expect(Number(await withRedis(standby.port, (client) => client.hget(KEY, 'generation')))).toBe(
      generation + 1,
    )

    await explained(
      eventually(
        async () => {
          const states = await Promise.all(replicas.map(stateOf))
          return states.every((state) => state.generation === generation + 1 && state.replica.store.reachable)
        },
        { timeout: 5_000, message: 'every replica to follow the new master' },
      ),
    )
    for (const replica of replicas) expect((await get(replica.url)).color).toBe('blue')
    const last = await adminPost(replicas[0]!.admin, '/switch', { to: 'green', wait: true })
    expect(last.status).toBe(200)
    expect(last.body.wait).toMatchObject({ complete: true, replicas: 2 })
    for (const replica of replicas) expect((await get(replica.url)).color).toBe('green')
  })
})
