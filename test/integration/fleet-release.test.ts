import { createHmac } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost } from '../helpers/admin.ts'
import { eventually } from '../helpers/eventually.ts'
import { type Received, type Receiver, startReceiver } from '../helpers/receiver.ts'
import { type RedisProcess, startRedis } from '../helpers/redis.ts'
import {
  closeConnections,
  type Replica,
  startReplica,
  startReplicas,
  waitReady,
} from '../helpers/replicas.ts'
import { startServer, type TestServer } from '../helpers/servers.ts'

// Issue 14's release workflow held across a fleet: three proxy replicas (child processes) sharing one real
// redis-server, one webhook receiver. What every replica observes or decides for itself (the standby over, a gate's
// timeout, a step held by its smoke checks) must come to one audit event and one notification for the fleet.
// The tests run in order on the one fleet, each starting from where the last left the state.

const SECRET = 'fleet-release-secret'
const KEEP_FOR_MS = 2_000

interface Payload {
  id: string
  event: string
  replica: string
  data: Record<string, unknown>
}

interface Waiting {
  for: string
  since: string
  until?: string
  onTimeout?: string
}

interface FleetState {
  generation: number
  reason: string
  weights: { blue: number; green: number }
  rollout?: { status: string; step: number; outcome?: string; waiting?: Waiting }
  standby: { color: string; since: string; keepUntil: string } | null
}

interface AuditLine {
  action: string
  reason: string
  actor: string
  address: string
  result: string
  code?: string
  generation?: number
}

async function stateOf(replica: Replica): Promise<FleetState> {
  const { status, body } = await adminGet<FleetState>(replica.admin, '/state')
  if (status !== 200) throw new Error(`GET /state answered ${status}`)
  return body
}

/** The fleet's audit trail: kept in Redis, the same from any replica. */
async function auditOf(replica: Replica): Promise<AuditLine[]> {
  return (await adminGet<{ events: AuditLine[] }>(replica.admin, '/events?limit=200')).body.events
}

function until(replica: Replica, test: (state: FleetState) => boolean, message: string, timeout = 15_000) {
  return eventually(
    async () => {
      const state = await stateOf(replica)
      return test(state) ? state : undefined
    },
    { timeout, interval: 50, message },
  )
}

/** Every replica evaluates every 100 ms: a second sender or a second decision would have come by then. */
function settle(ms = 1_500): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function verifySignature(request: Received): void {
  const timestamp = request.headers['x-bluegreen-timestamp'] as string
  expect(timestamp).toMatch(/^\d+$/)
  const expected = createHmac('sha256', SECRET).update(`${timestamp}.${request.body}`).digest('hex')
  expect(request.headers['x-bluegreen-signature']).toBe(`sha256=${expected}`)
}

