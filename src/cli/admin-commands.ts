// The CLI commands that talk to the admin API: status, switch, weights, rollback, smoke, mirror, reload, events,
// replicas.
// Each returns what to print and the exit code; src/cli.ts does the printing and exiting.
import { AdminCallError, type AdminClientOptions, callAdmin } from '../admin/client.ts'
import { COLORS, type Color } from '../colors.ts'
import { EventWakeups } from './event-wakeups.ts'

export class UsageError extends Error {}

export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_USAGE = 2
/** Replicas lagging: a change was made but not every replica applied it within the wait, or one is behind or missing. */
export const EXIT_WAIT_INCOMPLETE = 3

export interface CommandValues {
  json?: boolean
  force?: boolean
  full?: boolean
  wait?: boolean
  reason?: string
  'expected-generation'?: string
  limit?: string
  steps?: string
  'step-seconds'?: string
  watch?: boolean
  follow?: boolean
  interval?: string
}

/** Writes one frame of a command that keeps printing (status --watch, events --follow) as it comes. */
export type Print = (text: string) => void

export interface CommandResult {
  output: string
  exitCode: number
}

interface Command {
  usage: string
  summary: string
  /** The options it takes beyond --admin, --token and --json. */
  options: string[]
  run(client: AdminClientOptions, args: string[], values: CommandValues, print: Print): Promise<CommandResult>
}

const CHANGE_OPTIONS = [
  '--wait                  answer once every live replica applied it (exit 3 if some did not in time)',
  '--force                 even if the pools getting traffic fail their health probe or smoke checks',
  '--reason TEXT           why, for the audit trail',
  '--expected-generation N only if the state is still at generation N (else exit 1, BG_GENERATION_CONFLICT)',
]

