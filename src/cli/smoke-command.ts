// bluegreen smoke COLOR: the smoke checks run now, one line each; exit 1 if one fails.
import { callAdmin } from '../admin/client.ts'
import type { Color } from '../colors.ts'
import { type Command, EXIT_FAILED, EXIT_OK, expectArguments, UsageError } from './command.ts'
import { json, table } from './output.ts'

export const smokeCommand: Command = {
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
