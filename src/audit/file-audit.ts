import { appendFile, readFile } from 'node:fs/promises'
import { writeFileAtomically } from '../state/atomic-file.ts'
import type { AuditEvent, AuditTrail } from './audit.ts'

/**
 * The file store's audit trail: JSON lines appended to `<state file>.events.jsonl`. One appendFile is one write(2)
 * with O_APPEND, so lines from several processes on the host do not interleave. Once the file holds twice `keep`
 * lines it is rewritten with the last `keep`, atomically; reads answer at most the last `keep` either way.
 *
 * This process's writes run one at a time, and a read waits for the writes before it: a line appended while the
 * file is being rewritten would be lost with the old file, and a caller who was just answered must find its event.
 */
export class FileAuditTrail implements AuditTrail {
  readonly #path: string
  readonly #keep: number
  #appended = 0
  #writing: Promise<void> = Promise.resolve()

  constructor(path: string, keep: number) {
    this.#path = path
    this.#keep = keep
  }

  record(event: AuditEvent): Promise<void> {
    const written = this.#writing.then(() => this.#append(event))
    // The queue goes on after a failed write; the caller hears of the failure.
    this.#writing = written.catch(() => {})
    return written
  }

  async recent(limit: number): Promise<AuditEvent[]> {
    await this.#writing
    const events: AuditEvent[] = []
    const lines = await this.#lines()
    const wanted = Math.min(limit, this.#keep)
    for (let i = lines.length - 1; i >= 0 && events.length < wanted; i--) {
      try {
        events.push(JSON.parse(lines[i]!) as AuditEvent)
      } catch {
        // A torn last line after a crash is skipped, not fatal.
      }
    }
    return events
  }

  async close(): Promise<void> {
    await this.#writing
  }

  async #append(event: AuditEvent): Promise<void> {
    await appendFile(this.#path, `${JSON.stringify(event)}\n`)
    if (++this.#appended >= this.#keep) {
      this.#appended = 0
      const lines = await this.#lines()
      if (lines.length > this.#keep * 2)
        await writeFileAtomically(this.#path, `${lines.slice(-this.#keep).join('\n')}\n`)
    }
  }

  async #lines(): Promise<string[]> {
    try {
      return (await readFile(this.#path, 'utf8')).split('\n').filter((line) => line !== '')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw error
    }
  }
}