export const COMMANDS: Record<string, Command> = {
  status: {
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
  },
  switch: {
    usage: 'bluegreen switch COLOR [--wait] [--force] [--reason TEXT] [--expected-generation N]',
    summary: 'send all traffic to blue or green',
    options: CHANGE_OPTIONS,
    run: async (client, args, values) => {
      expectArguments('switch', args, 1)
      const [to] = args
      if (to !== 'blue' && to !== 'green') throw new UsageError('switch takes a color: blue or green')
      return show(await callAdmin(client, 'POST', '/switch', { to, ...changeBody(values) }), values)
    },
  },
  weights: {
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
  },
  rollback: {
    usage: 'bluegreen rollback [--wait] [--force] [--reason TEXT] [--expected-generation N]',
    summary: 'back to the last routing that differs from the one in force',
    options: CHANGE_OPTIONS,
    run: async (client, args, values) => {
      expectArguments('rollback', args, 0)
      return show(await callAdmin(client, 'POST', '/rollback', changeBody(values)), values)
    },
  },
  smoke: {
    usage: 'bluegreen smoke COLOR [--json]',
    summary: 'run the smoke checks on blue or green now; exit 1 if one fails',
    options: [],
    run: async (client, args, values) => {
      expectArguments('smoke', args, 1)
      const [color] = args
      if (color !== 'blue' && color !== 'green') throw new UsageError('smoke takes a color: blue or green')
      const report = (await callAdmin(client, 'POST', '/smoke', { color })) as SmokeReply
      const exitCode = report.passed ? EXIT_OK : EXIT_FAILED
      if (values.json) return { output: json(report), exitCode }
      return { output: smokeLines(report), exitCode }
    },
  },
  reload: {
    usage: 'bluegreen reload [--json]',
    summary: 'the proxy re-reads its config file and applies it whole, or refuses it all (exit 1)',
    options: [],
    run: async (client, args, values) => {
      expectArguments('reload', args, 0)
      const outcome = (await callAdmin(client, 'POST', '/reload', {})) as ReloadReply
      if (values.json) return { output: json(outcome), exitCode: EXIT_OK }
      const workers = outcome.workers ? ` (workers ${outcome.workers.applied.join(', ')})` : ''
      const output =
        outcome.result === 'unchanged'
          ? `${outcome.file}: nothing changed\n`
          : `${outcome.file}: reloaded${workers}; changed ${outcome.changed.join(', ')}\n`
      return { output, exitCode: EXIT_OK }
    },
  },
  rollout: {
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
  },
  mirror: {
    usage: 'bluegreen mirror on PERCENT | off | status [--json] [--reason TEXT] [--expected-generation N]',
    summary:
      'copy a share of requests to the idle color and compare its answers; or stop; or show the figures',
    options: [
      '--reason TEXT           why, for the audit trail',
      '--expected-generation N only if the state is still at generation N (else exit 1, BG_GENERATION_CONFLICT)',
    ],
    run: async (client, args, values) => {
      const [verb] = args
      if (verb === 'status') {
        expectArguments('mirror status', args.slice(1), 0)
        const status = (await callAdmin(client, 'GET', '/mirror')) as MirrorStatus
        return { output: values.json ? json(status) : mirrorLines(status), exitCode: EXIT_OK }
      }
      let body: Record<string, unknown>
      if (verb === 'on') {
        expectArguments('mirror on', args.slice(1), 1)
        const percent = args[1]!.replace(/%$/, '')
        if (!/^\d{1,3}$/.test(percent) || Number(percent) < 1 || Number(percent) > 100)
          throw new UsageError('mirror on takes a whole percent from 1 to 100, e.g. bluegreen mirror on 10')
        body = { percent: Number(percent) }
      } else if (verb === 'off') {
        expectArguments('mirror off', args.slice(1), 0)
        body = { enabled: false }
      } else {
        throw new UsageError('mirror takes on PERCENT, off or status')
      }
      const { force: _force, wait: _wait, ...rest } = changeBody(values)
      const state = (await callAdmin(client, 'POST', '/mirror', { ...body, ...rest })) as StateLine & {
        mirror?: { enabled: boolean; percent: number }
      }
      if (values.json) return { output: json(state), exitCode: EXIT_OK }
      const mirror = state.mirror
      const line = mirror?.enabled
        ? `mirroring ${mirror.percent}% of requests to the idle color`
        : 'mirroring off'
      const unchanged = state.changed === false ? ' (already so; nothing changed)' : ''
      return { output: `${line}${unchanged}, generation ${state.generation}\n`, exitCode: EXIT_OK }
    },
  },
  events: {
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
  },
  replicas: {
    usage: 'bluegreen replicas [--json] | replicas forget ID [--reason TEXT]',
    summary: 'every replica, its generation, and the missing ones (exit 3 if any is behind or missing)',
    options: ['--reason TEXT           forget: why, for the audit trail'],
    run: async (client, args, values) => {
      if (args[0] === 'forget') {
        expectArguments('replicas forget', args.slice(1), 1)
        const id = args[1]!
        const body = values.reason === undefined ? undefined : { reason: values.reason }
        const reply = (await callAdmin(client, 'DELETE', `/replicas/${encodeURIComponent(id)}`, body)) as {
          forgotten: ReplicaLine
        }
        if (values.json) return { output: json(reply), exitCode: EXIT_OK }
        return { output: `forgot ${id} (last seen ${reply.forgotten.lastSeen})\n`, exitCode: EXIT_OK }
      }
      expectArguments('replicas', args, 0)
      const reply = (await callAdmin(client, 'GET', '/replicas')) as ReplicasReply
      // Scripts check that every replica serves the current generation before moving on.
      const lagging =
        (reply.missing ?? []).length > 0 ||
        reply.replicas.some((replica) => replica.generation !== reply.generation)
      const exitCode = lagging ? EXIT_WAIT_INCOMPLETE : EXIT_OK
      if (values.json) return { output: json(reply), exitCode }
      return { output: replicasTable(reply), exitCode }
    },
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

/** The admin API's own cap on GET /events?limit. */
const MAX_EVENTS = 1000

/** A --interval value in milliseconds. */
function seconds(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback * 1000
  const number = Number(value)
  if (!/^\d+(\.\d+)?$/.test(value) || number < 0.1 || number > 3600) {
    throw new UsageError(`--interval takes a number of seconds from 0.1 to 3600, got "${value}"`)
  }
  return number * 1000
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

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

/**
 * Runs `step` now and again after each `wait` until the process is stopped. A failure after a first success (the
 * admin API restarting, say) is printed once and tried again; a first failure ends the command like any call's.
 */
async function everyInterval(
  wait: () => Promise<void>,
  print: Print,
  step: () => Promise<void>,
): Promise<never> {
  let succeeded = false
  let failing: string | undefined
  for (;;) {
    try {
      await step()
      if (failing !== undefined) print(`${new Date().toISOString()} the admin API answers again\n`)
      succeeded = true
      failing = undefined
    } catch (error) {
      if (!succeeded || !(error instanceof AdminCallError)) throw error
      const line = `${error.message} (${error.code})`
      if (line !== failing) print(`${new Date().toISOString()} ${line}; trying again\n`)
      failing = line
    }
    await wait()
  }
}

const FOLLOW_WINDOW = 100

/** The 412 hint names the admin API's field; on the command line it is the flag. */
export function forTheCommandLine(message: string): string {
  return message.replace('pass "force": true', 'use --force')
}

export function commandHelp(name: string): string {
  const command = COMMANDS[name]!
  const lines = [`${command.usage}`, '', `  ${command.summary}`, '']
  if (command.options.length > 0) lines.push('Options:', ...command.options.map((option) => `  ${option}`))
  lines.push(
    '  --json                  print the JSON answer as it is',
    '  --admin URL             the admin API (default http://127.0.0.1:9090, or BLUEGREEN_ADMIN)',
    '  --token T               the admin token (or BLUEGREEN_ADMIN_TOKEN)',
    '',
  )
  return lines.join('\n')
}

function expectArguments(command: string, args: string[], count: number): void {
  if (args.length > count) throw new UsageError(`unexpected argument "${args[count]}" for ${command}`)
  if (args.length < count)
    throw new UsageError(`${command} needs ${count} argument(s); see bluegreen ${command} --help`)
}

function changeBody(values: CommandValues): Record<string, unknown> {
  const body: Record<string, unknown> = {}
  if (values.force) body.force = true
  if (values.wait) body.wait = true
  if (values.reason !== undefined) body.reason = values.reason
  const expected = values['expected-generation']
  if (expected !== undefined) {
    if (!/^\d+$/.test(expected)) throw new UsageError('--expected-generation takes a whole number')
    body.expectedGeneration = Number(expected)
  }
  return body
}

interface StateLine {
  rollout?: {
    to: string
    steps: number[]
    step: number
    status: string
    outcome?: string
    pausedAt?: string
    waiting?: { for: string; since: string; until?: string; onTimeout?: string }
  }
  active: string
  weights: { blue: number; green: number }
  generation: number
  updatedAt: string
  updatedBy: string
  reason: string
  /** In a change's answer: false when it asked for the state already in force (absent from older proxies). */
  changed?: boolean
  replica?: {
    id: string
    appliedGeneration: number | null
    store?: { reachable: boolean; staleSeconds: number | null; restoredFrom?: string }
    rolloutStep?: {
      endsAt: string
      figures: string
      waitingFor: string | null
      heldBy?: 'traffic' | 'smoke'
    } | null
    health?: Record<Color, UpstreamLine[]>
    drain?: Record<Color, { requests: number; websockets: number }> & {
      draining: { color: string; since: string; closesAt: string | null; drainedAt: string | null } | null
    }
    watching?: { color: string; generation: number; until: string } | null
  }
  /** The color on standby, fleet-wide (absent from older proxies). */
  standby?: {
    color: string
    since: string
    keepUntil: string
    drained: boolean
    drainedAt?: string
    replicas: { id: string; drained: boolean }[]
    safeToScaleDown: boolean
  } | null
  wait?: {
    complete: boolean
    pending: { id: string; generation: number }[]
    replicas: number
    /** The ids of the replicas that applied it (absent from older proxies). */
    applied?: string[]
    /** The replicas that stopped heartbeating (absent from older proxies). */
    missing?: { id: string; lastSeen: string }[]
  }
}

interface UpstreamLine {
  url: string
  available: boolean
  condition: string
  ejectedUntil: string | null
  lastCheck: { up: boolean; detail: string } | null
}

interface SmokeReply {
  color: Color
  passed: boolean
  checks: { name: string; passed: boolean; status: number | null; durationMs: number; problem?: string }[]
}

function smokeLines(report: SmokeReply): string {
  if (report.checks.length === 0) return `no smoke checks are configured (smoke.checks)\n`
  const failing = report.checks.filter((check) => !check.passed).length
  const summary = report.passed
    ? `smoke ${report.color}: all ${report.checks.length} check(s) passed`
    : `smoke ${report.color}: ${failing} of ${report.checks.length} check(s) failed`
  const rows = report.checks.map((check) => [
    check.passed ? 'pass' : 'FAIL',
    check.name,
    check.status === null ? '-' : String(check.status),
    `${check.durationMs} ms`,
    check.problem ?? '',
  ])
  return `${summary}\n${table(['result', 'check', 'status', 'time', 'problem'], rows)}`
}

function show(value: unknown, values: CommandValues): CommandResult {
  const state = value as StateLine
  const exitCode = state.wait && !state.wait.complete ? EXIT_WAIT_INCOMPLETE : EXIT_OK
  if (values.json) return { output: json(value), exitCode }
  if (state.changed === false) {
    // The whole state would read like a change just made; what the operator needs is that none was.
    const line = `already: ${routing(state.weights)} (generation ${state.generation}); nothing changed`
    return { output: `${[line, ...waitLines(state.wait)].join('\n')}\n`, exitCode }
  }
  const lines = [
    `active      ${state.active}`,
    `weights     blue ${state.weights.blue} / green ${state.weights.green}`,
    `generation  ${state.generation}`,
    `updated     ${state.updatedAt} by ${state.updatedBy}`,
    `reason      ${state.reason}`,
  ]
  if (state.rollout) lines.push(rolloutLine(state))
  if (state.standby) lines.push(standbyLine(state.standby))
  if (state.replica) lines.push(...replicaLines(state.replica, state.standby?.color))
  lines.push(...waitLines(state.wait))
  return { output: `${lines.join('\n')}\n`, exitCode }
}

function rolloutLine(state: StateLine): string {
  const { rollout } = state
  const step = `step ${rollout!.step + 1}/${rollout!.steps.length} (${rollout!.steps[rollout!.step]}% to ${rollout!.to})`
  const judged = state.replica?.rolloutStep
  const progress = rollout!.waiting
    ? `, ${waitingWords(rollout!.waiting)}`
    : rollout!.status !== 'running' || !judged
      ? ''
      : judged.heldBy === 'smoke'
        ? `, held: waiting for ${judged.waitingFor}`
        : judged.waitingFor
          ? `, held: too little traffic to judge (${judged.waitingFor})`
          : `, until ${judged.endsAt}: ${judged.figures}`
  const status = rollout!.pausedAt ? `paused since ${rollout!.pausedAt}` : rollout!.status
  return `rollout     ${status}, ${step}${progress}${rollout!.outcome ? `: ${rollout!.outcome}` : ''}`
}

/** "standby     blue since S, kept until K (over), drained on 3 of 3 replicas at D, safeToScaleDown yes" */
function standbyLine(standby: NonNullable<StateLine['standby']>): string {
  const over = Date.now() >= Date.parse(standby.keepUntil) ? ' (over)' : ''
  const drained = standby.replicas.filter((replica) => replica.drained).length
  const at = standby.drainedAt ? ` at ${standby.drainedAt}` : ''
  const safe = standby.safeToScaleDown ? 'yes' : 'no'
  return `standby     ${standby.color} since ${standby.since}, kept until ${standby.keepUntil}${over}, drained on ${drained} of ${standby.replicas.length} replica(s)${at}, safeToScaleDown ${safe}`
}

/** "waiting for promote since T (promoted automatically at U)" */
function waitingWords(waiting: NonNullable<NonNullable<StateLine['rollout']>['waiting']>): string {
  const what = waiting.for === 'promote' ? 'promote' : 'a pause to end'
  const end =
    waiting.until === undefined
      ? ''
      : waiting.for === 'pause'
        ? ` (until ${waiting.until})`
        : waiting.onTimeout === 'abort'
          ? ` (aborted at ${waiting.until} if not promoted)`
          : ` (promoted automatically at ${waiting.until})`
  return `waiting for ${what} since ${waiting.since}${end}`
}

/**
 * What this replica sees: its upstreams, what is open on each color, the drain, the watch, its store. `standby` is
 * the color on standby: its drain here is one replica's part, and the standby line says when it is safe to scale
 * down (drained everywhere and keepFor over), so the drain line must not promise it sooner.
 */
function replicaLines(replica: NonNullable<StateLine['replica']>, standby?: string): string[] {
  const lines: string[] = []
  if (replica.health) {
    COLORS.forEach((color, index) => {
      lines.push(`${index === 0 ? 'upstreams' : ''}`.padEnd(12) + upstreamsLine(color, replica))
    })
  }
  const draining = replica.drain?.draining
  if (draining) {
    const end = draining.drainedAt
      ? draining.color === standby
        ? `drained at ${draining.drainedAt} on this replica (safe to scale down when the standby says so)`
        : `drained at ${draining.drainedAt} (safe to scale down once nothing is watched)`
      : draining.closesAt
        ? `what is open is closed at ${draining.closesAt}`
        : 'what is open is left to finish'
    lines.push(`drain       ${draining.color} since ${draining.since}, ${end}`)
  }
  if (replica.watching !== undefined) {
    const { watching } = replica
    lines.push(
      watching
        ? `watching    ${watching.color} (generation ${watching.generation}) for a rollback until ${watching.until}`
        : 'watching    nothing',
    )
  }
  const store = replica.store
  const copyNote = store?.restoredFrom ? ` (serving its local copy ${store.restoredFrom})` : ''
  const storeNote =
    store && !store.reachable
      ? `, state store UNREACHABLE for ${Math.round(store.staleSeconds ?? 0)} s${copyNote}`
      : ''
  lines.push(`replica     ${replica.id} applied ${replica.appliedGeneration}${storeNote}`)
  return lines
}

/** "blue  2/2 available, 3 requests 1 websocket open", naming each upstream that is not available and why. */
function upstreamsLine(color: Color, replica: NonNullable<StateLine['replica']>): string {
  const upstreams = replica.health?.[color] ?? []
  const available = upstreams.filter((upstream) => upstream.available).length
  const open = replica.drain?.[color]
  const openNote = open ? `, open: ${open.requests} request(s), ${open.websockets} websocket(s)` : ''
  const down = upstreams
    .filter((upstream) => !upstream.available)
    .map((upstream) => {
      const why =
        upstream.condition === 'ejected'
          ? `ejected until ${upstream.ejectedUntil}`
          : `failing health checks${upstream.lastCheck ? ` (${upstream.lastCheck.detail})` : ''}`
      return `; ${upstream.url} ${why}`
    })
  return `${color.padEnd(6)}${available}/${upstreams.length} available${openNote}${down.join('')}`
}

function waitLines(wait: StateLine['wait']): string[] {
  if (!wait) return []
  const { complete, pending, replicas, applied, missing = [] } = wait
  if (complete) {
    const names = applied && applied.length > 0 ? `: ${applied.join(', ')}` : ''
    return [`wait        all ${replicas} replica(s) applied it${names}`]
  }
  const problems: string[] = []
  if (pending.length > 0) {
    problems.push(
      `NOT applied in time by: ${pending.map((replica) => `${replica.id} (at ${replica.generation})`).join(', ')}`,
    )
  }
  if (missing.length > 0) {
    const names = missing.map((replica) => `${replica.id} (last seen ${replica.lastSeen})`).join(', ')
    problems.push(`missing (no heartbeat; may still serve an older state): ${names}`)
  }
  const lines = problems.map((problem, index) => `${index === 0 ? 'wait' : ''}`.padEnd(12) + problem)
  if (applied && applied.length > 0) lines.push(`            applied by: ${applied.join(', ')}`)
  return lines
}

/** "all traffic on green", or the split. */
function routing(weights: { blue: number; green: number }): string {
  if (weights.blue === 100) return 'all traffic on blue'
  if (weights.green === 100) return 'all traffic on green'
  return `blue ${weights.blue} / green ${weights.green}`
}

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

interface ReplicaLine {
  id: string
  host: string
  pid: number
  generation: number
  lastSeen: string
}

interface ReplicasReply {
  generation: number | null
  replicas: ReplicaLine[]
  /** Absent from older proxies. */
  missing?: ReplicaLine[]
}

function replicasTable(reply: ReplicasReply): string {
  const row = (replica: ReplicaLine, status: string) => [
    replica.id,
    replica.host,
    String(replica.pid),
    String(replica.generation),
    status,
    replica.lastSeen,
  ]
  const rows = [
    ...reply.replicas.map((replica) =>
      row(replica, replica.generation < (reply.generation ?? 0) ? 'behind' : 'live'),
    ),
    ...(reply.missing ?? []).map((replica) => row(replica, 'missing')),
  ]
  return table(['id', 'host', 'pid', 'generation', 'status', 'last seen'], rows)
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column]!.length)),
  )
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column]!))
      .join('  ')
      .trimEnd()
  return `${[line(header), ...rows.map(line)].join('\n')}\n`
}

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`
}

/** POST /reload's answer (src/config/changes.ts ReloadOutcome; refusals come back as errors). */
interface ReloadReply {
  result: 'applied' | 'unchanged'
  file: string
  changed: string[]
  workers?: { applied: number[] }
}

interface MirrorFiguresLine {
  compared: number
  mismatched: number
  ratio: number
}

interface MirrorStatus {
  enabled: boolean
  percent: number | null
  inFlight: number
  results: Record<string, number>
  dropped: Record<string, number>
  window: { seconds: number; blue: MirrorFiguresLine; green: MirrorFiguresLine }
  mismatchedRoutes: { route: string; compared: number; mismatched: number }[]
  noise: { routes: number; noisy: { route: string; fields: string[] }[] }
  lastError: { at: string; message: string } | null
}

function mirrorLines(status: MirrorStatus): string {
  const lines = [
    status.enabled ? `mirroring   ${status.percent}% of requests to the idle color` : 'mirroring   off',
    `results     ${Object.entries(status.results)
      .map(([result, count]) => `${result} ${count}`)
      .join(', ')} (dropped: ${Object.entries(status.dropped)
      .map(([why, count]) => `${why} ${count}`)
      .join(', ')}); in flight ${status.inFlight}`,
  ]
  for (const color of COLORS) {
    const figures = status.window[color]
    if (figures.compared === 0) continue
    lines.push(
      `to ${color.padEnd(6)}   ${figures.mismatched} of ${figures.compared} differed (${(figures.ratio * 100).toFixed(1)}%) over the last ${status.window.seconds} s`,
    )
  }
  for (const route of status.mismatchedRoutes.slice(0, 5))
    lines.push(`differs     ${route.route}: ${route.mismatched} of ${route.compared}`)
  for (const noisy of status.noise.noisy.slice(0, 5))
    lines.push(`noise       ${noisy.route}: ${noisy.fields.join(', ')}`)
  if (status.lastError) lines.push(`last error  ${status.lastError.at} ${status.lastError.message}`)
  return `${lines.join('\n')}\n`
}
