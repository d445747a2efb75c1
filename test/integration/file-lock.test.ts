import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/log.ts'
import { FileLock, type FileLockOptions, processAlive } from '../../src/state/file-lock.ts'

let directory: string
let lockPath: string

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'bluegreen-file-lock-'))
  lockPath = join(directory, 'state.json.lock')
})

afterEach(async () => {
  await rm(directory, { recursive: true, force: true })
})

function makeLock(options: Partial<FileLockOptions> = {}): FileLock {
  return new FileLock({ path: lockPath, logger: silentLogger(), ...options })
}

/** The pid of a process that has exited, so no live process owns it. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await once(child, 'exit')
  return child.pid!
}

function lockContent(pid: number, time: Date, host = hostname()): string {
  return JSON.stringify({ pid, hostname: host, time: time.toISOString(), token: 'test' })
}

describe('FileLock', () => {
  it('refuses bad options with a message that names the option', () => {
    expect(() => makeLock({ path: '' })).toThrow('path must be a non-empty string')
    expect(() => makeLock({ timeout: 0 })).toThrow('timeout must be a positive integer')
    expect(() => makeLock({ staleAfter: 0 })).toThrow('staleAfter must be a positive integer')
  })

  it('writes its holder into the lock file and removes it on release', async () => {
    const lock = await makeLock().acquire()
    const holder = JSON.parse(await readFile(lockPath, 'utf8'))
    expect(holder).toMatchObject({ pid: process.pid, hostname: hostname() })
    expect(Date.parse(holder.time)).not.toBeNaN()
    await lock.confirm()
    await lock.release()
    await lock.release()
    expect(await readdir(directory)).toEqual([])
    await expect(lock.confirm()).rejects.toMatchObject({ code: 'BG_STATE_UNAVAILABLE' })
  })

  it('makes a second acquirer wait until the first releases', async () => {
    const first = await makeLock().acquire()
    let firstReleased = false
    const second = makeLock()
      .acquire()
      .then((lock) => {
        expect(firstReleased).toBe(true)
        return lock
      })
    await new Promise((resolve) => setImmediate(resolve))
    firstReleased = true
    await first.release()
    await (await second).release()
    expect(await readdir(directory)).toEqual([])
  })

  it('withLock releases the lock when the work throws', async () => {
    const lock = makeLock()
    await expect(
      lock.withLock(async () => {
        throw new Error('work failed')
      }),
    ).rejects.toThrow('work failed')
    expect(await readdir(directory)).toEqual([])
  })

  it('gives up with 503 BG_STATE_UNAVAILABLE after the timeout while a live holder keeps it', async () => {
    const held = lockContent(process.pid, new Date())
    await writeFile(lockPath, held)
    const started = Date.now()
    await expect(makeLock({ timeout: 100 }).acquire()).rejects.toMatchObject({
      code: 'BG_STATE_UNAVAILABLE',
      status: 503,
      message: expect.stringContaining('timed out after 100 ms'),
    })
    expect(Date.now() - started).toBeGreaterThanOrEqual(100)
    expect(await readFile(lockPath, 'utf8')).toBe(held)
  })

  it('takes over at once a lock whose holder died on this host', async () => {
    await writeFile(lockPath, lockContent(await deadPid(), new Date()))
    const started = Date.now()
    const lock = await makeLock().acquire()
    expect(Date.now() - started).toBeLessThan(1000)
    expect(JSON.parse(await readFile(lockPath, 'utf8')).pid).toBe(process.pid)
    await lock.release()
    expect(await readdir(directory)).toEqual([])
  })

  it('judges a lock from another host by its age alone, since its pid means nothing here', async () => {
    await writeFile(lockPath, lockContent(await deadPid(), new Date(), 'elsewhere.invalid'))
    await expect(makeLock({ timeout: 50 }).acquire()).rejects.toMatchObject({ code: 'BG_STATE_UNAVAILABLE' })

    await writeFile(lockPath, lockContent(process.pid, new Date(Date.now() - 11_000), 'elsewhere.invalid'))
    await (await makeLock().acquire()).release()
  })

  it('takes over an unreadable lock once its file is older than staleAfter', async () => {
    await writeFile(lockPath, '')
    await expect(makeLock({ timeout: 50 }).acquire()).rejects.toMatchObject({ code: 'BG_STATE_UNAVAILABLE' })

    const old = new Date(Date.now() - 11_000)
    await utimes(lockPath, old, old)
    await (await makeLock().acquire()).release()
    expect(await readdir(directory)).toEqual([])
  })

  it('a holder whose lock was broken as stale fails confirm() and leaves the new holder’s lock alone', async () => {
    const warnings: string[] = []
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) })
    const stalled = await makeLock({ logger }).acquire()
    // staleAfter 1 ms: the second acquirer soon judges the first holder stale although it lives.
    const newer = await makeLock({ staleAfter: 1 }).acquire()
    const newerContent = await readFile(lockPath, 'utf8')

    await expect(stalled.confirm()).rejects.toMatchObject({
      code: 'BG_STATE_UNAVAILABLE',
      message: expect.stringContaining('lost the lock'),
    })
    await stalled.release()
    expect(await readFile(lockPath, 'utf8')).toBe(newerContent)
    expect(warnings.some((line) => line.includes('taken over while held'))).toBe(true)

    await newer.confirm()
    await newer.release()
    expect(await readdir(directory)).toEqual([])
  })
})

describe('processAlive', () => {
  it('is true for this process and for pids that cannot be checked, false for an exited one', async () => {
    expect(processAlive(process.pid)).toBe(true)
    expect(processAlive(0)).toBe(true)
    expect(processAlive(-1)).toBe(true)
    expect(processAlive(await deadPid())).toBe(false)
  })
})
