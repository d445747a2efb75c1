import { createHmac } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { EventStream, type LiveEvent } from '../../src/admin/event-stream.ts'
import type { AuditEvent } from '../../src/audit/audit.ts'
import { type Notification, notificationsOf } from '../../src/notify/events.ts'
import { bodyFor, headersFor, signature, slackPayload } from '../../src/notify/message.ts'

/** What the notifier would make of each event published on a real EventStream. */
function published(publish: (events: EventStream) => void): Notification[] {
  const events = new EventStream()
  const seen: LiveEvent[] = []
  const stop = events.subscribe((event) => seen.push(event))
  publish(events)
  stop()
  events.publish('audit', accepted('switch'))
  return seen.flatMap(notificationsOf)
}

function accepted(action: AuditEvent['action'], more: Partial<AuditEvent> = {}): AuditEvent {
  return {
    at: '2026-01-01T00:00:00.000Z',
    actor: 'token:ci',
    address: '127.0.0.1',
    action,
    from: { active: 'blue', weights: { blue: 100, green: 0 }, generation: 4 },
    to: { active: 'green', weights: { blue: 0, green: 100 } },
    reason: 'release 42',
    result: 'accepted',
    generation: 5,
    ...more,
  }
}

describe('notifications of live events', () => {
  it('maps each kind of live event to the notifications it means, with ids every replica derives alike', () => {
    const found = published((events) => {
      events.publish('audit', accepted('switch'))
      events.publish(
        'audit',
        accepted('weights', { to: { active: 'blue', weights: { blue: 90, green: 10 } } }),
      )
      events.publish('audit', accepted('rollback', { actor: 'bluegreen', generation: 6 }))
      events.publish(
        'audit',
        accepted('rollout', { rollout: { to: 'green', step: 2, steps: 4, weight: 25, status: 'running' } }),
      )
      events.publish(
        'audit',
        accepted('rollout-promote', {
          rollout: { to: 'green', step: 4, steps: 4, weight: 100, status: 'completed' },
        }),
      )
      events.publish(
        'audit',
        accepted('rollout', {
          rollout: { to: 'green', step: 1, steps: 4, weight: 10, status: 'running', waiting: 'promote' },
        }),
      )
      events.publish('audit', accepted('rollout-pause'))
      events.publish('audit', accepted('rollout-abort'))
      events.publish('audit', accepted('switch', { forcedPast: ['smoke'], generation: 9 }))
      events.publish('audit', {
        ...accepted('switch'),
        result: 'refused',
        code: 'BG_SMOKE_FAILED',
        message: '1 of 1 failed',
      })
      events.publish('standby', {
        phase: 'over',
        color: 'blue',
        since: '2026-01-01T00:00:00.000Z',
        safeToScaleDown: true,
      })
      events.publish('replica', {
        phase: 'missing',
        id: 'r1',
        host: 'h',
        pid: 7,
        generation: 3,
        lastSeen: 'T1',
      })
      events.publish('replica', { phase: 'lagging', id: 'r2', generation: 2, current: 5 })
    })
    expect(found.map((notification) => [notification.event, notification.claimed])).toEqual([
      ['switch', false],
      ['switch', false],
      ['rollback', false],
      ['rollout-step', false],
      ['rollout-complete', false],
      ['rollout-paused', false],
      ['rollout-paused', false],
      ['rollout-abort', false],
      ['switch', false],
      ['smoke-failed', false],
      ['smoke-failed', false],
      ['standby-over', true],
      ['replica-missing', true],
      ['replica-lagging', true],
    ])
    const ids = found.map((notification) => notification.id)
    expect(ids[0]).toBe('switch-g5')
    expect(ids[2]).toBe('rollback-g6')
    expect(ids.at(-3)).toBe('standby-over-blue-2026-01-01T00:00:00.000Z')
    expect(ids.at(-2)).toBe('replica-missing-r1-T1')
    expect(ids.at(-1)).toBe('replica-lagging-r2-g2')
    expect(found[0]!.text).toBe('switch: all traffic to green (generation 5) by token:ci: release 42')
    expect(found[1]!.text).toContain('blue 90% / green 10%')
    expect(found.at(-3)!.text).toContain('safe to scale it down')
  })

  it('means nothing for what is not a notification', () => {
    const found = published((events) => {
      events.publish('audit', { ...accepted('switch'), result: 'unchanged' })
      events.publish('audit', { ...accepted('switch'), result: 'refused', code: 'BG_TARGET_UNHEALTHY' })
      events.publish('audit', accepted('forget-replica'))
      events.publish('audit', { ...accepted('notify'), result: 'refused', message: 'ECONNREFUSED' })
      events.publish('state', { generation: 5 })
      events.publish('drain', { phase: 'started' })
      events.publish('standby', { phase: 'started', color: 'blue', since: 'T' })
      events.publish('standby', { phase: 'drained', color: 'blue', since: 'T', safeToScaleDown: false })
      events.publish('replica', { phase: 'back', id: 'r1' })
      events.publish('toString', {})
      events.publish('audit', null)
    })
    expect(found).toEqual([])
  })

  it('says standby-over once safe to scale down: at over when drained by then, else at the drain after it', () => {
    const since = '2026-01-01T00:00:00.000Z'
    const standby = (phase: string, safeToScaleDown: boolean) => ({
      phase,
      color: 'blue',
      since,
      safeToScaleDown,
    })
    const found = published((events) => {
      // Over while a replica still holds a request: told as not yet safe, under an id of its own.
      events.publish('standby', standby('over', false))
      // Then drained everywhere: the safe one, with the id the fleet claims.
      events.publish('standby', standby('drained', true))
      // Drained before keepFor is over: nothing yet.
      events.publish('standby', standby('drained', false))
    })
    const overs = found.filter((notification) => notification.event === 'standby-over')
    expect(overs.map((notification) => [notification.id, notification.claimed])).toEqual([
      [`standby-over-blue-${since}-draining`, true],
      [`standby-over-blue-${since}`, true],
    ])
    expect(overs[0]!.text).toMatch(/not drained on every replica yet/)
    expect(overs[1]!.text).toMatch(/safe to scale it down$/)
  })

  it('keeps reaching the streams and the other listeners when a listener throws', () => {
    const events = new EventStream()
    const seen: string[] = []
    events.subscribe(() => {
      throw new Error('broken listener')
    })
    events.subscribe((event) => seen.push(event.kind))
    events.publish('audit', accepted('switch'))
    expect(seen).toEqual(['audit'])
  })
})

