// The local copy of the last applied state, on a real disk: what is read back, what is refused, what is written.

import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LocalStateCopy } from '../../src/state/local-copy.ts'
import { initialState, type State } from '../../src/state/state.ts'
import { eventually } from '../helpers/eventually.ts'
import { tempDir } from '../helpers/servers.ts'

const KEY = 'bluegreen:copy-test'

function copyAt(file: string, key = KEY) {
  const warnings: string[] = []
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) })
  return { copy: new LocalStateCopy({ file, key, logger }), warnings }
}

const green: State = {
  ...initialState('blue'),
  active: 'green',
  weights: { blue: 0, green: 100 },
  generation: 4,
}

describe('LocalStateCopy', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>
  beforeAll(async () => {
    dir = await tempDir('bluegreen-copy-')
  })
  afterAll(async () => {
    await dir?.remove()
  })

  it('writes a state and reads it back, with its key and when it was written', async () => {
    const file = join(dir.path, 'round-trip.json')
    const { copy } = copyAt(file)
    expect(await copy.read()).toBeUndefined()
    const before = Date.now()
    copy.save(green)
    await copy.close()
    const saved = await copyAt(file).copy.read()
    expect(saved?.state).toEqual(green)
    expect(saved?.savedAt).toBeGreaterThanOrEqual(before - 1000)
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ key: KEY, state: { generation: 4 } })
  })

  it('ends a burst of changes with the last one on disk', async () => {
    const file = join(dir.path, 'burst.json')
    const { copy } = copyAt(file)
    for (let generation = 1; generation <= 20; generation++) copy.save({ ...green, generation })
    await copy.close()
    expect((await copyAt(file).copy.read())?.state.generation).toBe(20)
  })

  it("ignores, with a warning, another key's copy and a file that is not a state", async () => {
    const file = join(dir.path, 'other-key.json')
    const writer = copyAt(file, 'bluegreen:another-service').copy
    writer.save(green)
    await writer.close()
    const otherKey = copyAt(file)
    expect(await otherKey.copy.read()).toBeUndefined()
    expect(otherKey.warnings.join('')).toContain('bluegreen:another-service')

    const broken = join(dir.path, 'broken.json')
    await writeFile(
      broken,
      JSON.stringify({ key: KEY, savedAt: new Date().toISOString(), state: { active: 'red' } }),
    )
    const invalid = copyAt(broken)
    expect(await invalid.copy.read()).toBeUndefined()
    expect(invalid.warnings.join('')).toContain('not usable')
  })

  it('does not write back the state it read as if it were fresh', async () => {
    const file = join(dir.path, 'restored.json')
    const writer = copyAt(file).copy
    writer.save(green)
    await writer.close()
    const written = await readFile(file, 'utf8')
    const { copy } = copyAt(file)
    const saved = await copy.read()
    copy.save(saved!.state)
    await copy.close()
    expect(await readFile(file, 'utf8')).toBe(written)
    copy.save({ ...green, generation: 5 })
    await copy.close()
    expect((await copy.read())?.state.generation).toBe(5)
  })

  it('logs a write it cannot make once, and carries on', async () => {
    const { copy, warnings } = copyAt(join(dir.path, 'missing-dir', 'copy.json'))
    copy.save(green)
    await copy.close()
    copy.save({ ...green, generation: 5 })
    await copy.close()
    await eventually(() => warnings.length > 0)
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain('cannot keep the last applied state')
  })
})
