// bluegreen reload: the proxy re-reads its config file and applies it whole, or refuses it all.
import { callAdmin } from '../admin/client.ts'
import { type Command, EXIT_OK, expectArguments } from './command.ts'
import { json } from './output.ts'

export const reloadCommand: Command = {
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
}

/** POST /reload's answer (src/config/changes.ts ReloadOutcome; refusals come back as errors). */
interface ReloadReply {
  result: 'applied' | 'unchanged'
  file: string
  changed: string[]
  workers?: { applied: number[] }
}
