// bluegreen events: the audit trail, newest first; or followed as it grows (--follow), oldest first.
import { type AdminClientOptions, callAdmin } from '../admin/client.ts'
import {
  type Command,
  type CommandValues,
  EXIT_OK,
  expectArguments,
  type Print,
  seconds,
  UsageError,
} from './command.ts'
import { EventWakeups } from './event-wakeups.ts'
import { everyInterval, sleep } from './every-interval.ts'
import { json, table } from './output.ts'

export const eventsCommand: Command = {
  usage: 'bluegreen events [--limit N] [--json] [--follow [--interval SECONDS]]',
  summary: 'the audit trail: recent change attempts, newest first',
  options: [
    '--limit N               how many (default 20, at most 1000)',
    '--follow                then print each new event as it comes, oldest first, until Ctrl-C',
    '--interval SECONDS      how often --follow asks a proxy without GET /events/stream (default 2)',
  ],
  run: async (client, args, values, print) => {
    expectArguments('events', args, 0)
    const limit = values.limit ?? '20'
    if (!/^\d+$/.test(limit) || Number(limit) < 1 || Number(limit) > MAX_EVENTS) {
      throw new UsageError(`--limit takes a whole number from 1 to ${MAX_EVENTS}`)
    }
    if (values.follow) return follow(client, Number(limit), seconds(values.interval, 2), values, print)
    const reply = (await callAdmin(client, 'GET', `/events?limit=${limit}`)) as { events: AuditLine[] }
    if (values.json) return { output: json(reply), exitCode: EXIT_OK }
    return { output: eventsTable(reply.events), exitCode: EXIT_OK }
  },
}

/** The admin API's own cap on GET /events?limit. */
const MAX_EVENTS = 1000

/**
 * events --follow: the last `limit` events, then each new one as it comes, oldest first as a log reads. Reads GET
 * /events (the fleet's trail) whenever the event stream says something happened, or every `interval` against a
 * proxy without the stream; an event is new when it was not in the previous answer, so two events in the same
 * millisecond are both printed. More than FOLLOW_WINDOW events between two reads: the window widens once.
 */
async function follow(
  client: AdminClientOptions,
  limit: number,
  interval: number,
  values: CommandValues,
  print: Print,
): Promise<never> {
  const recent = async (count: number) =>
    ((await callAdmin(client, 'GET', `/events?limit=${count}`)) as { events: AuditLine[] }).events
  let seen: Set<string> | undefined
  const wakeups = await EventWakeups.open(client, interval)
  const wait = wakeups ? () => wakeups.next() : () => sleep(interval)
  return everyInterval(wait, print, async () => {
    let events = await recent(seen ? FOLLOW_WINDOW : limit)
    if (
      seen &&
      events.length === FOLLOW_WINDOW &&
      !events.some((event) => seen!.has(JSON.stringify(event)))
    ) {
      events = await recent(MAX_EVENTS)
    }
    const fresh = events.filter((event) => !seen?.has(JSON.stringify(event))).reverse()
    if (fresh.length > 0) {
      const text = values.json
        ? `${fresh.map((event) => JSON.stringify(event)).join('\n')}\n`
        : eventsTable(fresh, seen === undefined)
      print(text)
    } else if (!seen && !values.json) {
      print('no events yet\n')
    }
    seen = new Set(events.map((event) => JSON.stringify(event)))
  })
}

const FOLLOW_WINDOW = 100

interface AuditLine {
  at: string
  actor: string
  action: string
  to: { active: string; weights: { blue: number; green: number } } | null
  /** forget-replica: the replica's id. */
  replica?: string
  result: string
  generation?: number
  code?: string
  reason: string
  /** A webhook delivery's outcome (action notify). */
  notification?: { target: string; result: string }
}

/** Without the header: the next rows of a table already begun (events --follow). */
function eventsTable(events: AuditLine[], header = true): string {
  if (events.length === 0) return 'no events\n'
  const rows = events.map((event) => [
    event.at,
    event.actor,
    event.action,
    event.to
      ? `${event.to.active} ${event.to.weights.blue}/${event.to.weights.green}`
      : (event.notification?.target ?? event.replica ?? '-'),
    event.notification
      ? event.notification.result
      : event.result === 'refused'
        ? `refused ${event.code ?? ''}`
        : `${event.result}${event.generation === undefined ? '' : ` #${event.generation}`}`,
    event.reason,
  ])
  const text = table(['time', 'actor', 'action', 'to', 'result', 'reason'], rows)
  return header ? text : text.slice(text.indexOf('\n') + 1)
}
