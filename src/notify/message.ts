import { createHmac } from 'node:crypto'
import type { AuditEvent, JudgedFigures } from '../audit/audit.ts'
import type { NotifyTargetConfig } from '../config/types.ts'
import type { Notification } from './events.ts'

// What a webhook receives, pure: the body in the target's format, and the headers that sign it.

/** The body of a `json` target: the notification as it is, and which replica sent it. */
export interface JsonPayload {
  id: string
  event: string
  at: string
  text: string
  replica: string
  data: unknown
}

export function bodyFor(
  format: NotifyTargetConfig['format'],
  notification: Notification,
  replica: string,
): string {
  if (format === 'slack') return JSON.stringify(slackPayload(notification))
  const payload: JsonPayload = {
    id: notification.id,
    event: notification.event,
    at: notification.at,
    text: notification.text,
    replica,
    data: notification.data,
  }
  return JSON.stringify(payload)
}

/** Slack's incoming-webhook shape (also read by Mattermost, Rocket.Chat and others): `text`, and `blocks`. */
export function slackPayload(notification: Notification): { text: string; blocks: unknown[] } {
  const blocks: unknown[] = [{ type: 'section', text: { type: 'mrkdwn', text: notification.text } }]
  const figures = (notification.data as Partial<AuditEvent> | null)?.figures
  if (figures) blocks.push({ type: 'section', fields: figureFields(figures) })
  blocks.push({
    type: 'context',
    elements: [{ type: 'mrkdwn', text: `bluegreen · ${notification.event} · ${notification.at}` }],
  })
  return { text: notification.text, blocks }
}

function figureFields(figures: JudgedFigures): unknown[] {
  const percent = (value: number) => `${(value * 100).toFixed(1)}%`
  const field = (name: string, value: string) => ({ type: 'mrkdwn', text: `*${name}*\n${value}` })
  return [
    field('Error ratio', `${percent(figures.errorRatio)} (${figures.errors}/${figures.requests})`),
    field('p99', figures.p99 === null ? 'over 60 s' : `${figures.p99} ms`),
    field('Max error ratio', percent(figures.maxErrorRatio)),
    field('Max p99', figures.maxP99 > 0 ? `${figures.maxP99} ms` : 'no limit'),
  ]
}

/**
 * The headers of one attempt. The timestamp is the attempt's own, so a receiver can refuse old ones (replays);
 * the signature covers it: HMAC-SHA256 of `<timestamp>.<body>` with the target's secret.
 */
export function headersFor(
  target: Pick<NotifyTargetConfig, 'secret'>,
  notification: Pick<Notification, 'id' | 'event'>,
  body: string,
  now: number,
): Record<string, string> {
  const timestamp = String(Math.floor(now / 1000))
  return {
    'content-type': 'application/json',
    'user-agent': 'bluegreen-proxy',
    'x-bluegreen-event': notification.event,
    'x-bluegreen-delivery': notification.id,
    'x-bluegreen-timestamp': timestamp,
    ...(target.secret === undefined
      ? {}
      : { 'x-bluegreen-signature': signature(target.secret, timestamp, body) }),
  }
}

/** `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` */
export function signature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`
}
