import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { silentLogger } from '../../src/log.ts'
import { FileStateStore } from '../../src/state/file-store.ts'
import { eventually } from '../helpers/eventually.ts'
import { describeStateStoreContract } from '../helpers/state-store-contract.ts'

describeStateStoreContract('file', async () => {
  const directory = await mkdtemp(join(tmpdir(), 'bluegreen-contract-'))
  const path = join(directory, 'state.json')
  const stores: FileStateStore[] = []
  const make = (logger = silentLogger()) => {
    const store = new FileStateStore({ path, initial: 'blue', logger, pollInterval: 250 })
    stores.push(store)
    return store
  }
  // The first store logs its errors here, so corrupt() can wait until the store has actually seen the bad file.
  const errorLines: string[] = []
  const store = make(pino({ level: 'error' }, { write: (line: string) => void errorLines.push(line) }))
  return {
    store,
    makePeer: async () => make(),
    corrupt: async () => {
      await writeFile(path, '{"state": {"active": "purple"')
      await eventually(() => errorLines.some((line) => line.includes('invalid')), {
        message: 'the store to report the invalid state file',
      })
    },
    writeLegacy: async (state, previous) => {
      await writeFile(path, `${JSON.stringify({ state, previous }, null, 2)}\n`)
    },
    cleanup: async () => {
      await Promise.all(stores.map((each) => each.close()))
      await rm(directory, { recursive: true, force: true })
    },
  }
})
