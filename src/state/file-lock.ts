// An exclusive lock shared by processes on one host: a file created with O_EXCL that holds its owner's pid,
// hostname, time and a random token. A holder that died, or has held it too long, loses it to the next process.

import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import { hostname } from 'node:os'
import { setTimeout as delay } from 'node:timers/promises'
import { unavailable } from '../errors.ts'
import type { Logger } from '../log.ts'

export interface FileLockOptions {
  /** The lock file itself; it exists only while someone holds the lock. */
  path: string
  logger: Logger
  /** How long (ms) acquire() waits for a live holder before giving up. Default 2000. */
  timeout?: number
  /** How old (ms) a lock must be before it is broken even though its holder still lives. Default 10000. */
  staleAfter?: number
}

export interface HeldLock {
  /**
   * Throws BG_STATE_UNAVAILABLE when another process has since broken this lock as stale. Call it just before
   * the write the lock protects, so a holder that stalled past staleAfter does not overwrite the new holder's work.
   */
  confirm(): Promise<void>
  /** Removes the lock file if it is still this holder's; safe to call more than once. */
  release(): Promise<void>
}

export class FileLock {
  readonly path: string
  readonly #logger: Logger
  readonly #timeout: number
  readonly #staleAfter: number

  constructor(options: FileLockOptions) {
    if (typeof options.path !== 'string' || options.path === '') {
      throw new TypeError('path must be a non-empty string')
    }
    const timeout = options.timeout ?? 2000
    if (!Number.isInteger(timeout) || timeout <= 0) {
      throw new TypeError('timeout must be a positive integer (milliseconds)')
    }
    const staleAfter = options.staleAfter ?? 10_000
    if (!Number.isInteger(staleAfter) || staleAfter <= 0) {
      throw new TypeError('staleAfter must be a positive integer (milliseconds)')
    }
    this.path = options.path
    this.#logger = options.logger
    this.#timeout = timeout
    this.#staleAfter = staleAfter
  }

  /** Runs work while holding the lock and releases it however work ends. */
  async withLock<T>(work: (lock: HeldLock) => Promise<T>): Promise<T> {
    const lock = await this.acquire()
    try {
      return await work(lock)
    } finally {
      await lock.release()
    }
  }

  /** Waits for the lock, breaking a stale one; throws BG_STATE_UNAVAILABLE after timeout ms. */
  async acquire(): Promise<HeldLock> {
    const content = JSON.stringify({
      pid: process.pid,
      hostname: hostname(),
      time: new Date().toISOString(),
      token: randomBytes(6).toString('hex'),
    })
    const deadline = Date.now() + this.#timeout
    for (let attempt = 0; ; attempt++) {
      if (await this.#create(content)) return this.#held(content)
      const removedStale = await this.#removeStale()
      if (Date.now() >= deadline) {
        throw unavailable(`timed out after ${this.#timeout} ms waiting for the state lock ${this.path}`)
      }
      // A lock just removed as stale is free now; otherwise back off, with jitter so waiters do not collide.
      if (!removedStale) await delay(Math.min(50, 2 ** attempt) + Math.random() * 5)
    }
  }

  /** True when this call created the lock file; false when someone else holds it. */
  async #create(content: string): Promise<boolean> {
    let handle: fs.FileHandle
    try {
      handle = await fs.open(this.path, 'wx', 0o644)
    } catch (error) {
      if (errorCode(error) === 'EEXIST') return false
      throw error
    }
    try {
      await handle.writeFile(content)
    } catch (error) {
      await handle.close()
      await fs.rm(this.path, { force: true })
      throw error
    }
    await handle.close()
    return true
  }

  #held(content: string): HeldLock {
    let released = false
    return {
      confirm: async () => {
        if (released || (await readText(this.path)) !== content) {
          throw unavailable(
            `lost the lock ${this.path} (another process judged it stale); nothing was changed`,
          )
        }
      },
      release: async () => {
        if (released) return
        released = true
        // A lock broken as stale may already belong to someone else, so only our own content is removed.
        if ((await readText(this.path)) === content) await fs.rm(this.path, { force: true })
        else this.#logger.warn({ lock: this.path }, 'the state lock was taken over while held')
      },
    }
  }

  /** Removes the lock when its holder died or has held it too long; true when the lock is gone. */
  async #removeStale(): Promise<boolean> {
    let content: string
    let modified: number
    try {
      modified = (await fs.stat(this.path)).mtimeMs
      content = await fs.readFile(this.path, 'utf8')
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return true
      throw error
    }
    const holder = parseHolder(content)
    const age = Date.now() - (holder?.time ?? modified)
    // A pid means nothing on another host sharing the directory, so there only age counts.
    const holderDied = holder !== undefined && holder.hostname === hostname() && !processAlive(holder.pid)
    if (!holderDied && age <= this.#staleAfter) return false
    // Move it aside and check it is still the stale lock before deleting: between reading and moving, another
    // process may have broken it and taken a fresh lock, which is then put back (link never overwrites).
    const aside = `${this.path}.${process.pid}.${randomBytes(6).toString('hex')}.stale`
    try {
      await fs.rename(this.path, aside)
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return true
      throw error
    }
    if ((await readText(aside)) === content) {
      this.#logger.warn({ lock: this.path, holder: content }, 'removed a stale state lock')
    } else {
      await fs.link(aside, this.path).catch(() => {})
    }
    await fs.rm(aside, { force: true })
    return true
  }
}

/** Whether a process with this pid exists on this host; an impossible pid counts as alive, so nothing is broken. */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return true
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return errorCode(error) === 'EPERM'
  }
}

function parseHolder(content: string): { pid: number; hostname: string; time: number } | undefined {
  try {
    const value = JSON.parse(content) as Record<string, unknown>
    const time = typeof value.time === 'string' ? Date.parse(value.time) : Number.NaN
    if (!Number.isInteger(value.pid) || typeof value.hostname !== 'string' || Number.isNaN(time))
      return undefined
    return { pid: value.pid as number, hostname: value.hostname, time }
  } catch {
    // Empty while its holder is between creating and writing it, or garbage: judged by its age alone.
    return undefined
  }
}

async function readText(file: string): Promise<string | undefined> {
  return fs.readFile(file, 'utf8').catch(() => undefined)
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code
}
