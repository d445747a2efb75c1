// bluegreen status: the state once, or redrawn on every live event and every --interval (--watch).
import { callAdmin } from '../admin/client.ts'
import { type Command, expectArguments, seconds } from './command.ts'
import { EventWakeups } from './event-wakeups.ts'
import { everyInterval, sleep } from './every-interval.ts'
import { show } from './state-lines.ts'

export const statusCommand: Command = {
  usage: 'bluegreen status [--json] [--watch [--interval SECONDS]]',
  summary: 'the routing state, upstream health, drain, watch and rollout, as this replica sees them',
  options: [
    '--watch                 redraw it on every live event (GET /events/stream), and every --interval seconds',
    '--interval SECONDS      how often --watch redraws without an event (default 2)',
  ],
  run: async (client, args, values, print) => {
    expectArguments('status', args, 0)
    if (!values.watch) return show(await callAdmin(client, 'GET', '/state'), values)
    // Clear the screen and home the cursor on a terminal; a pipe gets frames one after the other.
    const clear = process.stdout.isTTY ? '\x1b[2J\x1b[H' : ''
    const interval = seconds(values.interval, 2)
    // A change, a drain or a standby phase redraws at once; the interval catches what other replicas report
    // (their drains) without an event here.
    const wakeups = await EventWakeups.open(client, interval)
    return everyInterval(
      wakeups ? () => Promise.race([wakeups.next(), sleep(interval)]) : () => sleep(interval),
      print,
      async () => {
        const frame = show(await callAdmin(client, 'GET', '/state'), values).output
        print(`${clear}${new Date().toISOString()}\n${frame}\n`)
      },
    )
  },
}
