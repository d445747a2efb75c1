// A replica restarted while Redis is unreachable: it serves the state it last applied, kept in its local file,
// flagged stale, and follows Redis the moment Redis answers.

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost } from '../helpers/admin.ts'
import { killRunningClis, runCli } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import {
  closeConnections,
  get,
  metric,
  type Replica,
  startReplica,
  stateOf,
  waitReady,
  withRedis,
} from '../helpers/replicas.ts'
import { echoUpstream, type TestServer, tempDir } from '../helpers/servers.ts'

const KEY = 'bluegreen:local-copy-test'

interface StoreView {
  reachable: boolean
  stale: boolean
  staleSeconds: number | null
  restoredFrom?: string
}

let blue: TestServer
let green: TestServer
let redis: RedisProcess
let dir: Awaited<ReturnType<typeof tempDir>>
const running: Replica[] = []

beforeAll(async () => {
  ;[blue, green, redis, dir] = await Promise.all([
    echoUpstream('blue'),
    echoUpstream('green'),
    startRedis(),
    tempDir('bluegreen-local-copy-'),
  ])
})

afterAll(async () => {
  killRunningClis()
  redis?.resume()
  await Promise.allSettled(running.map((replica) => replica.close()))
  closeConnections()
  await Promise.allSettled([redis?.stop(), blue?.close(), green?.close(), dir?.remove()])
})

async function replica(lastStateFile: string | false): Promise<Replica> {
  const started = await startReplica({
    redis: {
      url: redis.url,
      key: KEY,
      pollInterval: 200,
      heartbeatInterval: 200,
      commandTimeout: 300,
      connectTimeout: 300,
      lastStateFile,
    },
    blue: blue.url,
    green: green.url,
  })
  running.push(started)
  return started
}

async function stop(replica: Replica, signal: NodeJS.Signals): Promise<void> {
  await replica.stop(signal)
  running.splice(running.indexOf(replica), 1)
  await replica.close()
}

const storeOf = async (replica: Replica) => (await stateOf(replica)).replica.store as unknown as StoreView

async function savedGeneration(file: string): Promise<number | undefined> {
  try {
    return (JSON.parse(await readFile(file, 'utf8')) as { state: { generation: number } }).state.generation
  } catch {
    return undefined
  }
}

describe('a replica restarted during a Redis outage', () => {
  const file = () => join(dir.path, 'last-state.json')
  let other: Replica

  afterEach(() => {
    redis.resume()
  })

  it('serves its last applied state from the local file, flagged stale, and follows the newer state once Redis answers', async () => {
    const first = await replica(file())
    other = await replica(false)
    await Promise.all([waitReady(first), waitReady(other)])
    const switched = await adminPost(first.admin, '/switch', { to: 'green', wait: true })
    expect(switched.status, JSON.stringify(switched.body)).toBe(200)
    const saved = switched.body.generation as number
    await eventually(async () => (await savedGeneration(file())) === saved, {
      message: `the local file to hold generation ${saved}`,
    })
    // A crash: nothing at shutdown can have written anything.
    await stop(first, 'SIGKILL')
    // Redis moves on without it, then becomes unreachable: paused, its socket open and silent.
    const moved = await adminPost(other.admin, '/switch', { to: 'blue' })
    expect(moved.body.generation).toBe(saved + 1)
    redis.pause()

    const restarted = await replica(file())
    await waitReady(restarted)
    const served = await get(restarted.url)
    expect(served.status).toBe(200)
    expect(served.color).toBe('green')
    const state = await stateOf(restarted)
    expect(state.generation).toBe(saved)
    const store = await storeOf(restarted)
    expect(store).toMatchObject({ reachable: false, stale: true, restoredFrom: file() })
    expect(store.staleSeconds).toBeGreaterThan(0)
    expect(await metric(restarted, 'bluegreen_state_store_reachable')).toBe(0)
    expect(await metric(restarted, 'bluegreen_state_staleness_seconds')).toBeGreaterThan(0)
    expect(restarted.output()).toContain('serving the last state this replica applied')
    const status = await runCli(['status', '--admin', restarted.admin])
    expect(status.code, status.stderr).toBe(0)
    expect(status.stdout).toMatch(
      /state store UNREACHABLE for \d+ s \(serving its local copy .*last-state\.json\)/,
    )
    // No change can be made without the store.
    const refused = await adminPost(restarted.admin, '/switch', { to: 'blue' })
    expect(refused.status).toBe(503)

    redis.resume()
    await eventually(async () => (await get(restarted.url)).color === 'blue', {
      message: 'the restarted replica to follow Redis',
    })
    expect(await stateOf(restarted)).toMatchObject({ active: 'blue', generation: saved + 1 })
    const confirmed = await storeOf(restarted)
    expect(confirmed).toMatchObject({ reachable: true, stale: false })
    expect(confirmed.restoredFrom).toBeUndefined()
    await eventually(async () => (await savedGeneration(file())) === saved + 1, {
      message: 'the local file to follow',
    })
    await stop(restarted, 'SIGTERM')
  })

  it('with Redis restarted empty meanwhile, puts its state back into Redis, and changes go on from it', async () => {
    const generation = (await savedGeneration(file()))!
    await redis.kill()
    await stop(other, 'SIGTERM')
    const restarted = await replica(file())
    await waitReady(restarted)
    expect((await get(restarted.url)).color).toBe('blue')
    expect(await storeOf(restarted)).toMatchObject({ reachable: false, stale: true })

    await redis.restart()
    await eventually(async () => (await storeOf(restarted)).reachable, {
      message: 'the replica to reach Redis again',
    })
    const stored = await withRedis(redis.port, (client) => client.hget(KEY, 'state'))
    expect(JSON.parse(stored!)).toMatchObject({ active: 'blue', generation })
    const switched = await adminPost(restarted.admin, '/switch', { to: 'green', wait: true })
    expect(switched.status).toBe(200)
    expect(switched.body.generation).toBe(generation + 1)
    expect((await get(restarted.url)).color).toBe('green')
  })

  it('a local file it cannot write is logged, never fatal', async () => {
    const unwritable = join(dir.path, 'no-such-dir', 'last-state.json')
    const started = await replica(unwritable)
    await waitReady(started)
    expect((await get(started.url)).status).toBe(200)
    await eventually(() => started.output().includes('cannot keep the last applied state'), {
      message: 'a log line about the local file',
    })
    expect((await adminGet(started.admin, '/healthz')).status).toBe(200)
  })
})
