import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/log.ts'
import { FileStateStore } from '../../src/state/file-store.ts'
import { initialState, type State } from '../../src/state/state.ts'
import { eventually } from '../helpers/eventually.ts'
import { split, toBlue, toGreen } from '../helpers/state-store-contract.ts'

let directory: string
let path: string
let stores: FileStateStore[]

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'bluegreen-file-store-'))
  path = join(directory, 'state.json')
  stores = []
})

afterEach(async () => {
  await Promise.all(stores.map((store) => store.close()))
  await rm(directory, { recursive: true, force: true })
})

function makeStore(options: { pollInterval?: number; logger?: pino.Logger } = {}): FileStateStore {
  const store = new FileStateStore({
    path,
    initial: 'blue',
    logger: options.logger ?? silentLogger(),
    ...options,
  })
  stores.push(store)
  return store
}

async function readDocument(): Promise<{ state: State; previous: State | null }> {
  return JSON.parse(await readFile(path, 'utf8'))
}

/** The pid of a process that has exited, so no live process owns it. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await once(child, 'exit')
  return child.pid!
}

function lockContent(pid: number, time: Date): string {
  return JSON.stringify({ pid, hostname: hostname(), time: time.toISOString(), token: 'test' })
}

describe('FileStateStore', () => {
  it('writes {state, previous} as pretty-printed JSON and leaves no lock or temp file behind', async () => {
    const store = makeStore()
    const initial = await store.start()
    const text = await readFile(path, 'utf8')
    expect(text).toContain('\n  "state": {')
    expect(JSON.parse(text)).toEqual({ state: initial, previous: null })

    const changed = await store.change(toGreen)
    expect(await readDocument()).toEqual({ state: changed, previous: initial })
    expect(await readdir(directory)).toEqual(['state.json'])
  })

  it.each([
    ['not JSON', '{"state": ', 'not valid JSON'],
    [
      'an invalid state',
      JSON.stringify({ state: { ...initialState('blue'), active: 'red' }, previous: null }),
      'active',
    ],
    ['no state key', JSON.stringify({ active: 'blue' }), '"state" key is missing'],
    [
      'an invalid previous',
      JSON.stringify({ state: initialState('blue'), previous: { generation: -1 } }),
      'previous',
    ],
  ])('start refuses an existing file with %s and leaves it as it is', async (_name, content, problem) => {
    await writeFile(path, content)
    const store = makeStore()
    const refused = store.start()
    await expect(refused).rejects.toMatchObject({ code: 'BG_STATE_UNAVAILABLE', status: 503 })
    await expect(refused).rejects.toThrow(path)
    await expect(refused).rejects.toThrow(problem)
    expect(await readFile(path, 'utf8')).toBe(content)
    expect(store.current()).toBeUndefined()
  })

  it('20 changes racing from 4 instances with expectedGeneration give consecutive generations', async () => {
    const instances = [makeStore(), makeStore(), makeStore(), makeStore()]
    await Promise.all(instances.map((store) => store.start()))
    const generations: number[] = []
    const changesPerInstance = 5
    // Each instance reads the generation just before each attempt, and tries again when another won the race.
    await Promise.all(
      instances.map(async (store, index) => {
        for (let done = 0; done < changesPerInstance; ) {
          const { generation: expected, active } = store.current()!
          // Away from what the store holds, so that every attempt is a change (one that alters nothing is not stored).
          const target = active === 'green' ? toBlue : toGreen
          try {
            const state = await store.change({ ...target, reason: `instance ${index}` }, expected)
            expect(state.generation).toBe(expected + 1)
            generations.push(state.generation)
            done++
          } catch (error) {
            expect(error).toMatchObject({ code: 'BG_GENERATION_CONFLICT' })
          }
        }
      }),
    )
    expect(generations.toSorted((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1))
    const document = await readDocument()
    expect(document.state.generation).toBe(20)
    expect(document.previous?.generation).toBe(19)
    expect(await readdir(directory)).toEqual(['state.json'])
  })

  it('20 unconditional changes fired at once from 4 instances lose and duplicate no generation', async () => {
    const instances = [makeStore(), makeStore(), makeStore(), makeStore()]
    await Promise.all(instances.map((store) => store.start()))
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        // Twenty different splits: whichever order they land in, each one alters the state.
        instances[index % 4]!.change({
          ...split,
          weights: { blue: 80 + index, green: 20 - index },
          reason: `change ${index}`,
        }),
      ),
    )
    const generations = results.map((state) => state.generation).toSorted((a, b) => a - b)
    expect(generations).toEqual(Array.from({ length: 20 }, (_, index) => index + 1))
    expect((await readDocument()).state.generation).toBe(20)
    expect(await readdir(directory)).toEqual(['state.json'])
  })

  it('takes over a lock left by a dead process', async () => {
    const store = makeStore()
    await store.start()
    await writeFile(`${path}.lock`, lockContent(await deadPid(), new Date()))
    const started = Date.now()
    expect(await store.change(toGreen)).toMatchObject({ generation: 1 })
    expect(Date.now() - started).toBeLessThan(1000)
    expect(await readdir(directory)).toEqual(['state.json'])
  })

  it('takes over a lock older than 10 s even when its holder lives', async () => {
    const store = makeStore()
    await store.start()
    const old = new Date(Date.now() - 11_000)
    await writeFile(`${path}.lock`, lockContent(process.pid, old))
    await utimes(`${path}.lock`, old, old)
    expect(await store.change(toGreen)).toMatchObject({ generation: 1 })
    expect(await readdir(directory)).toEqual(['state.json'])
  })

  it('gives up with 503 BG_STATE_UNAVAILABLE when a live holder keeps the lock, and changes nothing', async () => {
    const store = makeStore()
    const initial = await store.start()
    await writeFile(`${path}.lock`, lockContent(process.pid, new Date()))
    const started = Date.now()
    await expect(store.change(toGreen)).rejects.toMatchObject({ code: 'BG_STATE_UNAVAILABLE', status: 503 })
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900)
    expect((await readDocument()).state).toEqual(initial)
    expect(store.current()).toEqual(initial)

    await rm(`${path}.lock`)
    expect(await store.change(toGreen)).toMatchObject({ generation: 1 })
  })

  it('removes temp files left by a dead process when it starts, and keeps those of live ones', async () => {
    const dead = `state.json.${await deadPid()}.0a1b2c.tmp`
    const live = `state.json.${process.pid}.0a1b2c.tmp`
    await writeFile(join(directory, dead), '{"half": ')
    await writeFile(join(directory, live), '{"half": ')
    await makeStore().start()
    expect((await readdir(directory)).toSorted()).toEqual(['state.json', live])
  })

  it('follows changes through the directory watch alone (each rename replaces the inode)', async () => {
    const follower = makeStore({ pollInterval: 600_000 })
    const writer = makeStore({ pollInterval: 600_000 })
    await follower.start()
    await writer.start()
    for (const [generation, change] of [toGreen, split, toBlue].entries()) {
      await writer.change(change)
      await eventually(() => follower.current()!.generation === generation + 1, {
        message: `generation ${generation + 1} through fs.watch`,
      })
    }
  })

  it('ignores a hand-written file with a lower or equal generation, applies a higher one', async () => {
    const store = makeStore({ pollInterval: 20 })
    await store.start()
    const applied = await store.change(toGreen)
    const seen: State[] = []
    store.subscribe((state) => seen.push(state))

    const older = { ...applied, active: 'blue', weights: { blue: 100, green: 0 }, reason: 'older' }
    for (const generation of [0, 1]) {
      await writeFile(path, JSON.stringify({ state: { ...older, generation }, previous: null }))
      // previous() reads the file, so the store has certainly looked at it.
      await store.previous()
      expect(store.current()).toEqual(applied)
    }
    expect(seen).toEqual([])
    const higher = { ...older, generation: 5, reason: 'by hand' }
    await writeFile(path, JSON.stringify({ state: higher, previous: applied }))
    await eventually(() => store.current()!.generation === 5, { message: 'the hand-written generation 5' })
    expect(seen).toEqual([higher])
    expect(await store.previous()).toEqual(applied)
  })

  it('while the file is invalid: logs it, keeps the last good state, refuses changes; recovers when fixed', async () => {
    const errorLines: string[] = []
    const logger = pino({ level: 'error' }, { write: (line: string) => void errorLines.push(line) })
    const store = makeStore({ pollInterval: 20, logger })
    const initial = await store.start()
    const good = await store.change(toGreen)

    await writeFile(path, 'not json at all')
    await eventually(() => errorLines.some((line) => line.includes('invalid')), { message: 'the error log' })
    expect(store.current()).toEqual(good)
    await expect(store.change(toBlue)).rejects.toMatchObject({ code: 'BG_STATE_UNAVAILABLE', status: 503 })
    expect(await readFile(path, 'utf8')).toBe('not json at all')
    expect(await store.previous()).toEqual(initial)

    await writeFile(
      path,
      JSON.stringify({ state: { ...good, generation: 2, reason: 'fixed' }, previous: good }),
    )
    await eventually(() => store.current()!.generation === 2, { message: 'the fixed file' })
    expect(await store.change(toBlue, 2)).toMatchObject({ generation: 3 })
  })

  it('refuses a change before start and after close', async () => {
    const store = makeStore()
    await expect(store.change(toGreen)).rejects.toMatchObject({ code: 'BG_STATE_UNAVAILABLE' })
    await store.start()
    await store.close()
    await expect(store.change(toGreen)).rejects.toMatchObject({ code: 'BG_STATE_UNAVAILABLE' })
  })

  it('refuses an invalid change with 400 before touching the file', async () => {
    const store = makeStore()
    await store.start()
    await expect(store.change({ ...toGreen, weights: { blue: 50, green: 60 } })).rejects.toMatchObject({
      code: 'BG_INVALID_WEIGHTS',
      status: 400,
    })
    expect((await readDocument()).state.generation).toBe(0)
  })
})
