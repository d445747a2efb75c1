// bluegreen replicas: every replica and its generation (exit 3 if one is behind or missing); forgetting one.
import { callAdmin } from '../admin/client.ts'
import { type Command, EXIT_OK, EXIT_WAIT_INCOMPLETE, expectArguments } from './command.ts'
import { json, table } from './output.ts'

export const replicasCommand: Command = {
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