describe('the release workflow across three replicas sharing one Redis', () => {
  let redis: RedisProcess
  let blue: TestServer
  let green: TestServer
  let receiver: Receiver
  let replicas: Replica[] = []
  /** What each color answers its smoke check: 200 until a test breaks it. */
  const smokeStatus: Record<string, number> = { blue: 200, green: 200 }

  const options = () => ({
    redis: {
      url: redis.url,
      key: 'bluegreen:fleet-release',
      pollInterval: '1s',
      heartbeatInterval: 200,
      commandTimeout: 1000,
    },
    blue: blue.url,
    green: green.url,
    extra: {
      standby: { keepFor: KEEP_FOR_MS },
      rollback: { window: '10s', evaluateEvery: '100ms', minRequests: 10, maxErrorRatio: 0.05, watch: '30s' },
      rollout: { onLowTraffic: 'proceed' },
      smoke: { checks: [{ name: 'ready', path: '/smoke' }] },
      notify: [
        {
          name: 'hook',
          url: receiver.url,
          secret: SECRET,
          events: ['standby-over', 'rollout-step', 'rollout-complete', 'rollout-abort', 'smoke-failed'],
        },
      ],
    },
  })

  beforeAll(async () => {
    const upstream = (color: string) =>
      startServer((req, res) => {
        res.writeHead(req.url === '/smoke' ? smokeStatus[color]! : 200)
        res.end(color)
      })
    ;[redis, receiver, blue, green] = await Promise.all([
      startRedis(),
      startReceiver(),
      upstream('blue'),
      upstream('green'),
    ])
    replicas = await startReplicas(3, options())
  })

  afterAll(async () => {
    await Promise.allSettled(replicas.map((replica) => replica.close()))
    closeConnections()
    await Promise.allSettled([redis?.stop(), blue?.close(), green?.close(), receiver?.close()])
  })

  function sent(event: string): { request: Received; payload: Payload }[] {
    return receiver.received
      .map((request) => ({ request, payload: JSON.parse(request.body) as Payload }))
      .filter(({ payload }) => payload.event === event)
  }

  it('sends one signed standby-over for the fleet, though every replica sees keepFor run out', async () => {
    const [first] = replicas as [Replica]
    const switched = await adminPost(first.admin, '/switch', { to: 'green', wait: true })
    expect(switched.status, JSON.stringify(switched.body)).toBe(200)
    const { standby } = await stateOf(first)
    expect(standby).toMatchObject({ color: 'blue' })
    const id = `standby-over-blue-${standby!.since}`
    await eventually(() => sent('standby-over').length > 0, {
      timeout: KEEP_FOR_MS + 10_000,
      message: 'the standby-over notification',
    })
    await settle()
    const overs = sent('standby-over')
    expect(overs).toHaveLength(1)
    const [{ request, payload }] = overs as [{ request: Received; payload: Payload }]
    verifySignature(request)
    expect(request.headers['x-bluegreen-delivery']).toBe(id)
    expect(payload).toMatchObject({
      id,
      event: 'standby-over',
      data: { phase: 'over', color: 'blue', since: standby!.since, keepUntil: standby!.keepUntil },
    })
    // The timestamp is the attempt's own, in seconds: what lets a receiver refuse a replay.
    const sentAt = Number(request.headers['x-bluegreen-timestamp']) * 1000
    expect(Math.abs(sentAt - request.at)).toBeLessThan(60_000)
    // The one delivery is in the shared audit trail, by the replica that claimed it.
    const deliveries = (await auditOf(first)).filter(
      (event) => event.action === 'notify' && event.reason.startsWith('standby-over'),
    )
    expect(deliveries).toHaveLength(1)
    expect(deliveries[0]!.address).toBe(payload.replica)
  })

  it('autoPromoteAfter promotes once for the fleet: one audit event, one notification', async () => {
    const [first] = replicas as [Replica]
    const started = await adminPost(first.admin, '/rollout', {
      to: 'blue',
      steps: [{ weight: 20, gate: 'manual' }, 50, 100],
      stepSeconds: 1,
      autoPromoteAfter: '2s',
    })
    expect(started.status, JSON.stringify(started.body)).toBe(200)
    const waiting = await until(first, (state) => state.rollout?.waiting !== undefined, 'the gate')
    expect(waiting.rollout?.waiting).toMatchObject({ for: 'promote', onTimeout: 'promote' })
    const moved = await until(first, (state) => (state.rollout?.step ?? 0) >= 1, 'the automatic promote')
    expect(moved.weights.blue).toBeGreaterThanOrEqual(50)
    await until(first, (state) => state.rollout?.status === 'completed', 'the rollout to complete')
    await settle()
    const promotes = (await auditOf(first)).filter((event) => /promoted automatically/.test(event.reason))
    expect(promotes.map((event) => `${event.action} ${event.result} ${event.reason}`)).toEqual([
      'rollout accepted rollout to blue: step 2/3 (50%) promoted automatically after 2 s',
    ])
    const notified = sent('rollout-step').filter(({ payload }) =>
      /promoted automatically/.test(String(payload.data.reason)),
    )
    expect(notified).toHaveLength(1)
    verifySignature(notified[0]!.request)
    expect(notified[0]!.payload.id).toBe(`rollout-step-g${promotes[0]!.generation}`)
    // The step after it, to 100%, completed the rollout: told once too.
    const completed = `rollout-complete-g${promotes[0]!.generation! + 1}`
    await eventually(() => sent('rollout-complete').some(({ payload }) => payload.id === completed), {
      message: 'the rollout-complete notification',
    })
    expect(sent('rollout-complete').filter(({ payload }) => payload.id === completed)).toHaveLength(1)
  })

  it('abortIfNotApprovedWithin aborts once for the fleet: one audit event, one notification', async () => {
    const [first] = replicas as [Replica]
    const started = await adminPost(first.admin, '/rollout', {
      to: 'green',
      steps: [{ weight: 20, gate: 'manual' }, 100],
      stepSeconds: 1,
      abortIfNotApprovedWithin: '2s',
    })
    expect(started.status, JSON.stringify(started.body)).toBe(200)
    const aborted = await until(first, (state) => state.rollout?.status === 'aborted', 'the abort')
    expect(aborted).toMatchObject({ weights: { blue: 100, green: 0 } })
    expect(aborted.rollout?.outcome).toBe('rollout to green aborted at 20%: not promoted within 2 s')
    await settle()
    const aborts = (await auditOf(first)).filter((event) => event.action === 'rollout-abort')
    expect(aborts).toHaveLength(1)
    expect(aborts[0]).toMatchObject({ actor: 'bluegreen', result: 'accepted' })
    const notified = sent('rollout-abort')
    expect(notified).toHaveLength(1)
    verifySignature(notified[0]!.request)
    expect(notified[0]!.payload).toMatchObject({ id: `rollout-abort-g${aborts[0]!.generation}` })
  })

  it('a replica restarted during a manual gate keeps the wait; promote through it moves on', async () => {
    const [first, second] = replicas as [Replica, Replica]
    const started = await adminPost(first.admin, '/rollout', {
      to: 'green',
      steps: [{ weight: 20, gate: 'manual' }, 100],
      stepSeconds: 1,
    })
    expect(started.status, JSON.stringify(started.body)).toBe(200)
    const waiting = await until(first, (state) => state.rollout?.waiting !== undefined, 'the gate')
    await second.close()
    const restarted = await startReplica(options())
    replicas[1] = restarted
    await waitReady(restarted)
    const seen = await until(restarted, (state) => state.generation === waiting.generation, 'the state')
    expect(seen.rollout).toMatchObject({ status: 'running', step: 0, waiting: waiting.rollout!.waiting })
    // Held: no replica moves it on, the restarted one included.
    await settle(2_000)
    expect((await stateOf(restarted)).generation).toBe(waiting.generation)
    const promoted = await adminPost(restarted.admin, '/rollout/promote', { reason: 'after the restart' })
    expect(promoted.status, JSON.stringify(promoted.body)).toBe(200)
    const done = await until(first, (state) => state.rollout?.status === 'completed', 'the promote')
    expect(done).toMatchObject({ weights: { blue: 0, green: 100 }, reason: 'after the restart' })
  })

  it('a step held by failing smoke checks is audited and notified once for the fleet, not once per replica', async () => {
    const [first] = replicas as [Replica]
    const started = await adminPost(first.admin, '/rollout', { to: 'blue', steps: [20, 100], stepSeconds: 1 })
    expect(started.status, JSON.stringify(started.body)).toBe(200)
    const generation = (await stateOf(first)).generation
    // Blue passed at the start; it fails before the next step.
    smokeStatus.blue = 500
    try {
      await eventually(
        async () =>
          (await auditOf(first)).some(
            (event) => event.code === 'BG_SMOKE_FAILED' && event.action === 'rollout',
          ),
        { timeout: 15_000, message: 'the hold to be audited' },
      )
      // Every replica has held the step by now (each runs the checks when the step's time is up).
      await eventually(
        async () => {
          for (const replica of replicas) {
            const { body } = await adminGet<{ replica: { rolloutStep?: { heldBy?: string } } }>(
              replica.admin,
              '/state',
            )
            if (body.replica.rolloutStep?.heldBy !== 'smoke') return false
          }
          return true
        },
        { timeout: 15_000, message: 'every replica to hold the step on its smoke checks' },
      )
      await settle()
      const holds = (await auditOf(first)).filter(
        (event) => event.code === 'BG_SMOKE_FAILED' && event.action === 'rollout',
      )
      expect(holds).toHaveLength(1)
      expect((await stateOf(first)).generation).toBe(generation)
      const notified = sent('smoke-failed')
      expect(notified).toHaveLength(1)
      verifySignature(notified[0]!.request)
      // Turning the mirror on moves no traffic and is not a new step: the hold goes on, not audited again.
      const mirrored = await adminPost(first.admin, '/mirror', { percent: 10, wait: true })
      expect(mirrored.status, JSON.stringify(mirrored.body)).toBe(200)
      await settle(2_000)
      expect(
        (await auditOf(first)).filter(
          (event) => event.code === 'BG_SMOKE_FAILED' && event.action === 'rollout',
        ),
      ).toHaveLength(1)
      expect(sent('smoke-failed')).toHaveLength(1)
    } finally {
      smokeStatus.blue = 200
    }
    // Passing again, the step moves on by itself, once.
    await until(first, (state) => state.rollout?.status === 'completed', 'the rollout to complete')
  })
})
