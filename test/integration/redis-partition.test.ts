// A replica cut off from Redis while it keeps serving: a real partition, a TCP relay between that one replica and
// redis-server that stops passing bytes. The others must not confirm a switch it never saw.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost, callAdmin } from '../helpers/admin.ts'
import { killRunningClis, runCli } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import { type Relay, startRelay } from '../helpers/relay.ts'
import { closeConnections, get, type Replica, startReplica, stateOf, waitReady } from '../helpers/replicas.ts'
import { echoUpstream, type TestServer } from '../helpers/servers.ts'

const TOKEN = 'partition-test-token-0123456789'
// Long enough that a replica starved of CPU on a busy machine does not look missing; short enough for a quick test.
const HEARTBEAT_MS = 500
const LIVE_FOR_MS = HEARTBEAT_MS * 3

interface Listed {
  id: string
  host: string
  pid: number
  generation: number
  lastSeen: string
}

interface Listing {
  generation: number | null
  replicas: Listed[]
  missing: Listed[]
}

interface WaitAnswer {
  complete: boolean
  replicas: number
  pending: Listed[]
  missing: Listed[]
  applied: string[]
}

let redis: RedisProcess
let blue: TestServer
let green: TestServer

beforeAll(async () => {
  ;[redis, blue, green] = await Promise.all([startRedis(), echoUpstream('blue'), echoUpstream('green')])
})

afterAll(async () => {
  killRunningClis()
  closeConnections()
  await Promise.allSettled([redis?.stop(), blue?.close(), green?.close()])
})

function settings(url: string, key: string, extra: Record<string, unknown> = {}) {
  return {
    url,
    key,
    pollInterval: HEARTBEAT_MS,
    heartbeatInterval: HEARTBEAT_MS,
    commandTimeout: 300,
    connectTimeout: 300,
    ...extra,
  }
}

const listing = async (replica: Replica) => {
  const { status, body } = await adminGet<Listing>(replica.admin, '/replicas')
  expect(status, JSON.stringify(body)).toBe(200)
  return body
}

