import type { NotifyEvent, NotifyTargetConfig } from './types.ts'
import { type Checker, durationIn, type Field, MAX_TIMER_MS, readSecret } from './validate.ts'

// notify: webhook targets told of what happens to the routing. README's "Notifications" explains them.

/** Every event a target may ask for, in the order README lists them. */
export const NOTIFY_EVENTS: readonly NotifyEvent[] = [
  'switch',
  'rollback',
  'rollout-step',
  'rollout-complete',
  'rollout-abort',
  'rollout-paused',
  'smoke-failed',
  'replica-missing',
  'replica-lagging',
  'standby-over',
]

const FORMATS = ['json', 'slack'] as const

export function buildNotify(check: Checker, field: Field): readonly NotifyTargetConfig[] {
  const items = check.list(field, 'webhook targets ({ url, events?, format?, secret? })') ?? []
  const targets: NotifyTargetConfig[] = []
  const names = new Set<string>()
  for (const item of items) {
    const target = buildTarget(check, item)
    if (!target) continue
    // The name is the metric's `target` label and what the audit trail names: two targets must not share one.
    if (target.name !== '' && names.has(target.name)) {
      check.report(
        `${item.path}.name`,
        `another target is named "${target.name}" (by default a target is named after its URL's host): give each a name`,
      )
    }
    names.add(target.name)
    targets.push(target)
  }
  return targets
}

function buildTarget(check: Checker, field: Field): NotifyTargetConfig | undefined {
  const item = check.section(field, [
    'name',
    'url',
    'events',
    'format',
    'secret',
    'timeout',
    'retryFor',
    'backoff',
  ])
  if (!item.present) {
    if (field.value === null) check.report(field.path, 'expected a target (a mapping with url)')
    return undefined
  }
  check.required(item.field('url'), 'the webhook URL, such as "https://hooks.example.com/bluegreen"')
  const url = readSecret(check, item.field('url'), parseWebhookUrl, 'an http:// or https:// URL')
  const name = check.read(
    item.field('name'),
    url ? url.host : '',
    (value) => (typeof value === 'string' && /^[\w.:@-]{1,100}$/.test(value) ? value : undefined),
    'a name of 1 to 100 letters, digits and . _ - : @',
  )
  const timeout = check.read(item.field('timeout'), 5_000, ...durationIn(1, 60_000))
  const retryFor = check.read(item.field('retryFor'), 60_000, ...durationIn(0, MAX_TIMER_MS))
  const backoff = check.read(item.field('backoff'), 500, ...durationIn(1, 60_000))
  return {
    name,
    url: url?.href ?? '',
    events: buildEvents(check, item.field('events')),
    format: check.oneOf(item.field('format'), FORMATS, 'json'),
    secret: readSecret(
      check,
      item.field('secret'),
      (value) => (typeof value === 'string' && value !== '' ? value : undefined),
      'a non-empty string (the HMAC key)',
    ),
    timeout,
    retryFor,
    backoff,
  }
}

function buildEvents(check: Checker, field: Field): readonly NotifyEvent[] {
  const items = check.list(field, 'event names')
  if (!items) return NOTIFY_EVENTS
  if (items.length === 0) {
    check.report(field.path, `expected at least one event (leave "events" out for all of them)`)
    return NOTIFY_EVENTS
  }
  const events = new Set<NotifyEvent>()
  for (const item of items) {
    const event = check.oneOf(item, NOTIFY_EVENTS, 'switch')
    if (!check.hasProblem(item.path)) events.add(event)
  }
  return [...events]
}

function parseWebhookUrl(value: unknown): URL | undefined {
  if (typeof value !== 'string') return undefined
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return undefined
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined
  // Credentials in the URL would be sent with every request and printed in every log line naming it.
  if (url.username !== '' || url.password !== '') return undefined
  return url
}
