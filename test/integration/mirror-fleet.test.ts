import { request } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost, errorCode } from '../helpers/admin.ts'
import { runCli } from '../helpers/cli.ts'
import { type Cluster, fresh, spawnCluster } from '../helpers/cluster.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import { closeConnections, type Replica, startReplicas, withRedis } from '../helpers/replicas.ts'
import { startServer, type TestServer, tempDir, writeConfig } from '../helpers/servers.ts'

// The mirror's figures pooled across replicas: three `bluegreen serve` processes on one real redis-server, the
// traffic spread over them, green answering differently on one path. GET /mirror on any one reports the fleet's
// figures (and its own, labelled), the gate judges the fleet's, and without Redis it refuses, saying why.

interface Counts {
  compared: number
  mismatched: number
  ratio: number
}

interface MirrorStatus {
  enabled: boolean
  window: { replicas: number; problem?: string; blue: Counts; green: Counts }
  mismatchedRoutes: { route: string; compared: number; mismatched: number }[]
  thisReplica: {
    window: { blue: Counts; green: Counts }
    mismatchedRoutes: { route: string; compared: number; mismatched: number }[]
  }
}

interface Refusal {
  error: { code: string; message: string; details: Record<string, unknown> }
}

const MIN_COMPARED = 12

let redis: RedisProcess
let blue: TestServer
let green: TestServer
let replicas: Replica[] = []
/** Paths on which green names another user. */
const differOn = new Set<string>()

function get(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      res.resume()
      res.on('end', resolve)
    })
    req.on('error', reject)
    req.end()
  })
}

async function status(replica: Replica): Promise<MirrorStatus> {
  return (await adminGet<MirrorStatus>(replica.admin, '/mirror')).body
}

/** `count` requests to /users through each replica, and each replica's copies settled. */
async function spread(count: number): Promise<void> {
  for (const replica of replicas) {
    const before = (await status(replica)).thisReplica.window.green.compared
    for (let i = 0; i < count; i++) await get(`${replica.url}/users`)
    await eventually(
      async () => (await status(replica)).thisReplica.window.green.compared >= before + count,
      {
        timeout: 15_000,
        message: `${count} copies compared on ${replica.admin}`,
      },
    )
  }
}

beforeAll(async () => {
  redis = await startRedis()
  const upstream = (name: string) =>
    startServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]!
      const user = name === 'green' && differOn.has(path) ? 'bob' : 'ann'
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ path, user }))
    })
  blue = await upstream('blue')
  green = await upstream('green')
  replicas = await startReplicas(3, {
    redis: { url: redis.url, key: 'bluegreen:mirror-fleet' },
    blue: blue.url,
    green: green.url,
    extra: {
      mirror: {
        compare: { noiseSampleRate: 0 },
        gate: {
          minCompared: MIN_COMPARED,
          maxMismatchRatio: 0.2,
          on: { switch: true, weights: true, rollout: true },
        },
      },
    },
  })
  expect((await adminPost(replicas[0]!.admin, '/mirror', { percent: 100 })).status).toBe(200)
  for (const replica of replicas) {
    await eventually(async () => (await status(replica)).enabled, {
      timeout: 10_000,
      message: 'mirroring on',
    })
  }
}, 60_000)

afterAll(async () => {
  await Promise.all(replicas.map((replica) => replica.close()))
  closeConnections()
  await blue?.close()
  await green?.close()
  await redis?.stop()
})