describe('three replicas, one of them partitioned from Redis', () => {
  let relay: Relay
  let replicas: Replica[] = []
  let ids: string[] = []
  let cut: Replica
  let cutId: string

  beforeAll(async () => {
    relay = await startRelay(redis.port)
    const key = 'bluegreen:partition-test'
    const options = (url: string) => ({
      redis: settings(url, key),
      blue: blue.url,
      green: green.url,
      extra: { admin: { listen: '127.0.0.1:0', waitTimeout: '2s', token: TOKEN } },
    })
    replicas = await Promise.all([
      startReplica(options(redis.url)),
      startReplica(options(redis.url)),
      startReplica(options(relay.url)),
    ])
    await Promise.all(replicas.map((replica) => waitReady(replica)))
    ids = (await Promise.all(replicas.map(stateOf))).map((state) => state.replica.id)
    cut = replicas[2]!
    cutId = ids[2]!
    await eventually(async () => (await listing(replicas[0]!)).replicas.length === 3, {
      message: 'all three replicas to heartbeat',
    })
  })

  afterAll(async () => {
    await Promise.allSettled(replicas.map((replica) => replica.close()))
    await relay?.close()
  })

  it('is listed missing with when it was last seen, and a switch with wait is not complete and names it', async () => {
    const { active } = await stateOf(replicas[0]!)
    const target = active === 'blue' ? 'green' : 'blue'
    const cutAt = Date.now()
    relay.cut()

    const listed = await eventually(
      async () => {
        const body = await listing(replicas[0]!)
        return body.missing?.some((replica) => replica.id === cutId) ? body : undefined
      },
      { timeout: 10_000, message: `${cutId} to be listed missing` },
    )
    expect(listed.replicas.map((replica) => replica.id).sort()).toEqual(ids.slice(0, 2).sort())
    const [missing] = listed.missing
    expect(listed.missing).toHaveLength(1)
    expect(missing).toMatchObject({ id: cutId, pid: cut.child.pid })
    const lastSeen = Date.parse(missing!.lastSeen)
    // Its last heartbeat came before the cut, and not long before.
    expect(lastSeen).toBeLessThanOrEqual(Date.now())
    expect(lastSeen).toBeGreaterThan(cutAt - LIVE_FOR_MS - 1_000)

    // Cut off, it still serves the old color and says it is ready: what a load balancer sees.
    expect((await get(cut.url)).color).toBe(active)
    expect((await adminGet(cut.admin, '/readyz')).status).toBe(200)

    const switched = await adminPost(replicas[0]!.admin, '/switch', { to: target, wait: true }, TOKEN)
    expect(switched.status, JSON.stringify(switched.body)).toBe(200)
    const wait = switched.body.wait as WaitAnswer
    expect(wait.complete).toBe(false)
    expect(wait.pending).toEqual([])
    expect(wait.missing.map((replica) => replica.id)).toEqual([cutId])
    expect(wait.missing[0]!.lastSeen).toBe(missing!.lastSeen)
    expect(wait.replicas).toBe(2)
    expect([...wait.applied].sort()).toEqual(ids.slice(0, 2).sort())
    // Which is the truth: the partitioned replica still serves the old color.
    expect((await get(cut.url)).color).toBe(active)
    for (const replica of replicas.slice(0, 2)) expect((await get(replica.url)).color).toBe(target)
  })

  it('bluegreen replicas lists it missing and exits 3; a switch --wait exits 3 naming it', async () => {
    const listed = await runCli(['replicas', '--admin', replicas[1]!.admin])
    expect(listed.code, listed.stderr).toBe(3)
    const row = listed.stdout.split('\n').find((line) => line.startsWith(cutId))
    expect(row).toMatch(/ missing /)
    expect(listed.stdout).toMatch(/^id +host +pid +generation +status +last seen$/m)

    const { active } = await stateOf(replicas[0]!)
    const switched = await runCli([
      'switch',
      active === 'blue' ? 'green' : 'blue',
      '--wait',
      '--admin',
      replicas[1]!.admin,
      '--token',
      TOKEN,
    ])
    expect(switched.code, switched.stderr).toBe(3)
    expect(switched.stdout).toMatch(new RegExp(`missing .*${cutId} \\(last seen `))
  })

  it('an operator forgets it (DELETE /replicas/ID: token required, audited; the CLI too), and a wait is complete again', async () => {
    const path = `/replicas/${encodeURIComponent(cutId)}`
    const anonymous = await callAdmin(replicas[0]!.admin, path, { method: 'DELETE' })
    expect(anonymous.status).toBe(401)
    expect((anonymous.body.error as { code: string }).code).toBe('BG_UNAUTHORIZED')

    const malformed = await callAdmin(replicas[0]!.admin, '/replicas/a%2Fb', {
      method: 'DELETE',
      token: TOKEN,
    })
    expect(malformed.status).toBe(400)
    expect((malformed.body.error as { code: string }).code).toBe('BG_BAD_REQUEST')

    const unknown = await callAdmin(replicas[0]!.admin, '/replicas/no-such-replica', {
      method: 'DELETE',
      token: TOKEN,
    })
    expect(unknown.status).toBe(404)
    expect((unknown.body.error as { code: string }).code).toBe('BG_UNKNOWN_REPLICA')

    // A live replica cannot be forgotten: its next heartbeat would list it again.
    const live = await callAdmin(replicas[0]!.admin, `/replicas/${encodeURIComponent(ids[1]!)}`, {
      method: 'DELETE',
      token: TOKEN,
    })
    expect(live.status).toBe(409)
    expect((live.body.error as { code: string }).code).toBe('BG_REPLICA_LIVE')

    const forgotten = await runCli([
      'replicas',
      'forget',
      cutId,
      '--reason',
      'node drained',
      '--admin',
      replicas[0]!.admin,
      '--token',
      TOKEN,
    ])
    expect(forgotten.code, forgotten.stderr).toBe(0)
    expect(forgotten.stdout).toContain(`forgot ${cutId}`)

    const body = await listing(replicas[1]!)
    expect(body.missing).toEqual([])
    expect(body.replicas.map((replica) => replica.id)).not.toContain(cutId)

    const { events } = (await adminGet<{ events: Record<string, unknown>[] }>(replicas[1]!.admin, '/events'))
      .body
    const forgets = events.filter((event) => event.action === 'forget-replica')
    expect(forgets.slice(0, 5)).toMatchObject([
      { result: 'accepted', replica: cutId, reason: 'node drained', actor: 'token:admin' },
      { result: 'refused', code: 'BG_REPLICA_LIVE', replica: ids[1] },
      { result: 'refused', code: 'BG_UNKNOWN_REPLICA', replica: 'no-such-replica' },
      { result: 'refused', code: 'BG_BAD_REQUEST', replica: 'a/b' },
      { result: 'refused', code: 'BG_UNAUTHORIZED', replica: cutId },
    ])

    const { active } = await stateOf(replicas[0]!)
    const switched = await adminPost(
      replicas[0]!.admin,
      '/switch',
      { to: active === 'blue' ? 'green' : 'blue', wait: true },
      TOKEN,
    )
    expect(switched.status).toBe(200)
    expect(switched.body.wait).toMatchObject({ complete: true, replicas: 2, pending: [], missing: [] })
  })

  it('comes back live when the partition heals, and applies the state it missed', async () => {
    relay.heal()
    const { generation, active } = await stateOf(replicas[0]!)
    await eventually(
      async () => {
        const body = await listing(replicas[0]!)
        const entry = body.replicas.find((replica) => replica.id === cutId)
        return entry?.generation === generation && body.missing.length === 0
      },
      { timeout: 10_000, message: `${cutId} to be live again at generation ${generation}` },
    )
    expect((await get(cut.url)).color).toBe(active)
    const switched = await adminPost(
      replicas[2]!.admin,
      '/switch',
      { to: active === 'blue' ? 'green' : 'blue', wait: true },
      TOKEN,
    )
    expect(switched.body.wait).toMatchObject({ complete: true, replicas: 3, pending: [], missing: [] })
    const listed = await runCli(['replicas', '--admin', replicas[1]!.admin])
    expect(listed.code, listed.stdout).toBe(0)
  })

  it('a replica that shuts down cleanly deregisters: it is gone, not missing', async () => {
    const leaving = replicas[1]!
    await leaving.close()
    replicas = replicas.filter((replica) => replica !== leaving)
    const body = await listing(replicas[0]!)
    expect(body.replicas.map((replica) => replica.id)).not.toContain(ids[1])
    expect(body.missing).toEqual([])
    const { active } = await stateOf(replicas[0]!)
    const switched = await adminPost(
      replicas[0]!.admin,
      '/switch',
      { to: active === 'blue' ? 'green' : 'blue', wait: true },
      TOKEN,
    )
    expect(switched.body.wait).toMatchObject({ complete: true, replicas: 2, missing: [] })
  })
})