describe('webhook messages', () => {
  const rollback = notificationsOf({
    id: 'p-1',
    count: 1,
    kind: 'audit',
    data: accepted('rollback', {
      actor: 'bluegreen',
      figures: {
        requests: 40,
        errors: 40,
        errorRatio: 1,
        p99: 3,
        maxErrorRatio: 0.1,
        maxP99: 0,
        minRequests: 30,
      },
    }),
  })[0]!

  it('signs the timestamp and the body with HMAC-SHA256', () => {
    const body = bodyFor('json', rollback, 'replica-1')
    const headers = headersFor({ secret: 'k' }, rollback, body, 1_700_000_000_500)
    expect(headers['x-bluegreen-timestamp']).toBe('1700000000')
    expect(headers['x-bluegreen-delivery']).toBe('rollback-g5')
    expect(headers['x-bluegreen-event']).toBe('rollback')
    const expected = createHmac('sha256', 'k').update(`1700000000.${body}`).digest('hex')
    expect(headers['x-bluegreen-signature']).toBe(`sha256=${expected}`)
    expect(signature('other', '1700000000', body)).not.toBe(headers['x-bluegreen-signature'])
    expect(headersFor({ secret: undefined }, rollback, body, 0)).not.toHaveProperty('x-bluegreen-signature')
    expect(JSON.parse(body)).toMatchObject({ id: 'rollback-g5', event: 'rollback', replica: 'replica-1' })
  })

  it('gives Slack its text and blocks, with a rollback figures as fields', () => {
    const slack = slackPayload(rollback)
    expect(slack.text).toBe(rollback.text)
    expect(slack.blocks[0]).toEqual({ type: 'section', text: { type: 'mrkdwn', text: rollback.text } })
    expect(JSON.stringify(slack.blocks[1])).toContain('100.0% (40/40)')
    expect(JSON.stringify(slack.blocks[1])).toContain('no limit')
    expect(slack.blocks.at(-1)).toMatchObject({ type: 'context' })
  })
})
