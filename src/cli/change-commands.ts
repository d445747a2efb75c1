// The commands that change the routing: switch, weights, rollback, and the rollout (start, pause, resume, promote,
// abort, status).
import { type AdminClientOptions, callAdmin } from '../admin/client.ts'
import {
  CHANGE_OPTIONS,
  type Command,
  type CommandResult,
  type CommandValues,
  changeBody,
  EXIT_OK,
  expectArguments,
  type Print,
  seconds,
  UsageError,
} from './command.ts'
import { everyInterval, sleep } from './every-interval.ts'
import { json } from './output.ts'
import { rolloutLine, type StateLine, show } from './state-lines.ts'

export const switchCommand: Command = {
  usage: 'bluegreen switch COLOR [--wait] [--force] [--reason TEXT] [--expected-generation N]',
  summary: 'send all traffic to blue or green',
  options: CHANGE_OPTIONS,
  run: async (client, args, values) => {
    expectArguments('switch', args, 1)
    const [to] = args
    if (to !== 'blue' && to !== 'green') throw new UsageError('switch takes a color: blue or green')
    return show(await callAdmin(client, 'POST', '/switch', { to, ...changeBody(values) }), values)
  },
}

export const weightsCommand: Command = {
  usage: 'bluegreen weights BLUE GREEN [--wait] [--force] [--reason TEXT] [--expected-generation N]',
  summary: 'split new traffic, e.g. "weights 90 10" (sticky per client)',
  options: CHANGE_OPTIONS,
  run: async (client, args, values) => {
    expectArguments('weights', args, 2)
    // Number() alone would read "" as 0 and "0x10" as 16.
    const [blue, green] = args.map((arg) => (/^\d{1,3}$/.test(arg) ? Number(arg) : Number.NaN))
    if (!Number.isInteger(blue) || !Number.isInteger(green)) {
      throw new UsageError('weights takes two whole numbers: BLUE GREEN, e.g. "weights 90 10"')
    }
    // Caught here rather than by the admin API, so a typo is bad usage (exit 2) and not a refusal.
    if (blue! + green! !== 100) {
      throw new UsageError(`weights must add up to 100 (${blue} + ${green} = ${blue! + green!})`)
    }
    return show(await callAdmin(client, 'POST', '/weights', { blue, green, ...changeBody(values) }), values)
  },
}

export const rollbackCommand: Command = {
  usage: 'bluegreen rollback [--wait] [--force] [--reason TEXT] [--expected-generation N]',
  summary: 'back to the last routing that differs from the one in force',
  options: CHANGE_OPTIONS,
  run: async (client, args, values) => {
    expectArguments('rollback', args, 0)
    return show(await callAdmin(client, 'POST', '/rollback', changeBody(values)), values)
  },
}

export const rolloutCommand: Command = {
  usage:
    'bluegreen rollout COLOR --steps 10,25,50,100 --step-seconds 30 [--force] [--reason TEXT] | rollout pause | resume | promote [--full] | abort | status [--watch]',
  summary: 'shift traffic step by step, checked before each step; pause, resume, promote or abort it',
  options: [
    '--steps LIST            the weights COLOR goes through, ending at 100 (default 10,25,50,100)',
    '--step-seconds N        how long each step lasts before the next (default 60)',
    '--full                  promote: straight to 100%',
    '--watch                 status: redraw it every --interval seconds until Ctrl-C',
    ...CHANGE_OPTIONS,
  ],
  run: async (client, args, values, print) => {
    const [verb] = args
    if (verb === 'status') {
      expectArguments('rollout status', args.slice(1), 0)
      return rolloutStatus(client, values, print)
    }
    if (verb === 'abort' || verb === 'pause' || verb === 'resume' || verb === 'promote') {
      expectArguments(`rollout ${verb}`, args.slice(1), 0)
      if (values.full && verb !== 'promote') throw new UsageError('--full goes with rollout promote')
      const body = { ...changeBody(values), ...(values.full ? { full: true } : {}) }
      return show(await callAdmin(client, 'POST', `/rollout/${verb}`, body), values)
    }
    expectArguments('rollout', args, 1)
    const [to] = args
    if (to !== 'blue' && to !== 'green')
      throw new UsageError(
        'rollout takes a color (blue or green), or pause, resume, promote, abort or status',
      )
    const stepsText = values.steps ?? '10,25,50,100'
    if (!/^\d{1,3}(,\d{1,3})*$/.test(stepsText))
      throw new UsageError('--steps takes whole numbers separated by commas, e.g. 10,25,50,100')
    const secondsText = values['step-seconds'] ?? '60'
    if (!/^\d+$/.test(secondsText)) throw new UsageError('--step-seconds takes a whole number')
    const body = {
      to,
      steps: stepsText.split(',').map(Number),
      stepSeconds: Number(secondsText),
      ...changeBody(values),
    }
    return show(await callAdmin(client, 'POST', '/rollout', body), values)
  },
}

/** bluegreen rollout status: the rollout and what it waits for, once or every --interval. */
async function rolloutStatus(client: AdminClientOptions, values: CommandValues, print: Print) {
  const once = async (): Promise<CommandResult> => {
    const state = (await callAdmin(client, 'GET', '/state')) as StateLine
    if (values.json) return { output: json(state.rollout ?? null), exitCode: EXIT_OK }
    return { output: `${state.rollout ? rolloutLine(state) : 'rollout     none'}\n`, exitCode: EXIT_OK }
  }
  if (!values.watch) return once()
  const interval = seconds(values.interval, 2)
  return everyInterval(
    () => sleep(interval),
    print,
    async () => {
      print(`${new Date().toISOString()}\n${(await once()).output}\n`)
    },
  )
}
