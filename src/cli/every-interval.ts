// The loop behind the commands that keep printing (status --watch, rollout status --watch, events --follow).
import { AdminCallError } from '../admin/client.ts'
import type { Print } from './command.ts'

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/**
 * Runs `step` now and again after each `wait` until the process is stopped. A failure after a first success (the
 * admin API restarting, say) is printed once and tried again; a first failure ends the command like any call's.
 */
export async function everyInterval(
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
