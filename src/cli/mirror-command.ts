// bluegreen mirror: copying a share of requests to the idle color, stopping it, and its figures.
import { callAdmin } from '../admin/client.ts'
import { COLORS } from '../colors.ts'
import { type Command, changeBody, EXIT_OK, expectArguments, UsageError } from './command.ts'
import { json } from './output.ts'
import type { StateLine } from './state-lines.ts'

export const mirrorCommand: Command = {
  usage: 'bluegreen mirror on PERCENT | off | status [--json] [--reason TEXT] [--expected-generation N]',
  summary: 'copy a share of requests to the idle color and compare its answers; or stop; or show the figures',
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
  /** The fleet's figures (pooled across replicas), or this replica's own with `problem`. */
  window: {
    seconds: number
    replicas: number
    problem?: string
    blue: MirrorFiguresLine
    green: MirrorFiguresLine
  }
  thisReplica: { window: { blue: MirrorFiguresLine; green: MirrorFiguresLine } }
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
  const { replicas, problem } = status.window
  for (const color of COLORS) {
    const figures = status.window[color]
    if (figures.compared === 0) continue
    const own = status.thisReplica.window[color]
    lines.push(
      `to ${color.padEnd(6)}   ${figures.mismatched} of ${figures.compared} differed (${(figures.ratio * 100).toFixed(1)}%) over the last ${status.window.seconds} s, ${replicas} replica(s) (this one: ${own.mismatched} of ${own.compared})`,
    )
  }
  if (problem) lines.push(`warning     ${problem}`)
  for (const route of status.mismatchedRoutes.slice(0, 5))
    lines.push(`differs     ${route.route}: ${route.mismatched} of ${route.compared}`)
  for (const noisy of status.noise.noisy.slice(0, 5))
    lines.push(`noise       ${noisy.route}: ${noisy.fields.join(', ')}`)
  if (status.lastError) lines.push(`last error  ${status.lastError.at} ${status.lastError.message}`)
  return `${lines.join('\n')}\n`
}
