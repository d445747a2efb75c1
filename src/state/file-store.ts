// The embedded state store: one JSON file on one host, shared by every process that points at it.
// Writes are atomic (temp file + fsync + rename), a change is a compare-and-set under an exclusive lock file,
// and followers watch the directory (a rename replaces the inode) with a stat poll as the fallback.

import { type FSWatcher, watch } from 'node:fs'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { type Color, isColor } from '../colors.ts'
import { asUnavailable, BlueGreenError, unavailable } from '../errors.ts'
import type { Logger } from '../log.ts'
import { readStateFile, type StateDocument, type StateFileRead, writeStateFile } from './atomic-file.ts'
import { FileLock, processAlive } from './file-lock.ts'
import { DEFAULT_KEEP_FOR_MS, nextStandby } from './standby.ts'
import {
  changesNothing,
  checkedChange,
  checkedGeneration,
  freezeState,
  initialState,
  keepingMirror,
  replacedState,
  rollbackTarget,
  type State,
  type StateChange,
} from './state.ts'
import type { Commit, StateListener, StateStore } from './store.ts'

export interface FileStateStoreOptions {
  path: string
  /** The color of the initial state, written only when the file does not exist yet. */
  initial: Color
  logger: Logger
  /** How often (ms) to stat the file in case fs.watch missed a change. Default 1000. */
  pollInterval?: number
  /** How long (ms) a color that lost all its traffic stays on standby (standby.keepFor). Default 24 h. */
  standbyKeepFor?: number
}

const WATCH_DEBOUNCE_MS = 15

export class FileStateStore implements StateStore {
  readonly #path: string
  readonly #lock: FileLock
  readonly #directory: string
  readonly #fileName: string
  readonly #initial: Color
  readonly #logger: Logger
  readonly #pollInterval: number
  #standbyKeepFor: number
  readonly #listeners = new Set<StateListener>()
  #current: State | undefined
  #previous: State | undefined
  #starting: Promise<State> | undefined
  #started = false
  #closed = false
  #watcher: FSWatcher | undefined
  #pollTimer: NodeJS.Timeout | undefined
  #debounceTimer: NodeJS.Timeout | undefined
  #polling = false
  #refreshing: Promise<void> | undefined
  #refreshAgain = false
  #seenSignature: string | undefined
  #reportedSignature: string | undefined

  constructor(options: FileStateStoreOptions) {
    if (typeof options.path !== 'string' || options.path === '') {
      throw new TypeError('path must be a non-empty string')
    }
    if (!isColor(options.initial)) {
      throw new TypeError(`initial must be "blue" or "green", got ${JSON.stringify(options.initial)}`)
    }
    const pollInterval = options.pollInterval ?? 1000
    if (!Number.isInteger(pollInterval) || pollInterval <= 0) {
      throw new TypeError('pollInterval must be a positive integer (milliseconds)')
    }
    this.#path = path.resolve(options.path)
    this.#lock = new FileLock({ path: `${this.#path}.lock`, logger: options.logger })
    this.#directory = path.dirname(this.#path)
    this.#fileName = path.basename(this.#path)
    this.#initial = options.initial
    this.#standbyKeepFor = options.standbyKeepFor ?? DEFAULT_KEEP_FOR_MS
    this.#logger = options.logger
    this.#pollInterval = pollInterval
  }