describe('a partitioned replica past the limits: state.maxStaleness and forgetMissingAfter', () => {
  const MAX_STALENESS_MS = 1_000
  const FORGET_AFTER_MS = 5_000
  let relay: Relay
  let direct: Replica
  let cut: Replica

  beforeAll(async () => {
    relay = await startRelay(redis.port)
    const key = 'bluegreen:partition-limits'
    const options = (url: string) => ({
      redis: settings(url, key, { forgetMissingAfter: FORGET_AFTER_MS }),
      state: { maxStaleness: MAX_STALENESS_MS },
      blue: blue.url,
      green: green.url,
      waitTimeout: '2s',
    })
    ;[direct, cut] = await Promise.all([startReplica(options(redis.url)), startReplica(options(relay.url))])
    await Promise.all([waitReady(direct), waitReady(cut)])
    await eventually(async () => (await listing(direct)).replicas.length === 2, {
      message: 'both replicas to heartbeat',
    })
  })

  afterAll(async () => {
    await Promise.allSettled([direct?.close(), cut?.close()])
    await relay?.close()
  })

  it('fails /readyz once cut off for longer than maxStaleness, is forgotten after forgetMissingAfter, and recovers when healed', async () => {
    const { id } = (await stateOf(cut)).replica
    const { active } = await stateOf(cut)
    const { lastSyncAt } = (await stateOf(cut)).replica.store
    relay.cut()
    const readiness = await eventually(
      async () => {
        const answer = await adminGet<{ ready: boolean; reasons: string[] }>(cut.admin, '/readyz')
        return answer.status === 503 ? answer : undefined
      },
      { timeout: 10_000, message: 'the cut-off replica to fail /readyz' },
    )
    // Not before the limit: counted from its last sync with Redis.
    expect(Date.now() - Date.parse(lastSyncAt!)).toBeGreaterThanOrEqual(MAX_STALENESS_MS)
    expect(readiness.body.reasons.join(' ')).toMatch(/state store .* state\.maxStaleness/)
    // Out of the load balancer, but the process still answers whoever still sends it a request.
    expect((await get(cut.url)).color).toBe(active)
    // The replica that still reaches Redis is not affected.
    expect((await adminGet(direct.admin, '/readyz')).status).toBe(200)

    await eventually(async () => (await listing(direct)).missing.some((replica) => replica.id === id), {
      timeout: 10_000,
      message: `${id} to be listed missing`,
    })
    const forgottenAt = await eventually(
      async () => {
        const body = await listing(direct)
        const listed = [...body.replicas, ...body.missing].some((replica) => replica.id === id)
        return listed ? undefined : Date.now()
      },
      { timeout: FORGET_AFTER_MS + 5_000, message: `${id} to age out` },
    )
    expect(forgottenAt - Date.parse(lastSyncAt!)).toBeGreaterThanOrEqual(FORGET_AFTER_MS - 1_000)
    const switched = await adminPost(direct.admin, '/switch', {
      to: active === 'blue' ? 'green' : 'blue',
      wait: true,
    })
    expect(switched.body.wait).toMatchObject({ complete: true, replicas: 1, missing: [] })

    relay.heal()
    await waitReady(cut)
    await eventually(async () => (await listing(direct)).replicas.some((replica) => replica.id === id), {
      timeout: 10_000,
      message: `${id} to be live again`,
    })
    expect((await get(cut.url)).color).toBe(active === 'blue' ? 'green' : 'blue')
  })
})