describe('mirror figures pooled across replicas', () => {
  it("reports the fleet's figures on any replica, and gates on them", async () => {
    differOn.add('/users')
    // 5 each: no replica alone has MIN_COMPARED, the fleet has 15.
    await spread(5)
    for (const replica of replicas) {
      const pooled = await eventually(
        async () => {
          const found = await status(replica)
          return found.window.replicas === 3 && found.window.green.compared === 15 ? found : undefined
        },
        { timeout: 20_000, interval: 250, message: `the fleet's figures on ${replica.admin}` },
      )
      expect(pooled.window.green).toEqual({ compared: 15, mismatched: 15, ratio: 1 })
      expect(pooled.thisReplica.window.green).toMatchObject({ compared: 5, mismatched: 5 })
      expect(pooled.mismatchedRoutes).toEqual([{ route: 'GET /users', compared: 15, mismatched: 15 }])
      expect(pooled.thisReplica.mismatchedRoutes).toEqual([
        { route: 'GET /users', compared: 5, mismatched: 5 },
      ])
    }
    const cli = await runCli(['mirror', 'status', '--admin', replicas[1]!.admin])
    expect(cli.stdout).toContain(
      'to green    15 of 15 differed (100.0%) over the last 300 s, 3 replica(s) (this one: 5 of 5)',
    )
    // Refused for what the fleet saw (all 15 differ), not for too few: this replica alone has 5 of 12.
    const third = replicas[2]!
    const refused = await adminPost<Refusal>(third.admin, '/switch', { to: 'green' })
    expect(refused.status).toBe(412)
    expect(errorCode(refused)).toBe('BG_MIRROR_MISMATCH')
    expect(refused.body.error.message).toMatch(
      /15 of 15 mirrored request\(s\) to green answered differently across 3 replica/,
    )
    expect(refused.body.error.details).toMatchObject({ compared: 15, mismatched: 15, replicas: 3 })

    // Green fixed; turned off and on again, the figures start again on every replica (the old ones stay out).
    differOn.clear()
    expect((await adminPost(replicas[0]!.admin, '/mirror', { enabled: false })).status).toBe(200)
    expect((await adminPost(replicas[0]!.admin, '/mirror', { enabled: true })).status).toBe(200)
    for (const replica of replicas) {
      await eventually(
        async () => {
          const found = await status(replica)
          return found.enabled && found.thisReplica.window.green.compared === 0
        },
        { timeout: 10_000, message: `the figures started again on ${replica.admin}` },
      )
    }
    // A replica that has not applied the change yet still publishes the figures of the generation before, under the
    // same setting: written here as such a replica would, they stay out of the sum.
    await withRedis(redis.port, async (client) => {
      const entries = await client.hgetall('bluegreen:mirror-fleet:mirror')
      const { at, snapshot } = JSON.parse(Object.values(entries)[0]!) as {
        at: number
        snapshot: { from: { generation: number; changed: boolean }; window: Record<string, unknown> }
      }
      expect(snapshot.from.changed).toBe(true)
      const lagging = {
        ...snapshot,
        from: { generation: snapshot.from.generation - 2, changed: true },
        window: { blue: { compared: 0, mismatched: 0 }, green: { compared: 7, mismatched: 7 } },
      }
      await client.hset('bluegreen:mirror-fleet:mirror', 'lagging', JSON.stringify({ at, snapshot: lagging }))
    })
    const restarted = await status(third)
    expect(restarted.window).toMatchObject({ replicas: 3, green: { compared: 0 } })
    await spread(5)
    const fleet = await eventually(
      async () => {
        const found = await status(third)
        return found.window.green.compared === 15 ? found : undefined
      },
      { timeout: 20_000, interval: 250, message: "the fleet's new figures" },
    )
    expect(fleet.window.green).toEqual({ compared: 15, mismatched: 0, ratio: 0 })
    expect(fleet.thisReplica.window.green.compared).toBe(5)
    // 5 here, 15 in the fleet: the gate lets the switch through on the fleet's figures.
    const allowed = await adminPost(third.admin, '/switch', { to: 'green' })
    expect(allowed.status).toBe(200)
    expect(allowed.body).toMatchObject({ active: 'green' })
    expect((await adminPost(third.admin, '/rollback', {})).status).toBe(200)
  }, 120_000)

  it("without Redis: GET /mirror answers this replica's figures, saying so, and the gate refuses unless forced", async () => {
    const third = replicas[2]!
    await redis.kill()
    const own = await status(third)
    expect(own.window.replicas).toBe(1)
    expect(own.window.problem).toMatch(/^only this replica's figures: cannot read the others'/)
    expect(own.window.green.compared).toBe(own.thisReplica.window.green.compared)
    const cli = await runCli(['mirror', 'status', '--admin', third.admin])
    expect(cli.stdout).toMatch(/^warning {5}only this replica's figures: cannot read the others'/m)
    // This replica's own sample would pass (no mismatch); a gate blind to the fleet does not pass it silently.
    const refused = await adminPost<Refusal>(third.admin, '/weights', { blue: 90, green: 10 })
    expect(refused.status).toBe(412)
    expect(errorCode(refused)).toBe('BG_MIRROR_MISMATCH')
    expect(refused.body.error.message).toMatch(/cannot see the other replicas' mirrored requests/)
    expect(refused.body.error.details.problem).toMatch(/^only this replica's figures/)
  }, 60_000)
})

describe('mirror figures pooled across the workers of one replica (file store, --workers 2)', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>
  let cluster: Cluster | undefined

  beforeAll(async () => {
    dir = await tempDir('bluegreen-mirror-workers-')
    const file = await writeConfig(dir.path, {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      pools: { blue: { upstreams: [blue.url] }, green: { upstreams: [green.url] } },
      state: { path: join(dir.path, 'state.json') },
      log: { access: true },
      shutdown: { grace: '1s' },
      mirror: {
        compare: { noiseSampleRate: 0 },
        gate: {
          minCompared: MIN_COMPARED,
          maxMismatchRatio: 0.2,
          on: { switch: true, weights: true, rollout: true },
        },
      },
    })
    cluster = await spawnCluster(file, 2)
  }, 60_000)

  afterAll(async () => {
    if (cluster && cluster.child.exitCode === null && cluster.child.signalCode === null) {
      cluster.child.kill('SIGKILL')
      await cluster.exited
    }
    await dir?.remove()
  })

  it("GET /mirror on either worker and the gate add up both workers' figures", async () => {
    const { url, admin } = cluster!
    differOn.add('/users')
    expect((await fresh(`${admin}/mirror`, 'POST', { percent: 100 })).status).toBe(200)
    // Every request on a fresh connection: the primary deals them out to both workers.
    for (let i = 0; i < MIN_COMPARED; i++) expect((await fresh(`${url}/users`)).status).toBe(200)
    const served = cluster!.lines().filter((line) => line.part === 'access' && line.path === '/users')
    expect(new Set(served.map((line) => line.pid)).size).toBe(2)
    const mirror = async () => JSON.parse((await fresh(`${admin}/mirror`)).body) as MirrorStatus
    for (let i = 0; i < 3; i++) {
      const pooled = await eventually(
        async () => {
          const found = await mirror()
          return found.window.replicas === 2 && found.window.green.compared === MIN_COMPARED && found
        },
        { timeout: 20_000, interval: 250, message: "both workers' figures in GET /mirror" },
      )
      expect(pooled.window.green.mismatched).toBe(MIN_COMPARED)
      expect(pooled.thisReplica.window.green.compared).toBeLessThan(MIN_COMPARED)
    }
    // Neither worker has MIN_COMPARED alone: refused for the differences the two saw together.
    await eventually(
      async () => {
        const refused = await fresh(`${admin}/switch`, 'POST', { to: 'green' })
        return (
          refused.status === 412 &&
          /12 of 12 mirrored request\(s\) to green answered differently/.test(refused.body)
        )
      },
      { timeout: 20_000, interval: 250, message: "the gate to judge both workers' figures" },
    )
  }, 60_000)
})
