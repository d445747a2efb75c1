// The state file on disk: its format, {state, previous}, and how it is replaced so that a reader (or a crash)
// sees either the old content or the new, never a mix.

import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { freezeState, type State, stateProblem } from './state.ts'

/** The file's content: the state and the one it replaced, for rollback (see replacedState in state.ts). */
export interface StateDocument {
  state: State
  previous: State | null
}

export type StateFileRead =
  | { kind: 'missing' }
  | { kind: 'invalid'; problem: string }
  | { kind: 'valid'; document: StateDocument }

/** Reads and checks the file; only I/O failures other than a missing file throw. */
export async function readStateFile(file: string): Promise<StateFileRead> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return { kind: 'missing' }
    throw error
  }
  return parseStateDocument(text)
}

/** Pretty-printed, because operators read (and sometimes fix) the file by hand. */
export async function writeStateFile(file: string, document: StateDocument): Promise<void> {
  await writeFileAtomically(file, `${JSON.stringify(document, null, 2)}\n`)
}

/**
 * Writes a temp file beside the target, syncs it and renames it over the target. The temp file is named
 * `<name>.<pid>.<hex>.tmp`, so one left by a process that died mid-write can be recognised and removed.
 */
export async function writeFileAtomically(file: string, text: string): Promise<void> {
  const directory = path.dirname(file)
  const temporary = path.join(
    directory,
    `${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`,
  )
  try {
    const handle = await fs.open(temporary, 'wx', 0o644)
    try {
      await handle.writeFile(text)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await fs.rename(temporary, file)
  } catch (error) {
    await fs.rm(temporary, { force: true }).catch(() => {})
    throw error
  }
  // Makes the rename itself durable; not every platform can open a directory (Windows), which is fine.
  try {
    const handle = await fs.open(directory, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  } catch {}
}

/** Anything a person or another process wrote is untrusted, so every field is checked. */
function parseStateDocument(text: string): StateFileRead {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    return { kind: 'invalid', problem: `not valid JSON (${(error as Error).message})` }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { kind: 'invalid', problem: 'expected a JSON object {"state": ..., "previous": ...}' }
  }
  const { state, previous } = value as Record<string, unknown>
  if (state === undefined) return { kind: 'invalid', problem: 'the "state" key is missing' }
  const stateError = stateProblem(state)
  if (stateError) return { kind: 'invalid', problem: `state: ${stateError}` }
  if (previous !== undefined && previous !== null) {
    const previousError = stateProblem(previous)
    if (previousError) return { kind: 'invalid', problem: `previous: ${previousError}` }
  }
  return {
    kind: 'valid',
    document: {
      state: freezeState(state as State),
      previous: previous === undefined || previous === null ? null : freezeState(previous as State),
    },
  }
}
