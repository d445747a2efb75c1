import { createHmac, timingSafeEqual } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminGet, adminPost } from '../helpers/admin.ts'
import { runCli } from '../helpers/cli.ts'
import { eventually } from '../helpers/eventually.ts'
import { scrapeMetrics } from '../helpers/metrics.ts'
import { type Received, type Receiver, startReceiver } from '../helpers/receiver.ts'
import { freePort, useColorRig } from '../helpers/servers.ts'

const SECRET = 'webhook-secret'

/** What README tells a receiver to do: recompute the HMAC over `<timestamp>.<raw body>`, compare in constant time. */
function verifies(request: Received, secret: string): boolean {
  const timestamp = request.headers['x-bluegreen-timestamp']
  const given = request.headers['x-bluegreen-signature']
  if (typeof timestamp !== 'string' || typeof given !== 'string') return false
  const expected = `sha256=${createHmac('sha256', secret).update(`${timestamp}.${request.body}`).digest('hex')}`
  return given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected))
}

interface NotifyAudit {
  at: string
  action: string
  message?: string
  notification?: { target: string; event: string; result: string; attempt: number; status?: number }
}

async function notifyAudit(admin: string, target: string): Promise<NotifyAudit[]> {
  const reply = await adminGet<{ events: NotifyAudit[] }>(admin, '/events?limit=200')
  return reply.body.events.filter((event) => event.notification?.target === target).reverse()
}

describe('notifications: signed, subscribed, Slack-shaped', () => {
  const receivers: Record<'all' | 'rollbacks', Receiver> = {} as never
  beforeAll(async () => {
    receivers.all = await startReceiver()
    receivers.rollbacks = await startReceiver()
  })
  const rig = useColorRig({
    get notify() {
      return [
        { name: 'all', url: receivers.all.url, secret: SECRET },
        { name: 'chat', url: receivers.rollbacks.url, events: ['rollback'], format: 'slack' },
      ]
    },
  })
  afterAll(async () => {
    await receivers.all?.close()
    await receivers.rollbacks?.close()
  })

  it('sends a switch once, signed with the secret, to the targets that asked for switches only', async () => {
    const switched = await adminPost(rig.proxy.admin, '/switch', { to: 'green', reason: 'release 42' })
    expect(switched.status).toBe(200)
    const [request] = await eventually(() => receivers.all.received.length > 0 && receivers.all.received, {
      message: 'the switch to reach the receiver',
    })
    expect(verifies(request!, SECRET)).toBe(true)
    expect(verifies(request!, 'another-secret')).toBe(false)
    const age = Date.now() / 1000 - Number(request!.headers['x-bluegreen-timestamp'])
    expect(age).toBeGreaterThanOrEqual(-1)
    expect(age).toBeLessThan(60)
    expect(request!.headers['x-bluegreen-event']).toBe('switch')
    expect(request!.headers['content-type']).toBe('application/json')
    const body = JSON.parse(request!.body)
    expect(request!.headers['x-bluegreen-delivery']).toBe(body.id)
    expect(body).toMatchObject({
      id: `switch-g${switched.body.generation}`,
      event: 'switch',
      replica: expect.any(String),
      data: { action: 'switch', result: 'accepted', reason: 'release 42', to: { active: 'green' } },
    })
    expect(body.text).toContain('all traffic to green')
    await eventually(
      async () =>
        (await notifyAudit(rig.proxy.admin, 'all')).some((e) => e.notification?.result === 'delivered'),
      { message: 'the delivery to be audited' },
    )
    const metrics = await scrapeMetrics(rig.proxy.admin)
    expect(metrics.get('bluegreen_notifications_total{target="all",result="delivered"}')).toBe(1)
    // The chat target asked for rollbacks only: the switch, delivered and audited elsewhere, never reached it.
    expect(receivers.rollbacks.received).toEqual([])
    expect(metrics.get('bluegreen_notifications_total{target="chat",result="delivered"}')).toBe(0)
    expect(await notifyAudit(rig.proxy.admin, 'chat')).toEqual([])
    expect(receivers.all.received).toHaveLength(1)
  })

  it('gives a Slack target text and blocks, unsigned without a secret', async () => {
    const rolledBack = await adminPost(rig.proxy.admin, '/rollback', { reason: 'bad release' })
    expect(rolledBack.status).toBe(200)
    const [request] = await eventually(
      () => receivers.rollbacks.received.length > 0 && receivers.rollbacks.received,
      { message: 'the rollback to reach the Slack receiver' },
    )
    expect(request!.headers).not.toHaveProperty('x-bluegreen-signature')
    const slack = JSON.parse(request!.body)
    expect(Object.keys(slack).sort()).toEqual(['blocks', 'text'])
    expect(slack.text).toMatch(/^rollback: all traffic to blue .* bad release$/)
    expect(slack.blocks[0]).toEqual({ type: 'section', text: { type: 'mrkdwn', text: slack.text } })
    expect(slack.blocks.at(-1)).toMatchObject({ type: 'context', elements: [{ type: 'mrkdwn' }] })
    await eventually(() => receivers.all.received.length === 2, {
      message: 'the rollback to reach "all" too',
    })
    expect(JSON.parse(receivers.all.received[1]!.body)).toMatchObject({ event: 'rollback' })
  })
})

