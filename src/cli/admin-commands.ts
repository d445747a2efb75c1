// The CLI commands that talk to the admin API, by name, and their help. Each lives in a file of its own (or with
// its kin: the changes) and returns what to print and the exit code; src/cli.ts does the printing and exiting.
import { rollbackCommand, rolloutCommand, switchCommand, weightsCommand } from './change-commands.ts'
import type { Command } from './command.ts'
import { eventsCommand } from './events-command.ts'
import { mirrorCommand } from './mirror-command.ts'
import { reloadCommand } from './reload-command.ts'
import { replicasCommand } from './replicas-command.ts'
import { smokeCommand } from './smoke-command.ts'
import { statusCommand } from './status-command.ts'

// In the order bluegreen --help lists them.
export const COMMANDS: Record<string, Command> = {
  status: statusCommand,
  switch: switchCommand,
  weights: weightsCommand,
  rollback: rollbackCommand,
  smoke: smokeCommand,
  reload: reloadCommand,
  rollout: rolloutCommand,
  mirror: mirrorCommand,
  events: eventsCommand,
  replicas: replicasCommand,
}

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
