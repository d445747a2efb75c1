import { appendFile, readFile } from 'node:fs/promises'
import { writeFileAtomically } from '../state/atomic-file.ts'
import type { AuditEvent, AuditTrail } from './audit.ts'

/**
 * The file store's audit trail: JSON lines appended to `<state file>.events.jsonl`. One appendFile is one write(2)
 * with O_APPEND, so lines from several processes on the host do not interleave. Once the file holds twice `keep`
 * lines it is rewritten with the last `keep`, atomically.
 */
export class FileAuditTrail implements AuditTrail {
  readonly #path: string
  readonly #keep: number
  #appended = 0

  constructor(path: string, keep: number) {
    this.#path = path
    this.#keep = keep
  }

  async record(event: AuditEvent): Promise<void> {
    await appendFile(this.#path, `${JSON.stringify(event)}\n`)
    if (++this.#appended >= this.#keep) {
      this.#appended = 0
      const lines = await this.#lines()
      if (lines.length > this.#keep * 2)
        await writeFileAtomically(this.#path, `${lines.slice(-this.#keep).join('\n')}\n`)
    }
  }

  async recent(limit: number): Promise<AuditEvent[]> {
    const events: AuditEvent[] = []
    const lines = await this.#lines()
    for (let i = lines.length - 1; i >= 0 && events.length < limit; i--) {
      try {
        events.push(JSON.parse(lines[i]!) as AuditEvent)
      } catch {
        // A torn last line after a crash is skipped, not fatal.
      }
    }
    return events
  }

  async close(): Promise<void> {}

  async #lines(): Promise<string[]> {
    try {
      return (await readFile(this.#path, 'utf8')).split('\n').filter((line) => line !== '')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw error
    }
  }
}
