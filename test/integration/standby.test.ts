import type { ServerResponse } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { followEvents, type LiveEvents } from '../helpers/live-events.ts'
import { type Receiver, startReceiver } from '../helpers/receiver.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import {
  closeConnections,
  get,
  type Replica,
  startReplica,
  startReplicas,
  waitReady,
} from '../helpers/replicas.ts'
import { echoUpstream, startServer, type TestServer } from '../helpers/servers.ts'

// Standby across three proxy replicas (child processes) sharing one real redis-server: the old color is kept for
// standby.keepFor after a switch, and is safe to scale down only once it has drained on every live replica and
// keepFor is over. One replica holds a slow request to the old color open to keep it from draining there. A webhook
// receiver subscribed to standby-over hears of it once for the fleet: not yet safe when keepFor runs out, then safe.

const KEEP_FOR_MS = 2_000

interface StandbyView {
  color: string
  since: string
  keepUntil: string
  drained: boolean
  drainedAt?: string
  replicas: { id: string; drained: boolean; drainedAt?: string }[]
  safeToScaleDown: boolean
}

interface StandbyEvent {
  phase: string
  color: string
  since: string
  keepUntil: string
  safeToScaleDown: boolean
}

async function standbyOf(replica: Replica): Promise<StandbyView | null> {
  const { body } = await adminGet<{ standby: StandbyView | null }>(replica.admin, '/state')
  return body.standby
}

describe('standby, then retire, across three replicas', () => {
  let redis: RedisProcess
  let blue: TestServer
  let green: TestServer
  let replicas: Replica[] = []
  let events: LiveEvents | undefined
  let receiver: Receiver
  const held: ServerResponse[] = []
  const options = () => ({
    redis: {
      url: redis.url,
      key: 'bluegreen:standby-test',
      pollInterval: '1s',
      heartbeatInterval: 200,
      commandTimeout: 1000,
    },
    blue: blue.url,
    green: green.url,
    extra: {
      standby: { keepFor: KEEP_FOR_MS },
      notify: [{ name: 'hook', url: receiver.url, events: ['standby-over'] }],
    },
  })

  beforeAll(async () => {
    ;[redis, green, receiver] = await Promise.all([startRedis(), echoUpstream('green'), startReceiver()])
    blue = await startServer((req, res) => {
      // A slow request holds its answer until the test lets it go.
      if (req.url === '/slow') held.push(res)
      else res.end('blue')
    })
    replicas = await startReplicas(3, options())
  })

  afterAll(async () => {
    events?.close()
    for (const res of held) res.end()
    await Promise.allSettled(replicas.map((replica) => replica.close()))
    closeConnections()
    await Promise.allSettled([redis?.stop(), blue?.close(), green?.close(), receiver?.close()])
  })

  it('is safe to scale down only once drained on every replica and keepFor is over; a restart keeps it', async () => {
    const [first, second, third] = replicas as [Replica, Replica, Replica]
    expect(await standbyOf(first)).toBeNull()
    events = await followEvents(first.admin)
    // A slow request to blue stays open on the third replica through the switch.
    const slow = get(`${third.url}/slow`)
    await eventually(() => held.length === 1, { message: 'the slow request to reach blue' })

    const switched = await adminPost(first.admin, '/switch', { to: 'green', wait: true })
    expect(switched.status).toBe(200)
    const started = await events.next<StandbyEvent>('standby', (event) => event.phase === 'started')
    expect(started).toMatchObject({ color: 'blue', safeToScaleDown: false })
    expect(Date.parse(started.keepUntil) - Date.parse(started.since)).toBe(KEEP_FOR_MS)

    // The two other replicas drain at once; the third holds the slow request, so blue has not drained there.
    const partly = await eventually(
      async () => {
        const view = await standbyOf(first)
        return view?.replicas.length === 3 && view.replicas.filter((r) => r.drained).length === 2
          ? view
          : undefined
      },
      { timeout: 10_000, message: 'two replicas of three to have drained blue' },
    )
    expect(partly).toMatchObject({
      color: 'blue',
      since: started.since,
      drained: false,
      safeToScaleDown: false,
    })
    const thirdId = (await adminGet<{ replica: { id: string } }>(third.admin, '/state')).body.replica.id
    expect(partly.replicas.find((replica) => replica.id === thirdId)).toEqual({ id: thirdId, drained: false })
    // GET /replicas gives the same view.
    const listed = await adminGet<{ standby: StandbyView }>(second.admin, '/replicas')
    expect(listed.body.standby).toMatchObject({ color: 'blue', drained: false })

    // keepFor runs out while the third replica still holds the request: over, but not safe.
    const over = await events.next<StandbyEvent>('standby', (event) => event.phase === 'over')
    expect(over).toMatchObject({ color: 'blue', safeToScaleDown: false })
    expect(await standbyOf(first)).toMatchObject({ drained: false, safeToScaleDown: false })

    // The slow request ends: drained everywhere, and now safe.
    held.shift()!.end('blue, slowly')
    expect((await slow).status).toBe(200)
    const drained = await events.next<StandbyEvent>('standby', (event) => event.phase === 'drained')
    expect(drained).toMatchObject({ color: 'blue', safeToScaleDown: true })
    const safe = await standbyOf(first)
    expect(safe).toMatchObject({ color: 'blue', drained: true, safeToScaleDown: true })
    expect(safe!.replicas.every((replica) => replica.drained)).toBe(true)
    expect(Date.parse(safe!.drainedAt!)).toBeGreaterThanOrEqual(Date.parse(safe!.since))
    // Each phase once on this replica, in the order it saw them.
    expect(events.of<StandbyEvent>('standby').map((event) => event.phase)).toEqual([
      'started',
      'over',
      'drained',
    ])

    // The fleet's notifications: keepFor over but not yet safe (the third replica held blue), then safe, each once
    // though every replica published both phases.
    const id = `standby-over-blue-${started.since}`
    await eventually(() => receiver.received.length >= 2, { message: 'the safe standby-over notification' })
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    const told = receiver.bodies<{ id: string; data: StandbyEvent }>()
    expect(told.map((payload) => [payload.id, payload.data.safeToScaleDown])).toEqual([
      [`${id}-draining`, false],
      [id, true],
    ])

    // A replica restarted keeps the standby (it is in the shared state), and counts as drained: it never sent blue
    // traffic.
    await second.close()
    const restarted = await startReplica(options())
    replicas[1] = restarted
    await waitReady(restarted)
    const afterRestart = await eventually(
      async () => {
        const view = await standbyOf(restarted)
        return view?.replicas.length === 3 ? view : undefined
      },
      { timeout: 10_000, message: 'the restarted replica to be listed' },
    )
    expect(afterRestart).toMatchObject({
      color: 'blue',
      since: started.since,
      keepUntil: started.keepUntil,
      drained: true,
      safeToScaleDown: true,
    })
  })
})
