// What every admin command shares: its shape, the exit codes, the options it reads, and the checks of its
// arguments that make a mistake bad usage (exit 2) rather than a refusal.
import type { AdminClientOptions } from '../admin/client.ts'

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

export interface Command {
  usage: string
  summary: string
  /** The options it takes beyond --admin, --token and --json. */
  options: string[]
  run(client: AdminClientOptions, args: string[], values: CommandValues, print: Print): Promise<CommandResult>
}

export const CHANGE_OPTIONS = [
  '--wait                  answer once every live replica applied it (exit 3 if some did not in time)',
  '--force                 even if the pools getting traffic fail their health probe or smoke checks',
  '--reason TEXT           why, for the audit trail',
  '--expected-generation N only if the state is still at generation N (else exit 1, BG_GENERATION_CONFLICT)',
]

/** A --interval value in milliseconds. */
export function seconds(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback * 1000
  const number = Number(value)
  if (!/^\d+(\.\d+)?$/.test(value) || number < 0.1 || number > 3600) {
    throw new UsageError(`--interval takes a number of seconds from 0.1 to 3600, got "${value}"`)
  }
  return number * 1000
}

export function expectArguments(command: string, args: string[], count: number): void {
  if (args.length > count) throw new UsageError(`unexpected argument "${args[count]}" for ${command}`)
  if (args.length < count)
    throw new UsageError(`${command} needs ${count} argument(s); see bluegreen ${command} --help`)
}

export function changeBody(values: CommandValues): Record<string, unknown> {
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