describe('notifications to a receiver that is down', () => {
  let port: number
  let receiver: Receiver | undefined
  beforeAll(async () => {
    port = await freePort('127.0.0.2')
  })
  const rig = useColorRig({
    get notify() {
      return [
        {
          name: 'down',
          url: `http://127.0.0.2:${port}/hook`,
          events: ['switch'],
          backoff: '200ms',
          retryFor: '4s',
          timeout: '1s',
          secret: SECRET,
        },
      ]
    },
  })
  afterAll(async () => {
    await receiver?.close()
  })

  it('retries with backoff, refused then answered 500, audits each attempt and counts it, never delaying the switch', async () => {
    const switched = await adminPost(rig.proxy.admin, '/switch', { to: 'green' })
    const answeredAt = Date.now()
    expect(switched.status).toBe(200)
    const refused = await eventually(
      async () => {
        const audit = await notifyAudit(rig.proxy.admin, 'down')
        return audit.length > 0 && audit
      },
      { message: 'a first attempt to be audited' },
    )
    expect(refused[0]).toMatchObject({
      action: 'notify',
      notification: { target: 'down', event: 'switch', result: 'retried', attempt: 1 },
    })
    expect(refused[0]!.message).toMatch(/ECONNREFUSED/)
    // The receiver comes up, answering 500: still a failure worth retrying.
    receiver = await startReceiver({ host: '127.0.0.2', port, status: 500 })
    const audit = await eventually(
      async () => {
        const events = await notifyAudit(rig.proxy.admin, 'down')
        return events.some((event) => event.notification?.result === 'failed') && events
      },
      { timeout: 10_000, message: 'the delivery to fail for good' },
    )
    const outcomes = audit.map((event) => event.notification!)
    expect(outcomes.map((outcome) => outcome.attempt)).toEqual(outcomes.map((_, index) => index + 1))
    expect(outcomes.at(-1)!.result).toBe('failed')
    expect(outcomes.slice(0, -1).every((outcome) => outcome.result === 'retried')).toBe(true)
    expect(outcomes.some((outcome) => outcome.status === 500)).toBe(true)
    expect(receiver.received.length).toBe(outcomes.filter((outcome) => outcome.status === 500).length)
    // Each retry is signed afresh, and waits longer than the one before it (200 ms, 400 ms, 800 ms...).
    expect(receiver.received.every((request) => verifies(request, SECRET))).toBe(true)
    const arrivals = receiver.received.map((request) => request.at)
    const gaps = arrivals.slice(1).map((at, index) => at - arrivals[index]!)
    expect(gaps).toEqual([...gaps].sort((a, b) => a - b))
    // The switch was answered while the delivery was still being retried.
    expect(answeredAt).toBeLessThan(Date.parse(audit.at(-1)!.at))
    const metrics = await scrapeMetrics(rig.proxy.admin)
    expect(metrics.get('bluegreen_notifications_total{target="down",result="retried"}')).toBe(
      outcomes.length - 1,
    )
    expect(metrics.get('bluegreen_notifications_total{target="down",result="failed"}')).toBe(1)
    expect(metrics.get('bluegreen_notifications_total{target="down",result="delivered"}')).toBe(0)
    // `bluegreen events` names the target and the delivery's own result.
    const listed = await runCli(['events', '--admin', rig.proxy.admin])
    expect(listed.code, listed.stderr).toBe(0)
    expect(listed.stdout).toMatch(/ notify +down +failed +switch to down: failed \(attempt \d+\)\n/)
    expect(listed.stdout).toMatch(/ notify +down +retried +switch to down: retried \(attempt 1\)\n/)
  })
})
