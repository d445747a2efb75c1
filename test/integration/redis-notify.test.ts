import { createHmac } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { type Receiver, startReceiver } from '../helpers/receiver.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import {
  type FailingGreenFleet,
  get,
  type Replica,
  startFailingGreenFleet,
  stateOf,
} from '../helpers/replicas.ts'

const SECRET = 'fleet-secret'

interface Payload {
  id: string
  event: string
  replica: string
  data: Record<string, unknown>
}

/** A live event stream held open on a replica, its text so far. */
function follow(admin: string): { text: () => string; stop: () => void } {
  const controller = new AbortController()
  let text = ''
  void fetch(`${admin}/events/stream`, { signal: controller.signal })
    .then(async (response) => {
      for await (const chunk of response.body!) text += Buffer.from(chunk).toString()
    })
    .catch(() => {})
  return { text: () => text, stop: () => controller.abort() }
}

describe('notifications from three replicas sharing one Redis', () => {
  let redis: RedisProcess
  let receiver: Receiver
  let fleet: FailingGreenFleet | undefined
  let replicas: Replica[] = []

  beforeAll(async () => {
    redis = await startRedis()
    receiver = await startReceiver()
    fleet = await startFailingGreenFleet(
      3,
      { url: redis.url, key: 'bluegreen:notify-test', heartbeatInterval: '300ms' },
      {
        notify: [
          { name: 'hook', url: receiver.url, secret: SECRET, events: ['rollback', 'replica-missing'] },
        ],
      },
    )
    replicas = fleet.replicas
  })

  afterAll(async () => {
    await fleet?.close()
    await receiver?.close()
    await redis?.stop()
  })

  it('sends an automatic rollback once, from the replica that made it, with its figures', async () => {
    const switched = await adminPost(replicas[0]!.admin, '/switch', { to: 'green', wait: true })
    expect(switched.status, JSON.stringify(switched.body)).toBe(200)
    // 30 failing requests, 10 through each replica: only the pooled figures decide.
    for (let round = 0; round < 10; round++) {
      for (const replica of replicas) expect((await get(`${replica.url}/work`)).status).toBe(500)
    }
    await eventually(() => receiver.received.length > 0, {
      timeout: 10_000,
      message: 'the rollback notification',
    })
    await eventually(
      async () => (await Promise.all(replicas.map(stateOf))).every((state) => state.active === 'blue'),
      {
        timeout: 5_000,
        message: 'every replica back on blue',
      },
    )
    // Every replica evaluates every 100 ms: a second sender would have sent by now.
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    expect(receiver.received).toHaveLength(1)
    const request = receiver.received[0]!
    const timestamp = request.headers['x-bluegreen-timestamp'] as string
    const expected = createHmac('sha256', SECRET).update(`${timestamp}.${request.body}`).digest('hex')
    expect(request.headers['x-bluegreen-signature']).toBe(`sha256=${expected}`)
    const payload = JSON.parse(request.body) as Payload
    expect(payload).toMatchObject({
      id: 'rollback-g2',
      event: 'rollback',
      data: {
        action: 'rollback',
        actor: 'bluegreen',
        result: 'accepted',
        generation: 2,
        figures: { errorRatio: 1, maxErrorRatio: 0.1, minRequests: 30 },
      },
    })
    expect((payload.data.figures as { requests: number }).requests).toBeGreaterThanOrEqual(30)
    expect(payload.data.reason).toMatch(/error ratio 100\.0%/)
    // The replica that sent it is the one whose compare-and-set made the rollback.
    expect(payload.data.address).toBe(payload.replica)
  })

  it('sends a replica missing once though every live replica sees it', async () => {
    const before = receiver.received.length
    const streams = replicas.slice(0, 2).map((replica) => follow(replica.admin))
    const victim = replicas[2]!
    const { id } = (await stateOf(victim)).replica
    // Killed, it cannot deregister: it goes missing.
    victim.child.kill('SIGKILL')
    await victim.exited
    try {
      // Both survivors publish it live, so both would send it but for the claim.
      await eventually(
        () =>
          streams.every((stream) =>
            stream.text().includes(`event: replica\ndata: {"phase":"missing","id":"${id}"`),
          ),
        { timeout: 10_000, message: 'both live replicas to publish the replica missing' },
      )
    } finally {
      for (const stream of streams) stream.stop()
    }
    await eventually(() => receiver.received.length > before, {
      timeout: 10_000,
      message: 'the notification',
    })
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    // Only the killed one's (on a loaded machine a live replica may miss heartbeats for a moment, and be told too).
    const sent = receiver
      .bodies<Payload>()
      .slice(before)
      .filter((payload) => payload.data.id === id)
    expect(sent).toHaveLength(1)
    expect(sent[0]).toMatchObject({ event: 'replica-missing', data: { phase: 'missing', id } })
    // The audit trail (shared in Redis) has the one delivery, by the replica that claimed it.
    const audit = await adminGet<{ events: { notification?: { id: string; result: string } }[] }>(
      replicas[0]!.admin,
      '/events?limit=100',
    )
    const deliveries = audit.body.events.filter(
      (event) => event.notification?.id === `replica-missing-${id}-${sent[0]!.data.lastSeen}`,
    )
    expect(deliveries.map((event) => event.notification!.result)).toEqual(['delivered'])
  })
})
