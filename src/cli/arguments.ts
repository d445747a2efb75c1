// The command line as bluegreen reads it: its options, and a usage mistake said in one line (exit 2) with a
// suggestion, rather than parseArgs' own text.
import { type ParseArgsOptionsConfig, parseArgs } from 'node:util'
import { closest } from '../config/validate.ts'
import { UsageError } from './command.ts'

export const OPTIONS = {
  config: { type: 'string', short: 'c' },
  admin: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  force: { type: 'boolean' },
  full: { type: 'boolean' },
  wait: { type: 'boolean' },
  reason: { type: 'string' },
  'expected-generation': { type: 'string' },
  limit: { type: 'string' },
  steps: { type: 'string' },
  'step-seconds': { type: 'string' },
  watch: { type: 'boolean' },
  follow: { type: 'boolean' },
  interval: { type: 'string' },
  port: { type: 'string' },
  'admin-port': { type: 'string' },
  workers: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const satisfies ParseArgsOptionsConfig

export function parseCommandLine(argv: string[]) {
  try {
    return parseArgs({ args: argv, allowPositionals: true, strict: true, options: OPTIONS })
  } catch (error) {
    throw usageErrorFrom(error, argv)
  }
}

/** "unknown command "swich"; did you mean "switch"?" */
export function unknownCommand(name: string, commands: readonly string[]): UsageError {
  const hint = closest(name, commands)
  return new UsageError(
    hint === undefined
      ? `unknown command "${name}"; see bluegreen --help`
      : `unknown command "${name}"; did you mean "${hint}"?`,
  )
}

function usageErrorFrom(error: unknown, argv: string[]): unknown {
  const code = (error as { code?: string }).code
  const message = (error as Error).message
  // parseArgs names the option between single quotes: "Unknown option '--frce'", "Option '--reason <value>' ...".
  const option = /'(-[^' ]+)/.exec(message)?.[1]
  if (option === undefined) return error
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const names = Object.keys(OPTIONS).map((name) => `--${name}`)
    const hint = option.startsWith('--') ? closest(option, names) : undefined
    if (hint !== undefined) return new UsageError(`unknown option ${option}; did you mean ${hint}?`)
    const command = commandIn(argv)
    return new UsageError(`unknown option ${option}; see bluegreen ${command ? `${command} ` : ''}--help`)
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    return new UsageError(
      message.includes('does not take an argument') ? `${option} takes no value` : `${option} needs a value`,
    )
  }
  return error
}

/** The first positional argument, read past the options that take a value. */
function commandIn(argv: string[]): string | undefined {
  const takesValue = new Set(
    Object.entries(OPTIONS)
      .filter(([, option]) => option.type === 'string')
      .flatMap(([name, option]) => [`--${name}`, ...('short' in option ? [`-${option.short}`] : [])]),
  )
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index]!
    if (takesValue.has(arg)) index++
    else if (!arg.startsWith('-')) return arg
  }
  return undefined
}
