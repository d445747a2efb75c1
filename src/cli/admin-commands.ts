// The CLI commands that talk to the admin API: status, switch, weights, rollback, events, replicas.
// Each returns what to print and the exit code; src/cli.ts does the printing and exiting.
import { type AdminClientOptions, callAdmin } from '../admin/client.ts'

export class UsageError extends Error {}

export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_USAGE = 2
/** Replicas lagging: a change was made but not every replica applied it within the wait, or one is behind or missing. */
export const EXIT_WAIT_INCOMPLETE = 3

export interface CommandValues {
  json?: boolean
  force?: boolean
  wait?: boolean
  reason?: string
  'expected-generation'?: string
  limit?: string
  steps?: string
  'step-seconds'?: string
}

export interface CommandResult {
  output: string
  exitCode: number
}

interface Command {
  usage: string
  summary: string
  /** The options it takes beyond --admin, --token and --json. */
  options: string[]
  run(client: AdminClientOptions, args: string[], values: CommandValues): Promise<CommandResult>
}

const CHANGE_OPTIONS = [
  '--wait                  answer once every live replica applied it (exit 3 if some did not in time)',
  '--force                 even if the pools getting traffic fail their health probe',
  '--reason TEXT           why, for the audit trail',
  '--expected-generation N only if the state is still at generation N (else exit 1, BG_GENERATION_CONFLICT)',
]

export const COMMANDS: Record<string, Command> = {
  status: {
    usage: 'bluegreen status [--json]',
    summary: 'the routing state and what this replica applied',
    options: [],
    run: async (client, args, values) => {
      expectArguments('status', args, 0)
      return show(await callAdmin(client, 'GET', '/state'), values)
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
  rollout: {
    usage:
      'bluegreen rollout COLOR --steps 10,25,50,100 --step-seconds 30 [--force] [--reason TEXT] | rollout abort',
    summary: 'shift traffic step by step, checked before each step; "rollout abort" goes back',
    options: [
      '--steps LIST            the weights COLOR goes through, ending at 100 (default 10,25,50,100)',
      '--step-seconds N        how long each step lasts before the next (default 60)',
      ...CHANGE_OPTIONS,
    ],
    run: async (client, args, values) => {
      if (args[0] === 'abort') {
        expectArguments('rollout abort', args.slice(1), 0)
        return show(await callAdmin(client, 'POST', '/rollout/abort', changeBody(values)), values)
      }
      expectArguments('rollout', args, 1)
      const [to] = args
      if (to !== 'blue' && to !== 'green')
        throw new UsageError('rollout takes a color (blue or green), or "abort"')
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
  events: {
    usage: 'bluegreen events [--limit N] [--json]',
    summary: 'the audit trail: recent change attempts, newest first',
    options: ['--limit N               how many (default 20, at most 1000)'],
    run: async (client, args, values) => {
      expectArguments('events', args, 0)
      const limit = values.limit ?? '20'
      if (!/^\d+$/.test(limit)) throw new UsageError('--limit takes a whole number')
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
  rollout?: { to: string; steps: number[]; step: number; status: string; outcome?: string }
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
    rolloutStep?: { waitingFor: string | null } | null
  }
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
  if (state.rollout) {
    const { rollout } = state
    const step = `step ${rollout.step + 1}/${rollout.steps.length} (${rollout.steps[rollout.step]}% to ${rollout.to})`
    const waitingFor = state.replica?.rolloutStep?.waitingFor
    const held = waitingFor ? `, held: too little traffic to judge (${waitingFor})` : ''
    lines.push(
      `rollout     ${rollout.status}, ${step}${held}${rollout.outcome ? `: ${rollout.outcome}` : ''}`,
    )
  }
  if (state.replica) {
    const store = state.replica.store
    const copyNote = store?.restoredFrom ? ` (serving its local copy ${store.restoredFrom})` : ''
    const storeNote =
      store && !store.reachable
        ? `, state store UNREACHABLE for ${Math.round(store.staleSeconds ?? 0)} s${copyNote}`
        : ''
    lines.push(`replica     ${state.replica.id} applied ${state.replica.appliedGeneration}${storeNote}`)
  }
  lines.push(...waitLines(state.wait))
  return { output: `${lines.join('\n')}\n`, exitCode }
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
}

function eventsTable(events: AuditLine[]): string {
  if (events.length === 0) return 'no events\n'
  const rows = events.map((event) => [
    event.at,
    event.actor,
    event.action,
    event.to
      ? `${event.to.active} ${event.to.weights.blue}/${event.to.weights.green}`
      : (event.replica ?? '-'),
    event.result === 'refused'
      ? `refused ${event.code ?? ''}`
      : `${event.result}${event.generation === undefined ? '' : ` #${event.generation}`}`,
    event.reason,
  ])
  return table(['time', 'actor', 'action', 'to', 'result', 'reason'], rows)
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