  start(): Promise<State> {
    if (this.#closed) return Promise.reject(unavailable(`the state store for ${this.#path} is closed`))
    // A failed start can be retried (say, after the operator fixed the file).
    this.#starting ??= this.#load().catch((error: unknown) => {
      this.#starting = undefined
      throw error
    })
    return this.#starting
  }

  current(): State | undefined {
    return this.#current
  }

  /** standby.keepFor for the changes from now on (a reload); a standby already in force keeps its keepUntil. */
  keepStandbyFor(ms: number): void {
    this.#standbyKeepFor = ms
  }

  async change(change: StateChange, expectedGeneration?: number): Promise<State> {
    return (await this.commit(change, expectedGeneration)).state
  }

  async commit(change: StateChange, expectedGeneration?: number): Promise<Commit> {
    if (!this.#started || this.#closed) {
      throw unavailable(`the state store for ${this.#path} is ${this.#closed ? 'closed' : 'not started'}`)
    }
    const requested = checkedChange(change)
    checkedGeneration(expectedGeneration)
    // A newer state found under the lock is applied after the lock is released, so listeners never hold it.
    let newer: StateDocument | undefined
    let committed: { document: StateDocument; changed: boolean }
    try {
      committed = await this.#lock.withLock(async (lock) => {
        const read = await readStateFile(this.#path)
        if (read.kind === 'invalid') {
          throw unavailable(
            `the state file ${this.#path} is invalid (${read.problem}); fix it before changing state`,
          )
        }
        if (read.kind === 'missing') {
          this.#logger.warn(
            { path: this.#path },
            'the state file disappeared; recreating it from the last applied state',
          )
        }
        const applied = this.#current!
        const stored = read.kind === 'valid' ? read.document.state : applied
        if (expectedGeneration !== undefined && expectedGeneration !== stored.generation) {
          if (read.kind === 'valid') newer = read.document
          throw new BlueGreenError(
            'BG_GENERATION_CONFLICT',
            `expected generation ${expectedGeneration} but the state is at ${stored.generation}`,
          )
        }
        // A file behind what this process applied (an older generation written by hand) is brought forward.
        if (
          read.kind === 'valid' &&
          stored.generation >= applied.generation &&
          changesNothing(stored, requested)
        ) {
          return { document: read.document, changed: false }
        }
        // Never behind what this process has applied, even if someone wrote an older generation by hand.
        const generation = Math.max(stored.generation, applied.generation) + 1
        const storedPrevious = read.kind === 'valid' ? read.document.previous : this.#previous
        const now = new Date()
        const updatedAt = now.toISOString()
        const keepUntil = new Date(now.getTime() + this.#standbyKeepFor).toISOString()
        const standby = nextStandby(stored, { ...requested, generation }, updatedAt, keepUntil)
        const document: StateDocument = {
          state: freezeState({
            ...keepingMirror(requested, stored),
            generation,
            updatedAt,
            ...(standby ? { standby } : {}),
          }),
          previous: replacedState(requested, stored, storedPrevious) ?? null,
        }
        await lock.confirm()
        await writeStateFile(this.#path, document)
        return { document, changed: true }
      })
    } catch (error) {
      throw asUnavailable(error, `could not change the state in ${this.#path}`)
    } finally {
      if (newer) this.#apply(newer)
    }
    // An unchanged answer may still be news to this process, if it was behind the file.
    this.#apply(committed.document)
    return { state: committed.document.state, changed: committed.changed }
  }

  async previous(): Promise<State | undefined> {
    // Another process may have changed the state since this one last looked: the file is the authority.
    const read = await readStateFile(this.#path).catch(() => undefined)
    if (read?.kind === 'valid') {
      const { state, previous } = read.document
      if (!this.#started) return rollbackTarget(state, previous)
      this.#apply(read.document)
      if (state.generation >= (this.#current?.generation ?? 0)) return rollbackTarget(state, previous)
    }
    return this.#current && rollbackTarget(this.#current, this.#previous)
  }

  subscribe(listener: StateListener): () => void {
    this.#listeners.add(listener)
    return () => {
      this.#listeners.delete(listener)
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#watcher?.close()
    this.#watcher = undefined
    clearInterval(this.#pollTimer)
    clearTimeout(this.#debounceTimer)
    await this.#refreshing
  }

  async #load(): Promise<State> {
    let read = await readStateFile(this.#path).catch((error) => {
      throw asUnavailable(error, `could not read the state file ${this.#path}`)
    })
    if (read.kind === 'missing') {
      try {
        await fs.mkdir(this.#directory, { recursive: true })
        read = await this.#lock.withLock(async () => {
          // Another process may have created it while this one waited for the lock.
          const again = await readStateFile(this.#path)
          if (again.kind !== 'missing') return again
          const document: StateDocument = { state: freezeState(initialState(this.#initial)), previous: null }
          await writeStateFile(this.#path, document)
          this.#logger.info({ path: this.#path, active: this.#initial }, 'created the state file')
          return { kind: 'valid', document } satisfies StateFileRead
        })
      } catch (error) {
        throw asUnavailable(error, `could not create the state file ${this.#path}`)
      }
    }
    if (read.kind === 'invalid') {
      // Never overwrite what an operator wrote: refuse to start and say what is wrong.
      throw unavailable(`the state file ${this.#path} is invalid: ${read.problem}; fix or remove it`)
    }
    if (this.#closed) throw unavailable(`the state store for ${this.#path} was closed while starting`)
    this.#apply(read.document)
    this.#started = true
    await this.#removeLeftovers()
    this.#follow()
    return this.#current!
  }

  /** Temp files (writeStateFile) and set-aside locks (FileLock) left by processes that died mid-write. */
  async #removeLeftovers(): Promise<void> {
    const pattern = new RegExp(
      `^${escapeRegExp(this.#fileName)}\\.(?:lock\\.)?(\\d+)\\.[0-9a-f]+\\.(?:tmp|stale)$`,
    )
    try {
      for (const name of await fs.readdir(this.#directory)) {
        const pid = Number(pattern.exec(name)?.[1])
        if (pid && !processAlive(pid)) await fs.rm(path.join(this.#directory, name), { force: true })
      }
    } catch (error) {
      this.#logger.debug({ err: error, directory: this.#directory }, 'could not clean up leftover temp files')
    }
  }

  #follow(): void {
    try {
      this.#watcher = watch(this.#directory, { persistent: false }, (_event, fileName) => {
        if (fileName === null || fileName === this.#fileName) this.#scheduleRefresh()
      })
      this.#watcher.on('error', (error) => {
        this.#logger.warn(
          { err: error, directory: this.#directory },
          'watching the state directory failed; polling only',
        )
        this.#watcher?.close()
        this.#watcher = undefined
      })
    } catch (error) {
      this.#logger.warn(
        { err: error, directory: this.#directory },
        'cannot watch the state directory; polling only',
      )
    }
    this.#pollTimer = setInterval(() => void this.#poll(), this.#pollInterval)
    this.#pollTimer.unref()
  }

  #scheduleRefresh(): void {
    if (this.#debounceTimer !== undefined || this.#closed) return
    this.#debounceTimer = setTimeout(() => {
      this.#debounceTimer = undefined
      this.#refresh()
    }, WATCH_DEBOUNCE_MS)
    this.#debounceTimer.unref()
  }

  async #poll(): Promise<void> {
    if (this.#polling || this.#refreshing || this.#closed) return
    this.#polling = true
    try {
      if ((await this.#signature()) !== this.#seenSignature) this.#refresh()
    } finally {
      this.#polling = false
    }
  }

  #refresh(): void {
    if (this.#closed) return
    if (this.#refreshing) {
      this.#refreshAgain = true
      return
    }
    this.#refreshing = this.#reload()
      .catch((error) => this.#logger.warn({ err: error, path: this.#path }, 'could not read the state file'))
      .finally(() => {
        this.#refreshing = undefined
        if (this.#refreshAgain) {
          this.#refreshAgain = false
          this.#refresh()
        }
      })
  }

  async #reload(): Promise<void> {
    // The signature is taken before reading, so a replacement racing the read is seen by the next poll.
    const signature = await this.#signature()
    this.#seenSignature = signature
    const read = await readStateFile(this.#path)
    if (read.kind === 'valid') {
      this.#reportedSignature = undefined
      this.#apply(read.document)
      return
    }
    if (this.#reportedSignature === signature) return
    this.#reportedSignature = signature
    if (read.kind === 'missing') {
      this.#logger.warn({ path: this.#path }, 'the state file is missing; keeping the last good state')
    } else {
      this.#logger.error(
        { path: this.#path, problem: read.problem },
        'the state file is invalid; ignoring it and keeping the last good state',
      )
    }
  }

  async #signature(): Promise<string> {
    try {
      const stat = await fs.stat(this.#path)
      return `${stat.ino}:${stat.size}:${stat.mtimeMs}`
    } catch (error) {
      return `error:${(error as NodeJS.ErrnoException | undefined)?.code ?? 'unknown'}`
    }
  }

  /** Applies a state with a higher generation than the applied one and tells every listener; true if applied. */
  #apply(document: StateDocument): boolean {
    const applied = this.#current
    if (applied !== undefined && document.state.generation <= applied.generation) return false
    this.#current = document.state
    this.#previous = document.previous ?? undefined
    if (this.#closed) return true
    for (const listener of [...this.#listeners]) {
      try {
        listener(document.state)
      } catch (error) {
        this.#logger.error({ err: error, generation: document.state.generation }, 'a state listener threw')
      }
    }
    return true
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
